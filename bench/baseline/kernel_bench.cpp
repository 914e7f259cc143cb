#include "bench/baseline/kernel_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include "bench/baseline/onednn_matmul.h"
#include "engine/parallel.h"
#include "formats/error.h"
#include "kernels/spmm/spmm.h"

namespace sparq::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Enough rotating copies of each side's inputs (weights and activations) that one pass
// overflows the last-level cache (32 MiB per CCD here), so neither side is timed on
// cache-warm inputs. Each side writes one output buffer, as a planned model would.
constexpr double kRotationBytes = 96.0 * 1024 * 1024;

int copies_for(double bytes_per_copy) {
  if (const char* e = std::getenv("SPARQ_BENCH_COPIES")) return std::max(1, std::atoi(e));
  const double c = std::ceil(kRotationBytes / std::max(bytes_per_copy, 1.0));
  return static_cast<int>(std::min(64.0, std::max(2.0, c)));
}

// One independent set of operands for sparq.
struct SparqCopy {
  PackedMatrix w;
  AlignedBuffer x;
  std::vector<float> token_scale;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// Times `calls` calls of f (rotating i), returning ms per call.
template <class F>
double time_calls(F&& f, int calls, int& i) {
  const auto t0 = Clock::now();
  for (int c = 0; c < calls; ++c) f(i++);
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / calls;
}

}  // namespace

KernelBenchResult run_kernel_bench(const KernelBenchConfig& cfg) {
  KernelBenchResult res;
  res.config = cfg;
  BlockShape block = kBlock4x1;
  if (cfg.block != "auto" && !parse_block_shape(cfg.block, &block)) {
    throw Error(Status::kInvalidArgument, "unknown block shape '" + cfg.block + "'");
  }
  res.block = block_shape_name(block);
  const int64_t m = cfg.m, k = cfg.k, n = cfg.n;

  // Weights: seeded uniform, magnitude-pruned in the chosen block shape.
  std::vector<float> wt(static_cast<size_t>(n * k));
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  // SPARQ_KB_WEIGHTS=normal|laplace: bell-shaped weights like trained ones (the AVX2
  // dense GEMM's pair-safe groups depend on the distribution; no other kernel does).
  const char* dist_env = std::getenv("SPARQ_KB_WEIGHTS");
  const std::string dist = dist_env != nullptr ? dist_env : "";
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::exponential_distribution<float> e(1.0f);
  for (auto& v : wt) {
    if (dist == "normal") v = g(rng);
    else if (dist == "laplace") v = (rng() & 1 ? 1.0f : -1.0f) * e(rng);
    else v = u(rng);
  }
  prune_blocks(wt.data(), n, k, block, cfg.sparsity);
  const bool dense = cfg.sparsity == 0.0;  // sparq's dense GEMM path
  std::vector<int8_t> q;
  std::vector<float> scales(static_cast<size_t>(n));
  if (cfg.int8) {
    q.resize(wt.size());
    quantize_per_channel(wt.data(), n, k, q.data(), scales.data());
  }
  auto pack = [&] {
    if (!cfg.int8) return PackedMatrix::pack_f32(wt.data(), n, k, block, dense);
    PackedMatrix p = PackedMatrix::pack_s8(q.data(), scales.data(), n, k, block, dense);
    if (spmm_kernels().reads_pair_safe()) {  // as a loaded model
      p.derive_pair_safe(spmm_kernels().u8s8_r4_sign_paired);
    }
    return p;
  };

  const size_t act_elem = cfg.int8 ? 1 : 4;
  std::vector<SparqCopy> sq;
  {
    SparqCopy first;
    first.w = pack();
    const double per = static_cast<double>(first.w.bytes() + m * k * act_elem);
    const int copies = copies_for(per);
    sq.push_back(std::move(first));
    for (int c = 1; c < copies; ++c) sq.push_back(SparqCopy{pack(), {}, {}});
  }
  for (SparqCopy& c : sq) {
    c.x.resize(static_cast<size_t>(m * k) * act_elem);
    if (cfg.int8) {
      auto* x = c.x.as<uint8_t>();
      for (int64_t i = 0; i < m * k; ++i) x[i] = static_cast<uint8_t>(rng() & 0xFF);
      c.token_scale.assign(static_cast<size_t>(m), 0.02f);
    } else {
      auto* x = c.x.as<float>();
      for (int64_t i = 0; i < m * k; ++i) x[i] = u(rng);
    }
  }
  AlignedBuffer y(static_cast<size_t>(m * n) * 4);
  res.stored_density = sq[0].w.stored_density();
  const SpmmKernels& kernels = spmm_kernels();
  const int R = sq[0].w.view().rows_per_block;
  res.sparq_kernel = cfg.int8 ? kernels.u8s8_name(sq[0].w.view()) : kernels.f32_name(R);
  if (cfg.int8 && kernels.gemm_r4_for(sq[0].w.view()) != nullptr) {
    res.sparq_kernel = kernels.gemm_r4_name(sq[0].w.view());
  }
  if (cfg.int8 && sq[0].w.view().quad_index != nullptr && kernels.u8s8_quads_r1 != nullptr) {
    res.sparq_kernel = kernels.u8s8_quads_r1_name;
  }

  const double onednn_per = static_cast<double>(k * n * act_elem + m * k * act_elem);
  // Before oneDNN makes its first parallel region: an OpenMP worker started by a region of
  // the default team (all cores) spins for about 8 ms after each later region, on the core
  // sparq's next sample runs beside (15% slower with a spinner on the other vCPU, Zen 3).
  OnednnMatmul::set_threads(cfg.threads);
  OnednnMatmul dnn(m, k, n, cfg.int8, copies_for(onednn_per));
  dnn.set_weights(wt.data());
  res.onednn_impl = dnn.implementation();

  ThreadPool pool(cfg.threads);
  // SPARQ_KB_X=hot: both sides read one activation buffer every call (the weights still
  // rotate), as a planned model's matmul reads the panel its producer has just written;
  // by default the activations rotate with the weights and come from DRAM.
  const char* x_env = std::getenv("SPARQ_KB_X");
  const bool hot_x = x_env != nullptr && std::string(x_env) == "hot";
  const bool gelu = std::getenv("SPARQ_KB_GELU") != nullptr;  // read once, not per timed call
  auto run_sparq = [&](int i) {
    SparqCopy& c = sq[static_cast<size_t>(i) % sq.size()];
    const SparqCopy& xc = hot_x ? sq[0] : c;
    Epilogue ep;
    ep.out_f32 = y.as<float>();
    ep.ld_out = m;
    if (gelu) ep.activation = Activation::kGeluErf;
    if (cfg.int8) {
      ep.channel_scale = c.w.view().scales;
      ep.token_scale = xc.token_scale.data();
      spmm_u8s8(kernels, &pool, c.w.view(), xc.x.as<uint8_t>(), m, m, ep);
    } else {
      spmm_f32(kernels, &pool, c.w.view(), xc.x.as<float>(), m, m, ep);
    }
  };
  auto run_dnn = [&](int i) { dnn.run(i, hot_x); };

  // Warm up both (page faults, thread start-up), then size a sample to about
  // sample_seconds from the warm-up rate.
  int is = 0, id = 0;
  const double warm_s = time_calls(run_sparq, std::max<int>(3, static_cast<int>(sq.size())), is);
  const double warm_d = time_calls(run_dnn, std::max(3, dnn.copies()), id);
  auto calls_for = [&](double ms) {
    return std::max(3, static_cast<int>(cfg.sample_seconds * 1e3 / std::max(ms, 1e-4)));
  };
  const int calls_s = calls_for(warm_s), calls_d = calls_for(warm_d);
  std::vector<double> ts, td;
  for (int s = 0; s < cfg.samples; ++s) {
    // Let the other side's spinning workers (TBB, OpenMP) go idle between samples: libgomp's
    // spin after a region (300000 pause loops by default) measured 8.2 ms on Zen 3, and a
    // pause is twice as long on recent Xeons.
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    ts.push_back(time_calls(run_sparq, calls_s, is));
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    td.push_back(time_calls(run_dnn, calls_d, id));
  }
  res.sparq_ms = median(ts);
  res.onednn_ms = median(td);
  res.speedup = res.onednn_ms / res.sparq_ms;
  const PackedWeights& v = sq[0].w.view();
  const double slots = static_cast<double>(v.num_groups) * v.rows_per_block * v.group;
  const double nonzero_ops = 2.0 * slots * res.stored_density * static_cast<double>(m);
  res.sparq_gops = nonzero_ops / (res.sparq_ms * 1e6);
  res.sparq_eff_gops = 2.0 * m * k * n / (res.sparq_ms * 1e6);
  res.onednn_gops = 2.0 * m * k * n / (res.onednn_ms * 1e6);
  return res;
}

std::vector<KernelBenchConfig> sweep_grid(const std::vector<std::string>& blocks) {
  std::vector<KernelBenchConfig> grid;
  const int64_t kn[][2] = {{768, 768}, {768, 3072}, {3072, 768}, {1024, 4096}, {4096, 1024}};
  for (int threads : {1, 2})
    for (bool int8 : {true, false})
      for (int64_t m : {128, 384})
        for (const auto& s : kn)
          for (double sp : {0.0, 0.5, 0.7, 0.8, 0.9, 0.95})
            for (const std::string& block : blocks) {
              if (sp == 0.0 && block != blocks.front()) continue;  // dense: any block
              KernelBenchConfig c;
              c.m = m;
              c.k = s[0];
              c.n = s[1];
              c.sparsity = sp;
              c.int8 = int8;
              c.threads = threads;
              c.block = block;
              grid.push_back(c);
            }
  return grid;
}

std::string cpu_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, name, vendor;
  int family = -1, model = -1;
  auto value = [&]() {
    const size_t c = line.find(':');
    return c == std::string::npos ? std::string() : line.substr(c + 2);
  };
  while (std::getline(in, line) && (name.empty() || vendor.empty() || family < 0 || model < 0)) {
    if (line.rfind("model name", 0) == 0) name = value();
    else if (line.rfind("vendor_id", 0) == 0) vendor = value();
    else if (line.rfind("cpu family", 0) == 0) family = std::atoi(value().c_str());
    else if (line.rfind("model", 0) == 0 && line.rfind("model name", 0) != 0)
      model = std::atoi(value().c_str());
  }
  std::string gen;
  if (vendor == "AuthenticAMD" && family == 26) gen = ", Zen 5";
  else if (vendor == "AuthenticAMD" && family == 25)
    gen =
        (model >= 0x10 && model < 0x20) || (model >= 0x60 && model < 0xB0) ? ", Zen 4" : ", Zen 3";
  return (name.empty() ? std::string("unknown CPU") : name) + " (" + vendor + " family " +
         std::to_string(family) + " model " + std::to_string(model) + gen + ")";
}

std::string to_json(const std::vector<KernelBenchResult>& results) {
  std::ostringstream os;
  os.precision(6);
  std::string cpu;
  for (char c : cpu_description()) {
    if (c != '"' && c != '\\' && static_cast<unsigned char>(c) >= 0x20) cpu += c;
  }
  os << "[";
  for (size_t i = 0; i < results.size(); ++i) {
    const KernelBenchResult& r = results[i];
    os << (i ? ",\n " : "\n ") << "{\"m\":" << r.config.m << ",\"k\":" << r.config.k
       << ",\"n\":" << r.config.n << ",\"sparsity\":" << r.config.sparsity << ",\"precision\":\""
       << (r.config.int8 ? "int8" : "fp32") << "\",\"block\":\"" << r.block
       << "\",\"threads\":" << r.config.threads << ",\"sparq_ms\":" << r.sparq_ms
       << ",\"onednn_ms\":" << r.onednn_ms << ",\"speedup\":" << r.speedup << ",\"sparq_kernel\":\""
       << r.sparq_kernel << "\",\"onednn_impl\":\"" << r.onednn_impl
       << "\",\"stored_density\":" << r.stored_density << ",\"sparq_gops\":" << r.sparq_gops
       << ",\"sparq_effective_gops\":" << r.sparq_eff_gops << ",\"onednn_gops\":" << r.onednn_gops
       << ",\"cpu\":\"" << cpu << "\"}";
  }
  os << "\n]\n";
  return os.str();
}

}  // namespace sparq::bench
