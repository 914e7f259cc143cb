// u8 x s8 SpMM on AVX-512, shared by the AVX512-VNNI unit (vpdpbusd) and the
// AVX-512BW unit (the same dot product widened to 16 bits with vpmaddwd, which never
// saturates). Included into one translation unit per ISA; everything is internal.
//
// Operands: packed s8 weights, groups of G = 4 input indices; per group R dwords (one
// per output row, 4 s8 weights each). X is u8 [K][ldx] with zero point 128.
// Tile: R output rows x 64 tokens = 4*R zmm int32 accumulators.
// Per group: load the 4 X rows of its indices (64 tokens each; masked on a token tail,
// so nothing past m_end is read), interleave them into VNNI order (4 bytes of one
// token from the 4 indices in each dword) with 8 unpacks, then per row broadcast its
// dword and run 4 dot products. After the unpacks, vector j holds, in 128-bit lane L,
// tokens 16L+4j .. 16L+4j+3; the epilogue undoes that with a 4x4 transpose of lanes.
// Accumulation: exact int32 (|acc| <= K * 255 * 128 < 2^31 for K < 65793).
#ifndef SPARQ_KERNELS_SPMM_U8S8_SPMM_AVX512_IMPL_H_
#define SPARQ_KERNELS_SPMM_U8S8_SPMM_AVX512_IMPL_H_

#include <immintrin.h>

#include <cstdint>

#include "kernels/spmm/epilogue_avx512.h"
#include "kernels/spmm/spmm.h"

namespace sparq {
namespace {

// Dot-product policies: acc += sum over the 4 bytes of each dword of a_u8 * b_s8.
struct DotVnni {
  struct Prepared {
    __m512i a;
  };
  struct Weight {
    __m512i b;
  };
  static inline Prepared prepare(__m512i a) { return {a}; }
  // (An embedded {1to16} broadcast from memory in vpdpbusd measured 1.6x slower here.)
  static inline Weight weight(const int32_t* dword) {
    int32_t d;
    __builtin_memcpy(&d, dword, sizeof(d));
    return {_mm512_set1_epi32(d)};
  }
  // GCC 12 treats the accumulator of _mm512_dpbusd_epi32 as a separate input and
  // copies it around every instruction (and spills); asm ties it to the output.
  static inline __m512i dot(__m512i acc, const Prepared& a, const Weight& b) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a.a), "v"(b.b));
    return acc;
  }
};

struct DotWiden16 {
  struct Prepared {
    __m512i even, odd;  // bytes 0,2 and 1,3 of each dword, zero-extended to 16 bits
  };
  struct Weight {
    __m512i even, odd;  // bytes 0,2 and 1,3, sign-extended to 16 bits
  };
  static inline Prepared prepare(__m512i a) {
    return {_mm512_and_si512(a, _mm512_set1_epi16(0x00FF)), _mm512_srli_epi16(a, 8)};
  }
  static inline Weight weight(const int32_t* dword) {
    int32_t d;
    __builtin_memcpy(&d, dword, sizeof(d));
    const __m512i b = _mm512_set1_epi32(d);
    return {_mm512_srai_epi16(_mm512_slli_epi16(b, 8), 8), _mm512_srai_epi16(b, 8)};
  }
  static inline __m512i dot(__m512i acc, const Prepared& a, const Weight& b) {
    const __m512i lo = _mm512_madd_epi16(a.even, b.even);
    const __m512i hi = _mm512_madd_epi16(a.odd, b.odd);
    return _mm512_add_epi32(acc, _mm512_add_epi32(lo, hi));
  }
};

// For AVX-512 without VNNI on sign-paired groups (PackedWeights::paired_*):
// vpmaddubsw adds each pair of u8 x s8 products in saturating int16, which those groups
// never reach, and vpmaddwd with ones adds a token's two pairs in int32: the exact
// vpdpbusd in two instructions, with no widening of activations or weights.
struct DotPaired {
  struct Prepared {
    __m512i a;
  };
  struct Weight {
    __m512i b;
  };
  static inline Prepared prepare(__m512i a) { return {a}; }
  static inline Weight weight(const int32_t* dword) { return {DotVnni::weight(dword).b}; }
  static inline __m512i dot(__m512i acc, const Prepared& a, const Weight& b) {
    const __m512i pairs = _mm512_maddubs_epi16(a.a, b.b);
    return _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)));
  }
};

#ifndef SPARQ_PREFETCH_GROUPS
#define SPARQ_PREFETCH_GROUPS 0
#endif
constexpr int64_t kPrefetchGroups = SPARQ_PREFETCH_GROUPS;
// The weight streams (indices and values) are read once per token tile in order; when
// they come from DRAM the hardware prefetcher alone leaves the interleaving kernels
// waiting on them. Bytes ahead of the current group to prefetch, 0 = none. Measured with
// kernel-bench (cold weights, 90%, M 128, Zen 5): 0 / 512 / 1024 / 2048 bytes gave 4x1
// 4.68 / 4.92 / 5.03 / 5.00x and 1x1 2.05 / 2.22 / 2.36 / 2.43x against oneDNN at K 768,
// N 3072. The 1x4 kernel, bound by its load ports, lost 5-8% with it and has none.
#ifndef SPARQ_PREFETCH_WEIGHTS
#define SPARQ_PREFETCH_WEIGHTS 1024
#endif
constexpr int64_t kPrefetchWeights = SPARQ_PREFETCH_WEIGHTS;
#ifndef SPARQ_PREFETCH_DENSE_WEIGHTS
#define SPARQ_PREFETCH_DENSE_WEIGHTS 2048
#endif
constexpr int64_t kPrefetchDenseWeights = SPARQ_PREFETCH_DENSE_WEIGHTS;

static inline __m512i load_tokens(const uint8_t* p, bool full, __mmask64 mask) {
  return full ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(mask, p);
}

// A sparse group's 4 inputs (int32 stored, uint16 paired), with the weight streams
// prefetched kPrefetchWeights bytes ahead.
template <class Index>
__attribute__((always_inline)) inline void group_indices(const Index* idx, const int8_t* values,
                                                         int64_t& i0, int64_t& i1, int64_t& i2,
                                                         int64_t& i3) {
  if (kPrefetchWeights > 0) {
    _mm_prefetch(reinterpret_cast<const char*>(idx) + kPrefetchWeights, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(values) + kPrefetchWeights, _MM_HINT_T0);
  }
  i0 = idx[0];
  i1 = idx[1];
  i2 = idx[2];
  i3 = idx[3];
}

// The end of an int8 tile, shared by the sparse, the 1x4 and the packed dense kernels: row
// n's NV token-ordered int32 vectors minus the compensation, to float, through the epilogue.
template <int NV>
__attribute__((always_inline)) inline void int8_row_epilogue(const PackedWeights& w, int64_t n,
                                                             const __m512i (&v)[NV],
                                                             const Avx512TileEpilogue<NV>& te,
                                                             float* stage_row) {
  const __m512i comp = _mm512_set1_epi32(w.compensation[n]);
  __m512 y[NV];
  for (int q = 0; q < NV; ++q) y[q] = _mm512_cvtepi32_ps(_mm512_sub_epi32(v[q], comp));
  te.row(n, y, stage_row);
}

// With an activation, the staged rows of block-row br finish here (epilogue_avx512.h).
template <int R>
inline void int8_tile_finish(const PackedWeights& w, int64_t br, int64_t m0, int64_t valid,
                             const Avx512TileEpilogue<4>& te, const Epilogue& ep,
                             const float (&stage)[R][64]) {
  if (!te.staged()) return;
  const int64_t rows = w.n - br * R < R ? w.n - br * R : R;
  avx512_epilogue_stage_finish(ep, br * R, rows, m0, valid, &stage[0][0], 64);
}

// One tile: block-row `br`, tokens [m0, m0 + valid), accumulators in registers from
// the first group to the epilogue. kPaired (Dot = DotPaired): the block-row's sign-paired
// groups (PackedWeights::paired_*) instead of its stored ones.
template <class Dot, int R, bool kDense, bool kFull, int64_t kLd, bool kPaired = false>
__attribute__((always_inline)) inline void u8s8_tile(const PackedWeights& w, const uint8_t* x,
                                                     int64_t ldx_rt, int64_t m0, int64_t valid,
                                                     int64_t br, const Avx512TileEpilogue<4>& te,
                                                     const Epilogue& ep) {
  const __mmask64 mask = kFull ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
  // kLd > 0: the row stride is a compile-time constant (the executor's 64-token
  // panels), so each index becomes an address with a shift instead of a multiply.
  const int64_t ldx = kLd > 0 ? kLd : ldx_rt;
  __m512i acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_si512();
  static_assert(!kPaired || !kDense, "sign-paired groups: sparse matrices");
  const int8_t* values = kPaired ? w.paired_values : static_cast<const int8_t*>(w.values);
  const int64_t gpr = (static_cast<int64_t>(w.k) + 3) / 4;
  const int64_t g0 = kDense ? br * gpr : kPaired ? w.paired_ptr[br] : w.group_ptr[br];
  const int64_t g1 = kDense ? g0 + gpr : kPaired ? w.paired_ptr[br + 1] : w.group_ptr[br + 1];
  const int64_t k_last = w.k - 1;
  const uint8_t* xm = x + m0;
  for (int64_t g = g0; g < g1; ++g) {
    int64_t i0, i1, i2, i3;
    if (kPaired) {
      group_indices(w.paired_index + g * 4, values + g * R * 4, i0, i1, i2, i3);
    } else if (kDense) {
      const int64_t first = (g - g0) * 4;
      i0 = first;
      i1 = first + 1 <= k_last ? first + 1 : k_last;
      i2 = first + 2 <= k_last ? first + 2 : k_last;
      i3 = first + 3 <= k_last ? first + 3 : k_last;
    } else {
      const int32_t* idx = w.indices + g * 4;
      group_indices(idx, values + g * R * 4, i0, i1, i2, i3);
      // The rows of a later group are random L2 lines: start them early.
      if (kPrefetchGroups > 0 && g + kPrefetchGroups < g1) {
        const int32_t* pf = idx + 4 * kPrefetchGroups;
        _mm_prefetch(reinterpret_cast<const char*>(xm + int64_t{pf[0]} * ldx), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(xm + int64_t{pf[1]} * ldx), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(xm + int64_t{pf[2]} * ldx), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(xm + int64_t{pf[3]} * ldx), _MM_HINT_T0);
      }
    }
    const __m512i a0 = load_tokens(xm + i0 * ldx, kFull, mask);
    const __m512i a1 = load_tokens(xm + i1 * ldx, kFull, mask);
    const __m512i a2 = load_tokens(xm + i2 * ldx, kFull, mask);
    const __m512i a3 = load_tokens(xm + i3 * ldx, kFull, mask);
    const __m512i t0 = _mm512_unpacklo_epi8(a0, a1);
    const __m512i t1 = _mm512_unpackhi_epi8(a0, a1);
    const __m512i t2 = _mm512_unpacklo_epi8(a2, a3);
    const __m512i t3 = _mm512_unpackhi_epi8(a2, a3);
    const typename Dot::Prepared v[4] = {
        Dot::prepare(_mm512_unpacklo_epi16(t0, t2)), Dot::prepare(_mm512_unpackhi_epi16(t0, t2)),
        Dot::prepare(_mm512_unpacklo_epi16(t1, t3)), Dot::prepare(_mm512_unpackhi_epi16(t1, t3))};
    const int32_t* wd = reinterpret_cast<const int32_t*>(values + g * R * 4);
    for (int r = 0; r < R; ++r) {
      const typename Dot::Weight b = Dot::weight(wd + r);
      for (int j = 0; j < 4; ++j) acc[r][j] = Dot::dot(acc[r][j], v[j], b);
    }
  }
  // Fully unrolled, with no early exit: a runtime index into acc[][] would send all
  // sixteen accumulators through the stack.
  alignas(64) float stage[R][64];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const int64_t n = br * R + r;
    if (n >= w.n) continue;
    // 4x4 transpose of 128-bit lanes: out[q] = lane q of acc[r][0..3] = tokens 16q..16q+15.
    const __m512i u0 = _mm512_shuffle_i32x4(acc[r][0], acc[r][1], 0x44);
    const __m512i u1 = _mm512_shuffle_i32x4(acc[r][0], acc[r][1], 0xEE);
    const __m512i u2 = _mm512_shuffle_i32x4(acc[r][2], acc[r][3], 0x44);
    const __m512i u3 = _mm512_shuffle_i32x4(acc[r][2], acc[r][3], 0xEE);
    const __m512i out[4] = {_mm512_shuffle_i32x4(u0, u2, 0x88), _mm512_shuffle_i32x4(u0, u2, 0xDD),
                            _mm512_shuffle_i32x4(u1, u3, 0x88), _mm512_shuffle_i32x4(u1, u3, 0xDD)};
    int8_row_epilogue(w, n, out, te, stage[r]);
  }
  int8_tile_finish<R>(w, br, m0, valid, te, ep, stage);
}

template <class Dot, int R>
void u8s8_spmm(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m_begin,
               int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  Avx512TileEpilogue<4> te(ep);
  // Tiles outside block-rows: the 64-token panel (K x 64 bytes) is what stays cached.
  // (Two tiles per block-row pass, which reads each weight once per two tiles, measured
  // 0.16 -> 0.24 ms at 90% sparsity: each index then touches two activation lines.)
  for (int64_t m0 = m_begin; m0 < m_end; m0 += 64) {
    const int64_t valid = m_end - m0 < 64 ? m_end - m0 : 64;
    te.begin_tile(m0, valid);
    if (!w.dense) avx512_prefetch_panel_l2(x + m0, w.k, ldx, valid);
    // One loop per variant so each inlines its tile without a branch per block-row.
    if (w.dense && valid == 64) {
      for (int64_t br = br_begin; br < br_end; ++br)
        u8s8_tile<Dot, R, true, true, 0>(w, x, ldx, m0, valid, br, te, ep);
    } else if (w.dense) {
      for (int64_t br = br_begin; br < br_end; ++br)
        u8s8_tile<Dot, R, true, false, 0>(w, x, ldx, m0, valid, br, te, ep);
    } else if (valid == 64 && ldx == 64) {
      for (int64_t br = br_begin; br < br_end; ++br)
        u8s8_tile<Dot, R, false, true, 64>(w, x, ldx, m0, valid, br, te, ep);
    } else if (valid == 64) {
      for (int64_t br = br_begin; br < br_end; ++br)
        u8s8_tile<Dot, R, false, true, 0>(w, x, ldx, m0, valid, br, te, ep);
    } else if (ldx == 64) {
      for (int64_t br = br_begin; br < br_end; ++br)
        u8s8_tile<Dot, R, false, false, 64>(w, x, ldx, m0, valid, br, te, ep);
    } else {
      for (int64_t br = br_begin; br < br_end; ++br)
        u8s8_tile<Dot, R, false, false, 0>(w, x, ldx, m0, valid, br, te, ep);
    }
  }
}

// The sparse kernels on sign-paired groups (DotPaired; u8s8_bsr{4x1,1x1}_spmm_ukernel_
// {4,1}x64c4p__<isa>), where the matrix has them, else u8s8_spmm<Dot, R>: the same tiles and
// panel sweep.
template <class Dot, int R>
void u8s8_spmm_paired(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m_begin,
                      int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  if (w.paired_ptr == nullptr) {
    u8s8_spmm<Dot, R>(w, x, ldx, m_begin, m_end, br_begin, br_end, ep);
    return;
  }
  Avx512TileEpilogue<4> te(ep);
  for (int64_t m0 = m_begin; m0 < m_end; m0 += 64) {
    const int64_t valid = m_end - m0 < 64 ? m_end - m0 : 64;
    te.begin_tile(m0, valid);
    avx512_prefetch_panel_l2(x + m0, w.k, ldx, valid);
    if (valid == 64 && ldx == 64) {
      for (int64_t br = br_begin; br < br_end; ++br)
        u8s8_tile<DotPaired, R, false, true, 64, true>(w, x, ldx, m0, valid, br, te, ep);
    } else if (valid == 64) {
      for (int64_t br = br_begin; br < br_end; ++br)
        u8s8_tile<DotPaired, R, false, true, 0, true>(w, x, ldx, m0, valid, br, te, ep);
    } else {
      for (int64_t br = br_begin; br < br_end; ++br)
        u8s8_tile<DotPaired, R, false, false, 0, true>(w, x, ldx, m0, valid, br, te, ep);
    }
  }
}

// Dense u8 x s8 GEMM on pre-interleaved activations: u8s8_gemm_ukernel_4x64c4__<isa>.
// Xq is X repacked by pack_activations_vnni: quad q (inputs 4q..4q+3), token t at byte
// offset (q * ldq + t) * 4, tokens padded to a multiple of 64 and inputs to a multiple
// of 4 with zeros. Each group needs 4 contiguous loads, 4 broadcasts and 16 vpdpbusd: no
// interleave, and the accumulators are already in token order.
// One tile of the packed dense GEMM: block-row `br`, tokens [m0, m0 + valid).
template <class Dot, int R>
__attribute__((always_inline)) inline void gemm_tile(const PackedWeights& w, const uint8_t* xq,
                                                     int64_t ldq, int64_t m0, int64_t valid,
                                                     int64_t br, const Avx512TileEpilogue<4>& te,
                                                     const Epilogue& ep) {
  const int8_t* values = static_cast<const int8_t*>(w.values);
  const int64_t gpr = (static_cast<int64_t>(w.k) + 3) / 4;
  __m512i acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_si512();
  const uint8_t* xp = xq + m0 * 4;
  for (int64_t q = 0; q < gpr; ++q, xp += ldq * 4) {
    const typename Dot::Prepared v[4] = {
        Dot::prepare(_mm512_loadu_si512(xp)), Dot::prepare(_mm512_loadu_si512(xp + 64)),
        Dot::prepare(_mm512_loadu_si512(xp + 128)), Dot::prepare(_mm512_loadu_si512(xp + 192))};
    const int32_t* wd = reinterpret_cast<const int32_t*>(values + (br * gpr + q) * R * 4);
    // The weights stream from memory once per tile: the same prefetch as the sparse
    // kernels' weight streams (kPrefetchDenseWeights bytes ahead).
    if (kPrefetchDenseWeights > 0)
      _mm_prefetch(reinterpret_cast<const char*>(wd) + kPrefetchDenseWeights, _MM_HINT_T0);
    for (int r = 0; r < R; ++r) {
      const typename Dot::Weight b = Dot::weight(wd + r);
      for (int j = 0; j < 4; ++j) acc[r][j] = Dot::dot(acc[r][j], v[j], b);
    }
  }
  alignas(64) float stage[R][64];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const int64_t n = br * R + r;
    if (n >= w.n) continue;
    int8_row_epilogue(w, n, acc[r], te, stage[r]);
  }
  int8_tile_finish<R>(w, br, m0, valid, te, ep, stage);
}

template <class Dot, int R>
void u8s8_gemm_packed(const PackedWeights& w, const uint8_t* xq, int64_t ldq, int64_t m_begin,
                      int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  Avx512TileEpilogue<4> te(ep);
  // Tiles outside block-rows. (Two tiles per block-row pass, reading each weight once
  // per two tiles, measured 1.02 -> 1.21 ms here, A/B in one session.)
  for (int64_t m0 = m_begin; m0 < m_end; m0 += 64) {
    const int64_t valid = m_end - m0 < 64 ? m_end - m0 : 64;
    te.begin_tile(m0, valid);
    for (int64_t br = br_begin; br < br_end; ++br)
      gemm_tile<Dot, R>(w, xq, ldq, m0, valid, br, te, ep);
  }
}

// The packed dense GEMM on the matrix's pair-safe form (PackedWeights::pair_safe_values and
// pair_fix_*, R = 4) with DotPaired, u8s8_gemm_ukernel_4x64c4p__<isa>: the quads of the cut
// values, then per row its fixes (the parts the cuts left out, each one quad of one row);
// acc is the exact int32 sum, as gemm_tile's.
__attribute__((always_inline)) inline void gemm_tile_paired(const PackedWeights& w,
                                                            const uint8_t* xq, int64_t ldq,
                                                            int64_t m0, int64_t valid, int64_t br,
                                                            const Avx512TileEpilogue<4>& te,
                                                            const Epilogue& ep) {
  constexpr int R = 4;
  const int64_t gpr = (static_cast<int64_t>(w.k) + 3) / 4, step = ldq * 4;
  __m512i acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_si512();
  const uint8_t* xt = xq + m0 * 4;
  const uint8_t* xp = xt;
  for (int64_t q = 0; q < gpr; ++q, xp += step) {
    const DotPaired::Prepared v[4] = {{_mm512_loadu_si512(xp)},
                                      {_mm512_loadu_si512(xp + 64)},
                                      {_mm512_loadu_si512(xp + 128)},
                                      {_mm512_loadu_si512(xp + 192)}};
    const int32_t* wd = reinterpret_cast<const int32_t*>(w.pair_safe_values + (br * gpr + q) * 16);
    if (kPrefetchDenseWeights > 0)
      _mm_prefetch(reinterpret_cast<const char*>(wd) + kPrefetchDenseWeights, _MM_HINT_T0);
    for (int r = 0; r < R; ++r) {
      const DotPaired::Weight b = DotPaired::weight(wd + r);
      for (int j = 0; j < 4; ++j) acc[r][j] = DotPaired::dot(acc[r][j], v[j], b);
    }
  }
  for (int r = 0; r < R; ++r) {
    const int64_t n = br * R + r;
    for (int32_t f = w.pair_fix_ptr[n]; f < w.pair_fix_ptr[n + 1]; ++f) {
      const uint8_t* fp = xt + int64_t{w.pair_fix_quad[f]} * step;
      const DotPaired::Weight b =
          DotPaired::weight(reinterpret_cast<const int32_t*>(w.pair_fix_values + 4 * int64_t{f}));
      for (int j = 0; j < 4; ++j)
        acc[r][j] = DotPaired::dot(acc[r][j], {_mm512_loadu_si512(fp + 64 * j)}, b);
    }
  }
  alignas(64) float stage[R][64];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const int64_t n = br * R + r;
    if (n >= w.n) continue;
    int8_row_epilogue(w, n, acc[r], te, stage[r]);
  }
  int8_tile_finish<R>(w, br, m0, valid, te, ep, stage);
}

// The packed dense GEMM for AVX-512 without VNNI: on the pair-safe form where the matrix
// has it (bell-shaped weights), else widened (Dot).
template <class Dot>
void u8s8_gemm_packed_r4_paired(const PackedWeights& w, const uint8_t* xq, int64_t ldq,
                                int64_t m_begin, int64_t m_end, int64_t br_begin, int64_t br_end,
                                const Epilogue& ep) {
  if (w.pair_safe_values == nullptr) {
    u8s8_gemm_packed<Dot, 4>(w, xq, ldq, m_begin, m_end, br_begin, br_end, ep);
    return;
  }
  Avx512TileEpilogue<4> te(ep);
  for (int64_t m0 = m_begin; m0 < m_end; m0 += 64) {
    const int64_t valid = m_end - m0 < 64 ? m_end - m0 : 64;
    te.begin_tile(m0, valid);
    for (int64_t br = br_begin; br < br_end; ++br)
      gemm_tile_paired(w, xq, ldq, m0, valid, br, te, ep);
  }
}

// Tuning knobs of the 1x4 kernel, fixed at build time (the measured choice is the default).
#ifndef SPARQ_QUAD_ROWS
#define SPARQ_QUAD_ROWS 2
#endif
#ifndef SPARQ_QUAD_TOKENS
#define SPARQ_QUAD_TOKENS 64  // tokens per tile, a multiple of 16
#endif
// Groups ahead whose quad to prefetch into L1, 0 = none. 16 cost 10-17% on Zen 5 (session
// 6) and 10% on Zen 4 (0.47-0.49 -> 0.38-0.45 ms at 768x3072, M 128, session 15): the
// panel is L2-resident and the loads are issued early enough without it.
#ifndef SPARQ_QUAD_PREFETCH
#define SPARQ_QUAD_PREFETCH 0
#endif
constexpr int64_t kQuadPrefetch = SPARQ_QUAD_PREFETCH;
#define SPARQ_QUAD_STR2(x) #x
#define SPARQ_QUAD_STR(x) SPARQ_QUAD_STR2(x)
#define SPARQ_QUAD_SHAPE SPARQ_QUAD_STR(SPARQ_QUAD_ROWS) "x" SPARQ_QUAD_STR(SPARQ_QUAD_TOKENS) "c4"

// The 1x4 kernel, u8s8_bsr1x4_spmm_ukernel_{P}x{16 NV}c4__<isa> (2x64c4): a quad matrix (R = 1,
// every group one aligned input quad, PackedWeights::quad_index) on activations in quad order
// (the layout of u8s8_gemm_packed). A nonzero block is one dword of 4 s8 weights and its
// quad of 16 NV tokens is NV contiguous zmm loads: NV dot products, no interleave,
// accumulators in token order. P rows run together, each through its own group list
// (their common length in lockstep, then each remainder), for more independent chains;
// 1 to 4 rows measured the same (docs/performance.md, session 6): the loop is bound by
// its loads, one 64-byte activation load per dot product.
template <class Dot, int P, int NV, int64_t kLd>
__attribute__((always_inline)) inline void quads_tile(const PackedWeights& w, const uint8_t* xq,
                                                      int64_t ldq_rt, int64_t m0, int64_t valid,
                                                      int64_t n0, const Avx512TileEpilogue<NV>& te,
                                                      const Epilogue& ep) {
  const int64_t qbytes = (kLd > 0 ? kLd : ldq_rt) * 4;  // bytes from one quad to the next
  const uint8_t* base = xq + m0 * 4;
  const int32_t* wd = static_cast<const int32_t*>(w.values);  // one dword per group (R = 1)
  const int64_t last = w.num_groups - 1;
  __m512i acc[P][NV];
  int64_t g[P], len[P];
  int64_t common = INT64_MAX;
  for (int p = 0; p < P; ++p) {
    for (int j = 0; j < NV; ++j) acc[p][j] = _mm512_setzero_si512();
    g[p] = w.group_ptr[n0 + p];
    len[p] = w.group_ptr[n0 + p + 1] - g[p];
    common = len[p] < common ? len[p] : common;
  }
  auto step = [&](int p, int64_t gi) __attribute__((always_inline)) {
    const uint8_t* a = base + int64_t{w.quad_index[gi]} * qbytes;
    if (kQuadPrefetch > 0) {
      const int64_t gp = gi + kQuadPrefetch < last ? gi + kQuadPrefetch : last;
      const char* pf = reinterpret_cast<const char*>(base + int64_t{w.quad_index[gp]} * qbytes);
      for (int j = 0; j < NV; ++j) _mm_prefetch(pf + 64 * j, _MM_HINT_T0);
    }
    const typename Dot::Weight b = Dot::weight(wd + gi);
    for (int j = 0; j < NV; ++j)
      acc[p][j] = Dot::dot(acc[p][j], Dot::prepare(_mm512_loadu_si512(a + 64 * j)), b);
  };
  for (int64_t i = 0; i < common; ++i) {
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) step(p, g[p] + i);
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    for (int64_t i = common; i < len[p]; ++i) step(p, g[p] + i);
  }
  alignas(64) float stage[P][16 * NV];
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p) {
    int8_row_epilogue(w, n0 + p, acc[p], te, stage[p]);
  }
  if (te.staged()) avx512_epilogue_stage_finish(ep, n0, P, m0, valid, &stage[0][0], 16 * NV);
}

template <class Dot, int P, int NV, int64_t kLd>
inline void quads_rows(const PackedWeights& w, const uint8_t* xq, int64_t ldq, int64_t m0,
                       int64_t valid, int64_t n_begin, int64_t n_end,
                       const Avx512TileEpilogue<NV>& te, const Epilogue& ep) {
  int64_t n0 = n_begin;
  for (; n0 + P <= n_end; n0 += P) quads_tile<Dot, P, NV, kLd>(w, xq, ldq, m0, valid, n0, te, ep);
  for (; n0 < n_end; ++n0) quads_tile<Dot, 1, NV, kLd>(w, xq, ldq, m0, valid, n0, te, ep);
}

// xq: quad q, token t at byte (q * ldq + t) * 4; tokens [m_begin, m_end) are computed and
// every token up to the next multiple of 64 is readable (the layout's padding).
template <class Dot>
void u8s8_quads_spmm(const PackedWeights& w, const uint8_t* xq, int64_t ldq, int64_t m_begin,
                     int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  constexpr int P = SPARQ_QUAD_ROWS, NV = SPARQ_QUAD_TOKENS / 16, T = 16 * NV;
  Avx512TileEpilogue<NV> te(ep);
  const int64_t quads = (static_cast<int64_t>(w.k) + 3) / 4;
  for (int64_t m0 = m_begin; m0 < m_end; m0 += T) {
    const int64_t valid = m_end - m0 < T ? m_end - m0 : T;
    te.begin_tile(m0, valid);
    avx512_prefetch_panel_l2(xq + m0 * 4, quads, ldq * 4, T * 4);
    if (ldq == 64) quads_rows<Dot, P, NV, 64>(w, xq, ldq, m0, valid, br_begin, br_end, te, ep);
    else quads_rows<Dot, P, NV, 0>(w, xq, ldq, m0, valid, br_begin, br_end, te, ep);
  }
}

// Repacks X (u8 [K][ldx], tokens [0, m)) for u8s8_gemm_packed: quad q, token t at byte
// (q * ldq + t) * 4 holds X[4q..4q+3][t]; inputs past K and tokens past m are zero.
// ldq must be a multiple of 64 and >= m. The same unpacks as the sparse kernel, done
// once per call instead of once per block-row, then a lane transpose to token order.
static void u8_pack_quads(const uint8_t* x, int64_t ldx, int64_t k, int64_t m, uint8_t* xq,
                          int64_t ldq) {
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t q = 0; q < (k + 3) / 4; ++q) {
    for (int64_t m0 = 0; m0 < ldq; m0 += 64) {
      const int64_t valid = m - m0 < 0 ? 0 : (m - m0 < 64 ? m - m0 : 64);
      const __mmask64 mask = valid == 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
      __m512i a[4];
      for (int j = 0; j < 4; ++j) {
        const int64_t kk = 4 * q + j;
        a[j] = kk < k && valid > 0 ? _mm512_maskz_loadu_epi8(mask, x + kk * ldx + m0) : zero;
      }
      const __m512i t0 = _mm512_unpacklo_epi8(a[0], a[1]), t1 = _mm512_unpackhi_epi8(a[0], a[1]);
      const __m512i t2 = _mm512_unpacklo_epi8(a[2], a[3]), t3 = _mm512_unpackhi_epi8(a[2], a[3]);
      const __m512i v0 = _mm512_unpacklo_epi16(t0, t2), v1 = _mm512_unpackhi_epi16(t0, t2);
      const __m512i v2 = _mm512_unpacklo_epi16(t1, t3), v3 = _mm512_unpackhi_epi16(t1, t3);
      const __m512i u0 = _mm512_shuffle_i32x4(v0, v1, 0x44),
                    u1 = _mm512_shuffle_i32x4(v0, v1, 0xEE);
      const __m512i u2 = _mm512_shuffle_i32x4(v2, v3, 0x44),
                    u3 = _mm512_shuffle_i32x4(v2, v3, 0xEE);
      uint8_t* out = xq + (q * ldq + m0) * 4;
      _mm512_storeu_si512(out, _mm512_shuffle_i32x4(u0, u2, 0x88));
      _mm512_storeu_si512(out + 64, _mm512_shuffle_i32x4(u0, u2, 0xDD));
      _mm512_storeu_si512(out + 128, _mm512_shuffle_i32x4(u1, u3, 0x88));
      _mm512_storeu_si512(out + 192, _mm512_shuffle_i32x4(u1, u3, 0xDD));
    }
  }
}

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_U8S8_SPMM_AVX512_IMPL_H_
