// The AVX-512 instructions are in inline assembly only, so this file needs no ISA flags
// (and none of its inline template code can leak wider instructions); the CPU is
// checked before they run.
#include "bench/baseline/peak.h"

#include <chrono>

#include "kernels/common/isa.h"

namespace sparq::bench {
namespace {

template <class F>
double best_seconds(F&& f) {
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  return best;
}

constexpr long kIters = 2000000;

// 12 independent accumulators (zmm0-11) against two fixed operands (zmm12, zmm13),
// in assembly so the compiler can neither fold nor spill the chains.
#define SPARQ_PEAK_BODY(op)                                                                    \
  __asm__ volatile(                                                                            \
      "vpxord %%zmm12, %%zmm12, %%zmm12\n\tvpxord %%zmm13, %%zmm13, %%zmm13\n\t"               \
      "mov %0, %%rcx\n\t"                                                                      \
      "1:\n\t" op " %%zmm12, %%zmm13, %%zmm0\n\t" op " %%zmm12, %%zmm13, %%zmm1\n\t" op        \
      " %%zmm12, %%zmm13, %%zmm2\n\t" op " %%zmm12, %%zmm13, %%zmm3\n\t" op                    \
      " %%zmm12, %%zmm13, %%zmm4\n\t" op " %%zmm12, %%zmm13, %%zmm5\n\t" op                    \
      " %%zmm12, %%zmm13, %%zmm6\n\t" op " %%zmm12, %%zmm13, %%zmm7\n\t" op                    \
      " %%zmm12, %%zmm13, %%zmm8\n\t" op " %%zmm12, %%zmm13, %%zmm9\n\t" op                    \
      " %%zmm12, %%zmm13, %%zmm10\n\t" op                                                      \
      " %%zmm12, %%zmm13, %%zmm11\n\t"                                                         \
      "dec %%rcx\n\tjnz 1b\n\t"                                                                \
      :                                                                                        \
      : "r"(kIters)                                                                            \
      : "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", \
        "xmm10", "xmm11", "xmm12", "xmm13", "cc")

// The same on ymm registers, for AVX2-only cores.
#define SPARQ_PEAK_BODY_YMM(op)                                                                \
  __asm__ volatile(                                                                            \
      "vpxor %%ymm12, %%ymm12, %%ymm12\n\tvpxor %%ymm13, %%ymm13, %%ymm13\n\t"                 \
      "mov %0, %%rcx\n\t"                                                                      \
      "1:\n\t" op " %%ymm12, %%ymm13, %%ymm0\n\t" op " %%ymm12, %%ymm13, %%ymm1\n\t" op        \
      " %%ymm12, %%ymm13, %%ymm2\n\t" op " %%ymm12, %%ymm13, %%ymm3\n\t" op                    \
      " %%ymm12, %%ymm13, %%ymm4\n\t" op " %%ymm12, %%ymm13, %%ymm5\n\t" op                    \
      " %%ymm12, %%ymm13, %%ymm6\n\t" op " %%ymm12, %%ymm13, %%ymm7\n\t" op                    \
      " %%ymm12, %%ymm13, %%ymm8\n\t" op " %%ymm12, %%ymm13, %%ymm9\n\t" op                    \
      " %%ymm12, %%ymm13, %%ymm10\n\t" op                                                      \
      " %%ymm12, %%ymm13, %%ymm11\n\t"                                                         \
      "dec %%rcx\n\tjnz 1b\n\t"                                                                \
      :                                                                                        \
      : "r"(kIters)                                                                            \
      : "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", \
        "xmm10", "xmm11", "xmm12", "xmm13", "cc")

__attribute__((noinline)) void fma_chains() { SPARQ_PEAK_BODY("vfmadd231ps"); }
__attribute__((noinline)) void vnni_chains() { SPARQ_PEAK_BODY("vpdpbusd"); }
__attribute__((noinline)) void fma_chains_ymm() { SPARQ_PEAK_BODY_YMM("vfmadd231ps"); }
// vpmaddwd's result does not depend on its destination, so each "chain" is only a
// stream of independent instructions: their throughput, which is what is measured.
__attribute__((noinline)) void maddwd_ymm() { SPARQ_PEAK_BODY_YMM("vpmaddwd"); }

}  // namespace

double measure_peak_fma_gflops() {
  if (!isa_supported(Isa::kAvx512)) return 0.0;
  const double s = best_seconds(fma_chains);
  return 12.0 * kIters * 16 * 2 / s * 1e-9;
}

double measure_peak_vnni_gops() {
  if (!isa_supported(Isa::kAvx512Vnni)) return 0.0;
  const double s = best_seconds(vnni_chains);
  return 12.0 * kIters * 64 * 2 / s * 1e-9;
}

double measure_peak_avx2_fma_gflops() {
  if (!isa_supported(Isa::kAvx2)) return 0.0;
  const double s = best_seconds(fma_chains_ymm);
  return 12.0 * kIters * 8 * 2 / s * 1e-9;
}

double measure_peak_avx2_maddwd_gops() {
  if (!isa_supported(Isa::kAvx2)) return 0.0;
  const double s = best_seconds(maddwd_ymm);
  return 12.0 * kIters * 16 * 2 / s * 1e-9;
}

}  // namespace sparq::bench
