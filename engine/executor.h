// The planned executor: what a Session runs after the first call for an input shape.
//
// The first call with a new set of input shapes walks the converted graph once and
// records a plan while it computes the answer:
//   * constant folding: every node whose inputs do not depend on input data (the
//     exporters' Shape/Gather/Concat/Unsqueeze chains, position-id ranges, masks of
//     constants) is evaluated once and its value kept in the plan;
//   * shapes: every remaining value's shape and type is known from that walk;
//   * layouts: SparqMatMul, the fused attention, LayerNormalization and same-shape Add run
//     on feature-major buffers ([features][tokens], docs/architecture.md), the form the
//     kernels read, so no transposes run between them; int8 matmuls share one per-token
//     quantization of their input; a residual Add after a SparqMatMul goes into its
//     epilogue; Reshape/Transpose head splits around SparqAttention disappear into a
//     feature-major attention kernel; every other op runs through the interpreter on
//     token-major values, converted at the boundary;
//   * memory: every feature-major buffer gets an offset in one arena, reusing bytes
//     between buffers whose lifetimes do not overlap (greedy by size).
// Later calls with the same shapes replay the plan's steps. Plans are cached per input
// shapes (a bounded number; the least recently used is dropped).
#ifndef SPARQ_ENGINE_EXECUTOR_H_
#define SPARQ_ENGINE_EXECUTOR_H_

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/fast_path.h"
#include "engine/interpreter.h"
#include "engine/options.h"
#include "engine/parallel.h"
#include "formats/aligned_buffer.h"
#include "formats/error.h"
#include "sparq/export.h"

namespace sparq {

class Model;

struct PlanSummary {
  size_t arena_bytes = 0;     // the planned buffers, after reuse
  size_t unshared_bytes = 0;  // the same buffers without reuse
  int steps = 0;
  int generic_steps = 0;  // nodes run through the interpreter
  int folded = 0;         // nodes evaluated at plan time
  int fused_attention = 0, fused_residual = 0, matmuls = 0, fused_embeddings = 0;
  int fused_add_layernorm = 0;  // residual Add + LayerNorm steps (residuals not in an epilogue)
  int views = 0;                // layout-only Reshapes of feature-major values (no step)
  int fused_mask_bias = 0;      // attention masks to their additive bias in one step
  int fused_quantize = 0;       // per-token quantizations done by the LayerNorm producing them
  // Each step run through the interpreter: node, op and why no fused step took it.
  std::vector<OffPathNode> op_by_op;
  // Non-empty when these shapes could not be planned (a shape known only at run time):
  // the reason; the run went op by op through the interpreter.
  std::string not_planned;
};

// Thrown by Executor::run when a graph cannot be planned for the given input shapes (an
// output shape depends on a value only known at run time); Session then runs the graph
// op by op through the interpreter.
class SPARQ_API Unplannable : public Error {
 public:
  explicit Unplannable(const std::string& why) : Error(Status::kUnsupported, why) {}
};

class SPARQ_API Executor {
 public:
  Executor(std::shared_ptr<const Model> model, ThreadPool* pool,
           const RuntimeOptions& options = RuntimeOptions::from_environment());
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs the model on validated inputs. `peak_bytes` receives the planned arena plus
  // the most bytes of interpreter-produced values alive at once.
  std::map<std::string, Value> run(const std::map<std::string, Value>& inputs,
                                   size_t* peak_bytes = nullptr, PlanSummary* summary = nullptr);
  size_t cached_plans() const { return plans_.size(); }
  // Applies to plans made from now on (clears the cache).
  void set_options(const PlanOptions& o);

  static constexpr size_t kMaxPlans = 16;

  struct Plan;  // defined in executor.cpp

 private:
  std::shared_ptr<const Model> model_;
  ThreadPool* pool_;
  AlignedBuffer scratch_;  // attention kernels' per-thread scratch
  RuntimeOptions options_;
  std::list<std::pair<std::vector<std::vector<int64_t>>, std::unique_ptr<Plan>>>
      plans_;  // most recent first
};

}  // namespace sparq

#endif  // SPARQ_ENGINE_EXECUTOR_H_
