// The sparq command-line tool. Contract: DESIGN.md ("CLI contract").
// Errors: one line on stderr beginning "sparq: error:", exit 1 (2 for usage errors).
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#ifdef SPARQ_HAVE_BASELINE
#include "bench/baseline/kernel_bench.h"
#include "bench/baseline/onednn_matmul.h"
#include "bench/baseline/peak.h"
#endif
#include "engine/parallel.h"
#include "formats/error.h"
#include "kernels/common/isa.h"
#include "sparq/sparq.h"
#include "tools/cli.h"

namespace {

// An error message as one printable line: names and values quoted from a malformed
// input file could hold control bytes or newlines (UTF-8 passes).
std::string printable(const char* msg) { return sparq::escape_bytes(msg, /*ascii_only=*/false); }

using sparq::cli::Args;
using sparq::cli::UsageError;

const char* kUsage =
    "usage: sparq <command> [options]\n"
    "\n"
    "commands:\n"
    "  kernel-bench [--m M] [--k K] [--n N] [--sparsity S] [--precision fp32|int8]\n"
    "               [--block auto|4x1|1x4|1x1] [--threads T] [--sweep] [--json]\n"
    "      time sparq's SpMM against oneDNN's dense matmul on the same shape\n"
    "      (--sweep: the BERT shapes grid in every block pattern, or --block's)\n"
    "      (defaults: M=128 K=768 N=3072 S=0.9 int8, block auto (4x1), 1 thread)\n"
    "  convert MODEL.onnx -o OUT.sparq [--precision fp32|int8] [--block auto|4x1|1x4|1x1]\n"
    "          [--prune SPARSITY] [--threads N] [--no-fuse] [--require-fused]\n"
    "      convert an ONNX encoder into sparq's block-sparse format; warns when an\n"
    "      encoder matmul, attention, LayerNorm or GELU is not fused (--require-fused:\n"
    "      an error, nothing written; --no-fuse: no fusion passes, op by op)\n"
    "  run MODEL.sparq -i NAME=FILE.npy [-i ...] -o OUTDIR [--threads N]\n"
    "      run a model; writes OUTDIR/<output>.npy for every output, in its dtype\n"
    "  bench MODEL.sparq [--batch B] [--seq S] [--threads T] [--warmup N] [--iterations N]\n"
    "          [--instances I --threads-per-instance T] [--latency-cap MS] [--json]\n"
    "      latency (p50, p90, p99, mean) and throughput on random in-vocabulary ids;\n"
    "      I instances share one loaded model, each pinned to its own T cores;\n"
    "      --latency-cap searches batch 1-8 and instance layouts for the best\n"
    "      throughput whose p90 stays under MS\n"
    "  inspect MODEL.sparq [--verify] [--batch B] [--seq S] [--json]\n"
    "      describe a .sparq file and its execution plan for [B, S] inputs (default\n"
    "      1 x 128: steps, fusions, arena and peak bytes); --verify also checks every\n"
    "      data checksum\n"
    "  version      print the library version and the kernel ISA in use\n";

#ifndef SPARQ_HAVE_BASELINE
int kernel_bench(Args&) {
  throw sparq::Error(sparq::Status::kUnsupported,
                     "this sparq was built without oneDNN (Debian: libdnnl-dev and "
                     "ocl-icd-opencl-dev; scripts/deps.sh installs them): kernel-bench, which "
                     "times sparq against oneDNN's dense matmul, is not available");
}
#else
int kernel_bench(Args& args) {
  using namespace sparq::bench;
  const bool json = args.flag("--json");
  const bool sweep = args.flag("--sweep");
  KernelBenchConfig base;
  base.m = args.integer("--m", base.m, 1, 1 << 20);
  base.k = args.integer("--k", base.k, 1, 1 << 20);
  base.n = args.integer("--n", base.n, 1, 1 << 20);
  base.sparsity = args.real("--sparsity", base.sparsity, 0.0, 0.999999);
  std::string precision = "int8";
  args.value("--precision", &precision);
  if (precision != "int8" && precision != "fp32") {
    throw UsageError("--precision must be fp32 or int8, got '" + precision + "'");
  }
  base.int8 = precision == "int8";
  const bool block_given = args.value("--block", &base.block);
  if (base.block != "auto" &&
      !(base.block == "4x1" || base.block == "1x4" || base.block == "1x1")) {
    throw UsageError("--block must be auto, 4x1, 1x4 or 1x1, got '" + base.block + "'");
  }
  base.threads = static_cast<int>(args.integer("--threads", base.threads, 0, 1024));
  if (base.threads == 0) base.threads = sparq::ThreadPool::hardware_threads();
  args.finish();
  if (base.m * base.k > (int64_t{1} << 30) || base.k * base.n > (int64_t{1} << 30) ||
      base.m * base.n > (int64_t{1} << 30)) {
    throw UsageError("shape too large for kernel-bench (each operand at most 2^30 elements)");
  }

  std::vector<KernelBenchConfig> configs;
  if (sweep) {
    // Every block pattern users have (4x1, Neural Magic's 1x4, unstructured 1x1) unless
    // --block names one.
    const std::vector<std::string> blocks = block_given
                                                ? std::vector<std::string>{base.block}
                                                : std::vector<std::string>{"4x1", "1x4", "1x1"};
    for (const KernelBenchConfig& c : sweep_grid(blocks)) configs.push_back(c);
  } else {
    configs.push_back(base);
  }

  double peak_fma = 0, peak_vnni = 0;
  if (!json) {
    peak_fma = measure_peak_fma_gflops();
    peak_vnni = measure_peak_vnni_gops();
    const bool avx512 = peak_fma > 0;
    std::printf("sparq %s kernels: %s; oneDNN %s\n", sparq_version(), sparq_kernel_isa(),
                OnednnMatmul::version().c_str());
    std::printf("cpu: %s\n", cpu_description().c_str());
    if (avx512) {
      std::printf("one-core peak: AVX-512 FMA %.1f GFLOP/s, VNNI %.1f GOP/s\n", peak_fma,
                  peak_vnni);
    } else {
      // No AVX-512: %peak is against the AVX2 instructions the kernels use.
      peak_fma = measure_peak_avx2_fma_gflops();
      peak_vnni = measure_peak_avx2_maddwd_gops();
      std::printf("one-core peak: AVX2 FMA %.1f GFLOP/s, int8 vpmaddwd %.1f GOP/s (no AVX-512)\n",
                  peak_fma, peak_vnni);
    }
    std::printf("%5s %5s %5s %5s %4s %5s %3s %9s %9s %7s %9s %6s  %s\n", "M", "K", "N", "spars",
                "prec", "block", "thr", "sparq_ms", "onednn_ms", "speedup", "nz_GOP/s", "%peak",
                "kernel");
    std::fflush(stdout);
  }
  std::vector<KernelBenchResult> results;
  for (size_t i = 0; i < configs.size(); ++i) {
    if (!json && configs.size() > 1) {
      std::fprintf(stderr, "[%zu/%zu]\r", i + 1, configs.size());
    }
    results.push_back(run_kernel_bench(configs[i]));
    if (!json) {
      const KernelBenchResult& r = results.back();
      const double peak = (r.config.int8 ? peak_vnni : peak_fma) * r.config.threads;
      std::printf("%5lld %5lld %5lld %5.2f %4s %5s %3d %9.4f %9.4f %6.2fx %9.1f %5.1f%%  %s\n",
                  static_cast<long long>(r.config.m), static_cast<long long>(r.config.k),
                  static_cast<long long>(r.config.n), r.config.sparsity,
                  r.config.int8 ? "int8" : "fp32", r.block.c_str(), r.config.threads, r.sparq_ms,
                  r.onednn_ms, r.speedup, r.sparq_gops,
                  peak > 0 ? 100.0 * r.sparq_gops / peak : 0.0, r.sparq_kernel.c_str());
      std::fflush(stdout);
    }
  }
  if (json) std::fputs(to_json(results).c_str(), stdout);
  return 0;
}
#endif  // SPARQ_HAVE_BASELINE

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "-h" || cmd == "--help" || cmd == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    Args args(argc, argv, 2);
    if (cmd == "kernel-bench") return kernel_bench(args);
    if (cmd == "convert") return sparq::cli::convert_cmd(args);
    if (cmd == "run") return sparq::cli::run_cmd(args);
    if (cmd == "bench") return sparq::cli::bench_cmd(args);
    if (cmd == "inspect") return sparq::cli::inspect_cmd(args);
    if (cmd == "version") {
      args.finish();
      std::printf("sparq %s (kernels: %s, cpu: %s)\n", sparq_version(), sparq_kernel_isa(),
                  sparq::isa_name(sparq::detected_isa()));
      return 0;
    }
    throw UsageError("unknown command '" + cmd + "'");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "sparq: error: %s\n%s", printable(e.what()).c_str(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sparq: error: %s\n", printable(e.what()).c_str());
    return 1;
  }
}
