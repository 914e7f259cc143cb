// Graph rewrites applied by the converter. Each one matches a subgraph exactly as the
// PyTorch / Hugging Face exporters emit it, checks that the intermediate values have no
// other consumers, and replaces it with one op. An unmatched pattern is left alone and
// runs op by op.
#ifndef SPARQ_ENGINE_PASSES_H_
#define SPARQ_ENGINE_PASSES_H_

#include <set>
#include <string>

#include "formats/graph.h"
#include "sparq/export.h"

namespace sparq {

struct PassStats {
  int layernorm = 0;  // ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add -> LayerNormalization
  int bias = 0;       // SparqMatMul + Add(constant [N]) -> SparqMatMul with a bias input
  int gelu = 0;       // ... + a GELU (erf, tanh or sigmoid form) -> its "activation"
  int attention = 0;  // MatMul/scale/(Add|Where)/Softmax/MatMul -> SparqAttention
  int reshapes_moved = 0;  // a GELU after a leading-dims Reshape moved above it
  int mask_bias = 0;       // Unsqueeze/Unsqueeze/Cast/Sub(1)/Mul(fill) -> SparqMaskBias
  int removed = 0;         // nodes dropped as dead
};

// The outputs of both MatMuls (Q K^T and P V) of every attention that optimize_graph's
// attention pattern fuses in g (run on a copy): how the converter checks that a rewrite
// of quantized attention matmuls (engine/convert/quantized.h) lets the pattern match.
SPARQ_API std::set<std::string> attention_matmul_outputs(Graph g);
// The outputs of those fused attentions and of every node they take in (the scores
// MatMul, the scale, the mask, the Softmax; the head splits and the merge stay nodes,
// which the planner reads as views).
SPARQ_API std::set<std::string> attention_absorbed_outputs(Graph g);

// Runs every pass and removes dead nodes and unused initializers.
SPARQ_API PassStats optimize_graph(Graph& g);

}  // namespace sparq

#endif  // SPARQ_ENGINE_PASSES_H_
