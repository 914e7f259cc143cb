// u8 x s8 SpMM on AVX2: u8s8_bsr4x1_spmm_ukernel_4x16c4__avx2,
// u8s8_bsr1x1_spmm_ukernel_1x16c4__avx2 and the 1x4 kernel (below).
//
// The dot product is widened to 16 bits: per group, the 4 X rows (16 tokens each) are
// zero-extended to 16 bits and paired (rows i0,i1 and i2,i3) with vpunpck{l,h}wd, and
// each output row multiplies a pair by its two weights (sign-extended, packed in one
// dword) with vpmaddwd, which cannot saturate here (|u8*s8| + |u8*s8| < 2^16). It
// never uses vpmaddubsw, whose 16-bit saturation would corrupt results.
// Tile: R rows x 16 tokens, 2 ymm accumulators per row. After the unpacks the low
// accumulator holds tokens 0-3 and 8-11 and the high one 4-7 and 12-15; the epilogue
// puts them back in order with vperm2i128. Token tails (u8s8_tail) sum in scalar, exact
// like the tiles, and go through the same vector epilogue: a token's output never
// depends on where its tile starts. Accumulation: exact int32.
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

static inline int32_t pair16(int8_t a, int8_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(int16_t{a})) |
                              (static_cast<uint32_t>(static_cast<uint16_t>(int16_t{b})) << 16));
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
                      __m256i (&lo)[R], __m256i (&hi)[R]) {
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm256_setzero_si256();
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
    const __m256i a0 = load16_u8_as_i16(x + i[0] * ldx + m0);
    const __m256i a1 = load16_u8_as_i16(x + i[1] * ldx + m0);
    const __m256i a2 = load16_u8_as_i16(x + i[2] * ldx + m0);
    const __m256i a3 = load16_u8_as_i16(x + i[3] * ldx + m0);
    const __m256i p01_lo = _mm256_unpacklo_epi16(a0, a1);
    const __m256i p01_hi = _mm256_unpackhi_epi16(a0, a1);
    const __m256i p23_lo = _mm256_unpacklo_epi16(a2, a3);
    const __m256i p23_hi = _mm256_unpackhi_epi16(a2, a3);
    const int8_t* wv = values + g * R * 4;
    for (int r = 0; r < R; ++r) {
      const __m256i w01 = _mm256_set1_epi32(pair16(wv[4 * r + 0], wv[4 * r + 1]));
      const __m256i w23 = _mm256_set1_epi32(pair16(wv[4 * r + 2], wv[4 * r + 3]));
      lo[r] = _mm256_add_epi32(
          lo[r], _mm256_add_epi32(_mm256_madd_epi16(p01_lo, w01), _mm256_madd_epi16(p23_lo, w23)));
      hi[r] = _mm256_add_epi32(
          hi[r], _mm256_add_epi32(_mm256_madd_epi16(p01_hi, w01), _mm256_madd_epi16(p23_hi, w23)));
    }
  }
}

template <int R>
void u8s8_spmm(const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m_begin,
               int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  constexpr int64_t kTile = 16;
  const int64_t m_full = m_begin + (m_end - m_begin) / kTile * kTile;
  for (int64_t m0 = m_begin; m0 < m_full; m0 += kTile) {
    for (int64_t br = br_begin; br < br_end; ++br) {
      __m256i lo[R], hi[R];
      if (w.dense) u8s8_tile<R, true>(w, x, ldx, m0, br, lo, hi);
      else u8s8_tile<R, false>(w, x, ldx, m0, br, lo, hi);
      for (int r = 0; r < R; ++r) {
        const int64_t n = br * R + r;
        if (n >= w.n) break;
        const __m256i comp = _mm256_set1_epi32(w.compensation[n]);
        const __m256i first = _mm256_permute2x128_si256(lo[r], hi[r], 0x20);   // tokens 0-7
        const __m256i second = _mm256_permute2x128_si256(lo[r], hi[r], 0x31);  // tokens 8-15
        xsimd_epilogue_store(ep, n, m0, B(_mm256_cvtepi32_ps(_mm256_sub_epi32(first, comp))));
        xsimd_epilogue_store(ep, n, m0 + 8, B(_mm256_cvtepi32_ps(_mm256_sub_epi32(second, comp))));
      }
    }
  }
  if (m_full < m_end) {
    const int8_t* values = static_cast<const int8_t*>(w.values);
    u8s8_tail(w, m_full, m_end, br_begin * R, std::min<int64_t>(br_end * R, w.n), ep,
              [&](int64_t n, int64_t m) {
                const int64_t br = n / R, r = n % R;
                int32_t acc = 0;
                for (int64_t g = w.group_begin(br); g < w.group_end(br); ++g) {
                  for (int64_t j = 0; j < 4; ++j) {
                    acc += int32_t{values[(g * R + r) * 4 + j]} *
                           int32_t{x[scalar_group_index(w, g, j) * ldx + m]};
                  }
                }
                return acc;
              });
  }
}

// The 1x4 kernel, u8s8_bsr1x4_spmm_ukernel_1x16c4__avx2: a quad matrix on activations in
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

void u8s8_quads_spmm(const PackedWeights& w, const uint8_t* xq, int64_t ldq, int64_t m_begin,
                     int64_t m_end, int64_t br_begin, int64_t br_end, const Epilogue& ep) {
  constexpr int64_t kTile = 16;
  const int8_t* values = static_cast<const int8_t*>(w.values);
  const int64_t m_full = m_begin + (m_end - m_begin) / kTile * kTile;
  for (int64_t m0 = m_begin; m0 < m_full; m0 += kTile) {
    for (int64_t n = br_begin; n < br_end; ++n) {
      __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                        _mm256_setzero_si256()};
      for (int64_t g = w.group_ptr[n]; g < w.group_ptr[n + 1]; ++g) {
        const __m256i wv = quad_weights16(values + g * 4);
        const uint8_t* a = xq + (int64_t{w.quad_index[g]} * ldq + m0) * 4;
        for (int j = 0; j < 4; ++j) {  // tokens m0 + 4j .. m0 + 4j + 3
          const __m256i x16 =
              _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 16 * j)));
          acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(x16, wv));
        }
      }
      const __m256i comp = _mm256_set1_epi32(w.compensation[n]);
      for (int h = 0; h < 2; ++h) {  // tokens m0 + 8h .. m0 + 8h + 7
        const __m256i sums =
            _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[2 * h], acc[2 * h + 1]), 0xD8);
        xsimd_epilogue_store(ep, n, m0 + 8 * h,
                             B(_mm256_cvtepi32_ps(_mm256_sub_epi32(sums, comp))));
      }
    }
  }
  if (m_full < m_end) {
    u8s8_tail(w, m_full, m_end, br_begin, br_end, ep, [&](int64_t n, int64_t m) {
      int32_t acc = 0;
      for (int64_t g = w.group_ptr[n]; g < w.group_ptr[n + 1]; ++g) {
        const uint8_t* a = xq + (int64_t{w.quad_index[g]} * ldq + m) * 4;
        for (int64_t j = 0; j < 4; ++j) acc += int32_t{values[g * 4 + j]} * int32_t{a[j]};
      }
      return acc;
    });
  }
}

}  // namespace

const SpmmKernels& kernels() {
  static const SpmmKernels table = [] {
    SpmmKernels t;
    t.isa = Isa::kAvx2;
    t.f32_r4 = f32_bsr4x1_spmm_ukernel_4x16__avx2;
    t.f32_r1 = f32_bsr1x1_spmm_ukernel_1x32__avx2;
    t.u8s8_r4 = u8s8_spmm<4>;
    t.u8s8_r1 = u8s8_spmm<1>;
    t.f32_r4_name = "f32_bsr4x1_spmm_ukernel_4x16__avx2";
    t.f32_r1_name = "f32_bsr1x1_spmm_ukernel_1x32__avx2";
    t.u8s8_r4_name = "u8s8_bsr4x1_spmm_ukernel_4x16c4__avx2";
    t.u8s8_r1_name = "u8s8_bsr1x1_spmm_ukernel_1x16c4__avx2";
    t.u8_pack_quads = scalar_u8_pack_quads;
    t.u8s8_quads_r1 = u8s8_quads_spmm;
    t.u8s8_quads_r1_name = "u8s8_bsr1x4_spmm_ukernel_1x16c4__avx2";
    return t;
  }();
  return table;
}

}  // namespace avx2
}  // namespace sparq
