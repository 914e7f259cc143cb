// Test helper: walks a graph node by node through the reference interpreter and checks
// that the shape pass's rule (engine/ops/shape.h) predicts every output's shape and type
// from the inputs' shapes alone, plus the values a planner has: constants, and values
// computed only from constants and shapes.
#ifndef SPARQ_TESTS_SHAPE_CHECK_H_
#define SPARQ_TESTS_SHAPE_CHECK_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/interpreter.h"
#include "engine/ops/registry.h"
#include "engine/ops/shape.h"
#include "formats/error.h"

namespace sparq::test {

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// "" when every node's outputs match; else the first mismatch. Throws what the
// interpreter throws.
inline std::string check_shapes(const Graph& g, const std::map<std::string, Value>& inputs) {
  std::map<std::string, Value> env = inputs;
  std::map<std::string, ValueMeta> meta;
  for (const auto& kv : inputs) meta[kv.first] = {kv.second->shape, kv.second->type, nullptr};
  for (const auto& kv : g.initializers) {
    env[kv.first] = kv.second;
    meta[kv.first] = {kv.second->shape, kv.second->type, kv.second};
  }
  for (const Node& n : g.nodes) {
    std::vector<Value> ins;
    std::vector<const ValueMeta*> ms;
    bool all_static = !n.inputs.empty() || op_of(n) == OpId::kConstant;
    for (const std::string& in : n.inputs) {
      if (in.empty()) {
        ins.push_back(nullptr);
        ms.push_back(nullptr);
        continue;
      }
      ins.push_back(env.at(in));
      ms.push_back(&meta.at(in));
      all_static = all_static && meta.at(in).value != nullptr;
    }
    const std::vector<Value> gots = interpret_node_outputs(g, n, ins);
    std::vector<ValueMeta> want;
    try {
      want = infer_node(n, g.opset, ms, nullptr);
    } catch (const Error& e) {
      // A shape that depends on a run-time value is refused, rightly, when that value is
      // not known; the rule itself is then checked with every input's value given.
      if (e.status() != Status::kUnsupported || all_static)
        return "node '" + n.name + "' (" + n.op + "): the shape pass refused: " + e.what();
      std::vector<ValueMeta> full;
      for (size_t i = 0; i < n.inputs.size(); ++i)
        full.push_back(ms[i] ? ValueMeta{ms[i]->shape, ms[i]->type, ins[i]} : ValueMeta{});
      std::vector<const ValueMeta*> fp;
      for (size_t i = 0; i < n.inputs.size(); ++i) fp.push_back(ms[i] ? &full[i] : nullptr);
      try {
        want = infer_node(n, g.opset, fp, nullptr);
      } catch (const Error& e2) {
        return "node '" + n.name + "' (" + n.op + "): the shape pass refused: " + e2.what();
      }
    }
    if (want.empty() || gots.empty() || !gots[0]) return "node '" + n.name + "': no output";
    // Every output the node computes (DynamicQuantizeLinear has three).
    for (size_t k = 0; k < n.outputs.size() && k < gots.size(); ++k) {
      const Value& got = gots[k];
      if (n.outputs[k].empty()) continue;
      if (!got || k >= want.size()) return "node '" + n.name + "': no output " + std::to_string(k);
      if (want[k].shape != got->shape || want[k].type != got->type) {
        return "node '" + n.name + "' (" + n.op + "): output " + std::to_string(k) +
               ": shape pass " + shape_str(want[k].shape) + " " + elem_type_name(want[k].type) +
               ", interpreter " + shape_str(got->shape) + " " + elem_type_name(got->type);
      }
      env[n.outputs[k]] = got;
      // A planner knows a value when its inputs are all known (folding), or from shapes.
      const bool known = all_static || op_of(n) == OpId::kShape;
      meta[n.outputs[k]] = {got->shape, got->type, known ? got : nullptr};
    }
  }
  return "";
}

}  // namespace sparq::test

#endif  // SPARQ_TESTS_SHAPE_CHECK_H_
