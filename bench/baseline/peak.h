// Measured compute ceilings of one core: AVX-512 FMA (fp32 flop/s) and vpdpbusd
// (int8 op/s, 1 op = one multiply or one add), or their AVX2 counterparts. Each runs independent
// dependency chains long enough to hide latency, on the calling thread.
#ifndef SPARQ_BENCH_BASELINE_PEAK_H_
#define SPARQ_BENCH_BASELINE_PEAK_H_

namespace sparq::bench {

// GFLOP/s of vfmadd231ps zmm on this core, or 0 when AVX-512 is unavailable.
double measure_peak_fma_gflops();
// GOP/s of vpdpbusd zmm on this core, or 0 when AVX512-VNNI is unavailable.
double measure_peak_vnni_gops();
// For AVX2-only cores: GFLOP/s of vfmadd231ps ymm, and GOP/s of vpmaddwd ymm (16
// multiply-adds of 16-bit pairs, 32 ops), the instruction of the AVX2 int8 kernels;
// 0 without AVX2.
double measure_peak_avx2_fma_gflops();
double measure_peak_avx2_maddwd_gops();

}  // namespace sparq::bench

#endif  // SPARQ_BENCH_BASELINE_PEAK_H_
