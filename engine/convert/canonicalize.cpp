#include "engine/convert/canonicalize.h"

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/interpreter.h"
#include "engine/ops/registry.h"
#include "formats/error.h"

namespace sparq {
namespace {

// A 1-D (or, with `scalar`, 0-D) tensor of `n` values of type T.
template <class T>
std::shared_ptr<const Constant> tensor_of(ElemType type, const T* v, size_t n, bool scalar) {
  auto c = std::make_shared<Constant>();
  c->type = type;
  if (!scalar) c->shape = {static_cast<int64_t>(n)};
  c->bytes.resize(n * sizeof(T));
  if (n > 0) std::memcpy(c->bytes.data(), v, n * sizeof(T));
  return c;
}

// A Constant node's value as a tensor (the registry allows exactly one value attribute).
std::shared_ptr<const Constant> constant_value(const Node& n) {
  for (const auto& kv : n.attrs) {
    const Attribute& a = kv.second;
    if (kv.first == "value") return a.t;
    if (kv.first == "value_float") return tensor_of(ElemType::kF32, &a.f, 1, true);
    if (kv.first == "value_floats")
      return tensor_of(ElemType::kF32, a.floats.data(), a.floats.size(), false);
    if (kv.first == "value_int") return tensor_of(ElemType::kI64, &a.i, 1, true);
    if (kv.first == "value_ints")
      return tensor_of(ElemType::kI64, a.ints.data(), a.ints.size(), false);
  }
  return nullptr;
}

}  // namespace

CanonicalizeReport canonicalize(Graph& g, uint64_t max_fold_bytes) {
  CanonicalizeReport r;
  std::set<std::string> graph_outputs;
  for (const ValueInfo& v : g.outputs) graph_outputs.insert(v.name);
  std::map<std::string, std::string> alias;  // Identity output -> its source
  auto resolve = [&](const std::string& s) {
    std::string v = s;
    for (auto it = alias.find(v); it != alias.end(); it = alias.find(v)) v = it->second;
    return v;
  };
  std::vector<Node> kept;
  kept.reserve(g.nodes.size());
  for (Node& n : g.nodes) {
    for (std::string& in : n.inputs) {
      if (!in.empty()) in = resolve(in);
    }
    const bool makes_output = !n.outputs.empty() && graph_outputs.count(n.outputs[0]) != 0;
    if (!makes_output && n.outputs.size() == 1) {
      if (op_of(n) == OpId::kIdentity) {
        alias[n.outputs[0]] = n.inputs[0];
        ++r.identities_removed;
        continue;
      }
      if (op_of(n) == OpId::kConstant) {
        if (auto c = constant_value(n)) {
          g.initializers[n.outputs[0]] = c;
          ++r.constants_hoisted;
          continue;
        }
      }
      // A node reading only constants: evaluated now, exactly as the run would.
      bool constant = !n.inputs.empty();
      std::vector<Value> ins;
      for (const std::string& in : n.inputs) {
        if (in.empty()) {
          ins.push_back(nullptr);
          continue;
        }
        auto it = g.initializers.find(in);
        if (it == g.initializers.end()) {
          constant = false;
          break;
        }
        ins.push_back(it->second);
      }
      if (constant) {
        try {
          Value v = interpret_node(g, n, ins);
          const uint64_t bytes =
              v ? static_cast<uint64_t>(v->elements()) * elem_type_size(v->type) : 0;
          if (v && bytes <= max_fold_bytes) {
            if (v->view != nullptr) {  // a view of an input: own the bytes
              auto own = std::make_shared<Constant>();
              own->type = v->type;
              own->shape = v->shape;
              own->bytes.assign(v->raw(), v->raw() + bytes);
              v = own;
            }
            g.initializers[n.outputs[0]] = v;
            ++r.nodes_folded;
            continue;
          }
        } catch (const Error&) {
          // Left to the run, which reports the same error with its inputs' context.
        }
      }
    }
    kept.push_back(std::move(n));
  }
  g.nodes = std::move(kept);
  // Graph outputs that were Identity outputs never got aliased (their node stays), but
  // an Identity chain ending in one is resolved above; drop what nothing reads now.
  std::set<std::string> read(graph_outputs);
  for (const Node& n : g.nodes) {
    for (const std::string& in : n.inputs) read.insert(in);
  }
  for (auto it = g.initializers.begin(); it != g.initializers.end();) {
    if (!read.count(it->first)) {
      it = g.initializers.erase(it);
      ++r.initializers_dropped;
    } else {
      ++it;
    }
  }
  return r;
}

}  // namespace sparq
