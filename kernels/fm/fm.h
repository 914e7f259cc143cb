// Kernels on feature-major activations: the layout the fused executor keeps between
// SpMMs (DESIGN.md). A feature-major tensor X of logical shape [tokens, features] is
// stored as rows of features: X[f][m] at x[f * ld + m], with m = b * seq + s. Vector
// lanes run along tokens, so per-token reductions (LayerNorm, quantization scales) are
// vertical adds and attention needs no transposes: a head's Q, K and V are row blocks.
//
// Every kernel here is single-threaded over a sub-range (tokens or work items) and
// touches nothing outside it; the executor splits the range over its threads.
#ifndef SPARQ_KERNELS_FM_FM_H_
#define SPARQ_KERNELS_FM_FM_H_

#include <cstdint>

#include "kernels/common/isa.h"
#include "sparq/export.h"

namespace sparq {

// Multi-head self/cross attention, fp32, on feature-major Q [H*dh][ld_q], K [H*dh][ld_k],
// V [H*dv][ld_v], writing out [H*dv][ld_out]. Query token (b, s) is column b*S + s of Q
// and out; key (b, t) is column b*T + t of K and V.
//   out[h*dv + j][b*S + s] = sum_t softmax_t(scale * q.k_t + mask) v_t[j]
// Masks depend on (batch, head, key) only: element b*mask_b + h*mask_h + t*mask_t of an
// additive float mask, or of a byte select mask (nonzero -> the score becomes `fill`).
struct FmAttentionArgs {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  int64_t ld_q = 0, ld_k = 0, ld_v = 0, ld_out = 0;
  int64_t batch = 0, heads = 0, seq = 0, keys = 0, dh = 0, dv = 0;
  float scale = 1.0f;
  const float* add_mask = nullptr;
  const uint8_t* select_mask = nullptr;
  float fill = 0.0f;
  int64_t mask_b = 0, mask_h = 0, mask_t = 0;
  // Panel layout when > 0 (the executor's; ld_* are then ignored): element (r, m) of a
  // tensor with R rows lives at (m / panel) * R * panel + r * panel + m % panel, with
  // R = heads * dh for Q and K and heads * dv for V and out.
  int64_t panel = 0;
  // Work-item order. 0: (b, h, query block). > 0: query blocks grouped into chunks of
  // `chunk_blocks` (a panel's worth), items (b, chunk, h, block in chunk), so that a
  // contiguous range of items covers a contiguous range of queries (each thread's own
  // panels) for every head. Items past the last block are empty.
  int64_t chunk_blocks = 0;
  // int8 kernel only: K and V packed by fm_attention_int8_prep for every (b, h), or null
  // (each item range then packs its heads itself, in its scratch).
  float* kv_packed = nullptr;
};

// Work items are (b, h, query block) in that order; query blocks hold `query_block`
// tokens (the table's value). A kernel computes items [item_begin, item_end) with
// `scratch` of at least fm_attention_scratch_floats(...) floats.
using FmAttentionFn = void (*)(const FmAttentionArgs& a, int64_t item_begin, int64_t item_end,
                               float* scratch);

// LayerNorm over features for tokens [t0, t1): y[f][m] = (x[f][m] - mean_m) / sqrt(var_m
// + eps) * gamma[f] + beta[f] (beta may be null). x may equal y. With `absmax` (else
// null), also absmax[m] = max_f |y[f][m]| (a NaN never taken), taken while y is written:
// the maximum FmQuantizeFn needs, so the LayerNorm's consumer quantizes it in one pass.
using FmLayerNormFn = void (*)(const float* x, int64_t ldx, int64_t features, int64_t t0,
                               int64_t t1, const float* gamma, const float* beta, float eps,
                               float* y, int64_t ldy, float* absmax);

// Dynamic per-token int8 quantization for tokens [t0, t1): scale[m] = max_f |x[f][m]| / 127
// (1 when the column is zero), q[f][m] = clamp(round_half_away(x / scale), -127, 127) + 128.
// `absmax` (else null) gives max_f |x[f][m]| at absmax[m], as its producer took it
// (FmLayerNormFn): then x is read once, not twice. The result is the same bit for bit.
using FmQuantizeFn = void (*)(const float* x, int64_t ldx, int64_t features, int64_t t0, int64_t t1,
                              const float* absmax, uint8_t* q, int64_t ldq, float* scale);

struct FmKernels {
  FmAttentionFn attention = nullptr;
  // Optional: the same in bf16 (AVX512-BF16 dot products, fp32 softmax and accumulation),
  // used for int8 models where avx512_bf16_enabled(); query blocks of query_block too.
  FmAttentionFn attention_bf16 = nullptr;
  const char* attention_bf16_name = "";
  // Optional: the same with both products in int8 (AVX512-VNNI; per-query Q, per-key K,
  // per-channel V scales, probabilities in 255 steps), for int8 models; preferred over
  // bf16 unless the session's attention option says otherwise (fm_low_precision_attention).
  // On AVX2 (no VNNI): both products in int8 values held in 16-bit words (vpmaddwd),
  // present on every AVX2 CPU but chosen only where it is faster than fp32
  // (attention_int8_preferred: CPUs that issue two vpmaddwd a cycle).
  FmAttentionFn attention_int8 = nullptr;
  FmAttentionFn attention_int8_prep = nullptr;  // units, not items (see a.kv_packed)
  const char* attention_int8_name = "";
  bool attention_int8_preferred = true;
  FmLayerNormFn layernorm = nullptr;
  FmQuantizeFn quantize = nullptr;
  int64_t query_block = 1;  // queries per attention work item
  const char* attention_name = "";
  const char* name = "";  // ISA suffix of the layernorm and quantize kernels
};

inline int64_t fm_attention_items(const FmAttentionArgs& a, int64_t query_block) {
  const int64_t blocks = (a.seq + query_block - 1) / query_block;
  if (a.chunk_blocks <= 0) return a.batch * a.heads * blocks;
  const int64_t chunks = (blocks + a.chunk_blocks - 1) / a.chunk_blocks;
  return a.batch * chunks * a.heads * a.chunk_blocks;
}

// Decodes a work item into (b, h, query block); false for an empty item.
inline bool fm_attention_item(const FmAttentionArgs& a, int64_t blocks, int64_t item, int64_t* b,
                              int64_t* h, int64_t* blk) {
  if (a.chunk_blocks <= 0) {
    *b = item / (a.heads * blocks);
    *h = (item / blocks) % a.heads;
    *blk = item % blocks;
    return true;
  }
  const int64_t cb = a.chunk_blocks, chunks = (blocks + cb - 1) / cb, per_chunk = a.heads * cb;
  *b = item / (chunks * per_chunk);
  const int64_t r = item % (chunks * per_chunk);
  *h = (r % per_chunk) / cb;
  *blk = (r / per_chunk) * cb + r % cb;
  return *blk < blocks;
}
// The int8 kernel's packed K and V of one (b, h), in 4-byte units; the whole buffer for
// a.kv_packed is batch * heads of them. fm_attention_int8_prep fills it in units (b, key
// chunk of 64, h), fm_attention_int8_units of them, with scratch as for the items.
// The AVX2 kernel's (word pairs) needs more: the larger of the two.
inline int64_t fm_attention_int8_head_floats(const FmAttentionArgs& a) {
  const int64_t dh4 = (a.dh + 3) / 4, dh2 = (a.dh + 1) / 2, tp = (a.keys + 15) / 16 * 16;
  const int64_t vnni = dh4 * tp + 3 * tp + a.dv * (tp / 4);
  const int64_t avx2 = dh2 * tp + 2 * tp + a.dv * (tp / 2);
  return vnni > avx2 ? vnni : avx2;
}
inline int64_t fm_attention_scratch_floats(const FmAttentionArgs& a, int64_t query_block) {
  // Enough for the fp32 and the bf16 kernels...
  const int64_t f =
      (2 * a.dh + 2 * a.keys + a.dv + 8) * query_block + (a.dh + a.dv + 2) * (a.keys + 2) + 128;
  // ...and for the int8 ones (their layouts are in fm_attention_int8_avx512.cpp and
  // fm_attention_int8_avx2.cpp).
  const int64_t dh4 = (a.dh + 3) / 4, t4 = (a.keys + 3) / 4;
  const int64_t dh2 = (a.dh + 1) / 2, t2 = (a.keys + 1) / 2;
  // Per query: VNNI qs, qq, p, pq, os; AVX2 qs, qp, p, pp, os. Then one head's pack and
  // pack_keys' [max(dh, dv)][64] copy, the same for both.
  const int64_t vnni = a.dh + dh4 + 5 * t4 + 1, avx2 = a.dh + dh2 + 3 * t2 + 1;
  const int64_t i = (vnni > avx2 ? vnni : avx2) * query_block + fm_attention_int8_head_floats(a) +
                    (a.dh > a.dv ? a.dh : a.dv) * 64 + 64;
  return f > i ? f : i;
}

inline int64_t fm_attention_int8_units(const FmAttentionArgs& a) {
  return a.batch * ((a.keys + 63) / 64) * a.heads;
}

// Which attention kernel an int8 model uses: the preferred one if present, falling back
// int8 -> bf16 -> fp32 (the preference is the session's option, SPARQ_ATTENTION).
enum class FmAttentionPref : uint8_t { kFp32 = 0, kBf16 = 1, kInt8 = 2 };
SPARQ_API FmAttentionFn fm_low_precision_attention(const FmKernels& k, FmAttentionPref want,
                                                   const char** name);

SPARQ_API const FmKernels& fm_kernels(Isa isa);
SPARQ_API const FmKernels& fm_kernels();

namespace generic {
const FmKernels& fm_table();
}
namespace avx2 {
const FmKernels& fm_table();
void fm_attention_int8(const FmAttentionArgs& a, int64_t item_begin, int64_t item_end,
                       float* scratch);
void fm_attention_int8_prep(const FmAttentionArgs& a, int64_t unit_begin, int64_t unit_end,
                            float* scratch);
}  // namespace avx2
namespace avx512 {
const FmKernels& fm_table();
}
namespace avx512bf16 {
void fm_attention(const FmAttentionArgs& a, int64_t item_begin, int64_t item_end, float* scratch);
}
namespace avx512vnni {
const FmKernels& fm_table();
void fm_attention_int8(const FmAttentionArgs& a, int64_t item_begin, int64_t item_end,
                       float* scratch);
void fm_attention_int8_prep(const FmAttentionArgs& a, int64_t unit_begin, int64_t unit_end,
                            float* scratch);
}  // namespace avx512vnni

}  // namespace sparq

#endif  // SPARQ_KERNELS_FM_FM_H_
