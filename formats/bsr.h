// Block-sparse weight matrices: the generic BSR form, building it from a dense matrix,
// magnitude block pruning, packing into the kernels' layouts and validating packed
// data that came from untrusted bytes. Layouts: docs/bsr-format.md.
//
// Weights are handled output-major, W^T[N][K] row-major (row n = output channel n),
// which is the transpose of an ONNX MatMul initializer W[K][N].
// Block shapes are named by the axes of that ONNX W[K, N] (DESIGN.md):
//   "4x1": 4 consecutive output features x 1 input feature = W^T[4i:4i+4][k]
//   "1x4": 1 output feature x 4 consecutive input features = W^T[n][4j:4j+4]
//   "1x1": unstructured.
// So BlockShape{out, in} counts output channels (rows of W^T) then input channels.
#ifndef SPARQ_FORMATS_BSR_H_
#define SPARQ_FORMATS_BSR_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "formats/aligned_buffer.h"
#include "kernels/spmm/spmm.h"
#include "sparq/export.h"

namespace sparq {

struct BlockShape {
  int out = 1;  // consecutive output channels per block
  int in = 1;   // consecutive input channels per block
  bool operator==(const BlockShape& o) const { return out == o.out && in == o.in; }
  bool operator!=(const BlockShape& o) const { return !(*this == o); }
};
inline constexpr BlockShape kBlock4x1{4, 1};
inline constexpr BlockShape kBlock1x4{1, 4};
inline constexpr BlockShape kBlock1x1{1, 1};

SPARQ_API std::string block_shape_name(BlockShape b);
// Parses "4x1", "1x4", "1x1" (and any "<out>x<in>" with 1 <= out, in <= 64).
SPARQ_API bool parse_block_shape(const std::string& text, BlockShape* out);

// Generic block-sparse rows: block-row i covers output channels [i*out, i*out+out),
// clipped to N; block (i, j) covers input channels [j*in, j*in+in), clipped to K.
// Values of partial edge blocks past N or K are stored as zeros.
struct SPARQ_API BsrMatrix {
  int64_t n = 0, k = 0;
  BlockShape block;
  std::vector<int64_t> row_ptr;  // [block_rows + 1]
  std::vector<int64_t> col;      // [nnz_blocks], block column, ascending within a row
  std::vector<float> values;     // [nnz_blocks][block.out][block.in]

  int64_t block_rows() const { return (n + block.out - 1) / block.out; }
  int64_t block_cols() const { return (k + block.in - 1) / block.in; }
  int64_t nnz_blocks() const { return static_cast<int64_t>(col.size()); }
  // Fraction of blocks that are absent.
  double block_sparsity() const;
  // Writes W^T[N][K].
  void to_dense(float* wt) const;
};

// Keeps every block that holds at least one nonzero, and every weight exactly.
SPARQ_API BsrMatrix bsr_from_dense(const float* wt, int64_t n, int64_t k, BlockShape block);

// Magnitude block pruning: of the ceil(N/out) x ceil(K/in) blocks, exactly
// round(sparsity x blocks) with the smallest L2 norm are set to zero (ties: the lower
// row-major block index is pruned first). sparsity in [0, 1].
SPARQ_API void prune_blocks(float* wt, int64_t n, int64_t k, BlockShape block, double sparsity);

// Fraction of exactly-zero weights.
SPARQ_API double weight_sparsity(const float* wt, int64_t n, int64_t k);

// Symmetric per-output-channel int8: scale[n] = max|W^T[n][:]| / 127 (1 for an all-zero
// row), q = clamp(round(w / scale), -127, 127).
SPARQ_API void quantize_per_channel(const float* wt, int64_t n, int64_t k, int8_t* q,
                                    float* scales);

// Element counts of the arrays behind a PackedWeights, as a loader found them.
struct PackedArraySizes {
  int64_t group_ptr = 0, indices = 0, values = 0, compensation = 0, scales = 0;
};

// The element counts a well-formed matrix with this header has (a writer's sizes).
SPARQ_API PackedArraySizes expected_array_sizes(const PackedWeights& w);

// Largest K an int8 matrix may have: the int32 accumulator of 255 x 128 x K stays exact.
inline constexpr int64_t kMaxInt8K = 65536;

// The pair-safe form of an int8 matrix, owned, for kernels that add two u8 x s8 products
// in saturating int16 (spmm.h):
//  * a dense matrix with R = 4: PackedWeights::pair_safe_values and pair_fix_*; none for
//    one with so many fixes that the pair-safe kernel would be slower;
//  * a sparse matrix with R = 1 that is not a quad matrix: PackedWeights::paired_*, each
//    row's nonzeros regrouped into sign-paired groups; none for one whose weights pair so
//    badly (one sign and large) that the groups grow past 1.5x;
//  * with sparse_rows4, a sparse matrix with R = 4: PackedWeights::paired_*, each
//    block-row's input columns paired so that the pair is safe in all four rows (a column
//    with no such partner pairs with a zero); none past 1.5x the groups either;
// empty for any other matrix. Dense: a pair of weights of one sign whose
// magnitudes sum past 128 keeps the larger weight and the smaller cut to the rest of 128
// (same sign); the cut-off part goes to that row's fix for the quad. A pair of opposite
// signs never saturates (|x0 a + x1 b| <= 255 max(|a|, |b|)) and is never cut.
struct SPARQ_API PairSafeWeights {
  AlignedBuffer values, fix_ptr, fix_quad, fix_values;    // dense, R = 4
  AlignedBuffer paired_ptr, paired_index, paired_values;  // sparse, R = 1
  bool empty() const { return values.size() == 0 && paired_ptr.size() == 0; }
  std::size_t bytes() const {
    return values.size() + fix_ptr.size() + fix_quad.size() + fix_values.size() +
           paired_ptr.size() + paired_index.size() + paired_values.size();
  }
  // Points w's pair-safe fields at these arrays (none when empty).
  void attach(PackedWeights* w) const;
};
SPARQ_API PairSafeWeights pair_safe_of(const PackedWeights& w, bool sparse_rows4 = true);

// Owning packed weights in the kernels' layout (see spmm.h). Rows per block-row are 4
// when the block shape's `out` is a multiple of 4, else 1.
class SPARQ_API PackedMatrix {
 public:
  PackedMatrix() = default;
  PackedMatrix(PackedMatrix&&) noexcept = default;
  PackedMatrix& operator=(PackedMatrix&&) noexcept = default;

  const PackedWeights& view() const { return view_; }
  BlockShape block() const { return block_; }
  // Bytes of every array the kernels read.
  std::size_t bytes() const;
  // Fraction of stored weight slots (including group padding) that are nonzero.
  double stored_density() const;
  // Element counts of the arrays behind view(), as validate_packed expects them.
  PackedArraySizes array_sizes() const;

  // fp32 weights W^T[N][K]. dense=true stores every weight (no indices).
  static PackedMatrix pack_f32(const float* wt, int64_t n, int64_t k, BlockShape block,
                               bool dense = false);
  // int8 weights W^T[N][K] with per-channel scales (from quantize_per_channel).
  static PackedMatrix pack_s8(const int8_t* wq, const float* scales, int64_t n, int64_t k,
                              BlockShape block, bool dense = false);
  // Adds the pair-safe form (pair_safe_of; none for other matrices) for AVX2's dense
  // GEMM and 1x1 kernel. Not done by pack: the converter writes only the stored arrays, and a
  // loaded model derives them itself where the active kernels read them (engine/model.cpp).
  void derive_pair_safe(bool sparse_rows4 = true);

 private:
  static PackedMatrix pack(WeightType type, const void* w, const float* scales, int64_t n,
                           int64_t k, BlockShape block, bool dense);
  PackedWeights view_;
  BlockShape block_;
  AlignedBuffer group_ptr_, indices_, values_, compensation_, scales_, quad_index_;
  PairSafeWeights pair_safe_;
};

// Checks a packed matrix read from untrusted bytes before any kernel touches it:
// dimensions positive and consistent, every size product free of overflow and within
// the arrays, group offsets starting at 0, non-decreasing and ending at num_groups,
// indices in [0, K) and non-decreasing within a block-row, and (int8) compensation
// equal to 128 x the row sums and scales finite and positive. Throws
// Error(Status::kFormatError) naming the first problem.
SPARQ_API void validate_packed(const PackedWeights& w, const PackedArraySizes& sizes);

// For a sparse int8 matrix with one row per block-row whose every group is one aligned
// input quad (indices 4q + j, those past K clamped to K-1 and with zero weights: the 1x4
// pattern, which the quad kernels run), the uint16 quad of each group, to be set as
// w.quad_index; otherwise an empty buffer. Reads the index and value arrays (call it
// after validate_packed on untrusted data).
SPARQ_API AlignedBuffer quad_index_of(const PackedWeights& w);

}  // namespace sparq

#endif  // SPARQ_FORMATS_BSR_H_
