// The interleaving kernels' loops alone (session 6, issue 11): per group, 4 zmm loads of
// random panel rows (argv[1] rows, at most 768), 8 unpacks into VNNI order, and either 4
// rows x 4 vpdpbusd (the 4x1 kernel) or 1 row x 4 (the 1x1 kernel; mode 0), the same
// without the unpacks (mode 1) or with half of them (mode 3). See README.md here.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
alignas(64) uint8_t panel[768 * 64];
alignas(64) int32_t wts[8192];
alignas(64) int32_t qi[8192 * 4];
static inline __m512i dp(__m512i acc, __m512i a, __m512i b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}
// mode 0: 4 loads + 8 unpacks + 4 dp per group (1 row); mode 1: loads+dp without unpack; mode 2:
// unpack only on regs
__attribute__((noinline)) __m512i run4(int64_t groups, int reps, int NQ) {
  __m512i acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_si512();
  for (int r = 0; r < reps; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const int32_t* idx = qi + g * 4;
      __m512i a0 = _mm512_loadu_si512(panel + int64_t{idx[0]} * 64);
      __m512i a1 = _mm512_loadu_si512(panel + int64_t{idx[1]} * 64);
      __m512i a2 = _mm512_loadu_si512(panel + int64_t{idx[2]} * 64);
      __m512i a3 = _mm512_loadu_si512(panel + int64_t{idx[3]} * 64);
      __m512i t0 = _mm512_unpacklo_epi8(a0, a1), t1 = _mm512_unpackhi_epi8(a0, a1);
      __m512i t2 = _mm512_unpacklo_epi8(a2, a3), t3 = _mm512_unpackhi_epi8(a2, a3);
      __m512i v[4] = {_mm512_unpacklo_epi16(t0, t2), _mm512_unpackhi_epi16(t0, t2),
                      _mm512_unpacklo_epi16(t1, t3), _mm512_unpackhi_epi16(t1, t3)};
#pragma GCC unroll 4
      for (int rr = 0; rr < 4; ++rr) {
        __m512i b = _mm512_set1_epi32(wts[(g * 4 + rr) & 8191]);
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) acc[rr * 4 + j] = dp(acc[rr * 4 + j], v[j], b);
      }
    }
  __m512i s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_epi32(s, acc[i]);
  return s;
}
template <int MODE>
__attribute__((noinline)) __m512i run(int64_t groups, int reps) {
  __m512i acc[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) acc[i] = _mm512_setzero_si512();
  for (int r = 0; r < reps; ++r)
    for (int64_t g = 0; g < groups; g += 2) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const int32_t* idx = qi + (g + h) * 4;
        __m512i a0 = _mm512_loadu_si512(panel + int64_t{idx[0]} * 64);
        __m512i a1 = _mm512_loadu_si512(panel + int64_t{idx[1]} * 64);
        __m512i a2 = _mm512_loadu_si512(panel + int64_t{idx[2]} * 64);
        __m512i a3 = _mm512_loadu_si512(panel + int64_t{idx[3]} * 64);
        __m512i b = _mm512_set1_epi32(wts[g + h]);
        __m512i v0, v1, v2, v3;
        if (MODE == 0) {
          __m512i t0 = _mm512_unpacklo_epi8(a0, a1), t1 = _mm512_unpackhi_epi8(a0, a1);
          __m512i t2 = _mm512_unpacklo_epi8(a2, a3), t3 = _mm512_unpackhi_epi8(a2, a3);
          v0 = _mm512_unpacklo_epi16(t0, t2);
          v1 = _mm512_unpackhi_epi16(t0, t2);
          v2 = _mm512_unpacklo_epi16(t1, t3);
          v3 = _mm512_unpackhi_epi16(t1, t3);
        } else if (MODE == 3) {  // 4 shuffles (vpermt2b-ish count)
          v0 = _mm512_unpacklo_epi8(a0, a1);
          v1 = _mm512_unpackhi_epi8(a0, a1);
          v2 = _mm512_unpacklo_epi8(a2, a3);
          v3 = _mm512_unpackhi_epi8(a2, a3);
        } else {
          v0 = a0;
          v1 = a1;
          v2 = a2;
          v3 = a3;
        }
        acc[4 * h + 0] = dp(acc[4 * h + 0], v0, b);
        acc[4 * h + 1] = dp(acc[4 * h + 1], v1, b);
        acc[4 * h + 2] = dp(acc[4 * h + 2], v2, b);
        acc[4 * h + 3] = dp(acc[4 * h + 3], v3, b);
      }
    }
  __m512i s = acc[0];
  for (int i = 1; i < 8; ++i) s = _mm512_add_epi32(s, acc[i]);
  return s;
}
int main(int argc, char** argv) {
  int NQ = argc > 1 ? atoi(argv[1]) : 768;
  for (int i = 0; i < 8192 * 4; ++i) qi[i] = rand() % NQ;
  for (int i = 0; i < 8192; ++i) wts[i] = rand();
  {
    auto t0 = std::chrono::steady_clock::now();
    __m512i s = run4(8192, 500, NQ);
    double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    printf("4x1 group: %.3f ns/group (%.2f dp/ns) %d\n", ns / (8192.0 * 500),
           16 * 8192.0 * 500 / ns, _mm_cvtsi128_si32(_mm512_castsi512_si128(s)));
  }
  for (int mode : {0, 3, 1}) {
    auto t0 = std::chrono::steady_clock::now();
    __m512i s = mode == 0 ? run<0>(8192, 500) : mode == 3 ? run<3>(8192, 500) : run<1>(8192, 500);
    double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    double groups = 8192.0 * 500;
    printf("mode=%d %.3f ns/group %d\n", mode, ns / groups,
           _mm_cvtsi128_si32(_mm512_castsi512_si128(s)));
  }
}
