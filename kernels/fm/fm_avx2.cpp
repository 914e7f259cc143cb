// f32_mha_fm_ukernel_8x16__avx2 and the feature-major LayerNorm / quantize loops,
// compiled for AVX2 + FMA. The quantization is written with intrinsics: GCC leaves the
// plain loop's float -> u8 narrowing scalar without AVX-512's vpmovdb (13-28 ms of a
// BERT-base int8 run on a Zen 3, 1 thread, against about 1 ms vectorized).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include <xsimd/xsimd.hpp>

#include "kernels/attention/attention_xsimd_ops.h"
#include "kernels/fm/fm_impl.h"

namespace sparq {
namespace avx2 {
namespace {

// Tokens [j, j + 8 NV) of x (row stride ldx): the scalar formula of fm_quantize_block
// lane by lane, so the bytes and scales are the generic path's bit for bit.
template <int NV>
inline void quantize_vectors(const float* x, int64_t ldx, int64_t features, int64_t j,
                             const float* absmax, uint8_t* q, int64_t ldq, float* scale) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN));
  __m256 mx[NV], inv[NV];
  if (absmax != nullptr) {  // taken by the producer
    for (int v = 0; v < NV; ++v) mx[v] = _mm256_loadu_ps(absmax + j + 8 * v);
  } else {
    for (int v = 0; v < NV; ++v) mx[v] = _mm256_setzero_ps();
    for (int64_t f = 0; f < features; ++f) {
      for (int v = 0; v < NV; ++v) {
        // max(|x|, mx) keeps mx for a NaN, as std::max(mx, |x|) does.
        const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + f * ldx + j + 8 * v), abs_mask);
        mx[v] = _mm256_max_ps(a, mx[v]);
      }
    }
  }
  for (int v = 0; v < NV; ++v) {
    const __m256 positive = _mm256_cmp_ps(mx[v], _mm256_setzero_ps(), _CMP_GT_OQ);
    const __m256 sc = _mm256_blendv_ps(_mm256_set1_ps(1.0f),
                                       _mm256_div_ps(mx[v], _mm256_set1_ps(127.0f)), positive);
    _mm256_storeu_ps(scale + j + 8 * v, sc);
    inv[v] = _mm256_div_ps(_mm256_set1_ps(1.0f), sc);
  }
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f),
               half = _mm256_set1_ps(0.5f);
  const __m256i bias = _mm256_set1_epi32(128);
  for (int64_t f = 0; f < features; ++f) {
    __m256i iv[NV];
    for (int v = 0; v < NV; ++v) {
      __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + f * ldx + j + 8 * v), inv[v]);
      y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);  // std::min(127, std::max(-127, y))
      y = _mm256_add_ps(y, _mm256_or_ps(_mm256_and_ps(y, sign_mask), half));  // copysign
      iv[v] = _mm256_add_epi32(_mm256_cvttps_epi32(y), bias);                 // 1..255
    }
    uint8_t* out = q + f * ldq + j;
    if (NV == 2) {
      // packs/packus work within 128-bit lanes: bytes come out as tokens 0-3, 8-11, 4-7,
      // 12-15 of the two vectors; one vpermd puts them in order.
      const __m256i w = _mm256_packs_epi32(iv[0], iv[NV - 1]);
      const __m256i b = _mm256_packus_epi16(w, w);
      const __m256i ordered =
          _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(ordered));
    } else {
      const __m128i w =
          _mm_packs_epi32(_mm256_castsi256_si128(iv[0]), _mm256_extracti128_si256(iv[0], 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(w, w));
    }
  }
}

void quantize(const float* x, int64_t ldx, int64_t features, int64_t t0, int64_t t1,
              const float* absmax, uint8_t* q, int64_t ldq, float* scale) {
  int64_t j = t0;
  for (; j + 16 <= t1; j += 16) quantize_vectors<2>(x, ldx, features, j, absmax, q, ldq, scale);
  for (; j + 8 <= t1; j += 8) quantize_vectors<1>(x, ldx, features, j, absmax, q, ldq, scale);
  if (j < t1) {
    fm_quantize_loops(x + j, ldx, features, 0, t1 - j, absmax != nullptr ? absmax + j : nullptr,
                      q + j, ldq, scale + j);
  }
}

}  // namespace

const FmKernels& fm_table() {
  static const FmKernels t = [] {
    FmKernels k =
        fm_table_for<XsimdOps<xsimd::fma3<xsimd::avx2>>>("f32_mha_fm_ukernel_8x16__avx2", "avx2");
    k.quantize = quantize;
    k.attention_int8 = fm_attention_int8;
    k.attention_int8_prep = fm_attention_int8_prep;
    k.attention_int8_name = "s8s8_mha_fm_ukernel_6x16__avx2";
    k.attention_int8_preferred = two_int16_madd_pipes();
    return k;
  }();
  return t;
}
}  // namespace avx2
}  // namespace sparq
