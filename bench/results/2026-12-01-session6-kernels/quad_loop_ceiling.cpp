// The 1x4 kernel's loop alone (session 6, issue 11): per group of 2 rows in lockstep, 4
// zmm loads (NL = 4) from a random quad of a panel of NQ quads (argv[1], 192 = K 768), one
// dword broadcast and 4 vpdpbusd per row; NL = 2 and 1 reuse loads, to show the loop is
// bound by loads. Prints ns per dot product. See README.md here for how to build it.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
alignas(64) uint8_t panel[192 * 256];
alignas(64) int32_t wts[4096];
alignas(64) uint16_t qi[4096];
static inline __m512i dp(__m512i acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}
template <int NL>  // NL: zmm loads per group
__attribute__((noinline)) __m512i run(int64_t groups, int reps) {
  __m512i acc[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_si512();
  for (int r = 0; r < reps; ++r)
    for (int64_t g = 0; g < groups; g += 2) {
      const uint8_t* a0 = panel + int64_t{qi[g]} * 256;
      const uint8_t* a1 = panel + int64_t{qi[g + 1]} * 256;
      __m512i b0 = _mm512_set1_epi32(wts[g]), b1 = _mm512_set1_epi32(wts[g + 1]);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        __m512i x0 = NL == 4 ? _mm512_loadu_si512(a0 + 64 * j)
                             : _mm512_loadu_si512(a0 + 64 * (j & (NL - 1)));
        __m512i x1 = NL == 4 ? _mm512_loadu_si512(a1 + 64 * j)
                             : _mm512_loadu_si512(a1 + 64 * (j & (NL - 1)));
        acc[j] = dp(acc[j], x0, b0);
        acc[4 + j] = dp(acc[4 + j], x1, b1);
      }
    }
  __m512i s = acc[0];
  for (int i = 1; i < 8; ++i) s = _mm512_add_epi32(s, acc[i]);
  return s;
}
int NQ = 192;
int main(int argc, char** argv) {
  if (argc > 1) NQ = atoi(argv[1]);
  for (int i = 0; i < 4096; ++i) {
    qi[i] = rand() % NQ;
    wts[i] = rand();
  }
  for (int NLv : {4, 2, 1}) {
    auto t0 = std::chrono::steady_clock::now();
    __m512i s = NLv == 4 ? run<4>(4096, 2000) : NLv == 2 ? run<2>(4096, 2000) : run<1>(4096, 2000);
    double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    double dps = 4096.0 * 2000 * 4;
    printf("NL=%d %.3f ns/dp  (%.2f dp/ns) %d\n", NLv, ns / dps, dps / ns,
           _mm_cvtsi128_si32(_mm512_castsi512_si128(s)));
  }
}
