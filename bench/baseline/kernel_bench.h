// `sparq kernel-bench`: sparq's SpMM (or dense GEMM at sparsity 0) against oneDNN's
// dense matmul primitive on the same shape, precision and thread count, timed in the
// same run, with medians of interleaved samples.
#ifndef SPARQ_BENCH_BASELINE_KERNEL_BENCH_H_
#define SPARQ_BENCH_BASELINE_KERNEL_BENCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "formats/bsr.h"

namespace sparq::bench {

struct KernelBenchConfig {
  int64_t m = 128, k = 768, n = 3072;
  double sparsity = 0.9;
  bool int8 = true;
  std::string block = "auto";  // auto = 4x1
  int threads = 1;
  int samples = 9;               // interleaved samples per side; the median is reported
  double sample_seconds = 0.03;  // target duration of one sample
};

struct KernelBenchResult {
  KernelBenchConfig config;
  std::string block;         // resolved block shape
  std::string sparq_kernel;  // the micro-kernel name sparq dispatched to
  std::string onednn_impl;   // oneDNN's implementation string
  double sparq_ms = 0, onednn_ms = 0, speedup = 0;
  double stored_density = 0;  // nonzero fraction of the slots sparq multiplies
  double sparq_gops = 0;      // on the nonzero weights (2 ops per multiply-add)
  double sparq_eff_gops = 0;  // dense-equivalent: 2*M*K*N / time
  double onednn_gops = 0;     // 2*M*K*N / time
};

KernelBenchResult run_kernel_bench(const KernelBenchConfig& cfg);

// The sweep grid of issue 2: M in {128, 384} x (K, N) in {(768, 768), (768, 3072),
// (3072, 768), (1024, 4096), (4096, 1024)} x sparsity in {0, .5, .7, .8, .9, .95} x
// {fp32, int8} x threads {1, 2}.
// The --sweep grid: threads 1 and 2, int8 and fp32, M 128 and 384, the BERT-base and
// BERT-large K x N shapes, sparsity 0 (dense; one block) and 0.5-0.95 in each of `blocks`.
std::vector<KernelBenchConfig> sweep_grid(const std::vector<std::string>& blocks);

// This CPU as kernel-bench reports it: /proc/cpuinfo's model name, vendor, family and
// model, and the AMD core generation where the family says it (Zen 4 runs AVX-512 at half
// the width of Zen 5, so their peaks differ by 2x): "AMD EPYC (AuthenticAMD family 26
// model 2, Zen 5)".
std::string cpu_description();

std::string to_json(const std::vector<KernelBenchResult>& results);

}  // namespace sparq::bench

#endif  // SPARQ_BENCH_BASELINE_KERNEL_BENCH_H_
