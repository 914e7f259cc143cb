// Threading for kernels: a pool with a fixed thread count, and the threaded SpMM driver
// that splits block-rows by nonzero work so that threads stay balanced when rows differ
// in density. Kernels themselves stay single-threaded.
//
// The pool is a oneTBB task_arena with the session's thread count (parts claimed by
// whichever thread is free; when its creator may use only some of the CPUs, the threads
// that run its parts are pinned to those). SPARQ_POOL=team selects sparq's own team instead: the
// calling thread plus threads-1 workers that spin for a while after each region before they sleep.
// The team was the default while it measured faster (13.0 against 14.1 ms on BERT-base int8 at 2
// threads); with the current kernels both measure the same within noise (7.4-8.3 ms each,
// alternated A/B, docs/performance.md), and the arena is what the design asks for.
#ifndef SPARQ_ENGINE_PARALLEL_H_
#define SPARQ_ENGINE_PARALLEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/options.h"
#include "kernels/spmm/spmm.h"
#include "sparq/export.h"

namespace sparq {

class SPARQ_API ThreadPool {
 public:
  // threads <= 0 means every core this process may run on. `kind` defaults to the
  // session options' pool (SPARQ_POOL).
  explicit ThreadPool(int threads = 0);
  ThreadPool(int threads, PoolKind kind);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return threads_; }
  // Runs body(part) for part in [0, parts) on the arena and waits for all of them.
  void parallel_for(int64_t parts, const std::function<void(int64_t)>& body);

  static int hardware_threads();
  // "tbb" (the default) or "team" (PoolKind::kTeam, SPARQ_POOL=team).
  const char* kind() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int threads_ = 1;
};

// Splits block-rows [0, num_block_rows) into at most `parts` contiguous ranges of
// about equal cost, where a block-row costs its group count plus a fixed overhead
// (zeroing accumulators and the epilogue, in group units). Returns the boundaries:
// ranges are [b[i], b[i+1]).
SPARQ_API std::vector<int64_t> partition_block_rows(const PackedWeights& w, int64_t parts);

// Y = epilogue(W^T . X) over M tokens, threaded on `pool` (serial when pool is null or
// the work is small). `kernels` picks the ISA (spmm_kernels() for the active one).
SPARQ_API void spmm_f32(const SpmmKernels& kernels, ThreadPool* pool, const PackedWeights& w,
                        const float* x, int64_t ldx, int64_t m, const Epilogue& ep);
SPARQ_API void spmm_u8s8(const SpmmKernels& kernels, ThreadPool* pool, const PackedWeights& w,
                         const uint8_t* x, int64_t ldx, int64_t m, const Epilogue& ep);
// A quad matrix (w.quad_index set; kernels.u8s8_quads_r1 set) on activations already in quad
// order (U8PackQuadsFn: ldq a multiple of 64, tokens padded to it).
SPARQ_API void spmm_u8s8_quads(const SpmmKernels& kernels, ThreadPool* pool, const PackedWeights& w,
                               const uint8_t* xq, int64_t ldq, int64_t m, const Epilogue& ep);

}  // namespace sparq

#endif  // SPARQ_ENGINE_PARALLEL_H_
