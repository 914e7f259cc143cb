// Plain-loop SpMM over the packed layout, for any block-row size and group size. It is
// the generic dispatch path and the tail path (tokens that do not fill a vector tile)
// of the AVX2 kernels. Included into each translation unit that needs it, inside that
// unit's own namespace.
//
// Accumulation: fp32 in float, index order within a block-row; int8 in exact int32.
#ifndef SPARQ_KERNELS_SPMM_SPMM_SCALAR_IMPL_H_
#define SPARQ_KERNELS_SPMM_SPMM_SCALAR_IMPL_H_

#include <cstdint>

#include "kernels/spmm/epilogue_scalar.h"
#include "kernels/spmm/spmm.h"

namespace sparq {
namespace {

// Index of input `j` of group `g` in block-row `br`.
static inline int64_t scalar_group_index(const PackedWeights& w, int64_t g, int64_t j) {
  if (!w.dense) return w.indices[g * w.group + j];
  const int64_t first = (g % w.groups_per_dense_row()) * w.group;
  const int64_t kk = first + j;
  return kk < w.k ? kk : w.k - 1;
}

// The exact int32 sum of row r of block-row br for token m (u8 X [K][ldx], s8 weights);
// also the AVX2 kernels' token tails.
[[maybe_unused]] static inline int32_t scalar_u8s8_dot(const PackedWeights& w, const uint8_t* x,
                                                       int64_t ldx, int64_t br, int64_t r,
                                                       int64_t m) {
  const int64_t R = w.rows_per_block, G = w.group;
  const int8_t* values = static_cast<const int8_t*>(w.values);
  int32_t acc = 0;
  for (int64_t g = w.group_begin(br); g < w.group_end(br); ++g) {
    for (int64_t j = 0; j < G; ++j) {
      acc +=
          int32_t{values[(g * R + r) * G + j]} * int32_t{x[scalar_group_index(w, g, j) * ldx + m]};
    }
  }
  return acc;
}

// The same for row n of a quad matrix on activations in quad order.
[[maybe_unused]] static inline int32_t scalar_quads_dot(const PackedWeights& w, const uint8_t* xq,
                                                        int64_t ldq, int64_t n, int64_t m) {
  const int8_t* values = static_cast<const int8_t*>(w.values);
  int32_t acc = 0;
  for (int64_t g = w.group_ptr[n]; g < w.group_ptr[n + 1]; ++g) {
    const uint8_t* a = xq + (int64_t{w.quad_index[g]} * ldq + m) * 4;
    for (int64_t j = 0; j < 4; ++j) acc += int32_t{values[g * 4 + j]} * int32_t{a[j]};
  }
  return acc;
}

[[maybe_unused]] static void scalar_f32_spmm(const PackedWeights& w, const float* x, int64_t ldx,
                                             int64_t m_begin, int64_t m_end, int64_t br_begin,
                                             int64_t br_end, const Epilogue& ep) {
  const int64_t R = w.rows_per_block, G = w.group;
  const float* values = static_cast<const float*>(w.values);
  for (int64_t br = br_begin; br < br_end; ++br) {
    const int64_t g0 = w.group_begin(br), g1 = w.group_end(br);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = br * R + r;
      if (n >= w.n) break;
      for (int64_t m = m_begin; m < m_end; ++m) {
        float acc = 0.0f;
        for (int64_t g = g0; g < g1; ++g) {
          for (int64_t j = 0; j < G; ++j) {
            acc += values[(g * R + r) * G + j] * x[scalar_group_index(w, g, j) * ldx + m];
          }
        }
        scalar_epilogue_store(ep, n, m, acc);
      }
    }
  }
}

[[maybe_unused]] static void scalar_u8s8_spmm(const PackedWeights& w, const uint8_t* x, int64_t ldx,
                                              int64_t m_begin, int64_t m_end, int64_t br_begin,
                                              int64_t br_end, const Epilogue& ep) {
  const int64_t R = w.rows_per_block;
  for (int64_t br = br_begin; br < br_end; ++br) {
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = br * R + r;
      if (n >= w.n) break;
      for (int64_t m = m_begin; m < m_end; ++m) {
        const int32_t acc = scalar_u8s8_dot(w, x, ldx, br, r, m);
        scalar_epilogue_store(ep, n, m, static_cast<float>(acc - w.compensation[n]));
      }
    }
  }
}

// Quad order (spmm.h, U8PackQuadsFn): byte (q * ldq + t) * 4 + j = X[4q + j][t], zero
// past K and at tokens [m, ldq).
[[maybe_unused]] static void scalar_u8_pack_quads(const uint8_t* x, int64_t ldx, int64_t k,
                                                  int64_t m, uint8_t* xq, int64_t ldq) {
  for (int64_t q = 0; q < (k + 3) / 4; ++q) {
    for (int64_t t = 0; t < ldq; ++t) {
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t kk = 4 * q + j;
        xq[(q * ldq + t) * 4 + j] = kk < k && t < m ? x[kk * ldx + t] : uint8_t{0};
      }
    }
  }
}

// A quad matrix (PackedWeights::quad_index) on activations in quad order.
[[maybe_unused]] static void scalar_u8s8_quads_spmm(const PackedWeights& w, const uint8_t* xq,
                                                    int64_t ldq, int64_t m_begin, int64_t m_end,
                                                    int64_t br_begin, int64_t br_end,
                                                    const Epilogue& ep) {
  for (int64_t n = br_begin; n < br_end; ++n) {
    for (int64_t m = m_begin; m < m_end; ++m) {
      const int32_t acc = scalar_quads_dot(w, xq, ldq, n, m);
      scalar_epilogue_store(ep, n, m, static_cast<float>(acc - w.compensation[n]));
    }
  }
}

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_SPMM_SCALAR_IMPL_H_
