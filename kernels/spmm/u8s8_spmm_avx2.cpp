// u8 x s8 SpMM on AVX2: u8s8_bsr4x1_spmm_ukernel_4x16c4__avx2,
// u8s8_bsr1x1_spmm_ukernel_1x16c4__avx2, the 1x4 kernel, the dense GEMM and the 1x1 and
// 4x1 kernels on sign-paired groups (below).
//
// The dot product is widened to 16 bits: per group, the 4 X rows (16 tokens each) are
// zero-extended to 16 bits and paired (rows i0,i1 and i2,i3) with vpunpck{l,h}wd, and
// each output row multiplies a pair by its two weights (sign-extended to 16 bits two
// rows at a time with one vpmovsxbw, each pair broadcast with one vpshufd) with
// vpmaddwd, which cannot saturate here (|u8*s8| + |u8*s8| < 2^16). It never uses
// vpmaddubsw, whose 16-bit saturation would corrupt results. Tile: R rows x 16 tokens,
// 2 ymm accumulators per row. After the unpacks the low accumulator holds tokens 0-3
// and 8-11 and the high one 4-7 and 12-15; the epilogue puts them back in order with
// vperm2i128. Token tails (u8s8_tail) sum in scalar, exact like the tiles, and go
// through the same vector epilogue: a token's output never depends on where its tile
// starts. Accumulation: exact int32.
#include <immintrin.h>

#include <algorithm>

#include <xsimd/xsimd.hpp>

#include "kernels/spmm/epilogue_xsimd.h"
#include "kernels/spmm/spmm.h"
#include "kernels/spmm/spmm_avx2.h"
#include "kernels/spmm/spmm_scalar_impl.h"

namespace sparq {
namespace avx2 {
namespace {

using B = xsimd::batch<float, xsimd::fma3<xsimd::avx2>>;

// The weights of two rows of a group (8 bytes, [row][4]) sign-extended to 16 bits and
// repeated in both 128-bit lanes: dwords 0-1 hold the first row's pairs (w0, w1) and
// (w2, w3), dwords 2-3 the second row's; one vpshufd then broadcasts a pair. Four bytes
// (R = 1) fill dwords 0-1 only.
template <int kBytes>
static inline __m256i weight_pairs(const int8_t* w) {
  __m128i b;
  if (kBytes == 8) {
    b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w));
  } else {
    int32_t d;
    __builtin_memcpy(&d, w, sizeof(d));
    b = _mm_cvtsi32_si128(d);
  }
  return _mm256_permute4x64_epi64(_mm256_castsi128_si256(_mm_cvtepi8_epi16(b)), 0x44);
}

// acc += vpmaddwd(p, w) as one unit: written with intrinsics, GCC reassociates the adds,
// computes every product of a group first and spills the accumulators to the stack
// (14 stack accesses per group in the 4x1 loop); this keeps one temporary.
static inline void madd_accumulate(__m256i& acc, __m256i p, __m256i w) {
  __m256i t;
  __asm__("vpmaddwd %[w], %[p], %[t]\n\tvpaddd %[t], %[acc], %[acc]"
          : [acc] "+x"(acc), [t] "=&x"(t)
          : [p] "x"(p), [w] "x"(w));
}

// Dword d (0-3) of each 128-bit lane, broadcast over the lane.
static inline __m256i shuffle_dword(__m256i v, int d) {
  switch (d) {
    case 0: return _mm256_shuffle_epi32(v, 0x00);
    case 1: return _mm256_shuffle_epi32(v, 0x55);
    case 2: return _mm256_shuffle_epi32(v, 0xAA);
    default: return _mm256_shuffle_epi32(v, 0xFF);
  }
}

static inline __m256i load16_u8_as_i16(const uint8_t* p) {
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Tokens [m0, m_end), fewer than a tile, of output rows [n_begin, n_end): sum(n, m) is
// the exact int32 dot product, then the vector epilogue on up to 8 tokens at a time.
template <class Sum>
void u8s8_tail(const PackedWeights& w, int64_t m0, int64_t m_end, int64_t n_begin, int64_t n_end,
               const Epilogue& ep, Sum sum) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    for (int64_t c0 = m0; c0 < m_end; c0 += 8) {
      const int64_t count = std::min<int64_t>(8, m_end - c0);
      alignas(32) float y[8] = {};
      for (int64_t i = 0; i < count; ++i) {
        y[i] = static_cast<float>(sum(n, c0 + i) - w.compensation[n]);
      }
      xsimd_epilogue_store(ep, n, c0, B::load_aligned(y), count);
    }
  }
}

template <int R, bool kDense>
inline void u8s8_tile(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m0, int64_t br,
                      __m256i (&lo_out)[R], __m256i (&hi_out)[R]) {
  static_assert(R == 1 || R == 4, "rows per block");
  // Named accumulators (R = 1 uses the first pair): an array indexed in a loop would stay
  // in memory, loaded and stored every group.
  __m256i l0 = _mm256_setzero_si256(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0,
          h3 = l0;
  const int8_t* values = static_cast<const int8_t*>(w.values);
  const int64_t gpr = (static_cast<int64_t>(w.k) + 3) / 4;
  const int64_t g0 = kDense ? br * gpr : w.group_ptr[br];
  const int64_t g1 = kDense ? g0 + gpr : w.group_ptr[br + 1];
  const int64_t k_last = w.k - 1;
  for (int64_t g = g0; g < g1; ++g) {
    int64_t i[4];
    for (int j = 0; j < 4; ++j) {
      if (kDense) {
        const int64_t kk = (g - g0) * 4 + j;
        i[j] = kk <= k_last ? kk : k_last;
      } else {
        i[j] = w.indices[g * 4 + j];
      }
    }
    // Inputs i0, i1 first for every row, then i2, i3: 8 accumulators, 2 weight
    // registers, one input pair and a temporary fit the 16 ymm registers.
    const int8_t* wv = values + g * R * 4;
    constexpr int kPairBytes = R == 1 ? 4 : 8;
    const __m256i wp0 = weight_pairs<kPairBytes>(wv);
    const __m256i wp1 = R == 1 ? wp0 : weight_pairs<8>(wv + 8);
    for (int half = 0; half < 2; ++half) {
      const __m256i a = load16_u8_as_i16(x + i[2 * half] * ldx + m0);
      const __m256i b = load16_u8_as_i16(x + i[2 * half + 1] * ldx + m0);
      const __m256i p_lo = _mm256_unpacklo_epi16(a, b), p_hi = _mm256_unpackhi_epi16(a, b);
      // Row r's pair for this half is dword 2 (r % 2) + half of its lane.
      const __m256i w0 = shuffle_dword(wp0, half);
      madd_accumulate(l0, p_lo, w0);
      madd_accumulate(h0, p_hi, w0);
      if (R == 4) {
        const __m256i w1 = shuffle_dword(wp0, 2 + half);
        madd_accumulate(l1, p_lo, w1);
        madd_accumulate(h1, p_hi, w1);
        const __m256i w2 = shuffle_dword(wp1, half);
        madd_accumulate(l2, p_lo, w2);
        madd_accumulate(h2, p_hi, w2);
        const __m256i w3 = shuffle_dword(wp1, 2 + half);
        madd_accumulate(l3, p_lo, w3);
        madd_accumulate(h3, p_hi, w3);
      }
    }
  }
  const __m256i lo[4] = {l0, l1, l2, l3}, hi[4] = {h0, h1, h2, h3};
  for (int r = 0; r < R; ++r) {
    lo_out[r] = lo[r];
    hi_out[r] = hi[r];
  }
}

// Tokens 8h .. 8h + 7 of a tile's row (its accumulators lo, hi in unpack order) as
// floats, less the compensation.
static inline B tile_tokens(__m256i lo, __m256i hi, __m256i comp, int h) {
  const __m256i v = h == 0 ? _mm256_permute2x128_si256(lo, hi, 0x20)   // tokens 0-7
                           : _mm256_permute2x128_si256(lo, hi, 0x31);  // tokens 8-15
  return B(_mm256_cvtepi32_ps(_mm256_sub_epi32(v, comp)));
}

template <int R>
void u8s8_spmm(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m_begin,
               int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  constexpr int64_t kTile = 16;
  const int64_t m_full = m_begin + (m_end - m_begin) / kTile * kTile;
  // Up to 4 tiles (64 tokens, one cache line of each X row) per block-row before the
  // next: the X lines a block-row's groups load serve its 4 tiles from L1, and its
  // weights are read once per 64 tokens, not once per 16.
  constexpr int64_t kSpan = 64;
  with_xsimd_epilogue<B>(ep, [&](const auto& epi) {
    for (int64_t s0 = m_begin; s0 < m_full; s0 += kSpan) {
      const int64_t s1 = std::min(m_full, s0 + kSpan);
      for (int64_t br = br_begin; br < br_end; ++br) {
        for (int64_t m0 = s0; m0 < s1; m0 += kTile) {
          __m256i lo[R], hi[R];
          if (w.dense) u8s8_tile<R, true>(w, x, ldx, m0, br, lo, hi);
          else u8s8_tile<R, false>(w, x, ldx, m0, br, lo, hi);
          const int64_t rows = std::min<int64_t>(R, w.n - br * R);
          if (epi.inlined()) {
            const B ts0 = epi.token_scales(m0), ts1 = epi.token_scales(m0 + 8);
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
              if (r >= rows) break;
              const int64_t n = br * R + r;
              const __m256i comp = _mm256_set1_epi32(w.compensation[n]);
              epi.store(n, m0, tile_tokens(lo[r], hi[r], comp, 0), ts0);
              epi.store(n, m0 + 8, tile_tokens(lo[r], hi[r], comp, 1), ts1);
            }
          } else {
            alignas(32) float stage[R][kTile];
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
              if (r >= rows) break;
              const __m256i comp = _mm256_set1_epi32(w.compensation[br * R + r]);
              tile_tokens(lo[r], hi[r], comp, 0).store_aligned(stage[r]);
              tile_tokens(lo[r], hi[r], comp, 1).store_aligned(stage[r] + 8);
            }
            epi.rows(br * R, rows, m0, kTile, stage[0], kTile);
          }
        }
      }
    }
  });
  if (m_full < m_end) {
    u8s8_tail(w, m_full, m_end, br_begin * R, std::min<int64_t>(br_end * R, w.n), ep,
              [&](int64_t n, int64_t m) { return scalar_u8s8_dot(w, x, ldx, n / R, n % R, m); });
  }
}

// The 1x4 kernel, u8s8_bsr1x4_spmm_ukernel_1x32c4__avx2: a quad matrix on activations in
// quad order (token t's 4 bytes of quad q at (q * ldq + t) * 4). Per group and 4 tokens,
// one 16-byte load widened to 16 bits and one vpmaddwd against the group's 4 weights
// (as 16-bit words, repeated) give each token's two pair sums; vphaddd adds the pairs at
// the end (its lane order is undone with one vpermq). Tails as in u8s8_spmm.
static inline __m256i quad_weights16(const int8_t* w4) {
  int32_t d;
  __builtin_memcpy(&d, w4, sizeof(d));
  const __m128i words = _mm_cvtepi8_epi16(_mm_cvtsi32_si128(d));  // w0..w3 as int16
  return _mm256_broadcastq_epi64(words);
}

// Quad order (spmm.h, U8PackQuadsFn) 32 tokens at a time: the 4 input rows of a quad
// interleaved with two rounds of unpacks (bytes, then words), which work within 128-bit
// lanes, and two vperm2i128 to put the 4-token groups back in order. Rows past K and
// tokens past m are zero; the last tokens (fewer than 32) are copied byte by byte.
void pack_quads(const uint8_t* x, int64_t ldx, int64_t k, int64_t m, uint8_t* xq, int64_t ldq) {
  const int64_t m32 = m / 32 * 32;
  for (int64_t q = 0; q < (k + 3) / 4; ++q) {
    const uint8_t* rows[4];
    bool valid[4];
    for (int j = 0; j < 4; ++j) {
      valid[j] = 4 * q + j < k;
      rows[j] = x + (4 * q + (valid[j] ? j : 0)) * ldx;
    }
    uint8_t* out = xq + q * ldq * 4;
    for (int64_t t = 0; t < m32; t += 32) {
      __m256i v[4];
      for (int j = 0; j < 4; ++j) {
        v[j] = valid[j] ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[j] + t))
                        : _mm256_setzero_si256();
      }
      const __m256i a = _mm256_unpacklo_epi8(v[0], v[1]), b = _mm256_unpackhi_epi8(v[0], v[1]);
      const __m256i c = _mm256_unpacklo_epi8(v[2], v[3]), d = _mm256_unpackhi_epi8(v[2], v[3]);
      // Lane 0 holds tokens t..t+15, lane 1 t+16..t+31; e0 = tokens 0-3 | 16-19, e1 = 4-7 |
      // 20-23, e2 = 8-11 | 24-27, e3 = 12-15 | 28-31 (4 bytes a token).
      const __m256i e0 = _mm256_unpacklo_epi16(a, c), e1 = _mm256_unpackhi_epi16(a, c);
      const __m256i e2 = _mm256_unpacklo_epi16(b, d), e3 = _mm256_unpackhi_epi16(b, d);
      __m256i* o = reinterpret_cast<__m256i*>(out + t * 4);
      _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(e0, e1, 0x20));
      _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(e2, e3, 0x20));
      _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(e0, e1, 0x31));
      _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(e2, e3, 0x31));
    }
    for (int64_t t = m32; t < ldq; ++t) {
      for (int j = 0; j < 4; ++j) out[t * 4 + j] = valid[j] && t < m ? rows[j][t] : uint8_t{0};
    }
  }
}

// Output row n, tokens [m0, m0 + 4 NV): NV accumulators of 4 tokens' pair sums.
template <int NV, class Epi>
inline void quads_tile(const PackedWeights& w, const int8_t* values, const uint8_t* xq, int64_t ldq,
                       int64_t m0, int64_t n, const Epi& epi) {
  __m256i acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_si256();
  for (int64_t g = w.group_ptr[n]; g < w.group_ptr[n + 1]; ++g) {
    const __m256i wv = quad_weights16(values + g * 4);
    const uint8_t* a = xq + (int64_t{w.quad_index[g]} * ldq + m0) * 4;
    for (int j = 0; j < NV; ++j) {  // tokens m0 + 4j .. m0 + 4j + 3
      const __m256i x16 =
          _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 16 * j)));
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(x16, wv));
    }
  }
  const __m256i comp = _mm256_set1_epi32(w.compensation[n]);
  alignas(32) float stage[NV * 4];
  for (int h = 0; h < NV / 2; ++h) {  // tokens m0 + 8h .. m0 + 8h + 7
    const __m256i sums =
        _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[2 * h], acc[2 * h + 1]), 0xD8);
    const B y(_mm256_cvtepi32_ps(_mm256_sub_epi32(sums, comp)));
    if (epi.inlined()) epi.store(n, m0 + 8 * h, y, epi.token_scales(m0 + 8 * h));
    else y.store_aligned(stage + 8 * h);
  }
  if (!epi.inlined()) epi.rows(n, 1, m0, NV * 4, stage, NV * 4);
}

void u8s8_quads_spmm(const PackedWeights& w, const uint8_t* xq, int64_t ldq, int64_t m_begin,
                     int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  // 32-token tiles (one weight broadcast and one index per 8 loads), then one of 16.
  const int8_t* values = static_cast<const int8_t*>(w.values);
  int64_t m0 = m_begin;
  with_xsimd_epilogue<B>(ep, [&](const auto& epi) {
    for (; m0 + 32 <= m_end; m0 += 32) {
      for (int64_t n = br_begin; n < br_end; ++n) quads_tile<8>(w, values, xq, ldq, m0, n, epi);
    }
    for (; m0 + 16 <= m_end; m0 += 16) {
      for (int64_t n = br_begin; n < br_end; ++n) quads_tile<4>(w, values, xq, ldq, m0, n, epi);
    }
  });
  const int64_t m_full = m0;
  if (m_full < m_end) {
    u8s8_tail(w, m_full, m_end, br_begin, br_end, ep,
              [&](int64_t n, int64_t m) { return scalar_quads_dot(w, xq, ldq, n, m); });
  }
}

// The dense GEMM, u8s8_gemm_ukernel_4x16c4__avx2: dense weights (R = 4) on activations in
// quad order (as the 1x4 kernel's). vpmaddubsw multiplies u8 by s8 and adds each pair in
// saturating int16; on the pair-safe weights (PackedWeights::pair_safe_values, every
// pair's positive and negative parts each within 128) no pair sum can saturate
// (255 x 128 < 2^15),
// and vpmaddwd with ones adds a token's two pairs in int32: vpdpbusd in two instructions,
// 32 products a vpmaddubsw against the 16 of the widened vpmaddwd above, with no widening
// or interleave. The parts the cuts left out run after the quads, row by row, one quad of
// one row each (a quarter of a group's multiplies and about half its time, measured; in
// 3.6% of the rows' quads for normal weights at K 768): acc is the exact int32 sum.
// Tile: 4 rows x 16 tokens, 8 accumulators in token order; the span loop of u8s8_spmm.
//
// One asm statement per product, as madd_accumulate above: written as intrinsics, GCC 12
// hoists all eight vpmaddubsw of a quad ahead of their vpmaddwd, runs out of the 16
// registers and keeps two accumulators on the stack, a store-to-load round trip in the
// loop-carried chain of every group (10.5 -> 8.4 cycles a group in a replica of this loop,
// Zen 3).
static inline __m256i quad_dot(__m256i acc, __m256i x, __m256i w, __m256i ones) {
  __m256i t;
  __asm__(
      "vpmaddubsw %[w], %[x], %[t]\n\t"
      "vpmaddwd %[ones], %[t], %[t]\n\t"
      "vpaddd %[t], %[acc], %[acc]"
      : [acc] "+x"(acc), [t] "=&x"(t)
      : [x] "x"(x), [w] "x"(w), [ones] "x"(ones));
  return acc;
}

static inline __m256i broadcast_dword(const int8_t* p) {
  int32_t d;
  __builtin_memcpy(&d, p, sizeof(d));
  return _mm256_set1_epi32(d);
}

// One quad of 16 tokens (xp) against a group's 4 x 4 weights (wp, [row][4]).
static inline void gemm_quad(__m256i (&acc)[4][2], const uint8_t* xp, const int8_t* wp,
                             __m256i ones) {
  const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp));
  const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + 32));
  for (int r = 0; r < 4; ++r) {
    const __m256i wv = broadcast_dword(wp + 4 * r);
    acc[r][0] = quad_dot(acc[r][0], x0, wv, ones);
    acc[r][1] = quad_dot(acc[r][1], x1, wv, ones);
  }
}

// Row n's fixes into its two accumulators.
static inline void gemm_fixes(const PackedWeights& w, const uint8_t* xt, int64_t step, int64_t n,
                              __m256i (&acc)[2], __m256i ones) {
  for (int32_t f = w.pair_fix_ptr[n]; f < w.pair_fix_ptr[n + 1]; ++f) {
    const uint8_t* xp = xt + int64_t{w.pair_fix_quad[f]} * step;
    const __m256i wv = broadcast_dword(w.pair_fix_values + 4 * int64_t{f});
    acc[0] = quad_dot(acc[0], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp)), wv, ones);
    acc[1] =
        quad_dot(acc[1], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + 32)), wv, ones);
  }
}

// Block-row br, tokens [t0, t0 + 16) (t0 + 16 <= ldq): acc[r][h] holds row r's tokens
// t0 + 8h .. t0 + 8h + 7. The fixes reread quads this tile has just read (L1 or L2).
inline void gemm_tile(const PackedWeights& w, const uint8_t* xq, int64_t ldq, int64_t t0,
                      int64_t br, __m256i (&acc)[4][2]) {
  const __m256i ones = _mm256_set1_epi16(1);
  const uint8_t* xt = xq + t0 * 4;
  const int64_t gpr = w.groups_per_dense_row(), step = ldq * 4;
  for (int r = 0; r < 4; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const int8_t* wp = w.pair_safe_values + br * gpr * 16;
  for (int64_t q = 0; q < gpr; ++q) gemm_quad(acc, xt + q * step, wp + q * 16, ones);
  gemm_fixes(w, xt, step, br * 4 + 0, acc[0], ones);
  gemm_fixes(w, xt, step, br * 4 + 1, acc[1], ones);
  gemm_fixes(w, xt, step, br * 4 + 2, acc[2], ones);
  gemm_fixes(w, xt, step, br * 4 + 3, acc[3], ones);
}

void u8s8_gemm(const PackedWeights& w, const uint8_t* xq, int64_t ldq, int64_t m_begin,
               int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  constexpr int64_t kTile = 16, kSpan = 64;
  with_xsimd_epilogue<B>(ep, [&](const auto& epi) {
    for (int64_t s0 = m_begin; s0 < m_end; s0 += kSpan) {
      const int64_t s1 = std::min(m_end, s0 + kSpan);
      for (int64_t br = br_begin; br < br_end; ++br) {
        for (int64_t t = s0; t < s1; t += kTile) {
          // A tile never reads past ldq: the last one of an unaligned range starts earlier
          // and stores only its own tokens.
          const int64_t t0 = std::min(t, ldq - kTile), t_end = std::min(s1, t + kTile);
          __m256i acc[4][2];
          gemm_tile(w, xq, ldq, t0, br, acc);
          const int64_t rows = std::min<int64_t>(4, w.n - br * 4);
          if (t0 == t && t_end == t + kTile) {  // a whole tile
            alignas(32) float stage[4][kTile];
#pragma GCC unroll 4
            for (int r = 0; r < 4; ++r) {
              if (r >= rows) break;
              const int64_t n = br * 4 + r;
              const __m256i comp = _mm256_set1_epi32(w.compensation[n]);
              for (int h = 0; h < 2; ++h) {
                const B y(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][h], comp)));
                if (epi.inlined()) epi.store(n, t + 8 * h, y, epi.token_scales(t + 8 * h));
                else y.store_aligned(stage[r] + 8 * h);
              }
            }
            if (!epi.inlined()) epi.rows(br * 4, rows, t, kTile, stage[0], kTile);
            continue;
          }
          for (int r = 0; r < 4; ++r) {
            const int64_t n = br * 4 + r;
            if (n >= w.n) break;
            const __m256i comp = _mm256_set1_epi32(w.compensation[n]);
            alignas(32) float y[kTile];
            for (int h = 0; h < 2; ++h) {
              _mm256_store_ps(y + 8 * h, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][h], comp)));
            }
            for (int64_t c = t; c < t_end; c += 8) {
              xsimd_epilogue_store(ep, n, c, B::load_unaligned(y + (c - t0)),
                                   std::min<int64_t>(8, t_end - c));
            }
          }
        }
      }
    }
  });
}

// The 1x1 kernel on sign-paired groups, u8s8_bsr1x1_spmm_ukernel_1x32c4__avx2
// (PackedWeights::paired_*): per group, the 4 X rows of 32 tokens are interleaved into VNNI
// order (4 bytes of one token from the 4 inputs in each dword) with 8 unpacks, as the
// AVX-512 kernel's, and each vector runs vpmaddubsw against the group's 4 weights and
// vpmaddwd with ones (quad_dot): 128 products a group for 8 shuffles, where the widening
// kernel spends about 12 on 64. vpmaddubsw adds each pair in saturating int16, which the
// sign-paired groups never reach (every pair of opposite signs, or of one sign within 128,
// or with a zero), so acc is the exact int32 sum and the output the widening kernel's bit
// for bit. After the unpacks acc[j] holds tokens 4j..4j+3 in lane 0 and 16+4j.. in lane 1.
//
// Not inlined into the epilogue's lambda: there GCC kept the loop's pointers on the stack
// and ran slower than the widening kernel (measured in a replica, Zen 3).
__attribute__((noinline)) void paired_tile(const PackedWeights& w, const uint8_t* x, int64_t ldx,
                                           int64_t m0, int64_t n, __m256i (&out)[4]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  const uint16_t* idx = w.paired_index;
  const int8_t* val = w.paired_values;
  const uint8_t* xm = x + m0;
  for (int64_t g = w.paired_ptr[n], g1 = w.paired_ptr[n + 1]; g < g1; ++g) {
    const uint16_t* i = idx + g * 4;
    const __m256i a0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + i[0] * ldx));
    const __m256i a1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + i[1] * ldx));
    const __m256i a2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + i[2] * ldx));
    const __m256i a3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + i[3] * ldx));
    const __m256i t0 = _mm256_unpacklo_epi8(a0, a1), t1 = _mm256_unpackhi_epi8(a0, a1);
    const __m256i t2 = _mm256_unpacklo_epi8(a2, a3), t3 = _mm256_unpackhi_epi8(a2, a3);
    const __m256i wv = broadcast_dword(val + g * 4);
    c0 = quad_dot(c0, _mm256_unpacklo_epi16(t0, t2), wv, ones);
    c1 = quad_dot(c1, _mm256_unpackhi_epi16(t0, t2), wv, ones);
    c2 = quad_dot(c2, _mm256_unpacklo_epi16(t1, t3), wv, ones);
    c3 = quad_dot(c3, _mm256_unpackhi_epi16(t1, t3), wv, ones);
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// Rows [n_begin, n_end), tokens [m_begin, m_end): 32-token tiles, two per 64-token span
// (the X lines of a span's groups serve both from L1), then the widening kernel on the
// last tokens (fewer than 32).
void u8s8_paired_spmm(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m_begin,
                      int64_t m_end, int64_t n_begin, int64_t n_end, const Epilogue& ep) {
  constexpr int64_t kTile = 32, kSpan = 64;
  const int64_t m_full = m_begin + (m_end - m_begin) / kTile * kTile;
  with_xsimd_epilogue<B>(ep, [&](const auto& epi) {
    for (int64_t s0 = m_begin; s0 < m_full; s0 += kSpan) {
      const int64_t s1 = std::min(m_full, s0 + kSpan);
      for (int64_t n = n_begin; n < n_end; ++n) {
        const __m256i comp = _mm256_set1_epi32(w.compensation[n]);
        for (int64_t m0 = s0; m0 < s1; m0 += kTile) {
          __m256i acc[4];
          paired_tile(w, x, ldx, m0, n, acc);
          // Tokens 8h .. 8h + 7: lanes of acc[0], acc[1] (h = 0, 2) or acc[2], acc[3].
          const __m256i v[4] = {_mm256_permute2x128_si256(acc[0], acc[1], 0x20),
                                _mm256_permute2x128_si256(acc[2], acc[3], 0x20),
                                _mm256_permute2x128_si256(acc[0], acc[1], 0x31),
                                _mm256_permute2x128_si256(acc[2], acc[3], 0x31)};
          alignas(32) float stage[kTile];
          for (int h = 0; h < 4; ++h) {
            const B y(_mm256_cvtepi32_ps(_mm256_sub_epi32(v[h], comp)));
            if (epi.inlined()) epi.store(n, m0 + 8 * h, y, epi.token_scales(m0 + 8 * h));
            else y.store_aligned(stage + 8 * h);
          }
          if (!epi.inlined()) epi.rows(n, 1, m0, kTile, stage, kTile);
        }
      }
    }
  });
  if (m_full < m_end) u8s8_spmm<1>(w, x, ldx, m_full, m_end, n_begin, n_end, ep);
}

// The 4x1 kernel on paired columns, u8s8_bsr4x1_spmm_ukernel_4x16c4p__avx2
// (PackedWeights::paired_* with R = 4: each group's two pairs safe in all four rows): per
// group, the 4 X rows of 16 tokens are interleaved into VNNI order in 128-bit halves (4 byte
// and 4 word unpacks, 2 lane inserts), after which v0 holds tokens 0-7 and v1 tokens 8-15 in
// order, and each row runs quad_dot on both against its dword of weights: 16 multiplies, 10
// shuffles and 8 adds for 256 products, where the widening kernel spends 16 multiplies, 20
// shuffles and 16 adds. Exact, as the 1x1 kernel above. Not inlined, for the same reason.
__attribute__((noinline)) void paired4_tile(const PackedWeights& w, const uint8_t* x, int64_t ldx,
                                            int64_t m0, int64_t br, __m256i (&out)[4][2]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,
          a30 = a00, a31 = a00;
  const uint16_t* idx = w.paired_index;
  const int8_t* val = w.paired_values;
  const uint8_t* xm = x + m0;
  for (int64_t g = w.paired_ptr[br], g1 = w.paired_ptr[br + 1]; g < g1; ++g) {
    const uint16_t* i = idx + g * 4;
    const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xm + i[0] * ldx));
    const __m128i r1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xm + i[1] * ldx));
    const __m128i r2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xm + i[2] * ldx));
    const __m128i r3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xm + i[3] * ldx));
    const __m128i p0 = _mm_unpacklo_epi8(r0, r1), p1 = _mm_unpackhi_epi8(r0, r1);
    const __m128i p2 = _mm_unpacklo_epi8(r2, r3), p3 = _mm_unpackhi_epi8(r2, r3);
    // Tokens 0-3, 4-7, 8-11, 12-15, 4 bytes each.
    const __m128i q0 = _mm_unpacklo_epi16(p0, p2), q1 = _mm_unpackhi_epi16(p0, p2);
    const __m128i q2 = _mm_unpacklo_epi16(p1, p3), q3 = _mm_unpackhi_epi16(p1, p3);
    const __m256i v0 = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
    const __m256i v1 = _mm256_inserti128_si256(_mm256_castsi128_si256(q2), q3, 1);
    const int8_t* wv = val + g * 16;  // [row][4]
    __m256i b = broadcast_dword(wv);
    a00 = quad_dot(a00, v0, b, ones);
    a01 = quad_dot(a01, v1, b, ones);
    b = broadcast_dword(wv + 4);
    a10 = quad_dot(a10, v0, b, ones);
    a11 = quad_dot(a11, v1, b, ones);
    b = broadcast_dword(wv + 8);
    a20 = quad_dot(a20, v0, b, ones);
    a21 = quad_dot(a21, v1, b, ones);
    b = broadcast_dword(wv + 12);
    a30 = quad_dot(a30, v0, b, ones);
    a31 = quad_dot(a31, v1, b, ones);
  }
  out[0][0] = a00;
  out[0][1] = a01;
  out[1][0] = a10;
  out[1][1] = a11;
  out[2][0] = a20;
  out[2][1] = a21;
  out[3][0] = a30;
  out[3][1] = a31;
}

// Block-rows [br_begin, br_end), tokens [m_begin, m_end): the span loop of u8s8_spmm with
// paired4_tile, then the widening kernel on the last tokens (fewer than 16).
void u8s8_paired4_spmm(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m_begin,
                       int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  constexpr int64_t kTile = 16, kSpan = 64;
  const int64_t m_full = m_begin + (m_end - m_begin) / kTile * kTile;
  with_xsimd_epilogue<B>(ep, [&](const auto& epi) {
    for (int64_t s0 = m_begin; s0 < m_full; s0 += kSpan) {
      const int64_t s1 = std::min(m_full, s0 + kSpan);
      for (int64_t br = br_begin; br < br_end; ++br) {
        const int64_t rows = std::min<int64_t>(4, w.n - br * 4);
        for (int64_t m0 = s0; m0 < s1; m0 += kTile) {
          __m256i acc[4][2];
          paired4_tile(w, x, ldx, m0, br, acc);
          alignas(32) float stage[4][kTile];
          for (int r = 0; r < 4; ++r) {
            if (r >= rows) break;
            const int64_t n = br * 4 + r;
            const __m256i comp = _mm256_set1_epi32(w.compensation[n]);
            for (int h = 0; h < 2; ++h) {
              const B y(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][h], comp)));
              if (epi.inlined()) epi.store(n, m0 + 8 * h, y, epi.token_scales(m0 + 8 * h));
              else y.store_aligned(stage[r] + 8 * h);
            }
          }
          if (!epi.inlined()) epi.rows(br * 4, rows, m0, kTile, stage[0], kTile);
        }
      }
    }
  });
  if (m_full < m_end) u8s8_spmm<4>(w, x, ldx, m_full, m_end, br_begin, br_end, ep);
}

// R = 4 likewise.
void u8s8_spmm_r4(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m_begin,
                  int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  if (w.paired_ptr != nullptr) u8s8_paired4_spmm(w, x, ldx, m_begin, m_end, br_begin, br_end, ep);
  else u8s8_spmm<4>(w, x, ldx, m_begin, m_end, br_begin, br_end, ep);
}

// R = 1: the sign-paired kernel where the matrix has its paired form, else the widening one.
void u8s8_spmm_r1(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m_begin,
                  int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  if (w.paired_ptr != nullptr) u8s8_paired_spmm(w, x, ldx, m_begin, m_end, br_begin, br_end, ep);
  else u8s8_spmm<1>(w, x, ldx, m_begin, m_end, br_begin, br_end, ep);
}

}  // namespace

const SpmmKernels& kernels() {
  static const SpmmKernels table = [] {
    SpmmKernels t;
    t.isa = Isa::kAvx2;
    t.f32_r4 = f32_bsr4x1_spmm_ukernel_4x16__avx2;
    t.f32_r1 = f32_bsr1x1_spmm_ukernel_1x64__avx2;
    t.u8s8_r4 = u8s8_spmm_r4;
    t.u8s8_r1 = u8s8_spmm_r1;
    t.f32_r4_name = "f32_bsr4x1_spmm_ukernel_4x16__avx2";
    t.f32_r1_name = "f32_bsr1x1_spmm_ukernel_1x64__avx2";
    t.u8s8_r4_name = "u8s8_bsr4x1_spmm_ukernel_4x16c4__avx2";
    t.u8s8_r1_name = "u8s8_bsr1x1_spmm_ukernel_1x16c4__avx2";
    t.u8s8_r1_sign_paired = true;
    t.u8s8_r1_paired_name = "u8s8_bsr1x1_spmm_ukernel_1x32c4__avx2";
    t.u8s8_r4_sign_paired = true;
    t.u8s8_r4_paired_name = "u8s8_bsr4x1_spmm_ukernel_4x16c4p__avx2";
    t.u8_pack_quads = pack_quads;
    t.u8s8_quads_r1 = u8s8_quads_spmm;
    t.u8s8_quads_r1_name = "u8s8_bsr1x4_spmm_ukernel_1x32c4__avx2";
    t.u8s8_gemm_r4 = u8s8_gemm;
    t.u8s8_gemm_r4_name = "u8s8_gemm_ukernel_4x16c4__avx2";
    t.u8s8_gemm_r4_pair_safe = true;
    return t;
  }();
  return table;
}

}  // namespace avx2
}  // namespace sparq
