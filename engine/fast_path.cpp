#include "engine/fast_path.h"

#include <map>
#include <set>

namespace sparq {

std::string FastPathReport::summary(size_t names_per_cause) const {
  std::map<std::string, std::vector<const OffPathNode*>> by_cause;
  std::vector<std::string> order;
  for (const OffPathNode& o : off) {
    if (!by_cause.count(o.cause)) order.push_back(o.cause);
    by_cause[o.cause].push_back(&o);
  }
  std::string s;
  for (const std::string& cause : order) {
    const auto& v = by_cause[cause];
    if (!s.empty()) s += "; ";
    s += std::to_string(v.size()) + " " + cause + " (";
    for (size_t i = 0; i < v.size() && i < names_per_cause; ++i) {
      s += (i ? ", " : "") + v[i]->op + " '" + v[i]->node + "'";
    }
    if (v.size() > names_per_cause) s += ", ...";
    s += ")";
  }
  return s;
}

FastPathReport fast_path_report(const Graph& g) {
  FastPathReport r;
  std::map<std::string, const Node*> producer;
  for (const Node& n : g.nodes) {
    for (const std::string& o : n.outputs) producer[o] = &n;
  }
  auto produced_by = [&](const std::string& v, const char* op) {
    auto it = producer.find(v);
    return it != producer.end() && it->second->op == op;
  };
  for (const Node& n : g.nodes) {
    auto off = [&](const char* cause) { r.off.push_back({n.name, n.op, cause}); };
    if (n.op == "SparqMatMul") {
      ++r.matmuls;
      if (n.attr("activation") != nullptr) ++r.activations;
    } else if (n.op == "SparqAttention") {
      ++r.attention;
    } else if (n.op == "LayerNormalization") {
      ++r.layernorm;
    } else if (n.op == "Softmax") {
      off("attention");
    } else if (n.op == "ReduceMean") {
      // One per LayerNorm: the mean of x, not the variance's mean of (x - mean)^2.
      const bool variance =
          !n.inputs.empty() && (produced_by(n.inputs[0], "Pow") || produced_by(n.inputs[0], "Mul"));
      if (!variance) off("layernorm");
    } else if (n.op == "Erf" || n.op == "Sigmoid") {
      off("gelu");
    } else if (n.op == "Tanh") {
      // The pooler applies tanh to its dense layer's output: not a GELU.
      if (n.inputs.empty() || !produced_by(n.inputs[0], "SparqMatMul")) off("gelu");
    } else if ((n.op == "MatMul" || n.op == "Gemm") && n.inputs.size() >= 2 &&
               g.initializer(n.inputs[1]) != nullptr) {
      off("matmul");
    }
  }
  return r;
}

}  // namespace sparq
