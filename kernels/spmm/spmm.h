// Sparse-weight x dense-activation matmul (SpMM) and the dense GEMM that shares it.
//
// Orientation (DESIGN.md): the weight is the left operand,
//     Y[N, M] = W^T[N, K] . X[K, M]
// with N output channels, K input channels and M tokens. X and Y are feature-major:
// row k of X holds every token's value of feature k, contiguous, with a row stride
// (`ldx`, in elements). Vector lanes run along tokens, so a weight is broadcast and
// multiplied against a contiguous run of tokens; no output gather is needed.
//
// Packed weights (see docs/bsr-format.md for the exact byte layout):
//   * rows are grouped into block-rows of R = rows_per_block rows (4 for the 4x1
//     block shape, 1 for 1x4 and 1x1); the last block-row is zero-padded past N;
//   * each block-row lists its groups; a group holds G = group input indices (4 for
//     int8, so one row of a group is one 32-bit VNNI operand; 1 for fp32) and the
//     R x G weights at those indices, row-major within the group;
//   * a short int8 group is padded with zero weights and a repeat of its last index,
//     so every index is a valid row of X;
//   * `dense` matrices store no indices: group g of every block-row covers inputs
//     [g*G, g*G+G) clamped to K-1, with zero weights past K.
//
// int8: X is u8 with zero point 128 (x_u8 = x_q + 128 for symmetric x_q); W is s8,
// symmetric per output channel. acc = sum_k w*x_u8, so the product of the symmetric
// values is acc - 128 * sum_k w = acc - compensation[n], precomputed at pack time.
#ifndef SPARQ_KERNELS_SPMM_SPMM_H_
#define SPARQ_KERNELS_SPMM_SPMM_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/common/isa.h"
#include "sparq/export.h"

namespace sparq {

enum class WeightType : uint8_t { kF32 = 0, kS8 = 1 };

// A non-owning view of packed weights. Every pointer is 64-byte aligned when produced
// by formats/bsr (not required by the kernels).
struct PackedWeights {
  WeightType type = WeightType::kF32;
  int32_t n = 0;               // output channels (rows of W^T)
  int32_t k = 0;               // input channels
  int32_t rows_per_block = 4;  // R: 4 or 1
  int32_t group = 1;           // G: 4 for kS8, 1 for kF32
  int32_t num_block_rows = 0;  // ceil(n / R)
  bool dense = false;          // no index arrays; groups cover [0, K) in order
  // Set for a quad matrix: int8, R = 1 and every group one aligned input quad (indices
  // 4q, 4q+1, 4q+2, 4q+3, those past K clamped to K-1 with zero weights), the 1x4
  // pattern. quad_index[g] = q (K / 4 <= 16384 fits). Derived from the index array
  // (quad_index_of in formats/bsr.h), never stored: the quad kernels read 6 bytes per
  // group instead of 20.
  const uint16_t* quad_index = nullptr;  // [num_groups]
  // Set for a dense int8 matrix with R = 4 on kernels whose u8 x s8 dot product adds two
  // products in saturating int16 (AVX2's vpmaddubsw): the matrix as pair-safe groups,
  // every weight pair (inputs 2p, 2p + 1) with its positive and its negative parts each
  // within 128, which no u8 input can saturate (255 x 128 < 2^15), as two parts that sum
  // to the weights: pair_safe_values, the dense values (same layout) with each pair of one
  // sign past 128 cut to fit (a pair of opposite signs cannot saturate and stays whole),
  // and per row n (block-row n / 4, row n % 4) fixes [pair_fix_ptr[n], pair_fix_ptr[n + 1])
  // in quad order, each an input quad pair_fix_quad[f] and the 4 weights the cuts left out
  // of that row's quad (at most one nonzero per pair, of magnitude <= 128). Derived
  // (pair_safe_of in formats/bsr.h), never stored.
  const int8_t* pair_safe_values = nullptr;  // [num_block_rows][K / 4 rounded up][4][4]
  const int32_t* pair_fix_ptr = nullptr;     // [num_block_rows * 4 + 1]
  const int32_t* pair_fix_quad = nullptr;    // [pair_fix_ptr[num_block_rows * 4]]
  const int8_t* pair_fix_values = nullptr;   // [pair_fix_ptr[num_block_rows * 4]][4]
  // Set for a sparse int8 matrix with R = 1 that is not a quad matrix (the 1x1 pattern),
  // or with R = 4, on the same kernels: each block-row's nonzeros regrouped into
  // sign-paired groups of 4 inputs, block-rows [paired_ptr[br], paired_ptr[br + 1]) of
  // paired_index (4 inputs a group) and paired_values (their R x 4 weights, [row][4]),
  // where in every row each pair (slots 0-1, 2-3) is of opposite signs, or of one sign
  // with |w0| + |w1| <= 128, or has a zero: no u8 input can saturate its int16 pair sum.
  // The same nonzeros as the stored groups, so the same exact int32 sums. Zero slots repeat
  // an input of their group. Derived (pair_safe_of in formats/bsr.h), never stored.
  const int32_t* paired_ptr = nullptr;     // [num_block_rows + 1]
  const uint16_t* paired_index = nullptr;  // [paired_ptr[num_block_rows]][4] (K <= 65536)
  const int8_t* paired_values = nullptr;   // [paired_ptr[num_block_rows]][R][4]
  int64_t num_groups = 0;                  // total groups over all block-rows
  const int32_t* group_ptr = nullptr;      // [num_block_rows + 1]; null when dense
  const int32_t* indices = nullptr;        // [num_groups * G]; null when dense
  const void* values = nullptr;           // kF32: float[num_groups][R]; kS8: int8[num_groups][R][G]
  const int32_t* compensation = nullptr;  // kS8: [num_block_rows * R], 128 * row sum of W
  const float* scales = nullptr;          // kS8: [num_block_rows * R], per-channel scale

  int64_t groups_per_dense_row() const { return (static_cast<int64_t>(k) + group - 1) / group; }
  int64_t group_begin(int64_t br) const {
    return dense ? br * groups_per_dense_row() : group_ptr[br];
  }
  int64_t group_end(int64_t br) const {
    return dense ? (br + 1) * groups_per_dense_row() : group_ptr[br + 1];
  }
};

// kGeluSigmoid is x * sigmoid(1.702 x) (QuickGELU); each form keeps its own formula (they
// differ by up to about 2e-2 from each other, the tanh form from erf by about 5e-4).
enum class Activation : uint8_t { kNone = 0, kGeluErf = 1, kGeluTanh = 2, kGeluSigmoid = 3 };

// The names the .sparq graph stores in SparqMatMul's `activation` attribute.
inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::kNone: return "none";
    case Activation::kGeluErf: return "gelu_erf";
    case Activation::kGeluTanh: return "gelu_tanh";
    case Activation::kGeluSigmoid: return "gelu_sigmoid";
  }
  return "none";
}
// False for a name none of the above spells (an unknown stored activation is refused).
inline bool activation_from_name(const std::string& s, Activation* out) {
  for (Activation a : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kGeluSigmoid}) {
    if (s == activation_name(a)) {
      *out = a;
      return true;
    }
  }
  return false;
}

// What happens to each accumulator before it is stored:
//   y = acc'                                (acc' = acc for fp32; acc - compensation[n]
//                                            converted to float for int8)
//   y *= channel_scale[n]   if set          (int8: the weight's per-channel scale)
//   y *= token_scale[m]     if set          (int8: the activation's per-token scale)
//   y += bias[n]            if set
//   y  = gelu(y)            per activation   (erf form or tanh form)
//   y += residual[n*ld_residual + m]  if set
//   out_f32[n*ld_out + m] = y,  or
//   out_u8[n*ld_out + m]  = clamp(nearbyint(y * out_inv_scale) + out_zero_point, 0, 255)
struct Epilogue {
  const float* channel_scale = nullptr;
  const float* token_scale = nullptr;
  const float* bias = nullptr;
  Activation activation = Activation::kNone;
  const float* residual = nullptr;
  int64_t ld_residual = 0;
  float* out_f32 = nullptr;
  uint8_t* out_u8 = nullptr;
  int64_t ld_out = 0;
  float out_inv_scale = 1.0f;
  int32_t out_zero_point = 0;
};

// A kernel computes block-rows [br_begin, br_end) for tokens [m_begin, m_end). It is
// single-threaded, never fails and touches only those rows and tokens of the output.
// X rows are read only at tokens [m_begin, m_end) (no over-read past m_end).
using F32SpmmFn = void (*)(const PackedWeights& w, const float* x, int64_t ldx, int64_t m_begin,
                           int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep);
using U8S8SpmmFn = void (*)(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m_begin,
                            int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep);

// Repacks u8 X [K][ldx] (tokens [0, m)) into quads of inputs in VNNI order for a packed
// dense GEMM and the 1x4 kernels: byte (q * ldq + t) * 4 + j = X[4q + j][t], zero past K
// and at tokens [m, ldq). ldq is a multiple of 64.
using U8PackQuadsFn = void (*)(const uint8_t* x, int64_t ldx, int64_t k, int64_t m, uint8_t* xq,
                               int64_t ldq);

// One ISA's kernels. Entries are indexed by rows_per_block (4 or 1).
struct SpmmKernels {
  Isa isa = Isa::kGeneric;
  F32SpmmFn f32_r4 = nullptr;
  F32SpmmFn f32_r1 = nullptr;
  U8S8SpmmFn u8s8_r4 = nullptr;
  U8S8SpmmFn u8s8_r1 = nullptr;
  // Optional dense int8 GEMM on activations repacked by u8_pack_quads (ldq = padded
  // token count, a multiple of 64); used for dense packed weights with R = 4.
  U8PackQuadsFn u8_pack_quads = nullptr;
  U8S8SpmmFn u8s8_gemm_r4 = nullptr;
  const char* u8s8_gemm_r4_name = "";
  // u8s8_gemm_r4 reads PackedWeights::pair_safe_values (and runs only where they are set).
  bool u8s8_gemm_r4_pair_safe = false;
  // Else, where set: u8s8_gemm_r4 runs a faster kernel on pair_safe_values where they are
  // set (a widening one otherwise), and its name then.
  bool u8s8_gemm_r4_paired = false;
  const char* u8s8_gemm_r4_paired_name = "";
  // Optional sparse int8 kernel for quad matrices (PackedWeights::quad_index, the 1x4
  // pattern) on activations in quad order (u8_pack_quads; ldx = ldq, a multiple of 64,
  // tokens up to the next multiple of 64 readable). One 32-bit weight broadcast and one
  // contiguous activation load per dot product: no interleave.
  U8S8SpmmFn u8s8_quads_r1 = nullptr;
  const char* u8s8_quads_r1_name = "";
  const char* f32_r4_name = "";
  const char* f32_r1_name = "";
  const char* u8s8_r4_name = "";
  const char* u8s8_r1_name = "";
  // u8s8_r1 runs a faster kernel on PackedWeights::paired_* where they are set (the
  // widening one otherwise), and its name then.
  bool u8s8_r1_sign_paired = false;
  const char* u8s8_r1_paired_name = "";
  // The same for u8s8_r4 (4-row matrices' paired form, pair_safe_of's sparse_rows4).
  bool u8s8_r4_sign_paired = false;
  const char* u8s8_r4_paired_name = "";

  // The packed dense GEMM for w, or null: w is not dense int8 with R = 4, or the GEMM
  // needs pair-safe weights that w lacks.
  U8S8SpmmFn gemm_r4_for(const PackedWeights& w) const {
    if (!w.dense || w.rows_per_block != 4 || w.type != WeightType::kS8) return nullptr;
    if (u8s8_gemm_r4_pair_safe && w.pair_safe_values == nullptr) return nullptr;
    return u8s8_gemm_r4;
  }
  // Whether some kernel here reads a matrix's pair-safe form (pair_safe_of), which a loaded
  // model then derives.
  bool reads_pair_safe() const {
    return u8s8_gemm_r4_pair_safe || u8s8_r1_sign_paired || u8s8_r4_sign_paired ||
           u8s8_gemm_r4_paired;
  }
  // The name of the kernel gemm_r4_for(w) runs.
  const char* gemm_r4_name(const PackedWeights& w) const {
    return u8s8_gemm_r4_paired && w.pair_safe_values != nullptr ? u8s8_gemm_r4_paired_name
                                                                : u8s8_gemm_r4_name;
  }
  F32SpmmFn f32(int rows_per_block) const { return rows_per_block == 4 ? f32_r4 : f32_r1; }
  U8S8SpmmFn u8s8(int rows_per_block) const { return rows_per_block == 4 ? u8s8_r4 : u8s8_r1; }
  const char* f32_name(int r) const { return r == 4 ? f32_r4_name : f32_r1_name; }
  const char* u8s8_name(int r) const { return r == 4 ? u8s8_r4_name : u8s8_r1_name; }
  // The name of the kernel u8s8(R) runs on w.
  const char* u8s8_name(const PackedWeights& w) const {
    if (w.rows_per_block == 4) {
      return u8s8_r4_sign_paired && w.paired_ptr != nullptr ? u8s8_r4_paired_name : u8s8_r4_name;
    }
    return u8s8_r1_sign_paired && w.paired_ptr != nullptr ? u8s8_r1_paired_name : u8s8_r1_name;
  }
};

// The kernels of one ISA (must be supported here: see isa_supported()).
SPARQ_API const SpmmKernels& spmm_kernels(Isa isa);
// The kernels for active_isa(), chosen once.
SPARQ_API const SpmmKernels& spmm_kernels();

// Per-ISA tables, defined in the per-ISA translation units.
namespace generic {
const SpmmKernels& kernels();
}
namespace avx2 {
const SpmmKernels& kernels();
}
namespace avx512 {
const SpmmKernels& kernels();
}
namespace avx512vnni {
const SpmmKernels& kernels();
}

}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_SPMM_H_
