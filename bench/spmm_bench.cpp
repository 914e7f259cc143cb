// Google Benchmark suite for the SpMM family: sparq's kernels (active ISA) against
// oneDNN's dense matmul in the same binary, on the shapes of bench/shapes/bert.txt.
// Counters: FLOPS = operations on the stored nonzeros, EffFLOPS = dense-equivalent
// 2*M*K*N per second. Activations rotate through copies so they are not L1/L2-hot;
// one output buffer is reused (as the memory planner reuses it); weights stay
// resident, as a sparse model's do across its layers.
#include <cstdint>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "bench/baseline/onednn_matmul.h"
#include "engine/parallel.h"
#include "formats/bsr.h"
#include "kernels/spmm/spmm.h"

namespace {

using namespace sparq;

constexpr int kActCopies = 16;

struct SparqSetup {
  PackedMatrix w;
  std::vector<AlignedBuffer> x, y;
  std::vector<float> token_scale;
  double nonzero_ops = 0;
};

SparqSetup make_setup(int64_t m, int64_t k, int64_t n, double sparsity, bool int8) {
  std::vector<float> wt(static_cast<size_t>(n * k));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& v : wt) v = u(rng);
  prune_blocks(wt.data(), n, k, kBlock4x1, sparsity);
  SparqSetup s;
  const bool dense = sparsity == 0.0;
  if (int8) {
    std::vector<int8_t> q(wt.size());
    std::vector<float> sc(static_cast<size_t>(n));
    quantize_per_channel(wt.data(), n, k, q.data(), sc.data());
    s.w = PackedMatrix::pack_s8(q.data(), sc.data(), n, k, kBlock4x1, dense);
  } else {
    s.w = PackedMatrix::pack_f32(wt.data(), n, k, kBlock4x1, dense);
  }
  const size_t elem = int8 ? 1 : 4;
  for (int c = 0; c < kActCopies; ++c) {
    s.x.emplace_back(static_cast<size_t>(m * k) * elem);
    auto* bytes = s.x.back().as<uint8_t>();
    for (size_t i = 0; i < s.x.back().size(); ++i) bytes[i] = static_cast<uint8_t>(rng() & 0x3F);
  }
  s.y.emplace_back(static_cast<size_t>(m * n) * 4);
  s.token_scale.assign(static_cast<size_t>(m), 0.01f);
  const PackedWeights& v = s.w.view();
  s.nonzero_ops = 2.0 * static_cast<double>(v.num_groups) * v.rows_per_block * v.group *
                  s.w.stored_density() * static_cast<double>(m);
  return s;
}

void set_counters(benchmark::State& state, double ops, double dense_ops) {
  state.counters["FLOPS"] = benchmark::Counter(ops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["EffFLOPS"] =
      benchmark::Counter(dense_ops, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_SparqSpmm(benchmark::State& state, bool int8, int threads) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const double sparsity = static_cast<double>(state.range(3)) / 100.0;
  SparqSetup s = make_setup(m, k, n, sparsity, int8);
  ThreadPool pool(threads);
  const SpmmKernels& kernels = spmm_kernels();
  int i = 0;
  for (auto _ : state) {
    const size_t c = static_cast<size_t>(i++ % kActCopies);
    Epilogue ep;
    ep.out_f32 = s.y[0].as<float>();
    ep.ld_out = m;
    if (int8) {
      ep.channel_scale = s.w.view().scales;
      ep.token_scale = s.token_scale.data();
      spmm_u8s8(kernels, &pool, s.w.view(), s.x[c].as<uint8_t>(), m, m, ep);
    } else {
      spmm_f32(kernels, &pool, s.w.view(), s.x[c].as<float>(), m, m, ep);
    }
  }
  set_counters(state, s.nonzero_ops, 2.0 * m * k * n);
  state.SetLabel(int8 ? kernels.u8s8_name(4) : kernels.f32_name(4));
}

void BM_OnednnDense(benchmark::State& state, bool int8, int threads) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  std::vector<float> wt(static_cast<size_t>(n * k));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& v : wt) v = u(rng);
  // Before the primitive and its reorder: their parallel regions then use this team size
  // (kernel_bench.cpp says why it matters).
  bench::OnednnMatmul::set_threads(threads);
  bench::OnednnMatmul dnn(m, k, n, int8, kActCopies);
  dnn.set_weights(wt.data());
  int i = 0;
  for (auto _ : state) dnn.run(i++);
  set_counters(state, 2.0 * m * k * n, 2.0 * m * k * n);
  state.SetLabel(dnn.implementation());
}

std::vector<std::vector<int64_t>> load_shapes() {
  std::vector<std::vector<int64_t>> shapes;
  std::ifstream in(SPARQ_SHAPES_FILE);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream is(line);
    std::string name;
    int64_t m, k, n;
    if (is >> name >> m >> k >> n) shapes.push_back({m, k, n});
  }
  return shapes;
}

void register_all() {
  const auto shapes = load_shapes();
  for (bool int8 : {true, false}) {
    for (int threads : {1, 2}) {
      const std::string suffix =
          std::string(int8 ? "_int8" : "_fp32") + "/threads:" + std::to_string(threads);
      auto* b =
          benchmark::RegisterBenchmark(("SparqSpmm" + suffix).c_str(), BM_SparqSpmm, int8, threads);
      auto* d = benchmark::RegisterBenchmark(("OnednnDense" + suffix).c_str(), BM_OnednnDense, int8,
                                             threads);
      b->ArgNames({"M", "K", "N", "sparsity"})->Unit(benchmark::kMicrosecond)->UseRealTime();
      d->ArgNames({"M", "K", "N", "sparsity"})->Unit(benchmark::kMicrosecond)->UseRealTime();
      for (const auto& s : shapes) {
        for (int sp : {0, 50, 70, 80, 90, 95}) b->Args({s[0], s[1], s[2], sp});
        d->Args({s[0], s[1], s[2], 0});
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
