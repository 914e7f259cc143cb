// Shape arithmetic shared by the interpreter and the planner, written once and
// overflow-checked (a corrupt model's constants reach it).
#ifndef SPARQ_ENGINE_SHAPES_H_
#define SPARQ_ENGINE_SHAPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "formats/graph.h"

namespace sparq {

// Product of the dimensions into *out; false when one is negative or the product
// overflows int64.
bool safe_elements(const std::vector<int64_t>& shape, int64_t* out);

// ONNX Reshape: resolves 0 (copy the input's dimension unless allowzero) and one -1 in
// `target` against input shape `in`. False, with the reason in *why, when the target is
// malformed or changes the element count.
bool reshape_target(const std::vector<int64_t>& in, std::vector<int64_t>* target, bool allowzero,
                    std::string* why);

// The shape rules of ONNX ops, each written once and used by the interpreter (which
// sizes its outputs with them) and by the shape pass (engine/ops/shape.h). Each returns
// false with the reason in *why for shapes or arguments the op cannot take.
using Dims = std::vector<int64_t>;

// Multidirectional (numpy) broadcasting of all `shapes`.
bool broadcast_shapes(const std::vector<const Dims*>& shapes, Dims* out, std::string* why);
// An axis in [-rank, rank) as a non-negative index.
bool normalize_axis(int64_t axis, size_t rank, int64_t* out, std::string* why);
// Unsqueeze: `axes` index the output (rank + axes.size()).
bool unsqueeze_shape(const Dims& in, std::vector<int64_t> axes, Dims* out, std::string* why);
// Squeeze: no axes drops every 1; given axes must be 1.
bool squeeze_shape(const Dims& in, std::vector<int64_t> axes, Dims* out, std::string* why);
// Transpose: an empty perm reverses; *perm_out receives the normalized permutation.
bool transpose_shape(const Dims& in, const std::vector<int64_t>& perm, Dims* out,
                     std::vector<int64_t>* perm_out, std::string* why);
// Concat of `shapes` along `axis` (normalized into *ax).
bool concat_shape(const std::vector<const Dims*>& shapes, int64_t axis, Dims* out, int64_t* ax,
                  std::string* why);
// Gather: data.shape[:ax] + indices.shape + data.shape[ax+1:].
bool gather_shape(const Dims& data, const Dims& indices, int64_t axis, Dims* out, int64_t* ax,
                  std::string* why);
// Slice: the output shape and, per input axis, the first index and the step.
struct SliceDims {
  Dims out;
  std::vector<int64_t> start, step;
};
bool slice_dims(const Dims& in, const std::vector<int64_t>& starts,
                const std::vector<int64_t>& ends, std::vector<int64_t> axes,
                std::vector<int64_t> steps, SliceDims* r, std::string* why);
// MatMul (numpy semantics: 1-D operands promoted, batch dimensions broadcast).
bool matmul_shape(const Dims& a, const Dims& b, Dims* out, std::string* why);
// ReduceMean and friends: *reduced marks the reduced axes (all when `axes` is empty).
bool reduce_shape(const Dims& in, const std::vector<int64_t>& axes, bool keepdims, Dims* out,
                  std::vector<bool>* reduced, std::string* why);
// An attention mask (rank <= 4, aligned to the right) broadcast to the scores [B, H, S,
// T]: the element stride of each of the four dimensions in the mask, 0 where it
// broadcasts. Shared by the interpreter's attention and the planner's attention step.
bool attention_mask_strides(const Dims& mask, const Dims& scores, int64_t strides[4],
                            std::string* why);
// A Gather index into `dim` rows, ONNX style (negative counts from the end): the row in
// *row, false when outside [-dim, dim). The interpreter's Gather and the planner's
// embeddings step both check ids with it.
inline bool gather_index(int64_t k, int64_t dim, int64_t* row) {
  if (k < -dim || k >= dim) return false;
  *row = k < 0 ? k + dim : k;
  return true;
}
// Range: max(0, ceil((limit - start) / delta)) elements.
bool range_count(double start, double limit, double delta, int64_t* count, std::string* why);

// ---- Quantized ops: which inputs they take, and where each scale and zero point applies.
// Written once for the interpreter (which checks its inputs with them) and the shape
// rule. A scale or zero point with one element (rank 0 or 1) is per tensor.

// An input's shape and element type; null `dims` = an omitted optional input.
struct TensorDesc {
  const Dims* dims = nullptr;
  ElemType type = ElemType::kF32;
};

// QuantizeLinear (`quantize`) and DequantizeLinear: x float32 or int32 (quantize) or
// int8, uint8, int32 (dequantize); the scale float32; the zero point int8 or uint8 (of
// x's type to dequantize), the same shape as the scale. The scale is per tensor, or
// (opset 13 on) 1-D with one value per index of x's `axis` (negative counts from the
// back). *out_type: y's type (the zero point's; uint8 without one; float32 dequantized);
// *axis_out: the normalized axis, -1 for per tensor.
bool quantize_linear_rule(bool quantize, int64_t opset, int64_t axis, TensorDesc x,
                          TensorDesc scale, TensorDesc zero_point, ElemType* out_type,
                          int64_t* axis_out, std::string* why);

// Where a matmul operand's scale or zero point applies (MatMulInteger, QLinearMatMul):
// one value; a 1-D vector with one per row of A (M values) or per column of B (N
// values); or per batch and row, A.shape[:-1] + [1] (B: B.shape[:-2] + [1, N]).
enum class QuantParamForm : uint8_t { kTensor, kVector, kBatched };
// The form of `param` for operand `x` (`rows`: A's per-row form, else B's per column).
bool quant_param_form(const Dims& x, const Dims& param, bool rows, QuantParamForm* form,
                      std::string* why);

// MatMulInteger: A and B int8 or uint8, each zero point (optional) of its operand's
// type; the output int32, shaped as MatMul's. forms[0] / forms[1]: A's and B's zero
// point forms (kTensor when omitted).
bool matmul_integer_rule(TensorDesc a, TensorDesc b, TensorDesc a_zero_point,
                         TensorDesc b_zero_point, Dims* out, QuantParamForm forms[2],
                         std::string* why);

// QLinearMatMul, inputs in ONNX's order (a, a_scale, a_zero_point, b, b_scale,
// b_zero_point, y_scale, y_zero_point): a and b int8 or uint8 with zero points of their
// types, scales float32, a's scale and zero point per tensor or per row, b's per tensor
// or per column (each pair of one shape), y's per tensor; y has y_zero_point's type.
bool qlinear_matmul_rule(const TensorDesc in[8], Dims* out, ElemType* out_type,
                         QuantParamForm forms[2], std::string* why);

}  // namespace sparq

#endif  // SPARQ_ENGINE_SHAPES_H_
