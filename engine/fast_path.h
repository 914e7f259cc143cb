// What of a converted graph stays off sparq's fast path, per cause (issue 10, "Say so
// when it does not"). convert reports it (a warning, or an error with --require-fused);
// inspect reports it for a stored file, next to the plan's own op-by-op steps.
#ifndef SPARQ_ENGINE_FAST_PATH_H_
#define SPARQ_ENGINE_FAST_PATH_H_

#include <string>
#include <vector>

#include "formats/graph.h"
#include "sparq/export.h"

namespace sparq {

struct OffPathNode {
  std::string node;   // the node's name
  std::string op;     // its op
  std::string cause;  // one of the FastPathReport causes below
};

struct FastPathReport {
  // Fused or packed encoder pieces in the converted graph.
  int matmuls = 0;      // SparqMatMul: packed constant-weight matmuls
  int attention = 0;    // SparqAttention
  int layernorm = 0;    // LayerNormalization (fused pattern or the opset-17 op)
  int activations = 0;  // GELUs in a matmul's epilogue
  // A quantized model's attention matmuls read in float for sparq's own attention
  // quantization (engine/convert/quantized.h; set by convert, 0 from a stored file).
  int quantized_attention_matmuls = 0;
  // Encoder pieces that are not, in graph order. Causes:
  //   "attention"  a Softmax outside the attention pattern (Q K^T, scale, mask, Softmax, V)
  //   "layernorm"  a ReduceMean outside the LayerNorm pattern
  //   "gelu"       an Erf, Sigmoid, or a Tanh not applied straight to a matmul's output
  //                (the pooler's tanh is), not in a matmul's epilogue
  //   "matmul"     a MatMul or Gemm with a constant weight that was not packed
  //   "quantize"   a QuantizeLinear, DequantizeLinear or DynamicQuantizeLinear of an
  //                activation that no fused op took in (the model's own quantization,
  //                run op by op)
  std::vector<OffPathNode> off;

  bool fused() const { return off.empty(); }
  // One line per cause: "2 attention (Softmax 'a', 'b'), 1 gelu (Erf 'c')".
  SPARQ_API std::string summary(size_t names_per_cause = 3) const;
};

// Reads a converted graph (after convert's passes, or as a .sparq file stores it).
SPARQ_API FastPathReport fast_path_report(const Graph& g);

}  // namespace sparq

#endif  // SPARQ_ENGINE_FAST_PATH_H_
