// Every knob of the engine in one place (docs/options.md has the table). A session and a
// convert each take an options struct; its defaults come from the environment, read
// once per process by one helper (a malformed value is reported on stderr and the
// default kept). Nothing else in sparq calls getenv, and nothing in kernels/ does.
#ifndef SPARQ_ENGINE_OPTIONS_H_
#define SPARQ_ENGINE_OPTIONS_H_

#include <cstdint>
#include <string>

#include "kernels/fm/fm.h"
#include "sparq/export.h"

namespace sparq {

enum class ExecutorKind : uint8_t { kPlanned, kInterpret };
enum class PoolKind : uint8_t { kTbb, kTeam };

// Switches of the planner for tests (the defaults are what runs in production).
struct PlanOptions {
  bool residual_epilogue = true;  // a residual Add after a SparqMatMul goes into its epilogue
};

struct RuntimeOptions {
  // SPARQ_EXECUTOR=planned|interpret: interpret runs converted models op by op (the
  // generic path, for debugging and conformance).
  ExecutorKind executor = ExecutorKind::kPlanned;
  // SPARQ_ATTENTION=int8|bf16|fp32: the attention kernel int8 models prefer (int8 on
  // AVX512-VNNI, bf16 on AVX512-BF16, fp32); an unavailable one falls back in that order.
  FmAttentionPref attention = FmAttentionPref::kInt8;
  // SPARQ_POOL=tbb|team: a oneTBB task_arena, or sparq's own spinning team (the tsan
  // preset: Debian's libtbb is not instrumented).
  PoolKind pool = PoolKind::kTbb;
  // SPARQ_PROFILE=1: per-step times on stderr (steps then run one region at a time).
  // SPARQ_PROFILE=segments: panel segments kept (as an unprofiled run), each timed whole,
  // with the busiest and the idlest thread's time inside it.
  bool profile = false;
  bool profile_segments = false;
  PlanOptions plan;

  // The environment's values, parsed on first use.
  SPARQ_API static const RuntimeOptions& from_environment();
};

// Process-wide settings of the kernel dispatch, also read once here and handed to
// kernels/common/isa (the dispatch table is filled once per process):
//   SPARQ_MAX_ISA=avx512vnni|avx512|avx2|generic  caps the kernel ISA
//   SPARQ_VERBOSE=1                               logs the CPU level, kernels and plans
// Applied when libsparq is loaded, before any kernel runs.

// The text of a knob, or "" when unset; the one getenv of the engine.
SPARQ_API std::string knob(const char* name);

}  // namespace sparq

#endif  // SPARQ_ENGINE_OPTIONS_H_
