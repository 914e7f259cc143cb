// f32_mha_fm_ukernel_8x32__avx512f and the feature-major LayerNorm / quantize loops,
// compiled for AVX-512.
#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "kernels/attention/attention_xsimd_ops.h"
#include "kernels/fm/fm_impl.h"

namespace sparq {
namespace avx512 {
namespace {

// fm_quantize_loops with intrinsics for whole 64-token blocks (the executor's panels),
// bit for bit the same arithmetic: the auto-vectorized loop spent about 15 instructions
// a vector on the sign-dependent rounding. Per token: scale = max|x| / 127 (1 for zero),
// q = trunc(clamp(x / scale, -127, 127) + copysign(0.5)) + 128.
void quantize_avx512(const float* x, int64_t ldx, int64_t features, int64_t t0, int64_t t1,
                     const float* absmax, uint8_t* q, int64_t ldq, float* scale) {
  const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
  const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u));
  const __m512i half = _mm512_castps_si512(_mm512_set1_ps(0.5f));
  const __m512i bias = _mm512_set1_epi32(128);
  int64_t tb = t0;
  for (; tb + 64 <= t1; tb += 64) {
    __m512 mx[4];
    if (absmax != nullptr) {  // taken by the producer
      for (int j = 0; j < 4; ++j) mx[j] = _mm512_loadu_ps(absmax + tb + 16 * j);
    } else {
      for (int j = 0; j < 4; ++j) mx[j] = _mm512_setzero_ps();
      for (int64_t f = 0; f < features; ++f) {
        const float* xr = x + f * ldx + tb;
        for (int j = 0; j < 4; ++j)
          // max(|x|, mx) keeps mx for a NaN, as std::max(mx, |x|) does.
          mx[j] = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xr + 16 * j)), mx[j]);
      }
    }
    __m512 inv[4];
    for (int j = 0; j < 4; ++j) {
      const __mmask16 nz = _mm512_cmp_ps_mask(mx[j], _mm512_setzero_ps(), _CMP_GT_OQ);
      const __m512 sc = _mm512_mask_div_ps(_mm512_set1_ps(1.0f), nz, mx[j], _mm512_set1_ps(127.0f));
      _mm512_storeu_ps(scale + tb + 16 * j, sc);
      inv[j] = _mm512_div_ps(_mm512_set1_ps(1.0f), sc);
    }
    for (int64_t f = 0; f < features; ++f) {
      const float* xr = x + f * ldx + tb;
      __m128i bytes[4];
      for (int j = 0; j < 4; ++j) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(xr + 16 * j), inv[j]);
        // std::min(127, std::max(-127, v)): max(v, -127) is -127 for a NaN, as std::max is
        // (a NaN token quantizes to 1 on every path).
        v = _mm512_min_ps(_mm512_max_ps(v, nlim), lim);
        // copysign(0.5, v): the sign bit of v on 0.5 (ternary logic: sign from v, rest from half).
        const __m512 h = _mm512_castsi512_ps(
            _mm512_ternarylogic_epi32(sign, _mm512_castps_si512(v), half, 0xCA));
        const __m512i i = _mm512_add_epi32(_mm512_cvttps_epi32(_mm512_add_ps(v, h)), bias);
        bytes[j] = _mm512_cvtepi32_epi8(i);
      }
      uint8_t* qr = q + f * ldq + tb;
      for (int j = 0; j < 4; ++j)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + 16 * j), bytes[j]);
    }
  }
  if (tb < t1) fm_quantize_loops(x, ldx, features, tb, t1, absmax, q, ldq, scale);
}

}  // namespace

const FmKernels& fm_table() {
  static const FmKernels t = [] {
    FmKernels k =
        fm_table_for<XsimdOps<xsimd::avx512f>>("f32_mha_fm_ukernel_8x32__avx512f", "avx512");
    k.quantize = quantize_avx512;
    if (avx512_bf16_enabled()) {
      k.attention_bf16 = avx512bf16::fm_attention;
      k.attention_bf16_name = "bf16_mha_fm_ukernel_8x32__avx512bf16";
    }
    return k;
  }();
  return t;
}
}  // namespace avx512

namespace avx512vnni {
const FmKernels& fm_table() {
  static const FmKernels t = [] {
    FmKernels k = avx512::fm_table();
    k.attention_int8 = fm_attention_int8;
    k.attention_int8_prep = fm_attention_int8_prep;
    k.attention_int8_name = "u8s8_mha_fm_ukernel_8x32__avx512vnni";
    return k;
  }();
  return t;
}
}  // namespace avx512vnni
}  // namespace sparq
