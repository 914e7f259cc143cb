// fp32 SpMM on AVX2+FMA, written with xsimd: f32_bsr4x1_spmm_ukernel_4x16__avx2 and
// f32_bsr1x1_spmm_ukernel_1x64__avx2.
//
// The R = 1 kernel (1x1 and 1x4 matrices) takes 64 tokens a tile, 8 accumulators: one
// executor panel per tile, so the weights are streamed once per panel instead of twice,
// and 8 independent FMA chains instead of 4. 32-token tiles were 1.19x (1x1) and 1.31x
// (1x4) slower on BERT-base 90% fp32, 1 thread, Zen 2 (docs/performance.md, session 11);
// the sums are the same, bit for bit.
//
// Tile: R output rows x NV*8 tokens, R*NV ymm accumulators; per nonzero index NV
// loads of X and R*NV FMAs with the broadcast weight. Tokens that do not fill a tile run
// in 32-token tiles (R = 1), then one-vector tiles, the last few (fewer than 8) through scalar FMAs
// in the same order (std::fma is one vfmadd231ss here) and a partial vector epilogue: a token gets
// the same arithmetic wherever its tile starts, and nothing past m_end is read. (Not vmaskmovps:
// QEMU's emulation faults on the masked lanes past a buffer's end.)
#include <algorithm>
#include <cmath>

#include <xsimd/xsimd.hpp>

#include "kernels/spmm/epilogue_xsimd.h"
#include "kernels/spmm/spmm.h"
#include "kernels/spmm/spmm_avx2.h"

namespace sparq {
namespace avx2 {
namespace {

using Arch = xsimd::fma3<xsimd::avx2>;
using B = xsimd::batch<float, Arch>;
constexpr int kLanes = static_cast<int>(B::size);

template <int R, int NV, bool kDense>
inline void f32_tile(const PackedWeights& w, const float* x, int64_t ldx, int64_t m0, int64_t br,
                     B (&acc)[R][NV]) {
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = B(0.0f);
  const float* values = static_cast<const float*>(w.values);
  const int64_t gpr = w.k;  // fp32 groups hold one index
  const int64_t g0 = kDense ? br * gpr : w.group_ptr[br];
  const int64_t g1 = kDense ? g0 + gpr : w.group_ptr[br + 1];
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t kk = kDense ? g - g0 : w.indices[g];
    const float* xr = x + kk * ldx + m0;
    B xv[NV];
    for (int j = 0; j < NV; ++j) xv[j] = B::load_unaligned(xr + kLanes * j);
    const float* wv = values + g * R;
    for (int r = 0; r < R; ++r) {
      const B wb(wv[r]);
      for (int j = 0; j < NV; ++j) acc[r][j] = xsimd::fma(wb, xv[j], acc[r][j]);
    }
  }
}

template <int R, int NV, class Epi>
inline void f32_tile_store(const PackedWeights& w, const float* x, int64_t ldx, int64_t m0,
                           int64_t br, const Epi& epi) {
  B acc[R][NV];
  if (w.dense) f32_tile<R, NV, true>(w, x, ldx, m0, br, acc);
  else f32_tile<R, NV, false>(w, x, ldx, m0, br, acc);
  const int64_t rows = std::min<int64_t>(R, w.n - br * R);
  if (epi.inlined() && R == 1) {  // one row: no scales to share
    for (int j = 0; j < NV; ++j) {
      const int64_t m = m0 + kLanes * j;
      epi.store(br, m, acc[0][j], epi.token_scales(m));
    }
    return;
  }
  if (epi.inlined()) {  // the token scales loaded once for the R rows
    B ts[NV];
    for (int j = 0; j < NV; ++j) ts[j] = epi.token_scales(m0 + kLanes * j);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      for (int j = 0; j < NV; ++j) epi.store(br * R + r, m0 + kLanes * j, acc[r][j], ts[j]);
    }
    return;
  }
  alignas(32) float stage[R][NV * kLanes];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    if (r >= rows) break;
    for (int j = 0; j < NV; ++j) acc[r][j].store_aligned(stage[r] + kLanes * j);
  }
  epi.rows(br * R, rows, m0, NV * kLanes, stage[0], NV * kLanes);
}

// Tokens [m0, m0 + count), count < kLanes: lane by lane what f32_tile computes.
template <int R>
void f32_tail_store(const PackedWeights& w, const float* x, int64_t ldx, int64_t m0, int64_t count,
                    int64_t br, const Epilogue& ep) {
  alignas(32) float acc[R][kLanes] = {};
  const float* values = static_cast<const float*>(w.values);
  const int64_t g0 = w.dense ? br * w.k : w.group_ptr[br];
  const int64_t g1 = w.dense ? g0 + w.k : w.group_ptr[br + 1];
  for (int64_t g = g0; g < g1; ++g) {
    const float* xr = x + (w.dense ? g - g0 : w.indices[g]) * ldx + m0;
    const float* wv = values + g * R;
    for (int r = 0; r < R; ++r)
      for (int64_t i = 0; i < count; ++i) acc[r][i] = std::fma(wv[r], xr[i], acc[r][i]);
  }
  for (int r = 0; r < R; ++r) {
    const int64_t n = br * R + r;
    if (n >= w.n) break;
    xsimd_epilogue_store(ep, n, m0, B::load_aligned(acc[r]), count);
  }
}

// Tiles of NV vectors, then of NV2 (when 1 < NV2 < NV), then of one vector, then the
// tail: every token's sum runs in the same order in each of them.
template <int R, int NV, int NV2 = NV>
void f32_spmm(const PackedWeights& w, const float* x, int64_t ldx, int64_t m_begin, int64_t m_end,
              int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  constexpr int64_t kTile = kLanes * NV;
  const int64_t m_full = m_begin + (m_end - m_begin) / kTile * kTile;
  int64_t m0 = m_full;
  with_xsimd_epilogue<B>(ep, [&](const auto& epi) {
    for (int64_t t0 = m_begin; t0 < m_full; t0 += kTile) {
      for (int64_t br = br_begin; br < br_end; ++br) f32_tile_store<R, NV>(w, x, ldx, t0, br, epi);
    }
    if (NV2 > 1 && NV2 < NV) {
      for (; m0 + kLanes * NV2 <= m_end; m0 += kLanes * NV2) {
        for (int64_t br = br_begin; br < br_end; ++br)
          f32_tile_store<R, NV2>(w, x, ldx, m0, br, epi);
      }
    }
    for (; m0 + kLanes <= m_end; m0 += kLanes) {
      for (int64_t br = br_begin; br < br_end; ++br) f32_tile_store<R, 1>(w, x, ldx, m0, br, epi);
    }
  });
  if (m0 < m_end) {
    for (int64_t br = br_begin; br < br_end; ++br)
      f32_tail_store<R>(w, x, ldx, m0, m_end - m0, br, ep);
  }
}

}  // namespace

void f32_bsr4x1_spmm_ukernel_4x16__avx2(const PackedWeights& w, const float* x, int64_t ldx,
                                        int64_t m_begin, int64_t m_end, int64_t br_begin,
                                        int64_t br_end, const Epilogue& ep) {
  f32_spmm<4, 2>(w, x, ldx, m_begin, m_end, br_begin, br_end, ep);
}

void f32_bsr1x1_spmm_ukernel_1x64__avx2(const PackedWeights& w, const float* x, int64_t ldx,
                                        int64_t m_begin, int64_t m_end, int64_t br_begin,
                                        int64_t br_end, const Epilogue& ep) {
  f32_spmm<1, 8, 4>(w, x, ldx, m_begin, m_end, br_begin, br_end, ep);
}

}  // namespace avx2
}  // namespace sparq
