#include "engine/fast_path.h"

#include <map>
#include <set>

#include "engine/graph_index.h"
#include "engine/ops/registry.h"

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
  const GraphIndex ix(g);
  auto produced_by = [&](const std::string& v, OpId op) {
    size_t i = 0;
    return ix.producer(v, &i) && op_of(g.nodes[i]) == op;
  };
  // A DequantizeLinear of a constant (a quantized weight that stayed unfused).
  auto dequantized_weight = [&](const std::string& v) {
    size_t i = 0;
    return ix.producer(v, &i) && op_of(g.nodes[i]) == OpId::kDequantizeLinear &&
           !g.nodes[i].inputs.empty() && g.initializer(g.nodes[i].inputs[0]) != nullptr;
  };
  for (const Node& n : g.nodes) {
    auto off = [&](const char* cause) { r.off.push_back({n.name, n.op, cause}); };
    if (op_of(n) == OpId::kSparqMatMul) {
      ++r.matmuls;
      if (n.attr("activation") != nullptr) ++r.activations;
    } else if (op_of(n) == OpId::kSparqAttention) {
      ++r.attention;
    } else if (op_of(n) == OpId::kLayerNormalization) {
      ++r.layernorm;
    } else if (op_of(n) == OpId::kSoftmax) {
      off("attention");
    } else if (op_of(n) == OpId::kReduceMean) {
      // One per LayerNorm: the mean of x, not the variance's mean of (x - mean)^2.
      const bool variance = !n.inputs.empty() && (produced_by(n.inputs[0], OpId::kPow) ||
                                                  produced_by(n.inputs[0], OpId::kMul));
      if (!variance) off("layernorm");
    } else if (op_of(n) == OpId::kErf || op_of(n) == OpId::kSigmoid) {
      off("gelu");
    } else if (op_of(n) == OpId::kTanh) {
      // The pooler applies tanh to its dense layer's output: not a GELU.
      if (n.inputs.empty() || !produced_by(n.inputs[0], OpId::kSparqMatMul)) off("gelu");
    } else if ((op_of(n) == OpId::kMatMul || op_of(n) == OpId::kGemm) && n.inputs.size() >= 2 &&
               (g.initializer(n.inputs[1]) != nullptr || dequantized_weight(n.inputs[1]))) {
      off("matmul");
    } else if ((op_of(n) == OpId::kQuantizeLinear || op_of(n) == OpId::kDequantizeLinear ||
                op_of(n) == OpId::kDynamicQuantizeLinear) &&
               !n.inputs.empty() && g.initializer(n.inputs[0]) == nullptr) {
      // The model's quantization of an activation that no fused op took in: it runs op by
      // op (a constant's DequantizeLinear is an unfused weight, reported with its matmul).
      off("quantize");
    } else if ((op_of(n) == OpId::kMatMulInteger && n.inputs.size() >= 2 &&
                g.initializer(n.inputs[1]) != nullptr) ||
               (op_of(n) == OpId::kQLinearMatMul && n.inputs.size() >= 4 &&
                g.initializer(n.inputs[3]) != nullptr)) {
      // A quantized matmul on a constant weight that did not fuse (engine/convert/quantized.h).
      off("matmul");
    }
  }
  return r;
}

}  // namespace sparq
