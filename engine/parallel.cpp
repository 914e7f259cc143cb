#include "engine/parallel.h"

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include "formats/aligned_buffer.h"

namespace sparq {

namespace {

// Spin budget of an idle worker before it sleeps on the condition variable.
constexpr auto kSpin = std::chrono::microseconds(2000);

thread_local bool t_in_region = false;  // nested regions run serially

}  // namespace

// Pool ids, for the pinning below; never reused.
std::atomic<uint64_t> g_next_pool_id{1};
thread_local uint64_t t_pinned_for = 0;  // the pool whose CPUs this thread is pinned to

struct ThreadPool::Impl {
  Impl(int threads, PoolKind kind) {
    use_tbb = kind == PoolKind::kTbb;
    if (use_tbb) {
      arena = std::make_unique<tbb::task_arena>(threads);
      // A creator restricted to some of the CPUs (sparq bench --instances pins each
      // instance's thread before it creates its session) gets its arena's threads pinned
      // there too. oneTBB's workers are shared by every arena, so a worker re-pins
      // whenever it runs a part for a pool other than the last one it pinned for.
      CPU_ZERO(&cpus);
      const unsigned online = std::thread::hardware_concurrency();
      pin = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && online > 0 &&
            static_cast<unsigned>(CPU_COUNT(&cpus)) < online;
      return;
    }
    for (int i = 1; i < threads; ++i) workers.emplace_back([this] { worker(); });
  }
  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop.store(true);
    }
    cv.notify_all();
    for (std::thread& t : workers) t.join();
  }

  // Claims and runs parts of the current job until none are left.
  void work(const std::function<void(int64_t)>* body, int64_t parts) {
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= parts) return;
      (*body)(i);
      done.fetch_add(1, std::memory_order_release);
    }
  }

  // Protocol: `epoch` is odd while the caller writes a job and even once it is
  // published. A worker announces itself in `active`, then re-reads the epoch: only if
  // it is still the even value it woke for are the job fields that job's. The caller
  // waits for `active` to drain after making the epoch odd, before touching the fields.
  void worker() {
    uint64_t seen = 0;
    for (;;) {
      const auto t0 = std::chrono::steady_clock::now();
      int spins = 0;
      auto ready = [&] {
        const uint64_t e = epoch.load();
        return (e != seen && (e & 1) == 0) || stop.load();
      };
      while (!ready()) {
        _mm_pause();
        if (++spins % 256 == 0 && std::chrono::steady_clock::now() - t0 > kSpin) {
          std::unique_lock<std::mutex> lock(mu);
          ++sleepers;
          cv.wait(lock, ready);
          --sleepers;
        }
      }
      if (stop.load()) return;
      const uint64_t e = epoch.load();
      seen = e;
      active.fetch_add(1);
      if (epoch.load() == e) {
        const std::function<void(int64_t)>* body = job_body.load();
        if (body != nullptr) {
          t_in_region = true;
          work(body, job_parts.load());
          t_in_region = false;
        }
      }
      active.fetch_sub(1);
    }
  }

  void run(int64_t parts, const std::function<void(int64_t)>& body) {
    std::unique_lock<std::mutex> region(region_mu, std::try_to_lock);
    if (!region.owns_lock()) {  // another thread is using this pool: run here
      for (int64_t i = 0; i < parts; ++i) body(i);
      return;
    }
    epoch.fetch_add(1);  // odd: writing
    while (active.load() != 0) _mm_pause();
    job_body.store(&body);
    job_parts.store(parts);
    next.store(0);
    done.store(0);
    epoch.fetch_add(1);  // even: published
    if (sleepers.load() > 0) {
      std::lock_guard<std::mutex> lock(mu);
      cv.notify_all();
    }
    t_in_region = true;
    work(&body, parts);
    t_in_region = false;
    while (done.load(std::memory_order_acquire) < parts) _mm_pause();
    job_body.store(nullptr);
  }

  bool use_tbb = false;
  std::unique_ptr<tbb::task_arena> arena;
  const uint64_t id = g_next_pool_id.fetch_add(1);
  bool pin = false;
  cpu_set_t cpus;
  std::vector<std::thread> workers;
  std::mutex mu, region_mu;
  std::condition_variable cv;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> epoch{0};
  std::atomic<int64_t> next{0}, done{0};
  std::atomic<int> active{0}, sleepers{0};
  std::atomic<const std::function<void(int64_t)>*> job_body{nullptr};
  std::atomic<int64_t> job_parts{0};
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

ThreadPool::ThreadPool(int threads)
    : ThreadPool(threads, RuntimeOptions::from_environment().pool) {}

ThreadPool::ThreadPool(int threads, PoolKind kind) {
  threads_ = threads > 0 ? threads : hardware_threads();
  impl_ = std::make_unique<Impl>(threads_, kind);
}

ThreadPool::~ThreadPool() = default;

const char* ThreadPool::kind() const { return impl_->use_tbb ? "tbb" : "team"; }

void ThreadPool::parallel_for(int64_t parts, const std::function<void(int64_t)>& body) {
  if (parts <= 0) return;
  if (parts == 1 || threads_ == 1 || t_in_region) {
    for (int64_t i = 0; i < parts; ++i) body(i);
    return;
  }
  if (!impl_->use_tbb) {
    impl_->run(parts, body);
    return;
  }
  // The simple partitioner, parts claimed by whichever thread is free: a static
  // partition (part i always on arena slot i, for cache affinity) measured slower, 8.1-8.3
  // against 7.4-7.5 ms on BERT-base at 2 threads, since a part then waits for its own
  // thread to wake.
  Impl& im = *impl_;
  const std::thread::id caller = std::this_thread::get_id();  // its affinity is its own
  im.arena->execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, parts, 1),
        [&](const tbb::blocked_range<int64_t>& r) {
          if (im.pin && t_pinned_for != im.id && std::this_thread::get_id() != caller) {
            sched_setaffinity(0, sizeof(im.cpus), &im.cpus);
            t_pinned_for = im.id;
          }
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
  if (m >= 64 * threads) {
    // Token ranges (multiples of 64), one per thread, every block-row each: the same
    // split as the LayerNorm and quantization around the matmul, so each core keeps
    // its tokens' activations in its own cache from step to step.
    const int64_t chunks = (m + 63) / 64;
    pool->parallel_for(threads, [&](int64_t i) {
      const int64_t c0 = chunks * i / threads, c1 = chunks * (i + 1) / threads;
      kernel(w, x, ldx, c0 * 64, std::min(m, c1 * 64), 0, w.num_block_rows, ep);
    });
    return;
  }
  // A few parts per thread lets the arena even out a noisy neighbour; each part keeps
  // the whole token range so its activation panel is reused across its block-rows.
  const std::vector<int64_t> b = partition_block_rows(w, int64_t{threads} * 4);
  pool->parallel_for(static_cast<int64_t>(b.size()) - 1, [&](int64_t i) {
    kernel(w, x, ldx, 0, m, b[static_cast<size_t>(i)], b[static_cast<size_t>(i) + 1], ep);
  });
}

// The interleaving int8 kernels on X [K][ldx] with ldx other than 64: copied first into
// 64-token panels [K][64], the executor's own layout, then run one tile at a time. A
// tile's X rows at a 64-byte stride use every L1 set; at ldx 128 each tile reads half
// of every 128-byte row, and the rows it touches map to half the sets (kernel-bench
// M 128, 90% 4x1, one call: 0.126 ms at 768x3072 and 0.180 at 3072x768, against 2 x
// 0.056 and 2 x 0.065 ms at M 64). The copy is K x M bytes, under 4% of the kernel.
constexpr int64_t kTile = 64;

Epilogue epilogue_at(const Epilogue& ep, int64_t m0) {
  Epilogue e = ep;
  if (e.token_scale != nullptr) e.token_scale += m0;
  if (e.residual != nullptr) e.residual += m0;
  if (e.out_f32 != nullptr) e.out_f32 += m0;
  if (e.out_u8 != nullptr) e.out_u8 += m0;
  return e;
}

// Bytes of w's values and index arrays, which every thread of a token split reads.
int64_t weight_bytes(const PackedWeights& w) {
  const int64_t values =
      w.num_groups * w.rows_per_block * w.group * (w.type == WeightType::kS8 ? 1 : 4);
  if (w.dense) return values;
  return values + w.num_groups * (w.quad_index != nullptr ? 2 : w.group * 4);
}

// Tiles [0, tiles) of a call on w over m tokens: prep(t) readies tile t's activations (its
// copy or its pack) and run(t, br0, br1) runs block-rows [br0, br1) on it. Serial on one
// thread or when the call is small. Otherwise split one of two ways:
// - by tokens, whole tiles per thread (prep and run by the thread that owns the tile):
//   every thread reads all of the weights and its share of the activations;
// - by block-rows, the tiles prepared in parallel, then each part a range of block-rows over
//   every tile: every thread reads its share of the weights and all of the activations.
// By block-rows when there are fewer tiles than threads, or when the weights' bytes are
// more than three times the activations' (K x M) and the activations, which every thread
// then keeps for all of its block-rows, are at most kRowSplitMaxX (a quarter of a 1 MB L2).
// kernel-bench at M 128, 2 threads, Zen 4, old and new CLI alternated (docs/performance.md,
// session 18): 4x1 768 x 3072 90% 0.143-0.161 -> 0.114-0.131 ms (activations 98 KB,
// weights 472 KB); 1x4 and 1x1 there within the noise; 4x1 3072 x 768 70% (activations
// 393 KB, weights 1.4 MB) 5% slower by block-rows, hence the cap. Where both come from DRAM
// (a call on its own, as there), each thread reading every weight costs more than the
// activations saved; the planned executor calls per panel (each thread its panels) and
// never comes here at 64 tokens a thread.
constexpr int64_t kRowSplitMaxX = 256 * 1024;
template <class Prep, class Run>
void run_tiles(ThreadPool* pool, const PackedWeights& w, int64_t m, int64_t tiles, Prep&& prep,
               Run&& run) {
  const int threads = pool ? pool->threads() : 1;
  const int64_t macs = w.num_groups * w.rows_per_block * w.group * m;
  const int64_t nbr = w.num_block_rows;
  if (threads <= 1 || macs < kMinParallelMacs) {
    for (int64_t t = 0; t < tiles; ++t) {
      prep(t);
      run(t, 0, nbr);
    }
    return;
  }
  const int64_t x_bytes = int64_t{w.k} * m;
  if (tiles >= threads && (3 * x_bytes >= weight_bytes(w) || x_bytes > kRowSplitMaxX)) {
    pool->parallel_for(threads, [&](int64_t i) {
      for (int64_t t = tiles * i / threads; t < tiles * (i + 1) / threads; ++t) {
        prep(t);
        run(t, 0, nbr);
      }
    });
    return;
  }
  const int64_t tp = std::min<int64_t>(tiles, threads);
  pool->parallel_for(tp, [&](int64_t i) {
    for (int64_t t = tiles * i / tp; t < tiles * (i + 1) / tp; ++t) prep(t);
  });
  // A few parts per thread lets the pool even out a noisy neighbour.
  const std::vector<int64_t> b = partition_block_rows(w, int64_t{threads} * 4);
  pool->parallel_for(static_cast<int64_t>(b.size()) - 1, [&](int64_t i) {
    for (int64_t t = 0; t < tiles; ++t)
      run(t, b[static_cast<size_t>(i)], b[static_cast<size_t>(i) + 1]);
  });
}

void spmm_u8s8_in_panels(U8S8SpmmFn kernel, ThreadPool* pool, const PackedWeights& w,
                         const uint8_t* x, int64_t ldx, int64_t m, const Epilogue& ep) {
  const int64_t k = w.k, tiles = (m + kTile - 1) / kTile;
  thread_local AlignedBuffer scratch;
  const size_t bytes = static_cast<size_t>(tiles * k * kTile);
  if (scratch.size() < bytes) scratch.resize(bytes);
  uint8_t* panels = scratch.as<uint8_t>();
  auto valid_of = [&](int64_t t) { return std::min(kTile, m - t * kTile); };
  auto copy_tile = [&](int64_t t) {
    const int64_t n = valid_of(t);
    uint8_t* dst = panels + t * k * kTile;
    const uint8_t* src = x + t * kTile;
    if (n == kTile) {  // a constant size: inlined moves, not a call per row
      for (int64_t r = 0; r < k; ++r) std::memcpy(dst + r * kTile, src + r * ldx, kTile);
    } else {
      for (int64_t r = 0; r < k; ++r) std::memcpy(dst + r * kTile, src + r * ldx, n);
    }
  };
  run_tiles(pool, w, m, tiles, copy_tile, [&](int64_t t, int64_t br0, int64_t br1) {
    kernel(w, panels + t * k * kTile, kTile, 0, valid_of(t), br0, br1, epilogue_at(ep, t * kTile));
  });
}
}  // namespace

void spmm_f32(const SpmmKernels& kernels, ThreadPool* pool, const PackedWeights& w, const float* x,
              int64_t ldx, int64_t m, const Epilogue& ep) {
  run_spmm(kernels.f32(w.rows_per_block), pool, w, x, ldx, m, ep);
}

namespace {

// u8 X [K][ldx] (tokens [0, m)) repacked into quad order (U8PackQuadsFn) in this thread's
// scratch, in slices of quads on the pool when the call is large: serial, the pack of a
// 3072-input call held 2 threads to 1.11x of one in kernel-bench. Returns the packed
// activations and their ldq.
const uint8_t* pack_quads_for_call(const SpmmKernels& kernels, ThreadPool* pool, const uint8_t* x,
                                   int64_t ldx, int64_t k, int64_t m, int64_t* ldq_out) {
  thread_local AlignedBuffer scratch;
  const int64_t ldq = (m + 63) / 64 * 64, quads = (k + 3) / 4;
  const size_t bytes = static_cast<size_t>(quads * ldq * 4);
  if (scratch.size() < bytes) scratch.resize(bytes);
  uint8_t* xq = scratch.as<uint8_t>();
  const int threads = pool ? pool->threads() : 1;
  if (threads > 1 && quads * ldq * 4 >= (int64_t{1} << 16)) {
    pool->parallel_for(threads, [&](int64_t i) {
      const int64_t q0 = quads * i / threads, q1 = quads * (i + 1) / threads;
      const int64_t k0 = 4 * q0, k1 = std::min<int64_t>(k, 4 * q1);
      if (k1 > k0) kernels.u8_pack_quads(x + k0 * ldx, ldx, k1 - k0, m, xq + q0 * ldq * 4, ldq);
    });
  } else {
    kernels.u8_pack_quads(x, ldx, k, m, xq, ldq);
  }
  *ldq_out = ldq;
  return xq;
}

// The 1x4 kernel on u8 X [K][ldx] with at least one 64-token tile per thread: each tile is
// packed into quad order ([K/4][64][4], the executor's panel layout, so the kernel's
// constant-stride variant runs) by the thread that then runs it over every block-row.
// (pack_quads_for_call packs the whole call at ldq = M rounded up: at M 128 the kernel ran
// its runtime-stride variant and each tile's quads used half the L1 sets, and with two
// threads each read half its tile from the other core's cache. Zen 4, 1 thread, kernel-bench
// 90% 1x4: 4.07 -> 4.58x oneDNN at 768 x 3072, docs/performance.md session 16. Tiles go out as
// in spmm_u8s8_in_panels (run_tiles). A call with fewer tiles than threads goes to
// pack_quads_for_call instead, whose slices of quads keep a single tile's pack parallel.)
void spmm_u8s8_quads_in_tiles(const SpmmKernels& kernels, U8S8SpmmFn kernel, ThreadPool* pool,
                              const PackedWeights& w, const uint8_t* x, int64_t ldx, int64_t m,
                              const Epilogue& ep) {
  const int64_t k = w.k, tiles = (m + kTile - 1) / kTile;
  const int64_t tile_bytes = (k + 3) / 4 * kTile * 4;
  thread_local AlignedBuffer scratch;
  const size_t bytes = static_cast<size_t>(tiles * tile_bytes);
  if (scratch.size() < bytes) scratch.resize(bytes);
  uint8_t* packed = scratch.as<uint8_t>();
  auto valid_of = [&](int64_t t) { return std::min(kTile, m - t * kTile); };
  run_tiles(
      pool, w, m, tiles,
      [&](int64_t t) {
        kernels.u8_pack_quads(x + t * kTile, ldx, k, valid_of(t), packed + t * tile_bytes, kTile);
      },
      [&](int64_t t, int64_t br0, int64_t br1) {
        kernel(w, packed + t * tile_bytes, kTile, 0, valid_of(t), br0, br1,
               epilogue_at(ep, t * kTile));
      });
}

}  // namespace

void spmm_u8s8(const SpmmKernels& kernels, ThreadPool* pool, const PackedWeights& w,
               const uint8_t* x, int64_t ldx, int64_t m, const Epilogue& ep) {
  if (m <= 0) return;
  // Dense weights: interleave the activations once for all block-rows (K x M bytes)
  // instead of once per block-row inside the kernel. The 1x4 pattern: its kernel reads
  // quad order (the planned executor has its producers write that order instead).
  U8S8SpmmFn packed_kernel = kernels.gemm_r4_for(w);
  if (w.quad_index != nullptr) packed_kernel = kernels.u8s8_quads_r1;
  const int threads = pool ? pool->threads() : 1;
  if (w.quad_index != nullptr && packed_kernel != nullptr && (m + kTile - 1) / kTile >= threads) {
    spmm_u8s8_quads_in_tiles(kernels, packed_kernel, pool, w, x, ldx, m, ep);
    return;
  }
  if (packed_kernel != nullptr) {
    int64_t ldq = 0;
    const uint8_t* xq = pack_quads_for_call(kernels, pool, x, ldx, w.k, m, &ldq);
    run_spmm(packed_kernel, pool, w, xq, ldq, m, ep);
    return;
  }
  const U8S8SpmmFn kernel = kernels.u8s8(w.rows_per_block);
  if (ldx != kTile) {
    spmm_u8s8_in_panels(kernel, pool, w, x, ldx, m, ep);
    return;
  }
  run_spmm(kernel, pool, w, x, ldx, m, ep);
}

void spmm_u8s8_quads(const SpmmKernels& kernels, ThreadPool* pool, const PackedWeights& w,
                     const uint8_t* xq, int64_t ldq, int64_t m, const Epilogue& ep) {
  run_spmm(kernels.u8s8_quads_r1, pool, w, xq, ldq, m, ep);
}

}  // namespace sparq
