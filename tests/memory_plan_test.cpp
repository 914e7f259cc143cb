// The memory plan on its own (engine/plan/memory_plan.h): panel segments, lifetime
// widening, and offsets that never let two buffers alive at the same step overlap.
#include "engine/plan/memory_plan.h"

#include <algorithm>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace sparq {
namespace {

TEST(MemoryPlan, PanelSegments) {
  // local:  T T F T T T T F T ; tokens: the run 3..6 changes tokens at 5.
  const std::vector<bool> local = {true, true, false, true, true, true, true, false, true};
  const std::vector<int64_t> tokens = {64, 64, 64, 64, 64, 32, 32, 64, 64};
  const Segments s = panel_segments(local, tokens);
  EXPECT_EQ(s.start, (std::vector<int>{0, 0, 2, 3, 3, 5, 5, 7, 8}));
  EXPECT_EQ(s.end, (std::vector<int>{2, 2, 3, 5, 5, 7, 7, 8, 9}));
  // A lone panel-local step is its own segment.
  const Segments one = panel_segments({false, true, false}, {1, 1, 1});
  EXPECT_EQ(one.start, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(one.end, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(panel_segments({}, {}).start.empty());
}

Segments singletons(int n) {
  Segments s;
  for (int i = 0; i < n; ++i) {
    s.start.push_back(i);
    s.end.push_back(i + 1);
  }
  return s;
}

TEST(MemoryPlan, DisjointLifetimesShareOverlappingDoNot) {
  // a: steps 0-1, b: 2-3 (after a: may reuse a's bytes), c: 1-2 (overlaps both).
  const MemoryPlan p = plan_memory({{256, 0, 1}, {256, 2, 3}, {128, 1, 2}}, singletons(4));
  ASSERT_EQ(p.offsets.size(), 3u);
  EXPECT_EQ(p.offsets[0], p.offsets[1]);  // reused
  EXPECT_EQ(p.offsets[2], 256u);          // beside both
  EXPECT_EQ(p.arena_bytes, 384u);
  EXPECT_EQ(p.unshared_bytes, 640u);
}

TEST(MemoryPlan, SegmentsWidenLifetimes) {
  // Without segments a (0-0) and b (1-1) share; inside one segment [0, 2) they cannot.
  EXPECT_EQ(plan_memory({{64, 0, 0}, {64, 1, 1}}, singletons(2)).arena_bytes, 64u);
  Segments one;
  one.start = {0, 0};
  one.end = {2, 2};
  const MemoryPlan p = plan_memory({{64, 0, 0}, {64, 1, 1}}, one);
  EXPECT_EQ(p.arena_bytes, 128u);
  EXPECT_NE(p.offsets[0], p.offsets[1]);
}

TEST(MemoryPlan, UntouchedBufferGetsItsOwnPlace) {
  const MemoryPlan p = plan_memory({{64, -1, -1}, {64, 0, 0}}, singletons(1));
  EXPECT_NE(p.offsets[0], p.offsets[1]);  // alive at step 0 with the other
  EXPECT_EQ(p.arena_bytes, 128u);
}

// Random plans: no two buffers alive at a common step overlap; the arena is at least the
// largest live sum at any step and at most the unshared sum.
TEST(MemoryPlan, RandomPlansNeverOverlapLiveBuffers) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int steps = 1 + static_cast<int>(rng() % 40);
    std::vector<bool> local(static_cast<size_t>(steps));
    std::vector<int64_t> tokens(static_cast<size_t>(steps));
    for (int i = 0; i < steps; ++i) {
      local[static_cast<size_t>(i)] = rng() % 2 == 0;
      tokens[static_cast<size_t>(i)] = rng() % 3 == 0 ? 32 : 64;
    }
    const Segments seg = panel_segments(local, tokens);
    std::vector<BufferLife> bufs(1 + rng() % 30);
    for (BufferLife& b : bufs) {
      b.bytes = 64 * (1 + rng() % 16);
      b.first = static_cast<int>(rng() % static_cast<unsigned>(steps));
      b.last = b.first + static_cast<int>(rng() % static_cast<unsigned>(steps - b.first));
    }
    const MemoryPlan p = plan_memory(bufs, seg);
    size_t unshared = 0;
    for (const BufferLife& b : bufs) unshared += b.bytes;
    EXPECT_EQ(p.unshared_bytes, unshared);
    EXPECT_LE(p.arena_bytes, p.unshared_bytes);
    auto widened = [&](const BufferLife& b) {
      return std::make_pair(seg.start[static_cast<size_t>(b.first)],
                            seg.end[static_cast<size_t>(b.last)] - 1);
    };
    size_t most_live = 0;
    for (int t = 0; t < steps; ++t) {
      size_t live = 0;
      for (const BufferLife& b : bufs) {
        const auto w = widened(b);
        if (w.first <= t && t <= w.second) live += b.bytes;
      }
      most_live = std::max(most_live, live);
    }
    EXPECT_GE(p.arena_bytes, most_live);
    for (size_t i = 0; i < bufs.size(); ++i) {
      EXPECT_LE(p.offsets[i] + bufs[i].bytes, p.arena_bytes);
      for (size_t j = i + 1; j < bufs.size(); ++j) {
        const auto a = widened(bufs[i]), b = widened(bufs[j]);
        if (a.first > b.second || b.first > a.second) continue;
        const bool apart = p.offsets[i] + bufs[i].bytes <= p.offsets[j] ||
                           p.offsets[j] + bufs[j].bytes <= p.offsets[i];
        EXPECT_TRUE(apart) << "trial " << trial << ": buffers " << i << " and " << j;
      }
    }
  }
}

}  // namespace
}  // namespace sparq
