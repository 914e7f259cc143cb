// u8s8_mha_fm_ukernel_8x32__avx512vnni: feature-major attention with both products in
// int8 (vpdpbusd: four u8 x s8 products summed into each int32 lane, twice the work of a
// vdpbf16ps and four times an fp32 FMA per instruction) and the softmax in fp32. Used for
// int8 models only, under the same per-token cosine rule as their matmuls.
//
// The same work items and transposed-score scheme as fm_impl.h (32 queries per item):
//   scores  p[t][:] = sk[t] sq[:] (sum over d quads Kq[d..d+3][t] . Qu[d..d+3][:] - comp[t])
//   e[t][:] = exp(p[t][:] - max_t p[t][:]),  w[t][:] = round(255 e[t][:] sv[t] / max_t sv[t])
//   out[j][:] = (max_t sv[t] / 255) (sum over t quads Vq[j][t..t+3] . w[t..t+3][:]) / sum_t e[t][:]
// Quantization, symmetric to 127 steps:
//   Q per query (over the head's dh values, after the score scale), stored as u8 with zero
//   point 128; comp[t] = 128 sum_d Kq[d][t] removes that offset exactly;
//   K and V per key (over the head's dh or dv values), s8; V's scale is folded into the
//   probability weights, which are u8.
// Every quantity is per key or per query, so K and V can be packed once per (b, h) by the
// threads that hold those keys (fm_attention_int8_prep, then items read a.kv_packed), or
// per head inside the items when a.kv_packed is null.
// Accumulation is exact int32: |sum| <= keys * 255 * 127 (or dh * 255 * 127) < 2^31.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/common/avx512_math.h"
#include "kernels/fm/fm_impl.h"

namespace sparq {
namespace avx512vnni {
namespace {

constexpr int64_t W = 16, SB = 32;

// acc += u8 a . s8 b per dword (asm: GCC 12 copies the accumulator of the intrinsic).
inline __m512i dot(__m512i acc, __m512i a_u8, __m512i b_s8) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a_u8), "v"(b_s8));
  return acc;
}

// Bytes of four int32 vectors packed into one: byte i of dword lane l = r_i[l], saturated
// to u8 (Unsigned) or s8. Two dword-to-word packs and a word-to-byte pack leave each
// 128-bit lane holding r0..r3's four values of that lane in turn; one in-lane byte shuffle
// puts them in quad order (four shuffles where masking and shifting took seven ops).
template <bool Unsigned>
inline __m512i pack_quads(__m512i r0, __m512i r1, __m512i r2, __m512i r3) {
  const __m512i order =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  const __m512i b =
      Unsigned ? _mm512_packus_epi16(_mm512_packus_epi32(r0, r1), _mm512_packus_epi32(r2, r3))
               : _mm512_packs_epi16(_mm512_packs_epi32(r0, r1), _mm512_packs_epi32(r2, r3));
  return _mm512_shuffle_epi8(b, order);
}

// Loads 16 floats, lanes past `mask` zero (masked-out lanes are never read).
inline __m512 load_masked(const float* p, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, p); }

inline __mmask16 tail_mask(int64_t left) {
  if (left <= 0) return 0;
  return left >= 16 ? static_cast<__mmask16>(0xFFFF)
                    : static_cast<__mmask16>((1u << static_cast<unsigned>(left)) - 1u);
}

// max over rows r < nr of |sc x src[r * stride + 0, 16)| (lanes past `lanes` zero), in
// four independent chains: one chain of vmaxps waits out its latency on every row.
inline __m512 abs_max_rows(const float* src, int64_t stride, int64_t nr, __mmask16 lanes,
                           __m512 sc) {
  __m512 m[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                 _mm512_setzero_ps()};
  int64_t r = 0;
  for (; r + 4 <= nr; r += 4) {
    for (int i = 0; i < 4; ++i) {
      const __m512 x = _mm512_mul_ps(load_masked(src + (r + i) * stride, lanes), sc);
      m[i] = _mm512_max_ps(m[i], _mm512_abs_ps(x));
    }
  }
  for (; r < nr; ++r)
    m[0] =
        _mm512_max_ps(m[0], _mm512_abs_ps(_mm512_mul_ps(load_masked(src + r * stride, lanes), sc)));
  return _mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3]));
}

// max over rows r < nr of |src[r * stride + 16 g + (0, 16))| for the four groups g of up
// to 64 keys (lanes past n zero): each row's keys are read in turn, one sequential sweep
// of the rows, with one independent max chain per group.
inline void abs_max_groups(const float* src, int64_t stride, int64_t nr, int64_t n, __m512 m[4]) {
  __mmask16 lanes[4];
  for (int g = 0; g < 4; ++g) {
    lanes[g] = tail_mask(n - g * W);
    m[g] = _mm512_setzero_ps();
  }
  for (int64_t r = 0; r < nr; ++r) {
    const float* row = src + r * stride;
    for (int g = 0; g < 4; ++g)
      m[g] = _mm512_max_ps(m[g], _mm512_abs_ps(load_masked(row + g * W, lanes[g])));
  }
}

// exp(x) for the probabilities: 2^(x log2 e) with a degree-3 polynomial for 2^f on [0, 1)
// (relative error below 1.6e-4, 25 times finer than the 255 steps they are rounded to
// next); vscalefps applies the integer part and underflows to 0 for masked scores.
inline __m512 exp_coarse(__m512 x) {
  static constexpr float kC[] = {9.9997616e-1f, 6.9484705e-1f, 2.2905980e-1f, 7.5804844e-2f};
  return avx512_exp_poly(x, kC);
}

inline float hmax(__m512 v) { return _mm512_reduce_max_ps(v); }

// 127 / max|x| as the quantization multiplier, and max|x| / 127 as the scale (1 for zero).
inline void scales_of(__m512 amax, __m512* inv, __m512* scale) {
  const __mmask16 nz = _mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ);
  *scale = _mm512_mask_mul_ps(_mm512_set1_ps(1.0f), nz, amax, _mm512_set1_ps(1.0f / 127.0f));
  *inv = _mm512_mask_div_ps(_mm512_set1_ps(1.0f), nz, _mm512_set1_ps(127.0f), amax);
}

inline __m512i quantize(__m512 x, __m512 inv) { return _mm512_cvtps_epi32(_mm512_mul_ps(x, inv)); }

// The packed K and V of one (b, h), in 4-byte units (fm_attention_int8_packed_floats):
//   kq [dh4][Tp]  K per key in s8, quads along d
//   comp [Tp]     int32 128 * sum_d Kq[d][t], the u8 zero point of Q times K
//   sk [Tp]       K's per-key scales
//   vq [dv][Tp/4] V per key in s8, quads along t
//   sv [Tp]       V's per-key scales (folded into the probabilities)
struct KvPack {
  int32_t* kq;
  int32_t* comp;
  float* sk;
  int32_t* vq;
  float* sv;
};

inline KvPack kv_pack_at(float* base, int64_t dh4, int64_t Tp, int64_t dv) {
  KvPack k;
  k.kq = reinterpret_cast<int32_t*>(base);
  k.comp = reinterpret_cast<int32_t*>(base + dh4 * Tp);
  k.sk = base + dh4 * Tp + Tp;
  k.vq = reinterpret_cast<int32_t*>(k.sk + Tp);
  k.sv = base + dh4 * Tp + 2 * Tp + dv * (Tp / 4);
  return k;
}

constexpr int64_t kChunk = 64;  // keys per preparation unit

// Packs keys [k0, k0 + n) of (b, h), n <= kChunk, k0 a multiple of 16 (and zeros up to
// the next multiple of 16 past them), reading K and V in place where their tokens are
// contiguous; tmp holds [max(dh, dv)][kChunk] floats for the copy where they are not.
void pack_keys(const FmAttentionArgs& a, int64_t b, int64_t h, int64_t k0, int64_t n,
               const KvPack& pk, float* tmp) {
  const int64_t H = a.heads, T = a.keys, dh = a.dh, dv = a.dv, P = a.panel,
                Tp = (T + W - 1) / W * W;
  const int64_t dh4 = (dh + 3) / 4, n16 = (n + W - 1) / W * W, m = b * T + k0;
  int32_t* __restrict kq = pk.kq;
  int32_t* __restrict comp = pk.comp;
  float* __restrict sk = pk.sk;
  // K: per-key scales over d, s8 quads along d, and the zero-point compensation.
  static_assert(kChunk == 4 * W, "a chunk is four groups of keys");
  const Rows kr = rows_of(a.k, P, H * dh, a.ld_k, h * dh, dh, m, n, tmp, kChunk);
  __m512 kmax[4];
  abs_max_groups(kr.p, kr.stride, dh, n, kmax);
  for (int64_t t = 0; t < n16; t += W) {
    const __mmask16 lanes = tail_mask(n - t);
    const float* src = kr.p + t;
    __m512 inv, scale;
    scales_of(kmax[t / W], &inv, &scale);
    _mm512_storeu_ps(sk + k0 + t, scale);
    __m512i csum = _mm512_setzero_si512();
    for (int64_t d4 = 0; d4 < dh4; ++d4) {
      __m512i r[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t d = 4 * d4 + i;
        r[i] = d < dh ? quantize(load_masked(src + d * kr.stride, lanes), inv)
                      : _mm512_setzero_si512();
        csum = _mm512_add_epi32(csum, r[i]);
      }
      _mm512_storeu_si512(kq + d4 * Tp + k0 + t, pack_quads<false>(r[0], r[1], r[2], r[3]));
    }
    _mm512_storeu_si512(comp + k0 + t, _mm512_slli_epi32(csum, 7));
  }
  // V: per-key scales over the channels, s8 quads along t.
  int32_t* __restrict vq = pk.vq;
  float* __restrict sv = pk.sv;
  const Rows vr = rows_of(a.v, P, H * dv, a.ld_v, h * dv, dv, m, n, tmp, kChunk);
  __m512 vmax[4];
  abs_max_groups(vr.p, vr.stride, dv, n, vmax);
  for (int64_t t = 0; t < n16; t += W) {
    const __mmask16 lanes = tail_mask(n - t);
    const float* src = vr.p + t;
    const __m512 amax = vmax[t / W];
    __m512 inv, scale;
    scales_of(amax, &inv, &scale);
    // A zero V (padding past the keys too) weighs nothing and must not set the head's
    // largest scale: its scale is 0 here, not scales_of's 1.
    _mm512_storeu_ps(sv + k0 + t, _mm512_mul_ps(amax, _mm512_set1_ps(1.0f / 127.0f)));
    int32_t* dst = vq + (k0 + t) / 4;
    for (int64_t j = 0; j < dv; ++j) {
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(dst + j * (Tp / 4)),
          _mm512_cvtsepi32_epi8(quantize(load_masked(src + j * vr.stride, lanes), inv)));
    }
  }
}

enum MaskKind { kNoMask, kAddMask, kSelectMask };

// Scores of one item, p[t][0, SB) for every key t, 8 keys x 32 queries per register
// block: dequantized to fp32 ((acc - comp) sk sq), the mask applied, and each query's
// maximum over the keys in *m0, *m1. The accumulators start at -comp: the difference is
// an exact int32 below 2^24, so this equals subtracting it in fp32 as it was.
template <int kMask>
void scores(const FmAttentionArgs& a, int64_t mo, const int32_t* qq, const KvPack& pk, int64_t dh4,
            int64_t Tp, const __m512 sq[2], float* __restrict p, __m512* m0_out, __m512* m1_out) {
  const int64_t T = a.keys;
  const int32_t* kq = pk.kq;
  const int32_t* comp = pk.comp;
  const float* sk = pk.sk;
  const __m512 sq0 = sq[0], sq1 = sq[1];
  __m512 m0 = _mm512_set1_ps(-std::numeric_limits<float>::infinity()), m1 = m0;
  auto finish = [&](int64_t t, __m512i acc0, __m512i acc1) {
    const __m512 s = _mm512_set1_ps(sk[t]);
    __m512 f0 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc0), s), sq0);
    __m512 f1 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc1), s), sq1);
    if constexpr (kMask == kAddMask) {
      const __m512 mv = _mm512_set1_ps(a.add_mask[mo + t * a.mask_t]);
      f0 = _mm512_add_ps(f0, mv);
      f1 = _mm512_add_ps(f1, mv);
    } else if constexpr (kMask == kSelectMask) {
      if (a.select_mask[mo + t * a.mask_t] != 0) f0 = f1 = _mm512_set1_ps(a.fill);
    }
    m0 = _mm512_max_ps(m0, f0);
    m1 = _mm512_max_ps(m1, f1);
    _mm512_storeu_ps(p + t * SB, f0);
    _mm512_storeu_ps(p + t * SB + W, f1);
  };
  int64_t t = 0;
  for (; t + 8 <= T; t += 8) {
    __m512i acc0[8], acc1[8];
    for (int i = 0; i < 8; ++i) acc0[i] = acc1[i] = _mm512_set1_epi32(-comp[t + i]);
    for (int64_t d4 = 0; d4 < dh4; ++d4) {
      const __m512i x0 = _mm512_loadu_si512(qq + d4 * SB),
                    x1 = _mm512_loadu_si512(qq + d4 * SB + W);
      const int32_t* kr = kq + d4 * Tp + t;
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        const __m512i kv = _mm512_set1_epi32(kr[i]);
        acc0[i] = dot(acc0[i], x0, kv);
        acc1[i] = dot(acc1[i], x1, kv);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) finish(t + i, acc0[i], acc1[i]);
  }
  for (; t < T; ++t) {
    __m512i acc0 = _mm512_set1_epi32(-comp[t]), acc1 = acc0;
    for (int64_t d4 = 0; d4 < dh4; ++d4) {
      const __m512i kv = _mm512_set1_epi32(kq[d4 * Tp + t]);
      acc0 = dot(acc0, _mm512_loadu_si512(qq + d4 * SB), kv);
      acc1 = dot(acc1, _mm512_loadu_si512(qq + d4 * SB + W), kv);
    }
    finish(t, acc0, acc1);
  }
  *m0_out = m0;
  *m1_out = m1;
}

}  // namespace

void fm_attention_int8_prep(const FmAttentionArgs& a, int64_t unit_begin, int64_t unit_end,
                            float* scratch) {
  const int64_t H = a.heads, T = a.keys, chunks = (T + kChunk - 1) / kChunk;
  const int64_t dh4 = (a.dh + 3) / 4, Tp = (T + W - 1) / W * W,
                per_head = fm_attention_int8_head_floats(a);
  for (int64_t u = unit_begin; u < unit_end; ++u) {  // units (b, chunk, h)
    const int64_t b = u / (chunks * H), c = (u / H) % chunks, h = u % H;
    const KvPack pk = kv_pack_at(a.kv_packed + (b * H + h) * per_head, dh4, Tp, a.dv);
    pack_keys(a, b, h, c * kChunk, std::min(kChunk, T - c * kChunk), pk, scratch);
  }
}

void fm_attention_int8(const FmAttentionArgs& a, int64_t item_begin, int64_t item_end,
                       float* scratch) {
  const int64_t H = a.heads, S = a.seq, T = a.keys, dh = a.dh, dv = a.dv, P = a.panel;
  const int64_t blocks = (S + SB - 1) / SB;
  const int64_t dh4 = (dh + 3) / 4, T4 = (T + 3) / 4, Tp = (T + W - 1) / W * W;
  const int64_t per_head = fm_attention_int8_head_floats(a);
  // Scratch (4-byte units); see fm_attention_scratch_floats.
  //   per item: qs f32 [dh][SB], qq [dh4][SB], p f32 [4*T4][SB], pq [T4][SB], os [SB]
  //   without a.kv_packed: one head's KvPack and pack_keys' [max(dh, dv)][kChunk]
  float* qs = scratch;
  int32_t* qq = reinterpret_cast<int32_t*>(qs + dh * SB);
  float* p = reinterpret_cast<float*>(qq + dh4 * SB);
  int32_t* pq = reinterpret_cast<int32_t*>(p + 4 * T4 * SB);
  float* os = reinterpret_cast<float*>(pq + T4 * SB);
  float* own_pack = os + SB;
  float* tmp = own_pack + per_head;
  int64_t current = -1;
  KvPack pk{};
  float svmax = 1.0f;
  for (int64_t item = item_begin; item < item_end; ++item) {
    int64_t b = 0, h = 0, blk = 0;
    if (!fm_attention_item(a, blocks, item, &b, &h, &blk)) continue;
    const int64_t s0 = blk * SB;
    const int64_t ns = std::min(SB, S - s0), q0 = b * S + s0;
    if (current != b * H + h) {
      if (a.kv_packed != nullptr) {
        pk = kv_pack_at(a.kv_packed + (b * H + h) * per_head, dh4, Tp, dv);
      } else {
        pk = kv_pack_at(own_pack, dh4, Tp, dv);
        for (int64_t k0 = 0; k0 < T; k0 += kChunk)
          pack_keys(a, b, h, k0, std::min(kChunk, T - k0), pk, tmp);
      }
      __m512 m = _mm512_setzero_ps();
      for (int64_t t = 0; t < Tp; t += W) m = _mm512_max_ps(m, _mm512_loadu_ps(pk.sv + t));
      svmax = hmax(m);
      if (!(svmax > 0.0f)) svmax = 1.0f;  // V all zero: every weight is 0 anyway
      current = b * H + h;
    }
    const int32_t* vq = pk.vq;
    const float* sv = pk.sv;
    // Q (scaled), zero past the block; per-query scales; u8 quads along d (128 past dh).
    // Read in place unless the block spans two panels.
    const Rows qr = rows_of(a.q, P, H * dh, a.ld_q, h * dh, dh, q0, ns, qs, SB);
    const __m512 qscale = _mm512_set1_ps(a.scale);
    __m512 sq[2], invq[2];
    for (int v = 0; v < 2; ++v) {
      const __mmask16 lanes = tail_mask(ns - v * W);
      const float* src = qr.p + v * W;
      const __m512 amax = abs_max_rows(src, qr.stride, dh, lanes, qscale);
      scales_of(amax, &invq[v], &sq[v]);
      const __m512i zp = _mm512_set1_epi32(128);
      for (int64_t d4 = 0; d4 < dh4; ++d4) {
        __m512i r[4];
        for (int i = 0; i < 4; ++i) {
          const int64_t d = 4 * d4 + i;
          r[i] = d < dh
                     ? _mm512_add_epi32(
                           quantize(_mm512_mul_ps(load_masked(src + d * qr.stride, lanes), qscale),
                                    invq[v]),
                           zp)
                     : zp;
        }
        _mm512_storeu_si512(qq + d4 * SB + v * W, pack_quads<true>(r[0], r[1], r[2], r[3]));
      }
    }
    // Scores, 8 keys x 32 queries per register block; dequantized to fp32 with the mask
    // applied and the column maxima taken on the way.
    __m512 m0, m1;
    const int64_t mo = b * a.mask_b + h * a.mask_h;
    if (a.add_mask != nullptr) {
      scores<kAddMask>(a, mo, qq, pk, dh4, Tp, sq, p, &m0, &m1);
    } else if (a.select_mask != nullptr) {
      scores<kSelectMask>(a, mo, qq, pk, dh4, Tp, sq, p, &m0, &m1);
    } else {
      scores<kNoMask>(a, mo, qq, pk, dh4, Tp, sq, p, &m0, &m1);
    }
    // exp in fp32; the weights e * sv[t] (V's per-key scale folded in) as u8 in 255 steps
    // of the head's largest sv, packed in quads of keys; the normalizer sums e in fp32.
    const float to_u8 = 255.0f / svmax;
    __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
    auto weights = [&](int64_t tt, __m512i* w0, __m512i* w1) {
      const float* r = p + tt * SB;
      const __m512 f = _mm512_set1_ps(sv[tt] * to_u8);
      const __m512 x0 = exp_coarse(_mm512_sub_ps(_mm512_loadu_ps(r), m0));
      const __m512 x1 = exp_coarse(_mm512_sub_ps(_mm512_loadu_ps(r + W), m1));
      sum0 = _mm512_add_ps(sum0, x0);
      sum1 = _mm512_add_ps(sum1, x1);
      *w0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, f));
      *w1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, f));
    };
    for (int64_t t4 = 0; t4 < T4; ++t4) {
      __m512i e0[4], e1[4];
      if (4 * t4 + 4 <= T) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) weights(4 * t4 + i, &e0[i], &e1[i]);
      } else {
        for (int i = 0; i < 4; ++i) {
          if (4 * t4 + i < T) {
            weights(4 * t4 + i, &e0[i], &e1[i]);
          } else {
            e0[i] = e1[i] = _mm512_setzero_si512();
          }
        }
      }
      _mm512_storeu_si512(pq + t4 * SB, pack_quads<true>(e0[0], e0[1], e0[2], e0[3]));
      _mm512_storeu_si512(pq + t4 * SB + W, pack_quads<true>(e1[0], e1[1], e1[2], e1[3]));
    }
    // Each column's maximum gives exp(0) = 1, so the sums are at least 1.
    const __m512 back = _mm512_set1_ps(svmax / 255.0f);
    const __m512 inv0 = _mm512_div_ps(back, sum0), inv1 = _mm512_div_ps(back, sum1);
    const bool direct = ns == SB && (P == 0 || q0 / P == (q0 + SB - 1) / P);
    float* const out0 = a.out + fm_offset(P, H * dv, a.ld_out, h * dv, q0);
    const int64_t out_stride = fm_row_stride(P, a.ld_out);
    auto emit = [&](int64_t j, __m512i acc0, __m512i acc1) {
      const __m512 r0 = _mm512_mul_ps(_mm512_cvtepi32_ps(acc0), inv0);
      const __m512 r1 = _mm512_mul_ps(_mm512_cvtepi32_ps(acc1), inv1);
      if (direct) {
        float* orow = out0 + j * out_stride;
        _mm512_storeu_ps(orow, r0);
        _mm512_storeu_ps(orow + W, r1);
      } else {
        _mm512_storeu_ps(os, r0);
        _mm512_storeu_ps(os + W, r1);
        fm_store_row(a.out, P, H * dv, a.ld_out, h * dv + j, q0, ns, os);
      }
    };
    int64_t j = 0;
    for (; j + 8 <= dv; j += 8) {
      __m512i acc0[8], acc1[8];
      for (int i = 0; i < 8; ++i) acc0[i] = acc1[i] = _mm512_setzero_si512();
      for (int64_t t4 = 0; t4 < T4; ++t4) {
        const __m512i x0 = _mm512_loadu_si512(pq + t4 * SB),
                      x1 = _mm512_loadu_si512(pq + t4 * SB + W);
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          const __m512i vv = _mm512_set1_epi32(vq[(j + i) * (Tp / 4) + t4]);
          acc0[i] = dot(acc0[i], x0, vv);
          acc1[i] = dot(acc1[i], x1, vv);
        }
      }
      for (int i = 0; i < 8; ++i) emit(j + i, acc0[i], acc1[i]);
    }
    for (; j < dv; ++j) {
      __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
      for (int64_t t4 = 0; t4 < T4; ++t4) {
        const __m512i vv = _mm512_set1_epi32(vq[j * (Tp / 4) + t4]);
        acc0 = dot(acc0, _mm512_loadu_si512(pq + t4 * SB), vv);
        acc1 = dot(acc1, _mm512_loadu_si512(pq + t4 * SB + W), vv);
      }
      emit(j, acc0, acc1);
    }
  }
}

}  // namespace avx512vnni
}  // namespace sparq
