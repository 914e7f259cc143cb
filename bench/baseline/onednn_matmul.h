// oneDNN dense matmul, the baseline that kernel-bench and bench/ measure sparq
// against. Linked by the CLI and the benches only, never by libsparq.
//
// Computes Y[M, N] = X[M, K] . W[K, N] (token-major, oneDNN's natural layout) with
// weights reordered once, outside any timed loop, to the layout oneDNN prefers.
// int8: X u8, W s8, Y f32 with per-output-channel scales (oneDNN's fastest int8 path:
// no zero points). fp32: everything f32.
#ifndef SPARQ_BENCH_BASELINE_ONEDNN_MATMUL_H_
#define SPARQ_BENCH_BASELINE_ONEDNN_MATMUL_H_

#include <cstdint>
#include <memory>
#include <string>

namespace sparq::bench {

class OnednnMatmul {
 public:
  // `int8`: u8 x s8 -> f32. `copies`: independent weight and activation buffers the
  // runner rotates through so that caches do not flatter it.
  OnednnMatmul(int64_t m, int64_t k, int64_t n, bool int8, int copies);
  ~OnednnMatmul();
  // Loads weights W^T[N][K] (fp32; int8 quantized per output channel inside) into
  // every copy and random activations.
  void set_weights(const float* wt);
  // Runs copy `i % copies` once; with hot_src on copy 0's activations (the weights of copy
  // i % copies), whose bytes then stay cached from call to call.
  void run(int i, bool hot_src = false);
  int copies() const;
  std::string implementation() const;  // oneDNN's implementation name, e.g. brg:avx512_core_vnni

  // OpenMP threads oneDNN uses (Debian's oneDNN runs on OpenMP).
  static void set_threads(int threads);
  static std::string version();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparq::bench

#endif  // SPARQ_BENCH_BASELINE_ONEDNN_MATMUL_H_
