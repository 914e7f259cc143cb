// Models that arrive quantized (DESIGN.md, "Models that arrive quantized";
// docs/quantized-models.md): every matmul with a constant quantized weight becomes a
// plain MatMul on a constant weight, so the converter packs it like a float model's,
// but with the model's own integers and scales. The forms:
//   - ONNX Runtime's dynamic quantization: DynamicQuantizeLinear(x) -> MatMulInteger(xq,
//     Wq, x_zp[, w_zp]) -> Cast(float) -> Mul by x_scale and w_scale (as one Mul by
//     Mul(x_scale, w_scale), or two Muls, in either order and operand order);
//   - QOperator: MatMulInteger whose activation is QuantizeLinear(x, static scale, zp)
//     and whose Mul chain multiplies by constants only; QLinearMatMul with a constant
//     weight (its activation dequantized, or read before its QuantizeLinear; its output
//     requantized unless its one consumer is the matching DequantizeLinear);
//   - QDQ: MatMul (or Gemm) whose weight is DequantizeLinear(Wq, scale, zp), with or
//     without a Transpose after it; an activation fake-quantized by QuantizeLinear ->
//     DequantizeLinear (per tensor) is read before the pair.
// Activations are quantized by sparq's dynamic per-token scheme at run time, not by the
// model's own (static or per-tensor dynamic) scales: measured at least as accurate
// against the float model (docs/quantized-models.md).
#ifndef SPARQ_ENGINE_CONVERT_QUANTIZED_H_
#define SPARQ_ENGINE_CONVERT_QUANTIZED_H_

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "formats/graph.h"
#include "sparq/export.h"

namespace sparq {

// The constant weight of a fused quantized matmul, by the name of the initializer the
// rewritten MatMul reads (W[K, N], MatMul's orientation).
struct QuantizedWeight {
  // true: the initializer is int8 and holds q - zp exactly; `scales` [N] are the
  // model's per-output-channel scales (a per-tensor scale repeated), so W = s8 x scale.
  // false: q - zp does not fit int8, or the scale varies along K: the initializer is the
  // dequantized float weight (scale x (q - zp), computed in double), which the converter
  // requantizes per output channel; `note` says why.
  bool exact = true;
  std::vector<float> scales;
  std::string node;  // the quantized matmul's node, for notes and errors
  std::string note;  // why not exact
};

struct QuantizedMatMuls {
  std::map<std::string, QuantizedWeight> weights;
  int dynamic = 0;  // ONNX Runtime's DynamicQuantizeLinear + MatMulInteger chains
  int integer = 0;  // MatMulInteger on a static QuantizeLinear
  int qlinear = 0;  // QLinearMatMul
  int qdq = 0;      // MatMul / Gemm on DequantizeLinear(W)
  // Activation x activation matmuls of attention read in float (not in fused()):
  // read_attention_activations_in_float.
  int attention = 0;
  int fused() const { return dynamic + integer + qlinear + qdq; }
};

// Checks every QuantizeLinear, DequantizeLinear, MatMulInteger and QLinearMatMul whose
// scales and zero points are constants: a scale must be finite and positive, a zero
// point of its tensor's type, per-axis lengths must match the axis (and each other).
// Also the model's own activation scales. Throws Error(kInvalidArgument) naming the node.
SPARQ_API void check_quantized_params(const Graph& g);

// Rewrites each matched quantized matmul in `g` (after canonicalize) as MatMul(x, W) with
// W a new initializer described in the result; the nodes left without readers are
// removed later by dead-code elimination. Throws Error(kInvalidArgument) for a
// malformed weight (scale 0, NaN or infinite, or negative; a per-axis length that does
// not match; a zero point of another type).
SPARQ_API QuantizedMatMuls fuse_quantized_matmuls(Graph& g);

// Attention's activation x activation matmuls as quantized exports write them, read in
// float where the attention pattern (engine/passes.h) then fuses them, so sparq's own
// attention (which quantizes Q, K, V and the probabilities itself in int8 / bf16) runs
// them: a MatMul input fake-quantized by QuantizeLinear -> DequantizeLinear, and a
// QLinearMatMul of two activations from QuantizeLinear whose output one
// DequantizeLinear reads, each with the same constant per-tensor scale and zero point,
// and each node read by nothing else. The MatMul reads the unquantized activations;
// the pair (or the QuantizeLinears and the DequantizeLinear) goes. So does any other
// fake quantization of an activation (a QuantizeLinear read only by DequantizeLinears
// with its constant per-tensor parameters) that the fused attention then takes in or
// gives out through data movement only (quantize_static's QDQ around the head splits'
// Reshape and Transpose, the Softmax and the merge). Elsewhere the graph is left as it
// is (exact ONNX semantics).
// Returns how many matmuls were rewritten.
// fuse_quantized_matmuls runs it last.
SPARQ_API int read_attention_activations_in_float(Graph& g);

// The DequantizeLinear nodes of int8 / uint8 2-D constants that feed (directly or
// through a Transpose) only matmul weight inputs, by index into g.nodes: canonicalize
// keeps them unfolded so the converter sees the integer weights.
SPARQ_API std::set<size_t> quantized_weight_dequantizes(const Graph& g);

}  // namespace sparq

#endif  // SPARQ_ENGINE_CONVERT_QUANTIZED_H_
