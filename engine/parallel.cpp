#include "engine/parallel.h"

#include "formats/aligned_buffer.h"

#include <sched.h>

#include <algorithm>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

namespace sparq {

struct ThreadPool::Impl {
  explicit Impl(int threads) : arena(threads) {}
  tbb::task_arena arena;
};

int ThreadPool::hardware_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return std::max(1, tbb::this_task_arena::max_concurrency());
}

ThreadPool::ThreadPool(int threads) {
  threads_ = threads > 0 ? threads : hardware_threads();
  impl_ = std::make_unique<Impl>(threads_);
}

ThreadPool::~ThreadPool() = default;

void ThreadPool::parallel_for(int64_t parts, const std::function<void(int64_t)>& body) {
  if (parts <= 0) return;
  if (parts == 1 || threads_ == 1) {
    for (int64_t i = 0; i < parts; ++i) body(i);
    return;
  }
  impl_->arena.execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, parts, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t i = r.begin(); i < r.end(); ++i) body(i);
        },
        tbb::simple_partitioner());
  });
}

std::vector<int64_t> partition_block_rows(const PackedWeights& w, int64_t parts) {
  const int64_t nbr = w.num_block_rows;
  parts = std::max<int64_t>(1, std::min(parts, nbr));
  // Fixed cost of a block-row in group units: zeroing, the lane transpose and the
  // epilogue are worth a few groups of dot products.
  constexpr int64_t kRowOverhead = 2;
  auto cost_before = [&](int64_t br) { return w.group_begin(br) + kRowOverhead * br; };
  const int64_t total = cost_before(nbr);
  std::vector<int64_t> bounds{0};
  int64_t br = 0;
  for (int64_t p = 1; p < parts; ++p) {
    const int64_t target = total * p / parts;
    // First block-row whose prefix cost reaches the target (prefix cost is monotonic).
    int64_t lo = br, hi = nbr;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (cost_before(mid) < target) lo = mid + 1;
      else hi = mid;
    }
    br = lo;
    if (br > bounds.back() && br < nbr) bounds.push_back(br);
  }
  bounds.push_back(nbr);
  return bounds;
}

namespace {

// Below this many multiply-adds a call runs serially (thread wake-up costs more).
constexpr int64_t kMinParallelMacs = int64_t{1} << 16;

template <class T, class Fn>
void run_spmm(Fn kernel, ThreadPool* pool, const PackedWeights& w, const T* x, int64_t ldx,
              int64_t m, const Epilogue& ep) {
  if (m <= 0) return;
  const int64_t macs = w.num_groups * w.rows_per_block * w.group * m;
  const int threads = pool ? pool->threads() : 1;
  if (threads <= 1 || macs < kMinParallelMacs) {
    kernel(w, x, ldx, 0, m, 0, w.num_block_rows, ep);
    return;
  }
  // A few parts per thread lets the arena even out a noisy neighbour; each part keeps
  // the whole token range so its activation panel is reused across its block-rows.
  const std::vector<int64_t> b = partition_block_rows(w, int64_t{threads} * 4);
  pool->parallel_for(static_cast<int64_t>(b.size()) - 1, [&](int64_t i) {
    kernel(w, x, ldx, 0, m, b[static_cast<size_t>(i)], b[static_cast<size_t>(i) + 1], ep);
  });
}

}  // namespace

void spmm_f32(const SpmmKernels& kernels, ThreadPool* pool, const PackedWeights& w,
              const float* x, int64_t ldx, int64_t m, const Epilogue& ep) {
  run_spmm(kernels.f32(w.rows_per_block), pool, w, x, ldx, m, ep);
}

void spmm_u8s8(const SpmmKernels& kernels, ThreadPool* pool, const PackedWeights& w,
               const uint8_t* x, int64_t ldx, int64_t m, const Epilogue& ep) {
  if (w.dense && w.rows_per_block == 4 && kernels.u8s8_gemm_r4 != nullptr && m > 0) {
    // Dense weights: interleave the activations once for all block-rows (K x M bytes)
    // instead of once per block-row inside the kernel.
    thread_local AlignedBuffer scratch;
    const int64_t ldq = (m + 63) / 64 * 64;
    const size_t bytes = static_cast<size_t>((w.k + 3) / 4 * ldq * 4);
    if (scratch.size() < bytes) scratch.resize(bytes);
    kernels.u8_pack_quads(x, ldx, w.k, m, scratch.as<uint8_t>(), ldq);
    run_spmm(kernels.u8s8_gemm_r4, pool, w, scratch.as<uint8_t>(), ldq, m, ep);
    return;
  }
  run_spmm(kernels.u8s8(w.rows_per_block), pool, w, x, ldx, m, ep);
}

}  // namespace sparq
