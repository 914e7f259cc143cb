// The memory plan of an execution plan: where each intermediate buffer lives in one
// arena, from its lifetime alone (DESIGN.md, "engine/plan/": memory plan, unit-tested on
// its own in tests/memory_plan_test.cpp).
#ifndef SPARQ_ENGINE_PLAN_MEMORY_PLAN_H_
#define SPARQ_ENGINE_PLAN_MEMORY_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparq/export.h"

namespace sparq {

// A buffer: its size and the steps that write it first and read it last (first < 0: no
// step touches it; it still gets a place, of its size, alive at step 0).
struct BufferLife {
  size_t bytes = 0;
  int first = -1, last = -1;
};

// Panel segments: maximal runs of at least two consecutive steps that are panel-local
// and cover the same tokens. Step i lies in [start[i], end[i]); a step outside any run is
// its own segment [i, i + 1).
struct Segments {
  std::vector<int> start, end;
};
SPARQ_API Segments panel_segments(const std::vector<bool>& panel_local,
                                  const std::vector<int64_t>& tokens);

struct MemoryPlan {
  std::vector<size_t> offsets;  // per buffer
  size_t arena_bytes = 0;       // the arena: the end of the highest placed buffer
  size_t unshared_bytes = 0;    // the sum of all sizes (no reuse)
};

// Lifetimes are first widened to whole segments (the steps of a segment run panel by
// panel, so a buffer alive at any step of one is alive for all of it). Then, largest
// first (ties in buffer order), each buffer takes the lowest offset that no placed
// buffer with an overlapping lifetime holds.
SPARQ_API MemoryPlan plan_memory(std::vector<BufferLife> buffers, const Segments& segments);

}  // namespace sparq

#endif  // SPARQ_ENGINE_PLAN_MEMORY_PLAN_H_
