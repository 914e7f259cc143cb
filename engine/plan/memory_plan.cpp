#include "engine/plan/memory_plan.h"

#include <algorithm>
#include <utility>

namespace sparq {

Segments panel_segments(const std::vector<bool>& panel_local, const std::vector<int64_t>& tokens) {
  const size_t n = panel_local.size();
  Segments s;
  s.start.assign(n, 0);
  s.end.assign(n, 0);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && panel_local[j] && tokens[j] == tokens[i]) ++j;
    if (j - i < 2) j = i + 1;
    for (size_t k = i; k < j; ++k) {
      s.start[k] = static_cast<int>(i);
      s.end[k] = static_cast<int>(j);
    }
    i = j;
  }
  return s;
}

MemoryPlan plan_memory(std::vector<BufferLife> buffers, const Segments& segments) {
  for (BufferLife& b : buffers) {
    if (b.first < 0) continue;
    b.first = segments.start[static_cast<size_t>(b.first)];
    b.last = segments.end[static_cast<size_t>(b.last)] - 1;
  }
  std::vector<size_t> order(buffers.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return buffers[x].bytes > buffers[y].bytes; });
  MemoryPlan plan;
  plan.offsets.assign(buffers.size(), 0);
  std::vector<size_t> placed;
  std::vector<std::pair<size_t, size_t>> busy;
  for (size_t bi : order) {
    BufferLife& b = buffers[bi];
    if (b.first < 0) b.first = b.last = 0;
    plan.unshared_bytes += b.bytes;
    busy.clear();
    for (size_t pj : placed) {
      const BufferLife& o = buffers[pj];
      if (o.first <= b.last && b.first <= o.last)
        busy.push_back({plan.offsets[pj], plan.offsets[pj] + o.bytes});
    }
    std::sort(busy.begin(), busy.end());
    size_t off = 0;
    for (const auto& r : busy) {
      if (off + b.bytes <= r.first) break;
      off = std::max(off, r.second);
    }
    plan.offsets[bi] = off;
    plan.arena_bytes = std::max(plan.arena_bytes, off + b.bytes);
    placed.push_back(bi);
  }
  return plan;
}

}  // namespace sparq
