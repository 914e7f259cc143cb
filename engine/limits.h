// Resource limits: what a model or an input may make sparq allocate. A request beyond
// them fails with Error(kOutOfMemory) or Error(kInvalidArgument) that names the limit
// and its knob, before anything of that size is allocated. docs/limits.md has the
// defaults, why they are what they are, and the BERT shapes they allow.
#ifndef SPARQ_ENGINE_LIMITS_H_
#define SPARQ_ENGINE_LIMITS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "sparq/export.h"

namespace sparq {

struct Limits {
  // batch x sequence of one run (SPARQ_MAX_TOKENS). Default 262144 = 8 x BERT-large's
  // batch 64 x seq 512.
  int64_t max_tokens = int64_t{1} << 18;
  // Elements of one input tensor handed to the C API, Python or `sparq run`
  // (SPARQ_MAX_INPUT_ELEMENTS). Default 2^24.
  int64_t max_input_elements = int64_t{1} << 24;
  // Bytes of any one intermediate tensor or plan buffer (SPARQ_MAX_TENSOR_BYTES).
  // Default 4 GiB: BERT-large's largest generic-path tensor at batch 64, seq 512 (the
  // attention scores, 1 GiB) with room.
  uint64_t max_tensor_bytes = uint64_t{1} << 32;
  // Bytes of a session's plan arena plus its other buffers (SPARQ_MAX_PLAN_BYTES).
  // Default: three quarters of physical memory, at most 64 GiB.
  uint64_t max_plan_bytes = uint64_t{64} << 30;
};

// The process's limits, read from the environment once (a bad value is an error).
SPARQ_API const Limits& limits();

// The elements of `shape`, or an Error(kOutOfMemory) naming `what` when a dimension is
// negative, the product overflows, or elements x `elem_bytes` exceeds max_tensor_bytes.
SPARQ_API int64_t checked_elements(const std::vector<int64_t>& shape, size_t elem_bytes,
                                   const char* what);

// "1.5 GiB"-style text for messages.
SPARQ_API std::string human_bytes(uint64_t bytes);

}  // namespace sparq

#endif  // SPARQ_ENGINE_LIMITS_H_
