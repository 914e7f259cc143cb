// fp32 SpMM on AVX-512F: f32_bsr4x1_spmm_ukernel_4x64__avx512f and
// f32_bsr1x1_spmm_ukernel_1x128__avx512f.
//
// Operands: packed fp32 weights (R x 1 per index, R = 4 or 1), X fp32 [K][ldx].
// Tile: R output rows x NV*16 tokens, R*NV zmm accumulators; per nonzero index, NV
// loads of X and R*NV FMAs with the broadcast weight. Token tails use masked loads
// and stores: nothing outside [m_begin, m_end) is read or written.
// Accumulation in fp32 in index order (ascending k within a block-row).
#include <immintrin.h>

#include "kernels/spmm/epilogue_avx512.h"
#include "kernels/spmm/spmm.h"
#include "kernels/spmm/spmm_avx512.h"

namespace sparq {
namespace avx512 {
namespace {

#ifndef SPARQ_PREFETCH_F32_WEIGHTS
#define SPARQ_PREFETCH_F32_WEIGHTS 2048
#endif
constexpr int64_t kPrefetch = SPARQ_PREFETCH_F32_WEIGHTS;

// One tile: block-row `br`, tokens [m0, m0 + valid); accumulators stay in registers
// from the first index to the epilogue (which is unrolled and makes no calls).
template <int R, int NV, bool kDense, bool kFull>
__attribute__((always_inline)) inline void f32_tile(const PackedWeights& w, const float* x,
                                                    int64_t ldx, int64_t m0, int64_t valid,
                                                    int64_t br, const Avx512TileEpilogue<NV>& te,
                                                    const Epilogue& ep) {
  __mmask16 masks[NV];
  for (int j = 0; j < NV; ++j) masks[j] = kFull ? __mmask16(0xFFFF) : avx512_lane_mask(valid, j);
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_setzero_ps();
  const float* values = static_cast<const float*>(w.values);
  const int64_t gpr = w.k;  // fp32 groups hold one index
  const int64_t g0 = kDense ? br * gpr : w.group_ptr[br];
  const int64_t g1 = kDense ? g0 + gpr : w.group_ptr[br + 1];
  const int32_t* idx = w.indices;
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t kk = kDense ? g - g0 : idx[g];
    const float* xr = x + kk * ldx + m0;
    __m512 xv[NV];
    for (int j = 0; j < NV; ++j) {
      xv[j] = kFull ? _mm512_loadu_ps(xr + 16 * j) : _mm512_maskz_loadu_ps(masks[j], xr + 16 * j);
    }
    const float* wv = values + g * R;
    // The weight (and index) streams are read once per tile in order; without help the
    // kernel waits on them when they come from memory (kPrefetch bytes ahead).
    if (kPrefetch > 0) {
      _mm_prefetch(reinterpret_cast<const char*>(wv) + kPrefetch, _MM_HINT_T0);
      if (!kDense) _mm_prefetch(reinterpret_cast<const char*>(idx + g) + kPrefetch, _MM_HINT_T0);
    }
    for (int r = 0; r < R; ++r) {
      const __m512 wb = _mm512_set1_ps(wv[r]);
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(wb, xv[j], acc[r][j]);
    }
  }
  alignas(64) float stage[R][16 * NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    if (br * R + r < w.n) te.row(br * R + r, acc[r], stage[r]);
  }
  if (te.staged()) {
    const int64_t rows = w.n - br * R < R ? w.n - br * R : R;
    avx512_epilogue_stage_finish(ep, br * R, rows, m0, valid, &stage[0][0], 16 * NV);
  }
}

template <int R, int NV>
void f32_spmm(const PackedWeights& w, const float* x, int64_t ldx, int64_t m_begin, int64_t m_end,
              int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  constexpr int64_t kTile = 16 * NV;
  // Token chunks, block-rows, then the chunk's tiles. Dense weights: chunks of two tiles,
  // so each weight is read from memory once per chunk and its second use comes from L1
  // (dense 65% -> 77% of peak). Sparse: one tile, because two tiles double the
  // activation lines each index touches (90% sparse: 0.41 -> 0.51 ms with two).
  const int64_t kChunk = w.dense ? 2 * kTile : kTile;
  Avx512TileEpilogue<NV> te(ep);
  for (int64_t c0 = m_begin; c0 < m_end; c0 += kChunk) {
    const int64_t c1 = m_end - c0 < kChunk ? m_end : c0 + kChunk;
    if (!w.dense) avx512_prefetch_panel_l2(x + c0, w.k, ldx * 4, (c1 - c0) * 4);
    for (int64_t br = br_begin; br < br_end; ++br) {
      for (int64_t m0 = c0; m0 < c1; m0 += kTile) {
        const int64_t valid = c1 - m0 < kTile ? c1 - m0 : kTile;
        te.begin_tile(m0, valid);
        if (w.dense) {
          if (valid == kTile) f32_tile<R, NV, true, true>(w, x, ldx, m0, valid, br, te, ep);
          else f32_tile<R, NV, true, false>(w, x, ldx, m0, valid, br, te, ep);
        } else {
          if (valid == kTile) f32_tile<R, NV, false, true>(w, x, ldx, m0, valid, br, te, ep);
          else f32_tile<R, NV, false, false>(w, x, ldx, m0, valid, br, te, ep);
        }
      }
    }
  }
}

}  // namespace

void f32_bsr4x1_spmm_ukernel_4x64__avx512f(const PackedWeights& w, const float* x, int64_t ldx,
                                           int64_t m_begin, int64_t m_end, int64_t br_begin,
                                           int64_t br_end, const Epilogue& ep) {
  f32_spmm<4, 4>(w, x, ldx, m_begin, m_end, br_begin, br_end, ep);
}

void f32_bsr1x1_spmm_ukernel_1x128__avx512f(const PackedWeights& w, const float* x, int64_t ldx,
                                            int64_t m_begin, int64_t m_end, int64_t br_begin,
                                            int64_t br_end, const Epilogue& ep) {
  // 128-token tiles where the range has them, 64-token tiles for the rest: the planned
  // executor calls with one 64-token panel, which a 128-token tile ran at half its lanes
  // (kernel-bench M 64 took as long as M 128). The lanes are independent, so the split
  // leaves every output bit-identical.
  const int64_t m8 = m_begin + (m_end - m_begin) / 128 * 128;
  if (m8 > m_begin) f32_spmm<1, 8>(w, x, ldx, m_begin, m8, br_begin, br_end, ep);
  if (m8 < m_end) f32_spmm<1, 4>(w, x, ldx, m8, m_end, br_begin, br_end, ep);
}

}  // namespace avx512
}  // namespace sparq
