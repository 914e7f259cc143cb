// Shape arithmetic shared by the interpreter and the planner, written once and
// overflow-checked (a corrupt model's constants reach it).
#ifndef SPARQ_ENGINE_SHAPES_H_
#define SPARQ_ENGINE_SHAPES_H_

#include <cstdint>
#include <string>
#include <vector>

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

}  // namespace sparq

#endif  // SPARQ_ENGINE_SHAPES_H_
