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

// G(FL)OP/s of 12 x kIters instructions of `chains`, each doing `ops` operations, or 0
// when the CPU lacks `isa`.
double rate(Isa isa, void (*chains)(), int ops) {
  if (!isa_supported(isa)) return 0.0;
  return 12.0 * kIters * ops / best_seconds(chains) * 1e-9;
}

}  // namespace

double measure_peak_fma_gflops() { return rate(Isa::kAvx512, fma_chains, 16 * 2); }
double measure_peak_vnni_gops() { return rate(Isa::kAvx512Vnni, vnni_chains, 64 * 2); }
double measure_peak_avx2_fma_gflops() { return rate(Isa::kAvx2, fma_chains_ymm, 8 * 2); }
double measure_peak_avx2_maddwd_gops() { return rate(Isa::kAvx2, maddwd_ymm, 16 * 2); }

}  // namespace sparq::bench
