#include "engine/convert/canonicalize.h"

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/convert/quantized.h"
#include "engine/interpreter.h"
#include "engine/ops/attrs.h"
#include "engine/ops/registry.h"
#include "formats/error.h"

namespace sparq {
namespace {}  // namespace

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
  // Folding stops at quantized weights: DequantizeLinear(W) stays integer weight, scale
  // and zero point for the converter (engine/convert/quantized.h).
  const std::set<size_t> quantized_weights = quantized_weight_dequantizes(g);
  std::vector<Node> kept;
  kept.reserve(g.nodes.size());
  for (size_t index = 0; index < g.nodes.size(); ++index) {
    Node& n = g.nodes[index];
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
        if (auto c = attrs_of(n, g.opset)->value) {
          g.initializers[n.outputs[0]] = c;
          ++r.constants_hoisted;
          continue;
        }
      }
      // A node reading only constants: evaluated now, exactly as the run would.
      bool constant = !n.inputs.empty() && !quantized_weights.count(index);
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
