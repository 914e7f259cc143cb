// AVX-512 epilogue: applies Epilogue to 16 consecutive tokens of one output row and
// stores them under a lane mask (masked-off lanes are neither read nor written).
// Included only by translation units compiled with AVX-512 flags; everything here is
// internal to the including unit.
#ifndef SPARQ_KERNELS_SPMM_EPILOGUE_AVX512_H_
#define SPARQ_KERNELS_SPMM_EPILOGUE_AVX512_H_

#include <immintrin.h>

#include <cstdint>
#include <xsimd/xsimd.hpp>

#include "kernels/spmm/spmm.h"

namespace sparq {
namespace {

using BatchF32x16 = xsimd::batch<float, xsimd::avx512f>;

static inline __m512 avx512_activation(Activation act, __m512 y) {
  if (act == Activation::kGeluErf) {
    const BatchF32x16 v(y);
    const BatchF32x16 half(0.5f), one(1.0f), sqrt_half(0.70710678118654752f);
    return half * v * (one + xsimd::erf(v * sqrt_half));
  }
  if (act == Activation::kGeluTanh) {
    const BatchF32x16 v(y);
    const BatchF32x16 half(0.5f), one(1.0f), c(0.79788456080286536f), cubic(0.044715f);
    return half * v * (one + xsimd::tanh(c * (v + cubic * v * v * v)));
  }
  return y;
}

// `y` holds tokens [m, m+16) of output row n; lanes outside `mask` are ignored.
static inline void avx512_epilogue_store(const Epilogue& ep, int64_t n, int64_t m, __m512 y,
                                         __mmask16 mask) {
  if (ep.channel_scale) y = _mm512_mul_ps(y, _mm512_set1_ps(ep.channel_scale[n]));
  if (ep.token_scale) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(mask, ep.token_scale + m));
  if (ep.bias) y = _mm512_add_ps(y, _mm512_set1_ps(ep.bias[n]));
  if (ep.activation != Activation::kNone) y = avx512_activation(ep.activation, y);
  if (ep.residual) {
    y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, ep.residual + n * ep.ld_residual + m));
  }
  if (ep.out_u8) {
    __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(ep.out_inv_scale)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_add_ps(q, _mm512_set1_ps(static_cast<float>(ep.out_zero_point)));
    q = _mm512_min_ps(_mm512_max_ps(q, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q));
    _mm_mask_storeu_epi8(ep.out_u8 + n * ep.ld_out + m, mask, bytes);
  } else {
    _mm512_mask_storeu_ps(ep.out_f32 + n * ep.ld_out + m, mask, y);
  }
}

// Lane mask for the valid tokens of vector j of a tile with `valid` tokens.
static inline __mmask16 avx512_lane_mask(int64_t valid, int j) {
  const int64_t left = valid - 16 * j;
  if (left >= 16) return static_cast<__mmask16>(0xFFFF);
  if (left <= 0) return 0;
  return static_cast<__mmask16>((1u << left) - 1u);
}

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_EPILOGUE_AVX512_H_
