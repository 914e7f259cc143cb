#include "engine/ops/registry.h"

#include <cstdint>
#include <map>
#include <set>
#include <sstream>

#include "engine/ops/attrs.h"
#include "formats/error.h"
#include "kernels/spmm/spmm.h"

namespace sparq {
namespace {

[[noreturn]] void malformed(const std::string& source, const Node& n, const std::string& what) {
  throw Error(Status::kFormatError, source + ": node '" + n.name + "' (" + n.op + "): " + what);
}
[[noreturn]] void refuse(const std::string& source, const Node& n, const std::string& what) {
  throw Error(Status::kUnsupported, source + ": node '" + n.name + "' (" + n.op + "): " + what);
}

std::vector<std::string> split(const char* s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

std::vector<OpPort> parse_ports(const char* s, size_t* lo, size_t* hi) {
  std::vector<OpPort> ports;
  *lo = 0;
  *hi = 0;
  for (std::string p : split(s)) {
    OpPort port;
    if (p.size() > 3 && p.compare(p.size() - 3, 3, "...") == 0) {
      port.variadic = true;
      p.resize(p.size() - 3);
    } else if (p.back() == '?') {
      port.optional = true;
      p.pop_back();
    } else if (p.back() == '!') {
      port.optional = port.refused = true;
      p.pop_back();
    }
    port.name = p;
    if (!port.optional) *lo = ports.size() + 1;
    ports.push_back(port);
  }
  *hi = ports.size();
  if (!ports.empty() && ports.back().variadic) *hi = SIZE_MAX;
  return ports;
}

Attribute::Kind parse_kind(const std::string& k) {
  if (k == "i") return Attribute::Kind::kInt;
  if (k == "f") return Attribute::Kind::kFloat;
  if (k == "s") return Attribute::Kind::kString;
  if (k == "ints") return Attribute::Kind::kInts;
  if (k == "floats") return Attribute::Kind::kFloats;
  return Attribute::Kind::kTensor;  // "t"
}

const char* kind_name(Attribute::Kind k) {
  switch (k) {
    case Attribute::Kind::kInt: return "an int";
    case Attribute::Kind::kFloat: return "a float";
    case Attribute::Kind::kString: return "a string";
    case Attribute::Kind::kInts: return "a list of ints";
    case Attribute::Kind::kFloats: return "a list of floats";
    case Attribute::Kind::kTensor: return "a tensor";
  }
  return "?";
}

struct Registry {
  std::vector<OpSpec> specs;
  std::map<std::string, OpId> by_name;
  Registry() {
    auto add = [&](OpId id, const char* name, OpDomain domain, const char* ins, const char* outs,
                   const char* attrs) {
      OpSpec s;
      s.id = id;
      s.name = name;
      s.domain = domain;
      s.inputs = parse_ports(ins, &s.min_inputs, &s.max_inputs);
      s.outputs = parse_ports(outs, &s.min_outputs, &s.max_outputs);
      for (const std::string& a : split(attrs)) {
        OpAttr at;
        const size_t colon = a.find(':');
        at.name = a.substr(0, colon);
        std::string kind = a.substr(colon + 1);
        if (!kind.empty() && kind.back() == '!') {
          at.required = true;
          kind.pop_back();
        }
        at.kind = parse_kind(kind);
        s.attrs.push_back(at);
      }
      by_name[name] = id;
      specs.push_back(std::move(s));
    };
    constexpr OpDomain kOnnx = OpDomain::kOnnx, kSparq = OpDomain::kSparq;
#define SPARQ_OP(id, name, domain, inputs, outputs, attrs) \
  add(OpId::id, name, domain, inputs, outputs, attrs);
#include "engine/ops/ops.inc"
#undef SPARQ_OP
  }
};

const Registry& registry() {
  static const Registry r;
  return r;
}

// The ONNX element type codes Cast may convert to (ElemType's set).
bool castable_onnx_type(int64_t t) {
  switch (t) {
    case 1:
    case 2:
    case 3:
    case 6:
    case 7:
    case 9:
    case 11: return true;
    default: return false;
  }
}

bool given(const Node& n, size_t i) { return i < n.inputs.size() && !n.inputs[i].empty(); }

// The value of a constant-valued input: an initializer or a Constant node's tensor.
const Constant* constant_input(const Graph& g, const std::map<std::string, const Node*>& producers,
                               const std::string& name) {
  if (const Constant* c = g.initializer(name)) return c;
  auto it = producers.find(name);
  if (it == producers.end() || op_of(*it->second) != OpId::kConstant) return nullptr;
  const Attribute* v = it->second->attr("value");
  return v != nullptr && v->kind == Attribute::Kind::kTensor ? v->t.get() : nullptr;
}

// Per-op rules beyond the row: the opset's form, values that change semantics.
void check_op(const OpSpec& s, const Node& n, int64_t opset, const std::string& src) {
  switch (s.id) {
    case OpId::kConstant: {
      int values = 0;
      for (const auto& kv : n.attrs) values += kv.first.compare(0, 5, "value") == 0 ? 1 : 0;
      if (values != 1) malformed(src, n, "a Constant needs exactly one value attribute");
      const Attribute* v = n.attr("value");
      if (v != nullptr && !v->t) malformed(src, n, "the value attribute holds no tensor");
      break;
    }
    case OpId::kConstantOfShape: {
      const Attribute* v = n.attr("value");
      if (v != nullptr && (!v->t || v->t->elements() != 1)) {
        malformed(src, n, "the value attribute must be a one-element tensor");
      }
      break;
    }
    case OpId::kCast: {
      const int64_t to = n.attr("to")->i;
      if (!castable_onnx_type(to)) {
        refuse(src, n,
               "Cast to ONNX element type " + std::to_string(to) +
                   " is not supported (float, double, int8, uint8, int32, int64 and bool are)");
      }
      break;
    }
    case OpId::kSqueeze:
    case OpId::kUnsqueeze: {
      const bool attr_form = n.attr("axes") != nullptr, input_form = given(n, 1);
      if (opset >= 13 && attr_form)
        malformed(src, n, "from opset 13 the axes are an input, not an attribute");
      if (opset < 13 && input_form)
        malformed(src, n, "before opset 13 the axes are an attribute, not an input");
      if (s.id == OpId::kUnsqueeze && !attr_form && !input_form)
        malformed(src, n, "Unsqueeze needs axes");
      break;
    }
    case OpId::kTranspose:
      if (const Attribute* a = n.attr("perm")) {
        std::vector<bool> seen(a->ints.size(), false);
        for (int64_t v : a->ints) {
          if (v < 0 || v >= static_cast<int64_t>(seen.size()) || seen[static_cast<size_t>(v)]) {
            malformed(src, n,
                      "perm is not a permutation of 0.." + std::to_string(seen.size()) + "-1");
          }
          seen[static_cast<size_t>(v)] = true;
        }
      }
      break;
    case OpId::kDropout:
      if (opset < 12 && (given(n, 1) || given(n, 2))) {
        malformed(src, n, "before opset 12 Dropout has one input");
      }
      break;
    case OpId::kQuantizeLinear:
    case OpId::kDequantizeLinear:
      // Opset 10 is per tensor only; the per-axis form and its axis came in opset 13.
      if (opset < 13 && n.attr("axis") != nullptr)
        malformed(src, n,
                  "the axis attribute exists from opset 13 (the model declares opset " +
                      std::to_string(opset) + ")");
      break;
    case OpId::kDynamicQuantizeLinear:
    case OpId::kCumSum:
    case OpId::kRange:
      if (opset < 11) {
        malformed(src, n,
                  std::string(s.name) + " exists from opset 11 (the model declares opset " +
                      std::to_string(opset) + ")");
      }
      break;
    case OpId::kSparqMatMul:
    case OpId::kSparqAttention: {
      // Their attribute values (precision, activation, mask kind) are checked by the one
      // parser that reads them (engine/ops/attrs.cpp).
      std::shared_ptr<const NodeAttrs> at;
      try {
        at = parse_attrs(n, opset);
      } catch (const Error& e) {
        throw Error(e.status(), src + ": " + e.what());
      }
      if (s.id == OpId::kSparqAttention && at->mask != MaskKind::kNone && !given(n, 3))
        malformed(src, n, "mask kind '" + n.attr("mask_kind")->s + "' needs a mask input");
      break;
    }
    default: break;
  }
}

}  // namespace

const OpAttr* OpSpec::attr(const std::string& key) const {
  for (const OpAttr& a : attrs) {
    if (a.name == key) return &a;
  }
  return nullptr;
}

const OpSpec* find_op(const std::string& name) {
  const Registry& r = registry();
  auto it = r.by_name.find(name);
  return it == r.by_name.end() ? nullptr : &r.specs[static_cast<size_t>(it->second)];
}

const OpSpec& op_spec(OpId id) { return registry().specs.at(static_cast<size_t>(id)); }

std::vector<std::string> op_names(OpDomain domain) {
  std::vector<std::string> out;
  for (const OpSpec& s : registry().specs) {
    if (s.domain == domain) out.push_back(s.name);
  }
  return out;
}

OpId lookup_op(const std::string& name) {
  const auto& m = registry().by_name;
  auto it = m.find(name);
  return it == m.end() ? OpId::kCount : it->second;
}

void set_op(Node& n, OpId id) {
  n.op = op_spec(id).name;
  n.op_id = static_cast<uint16_t>(id);
  n.parsed.reset();  // its attributes are set after this: parsed when read
}

void resolve_ops(Graph& g) {
  for (Node& n : g.nodes) {
    const OpId id = lookup_op(n.op);
    n.op_id = id == OpId::kCount ? Node::kUnresolved : static_cast<uint16_t>(id);
    n.parsed = id == OpId::kCount ? nullptr : parse_attrs(n, g.opset);
  }
}

void validate_node(const Node& n, int64_t opset, bool allow_sparq_ops, const std::string& src) {
  const OpSpec* s = find_op(n.op);
  if (s == nullptr || (s->domain == OpDomain::kSparq && !allow_sparq_ops)) {
    refuse(src, n, "unsupported op '" + n.op + "'");
  }
  const size_t ni = n.inputs.size(), no = n.outputs.size();
  if (ni < s->min_inputs || ni > s->max_inputs) {
    const std::string range =
        s->max_inputs == SIZE_MAX ? "at least " + std::to_string(s->min_inputs)
        : s->min_inputs == s->max_inputs
            ? std::to_string(s->min_inputs)
            : std::to_string(s->min_inputs) + " to " + std::to_string(s->max_inputs);
    malformed(src, n, "has " + std::to_string(ni) + " inputs, " + n.op + " takes " + range);
  }
  for (size_t i = 0; i < ni; ++i) {
    const OpPort& p = s->inputs[std::min(i, s->inputs.size() - 1)];
    if (n.inputs[i].empty() && !p.optional)
      malformed(src, n, "required input '" + p.name + "' is empty");
  }
  if (no < s->min_outputs || no > s->max_outputs) {
    malformed(src, n,
              "has " + std::to_string(no) + " outputs, " + n.op + " produces " +
                  (s->min_outputs == s->max_outputs
                       ? std::to_string(s->min_outputs)
                       : std::to_string(s->min_outputs) + " to " + std::to_string(s->max_outputs)));
  }
  for (size_t i = 0; i < no; ++i) {
    const OpPort& p = s->outputs[i];
    if (n.outputs[i].empty()) {
      if (!p.optional) malformed(src, n, "required output '" + p.name + "' is empty");
      continue;
    }
    if (p.refused) {
      refuse(src, n,
             "the optional output '" + p.name + "' is not supported (only '" + s->outputs[0].name +
                 "' is computed); export the model without it");
    }
  }
  for (const auto& kv : n.attrs) {
    const OpAttr* a = s->attr(kv.first);
    if (a == nullptr) refuse(src, n, "attribute '" + kv.first + "' is not supported for " + n.op);
    if (kv.second.kind != a->kind) {
      malformed(src, n,
                "attribute '" + kv.first + "' must be " + kind_name(a->kind) + ", not " +
                    kind_name(kv.second.kind));
    }
    if (a->kind == Attribute::Kind::kTensor && !kv.second.t) {
      malformed(src, n, "attribute '" + kv.first + "' holds no tensor");
    }
  }
  for (const OpAttr& a : s->attrs) {
    if (a.required && n.attr(a.name) == nullptr)
      malformed(src, n, "required attribute '" + a.name + "' is missing");
  }
  check_op(*s, n, opset, src);
}

void validate_graph(const Graph& g, bool allow_sparq_ops, const std::string& src) {
  std::set<std::string> defined;
  for (const ValueInfo& v : g.inputs) {
    if (v.name.empty()) throw Error(Status::kFormatError, src + ": a graph input has no name");
    if (!defined.insert(v.name).second) {
      throw Error(Status::kFormatError, src + ": graph input '" + v.name + "' is declared twice");
    }
  }
  for (const auto& kv : g.initializers) {
    if (!kv.second)
      throw Error(Status::kFormatError, src + ": initializer '" + kv.first + "' has no data");
    defined.insert(kv.first);
  }
  std::map<std::string, const Node*> producers;
  for (const Node& n : g.nodes) {
    validate_node(n, g.opset, allow_sparq_ops, src);
    for (const std::string& in : n.inputs) {
      if (!in.empty() && !defined.count(in)) {
        malformed(src, n,
                  "uses '" + in + "' before it is defined (graph not topologically sorted?)");
      }
    }
    for (const std::string& out : n.outputs) {
      if (out.empty()) continue;
      if (!defined.insert(out).second) malformed(src, n, "value '" + out + "' is defined twice");
      producers[out] = &n;
    }
    if (op_of(n) == OpId::kDropout && given(n, 2)) {
      const Constant* t = constant_input(g, producers, n.inputs[2]);
      if (t == nullptr) {
        refuse(src, n, "training_mode must be a constant false: sparq runs inference only");
      }
      bool on = false;
      if (t->type == ElemType::kBool || t->type == ElemType::kU8 || t->type == ElemType::kS8) {
        for (int64_t i = 0; i < t->elements(); ++i) on = on || t->raw()[i] != 0;
      } else {
        on = true;  // not a bool: refuse rather than guess
      }
      if (on)
        refuse(src, n,
               "Dropout with training_mode true is not supported: sparq runs inference only");
    }
  }
  for (const ValueInfo& v : g.outputs) {
    if (!defined.count(v.name)) {
      throw Error(Status::kFormatError, src + ": graph output '" + v.name + "' is never computed");
    }
  }
}

}  // namespace sparq
