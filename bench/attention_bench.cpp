// Google Benchmark for one BERT-base layer's attention in the executor's layout
// (feature-major, 64-token panels): 12 heads of 64, batch 1, 128 (or 384) tokens, every
// work item on one thread, for each kernel this CPU has (fp32, bf16, int8). The int8
// kernel is timed both packing K and V per head itself and with them packed beforehand
// by fm_attention_int8_prep (the executor's way, included in the time). mask:1 adds the
// additive key mask the executor passes for models with an attention_mask input.
#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "kernels/fm/fm.h"

namespace {

using namespace sparq;

struct Layer {
  std::vector<float> q, k, v, out, scratch, packed, mask;
  FmAttentionArgs a;
};

// mask: the additive key mask of a BERT input without padding (zeros), as the executor
// passes it for models with an attention_mask input; or none.
Layer make_layer(int64_t tokens, bool mask) {
  constexpr int64_t kHeads = 12, kDh = 64, kPanel = 64;
  const int64_t padded = (tokens + kPanel - 1) / kPanel * kPanel;
  Layer l;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto* t : {&l.q, &l.k, &l.v}) {
    t->resize(static_cast<size_t>(kHeads * kDh * padded));
    for (float& x : *t) x = u(rng);
  }
  l.out.resize(l.q.size());
  l.a.q = l.q.data();
  l.a.k = l.k.data();
  l.a.v = l.v.data();
  l.a.out = l.out.data();
  l.a.panel = kPanel;
  l.a.batch = 1;
  l.a.heads = kHeads;
  l.a.seq = l.a.keys = tokens;
  l.a.dh = l.a.dv = kDh;
  l.a.scale = 0.125f;
  if (mask) {
    l.mask.assign(static_cast<size_t>(tokens), 0.0f);
    l.a.add_mask = l.mask.data();
    l.a.mask_b = tokens;
    l.a.mask_t = 1;
  }
  l.scratch.resize(static_cast<size_t>(fm_attention_scratch_floats(l.a, fm_kernels().query_block)));
  return l;
}

// kind: 0 fp32, 1 bf16, 2 int8 (packing per head), 3 int8 with K and V packed first,
// 4 that packing alone (its share of kind 3).
void BM_Attention(benchmark::State& state) {
  const FmKernels& k = fm_kernels();
  const int kind = static_cast<int>(state.range(0));
  const FmAttentionFn fn = kind == 0   ? k.attention
                           : kind == 1 ? k.attention_bf16
                                       : k.attention_int8;
  const bool prep_only = kind == 4;
  if (fn == nullptr) {
    state.SkipWithError("kernel not available on this CPU");
    return;
  }
  Layer l = make_layer(state.range(1), state.range(2) != 0);
  const int64_t items = fm_attention_items(l.a, k.query_block);
  if (kind >= 3) {
    l.packed.resize(static_cast<size_t>(l.a.heads * fm_attention_int8_head_floats(l.a)));
    l.a.kv_packed = l.packed.data();
  }
  for (auto _ : state) {
    if (kind >= 3) k.attention_int8_prep(l.a, 0, fm_attention_int8_units(l.a), l.scratch.data());
    if (!prep_only) fn(l.a, 0, items, l.scratch.data());
    benchmark::ClobberMemory();
  }
  const double macs =
      2.0 * l.a.heads * static_cast<double>(l.a.seq) * static_cast<double>(l.a.keys) * l.a.dh;
  state.counters["GMAC/s"] =
      benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Attention)
    ->ArgNames({"kind", "tokens", "mask"})
    ->ArgsProduct({{0, 1, 2, 3, 4}, {128, 384}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
