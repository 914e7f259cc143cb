// Vector math shared by the AVX-512 kernels. Included only by translation units compiled
// with AVX-512 flags; everything here is internal to the including unit.
#ifndef SPARQ_KERNELS_COMMON_AVX512_MATH_H_
#define SPARQ_KERNELS_COMMON_AVX512_MATH_H_

#include <immintrin.h>

namespace sparq {
namespace {

// exp(x) as 2^(x log2 e): the integer part n applied with vscalefps (which underflows
// to 0 and overflows to inf), and 2^f on [0, 1) by a polynomial with coefficients c[0]
// (constant term) to c[N-1], evaluated by Horner's rule. The callers pick the degree
// their precision needs.
template <int N>
__attribute__((always_inline)) static inline __m512 avx512_exp_poly(__m512 x, const float (&c)[N]) {
  const __m512 y = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(y, n);
  __m512 p = _mm512_set1_ps(c[N - 1]);
  for (int i = N - 2; i >= 0; --i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c[i]));
  return _mm512_scalef_ps(p, n);
}

// Degree 6: relative error below 1e-7 in fp32 (coefficients fitted by weighted least
// squares on Chebyshev nodes, then rounded to fp32). For fp32 results (GELU).
__attribute__((always_inline)) static inline __m512 avx512_exp(__m512 x) {
  static constexpr float kC[] = {1.0f,          6.9314706e-1f, 2.4022876e-1f, 5.5488255e-2f,
                                 9.6687926e-3f, 1.2533959e-3f, 2.1372245e-4f};
  return avx512_exp_poly(x, kC);
}

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_COMMON_AVX512_MATH_H_
