// s8s8_mha_fm_ukernel_6x16__avx2: feature-major attention with both products in int8
// values on AVX2, for int8 models on CPUs that issue two vpmaddwd a cycle (fm.h,
// avx2_int8_attention_preferred). AVX2 has no u8 x s8 dot product that cannot saturate
// (vpmaddubsw adds its pairs in saturating int16), so the int8 values are held in 16-bit
// words and multiplied with vpmaddwd: two products summed into each int32 lane, 16 a
// ymm instruction against 8 for an fp32 FMA. Zen 3 runs vpmaddwd on both FMA pipes, so
// the products cost half the fp32 kernel's; Zen 2 (one pipe) would gain nothing.
//
// The quantization is the VNNI kernel's (fm_attention_int8_avx512.cpp), so the integer
// sums are the same numbers:
//   Q per query (over the head's dh values, after the score scale), K and V per key, each
//   symmetric to 127 steps; the probability weights w[t][:] = round(255 e[t][:] sv[t] /
//   max_t sv[t]) in 255 steps, V's per-key scale folded in. Q is signed here (a 16-bit
//   lane has room), so there is no zero point and no compensation.
//   scores  p[t][:] = sk[t] sq[:] (sum over d pairs Kp[d, d+1][t] . Qp[d, d+1][:])
//   out[j][:] = (max_t sv[t] / 255) (sum over t pairs Vp[j][t, t+1] . w[t, t+1][:]) / sum_t e
// Pairs are two 16-bit words in a dword: (x0 & 0xffff) | x1 << 16, built with and, shift
// and or (the ALU pipes) rather than unpacks (the two shuffle pipes).
// The same work items as the fp32 AVX2 kernel (16 queries, fm.h's query_block); scores
// and outputs in blocks of 6 keys (channels) x 16 queries: 12 accumulators, 2 query
// vectors, a broadcast and the product temporary fill the 16 ymm registers.
// Accumulation is exact int32: |sum| <= keys * 255 * 127 (or dh * 127 * 127) < 2^31.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/fm/fm_impl.h"

namespace sparq {
namespace avx2 {
namespace {

constexpr int64_t W = 8, SB = 16, KB = 6;
constexpr int64_t kChunk = 64;  // keys per preparation unit, as the VNNI kernel's

// acc += vpmaddwd(a, b) as one unit (madd_accumulate in u8s8_spmm_avx2.cpp: written with
// intrinsics, GCC reassociates the adds and spills accumulators).
inline void madd(__m256i& acc, __m256i a, __m256i b) {
  __m256i t;
  __asm__("vpmaddwd %[b], %[a], %[t]\n\tvpaddd %[t], %[acc], %[acc]"
          : [acc] "+x"(acc), [t] "=&x"(t)
          : [a] "x"(a), [b] "x"(b));
}

// 8 floats, lanes past `left` zero and never read. The tail is copied element by element,
// not read with vmaskmovps: QEMU 7.2 (the Haswell test) faults on masked-out lanes in an
// unmapped page, which the hardware suppresses. Tails are rare (a block's last keys or
// queries), so the copy costs nothing measurable.
inline __m256 load_n(const float* p, int64_t left) {
  if (left >= W) return _mm256_loadu_ps(p);
  alignas(32) float t[W] = {};
  for (int64_t i = 0; i < left; ++i) t[i] = p[i];
  return _mm256_load_ps(t);
}

inline __m256 abs_ps(__m256 x) {
  return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// 127 / max|x| as the quantization multiplier and max|x| / 127 as the scale (1 for zero),
// the VNNI kernel's formulas.
inline void scales_of(__m256 amax, __m256* inv, __m256* scale) {
  const __m256 nz = _mm256_cmp_ps(amax, _mm256_setzero_ps(), _CMP_GT_OQ);
  const __m256 one = _mm256_set1_ps(1.0f);
  *scale = _mm256_blendv_ps(one, _mm256_mul_ps(amax, _mm256_set1_ps(1.0f / 127.0f)), nz);
  *inv = _mm256_blendv_ps(one, _mm256_div_ps(_mm256_set1_ps(127.0f), amax), nz);
}

inline __m256i quantize(__m256 x, __m256 inv) { return _mm256_cvtps_epi32(_mm256_mul_ps(x, inv)); }

// Two int32 vectors of values within 16 bits as one of word pairs: dword l = (lo_l, hi_l).
inline __m256i pair_words(__m256i lo, __m256i hi) {
  return _mm256_or_si256(_mm256_and_si256(lo, _mm256_set1_epi32(0xffff)),
                         _mm256_slli_epi32(hi, 16));
}

// exp(x) for the probabilities: 2^(x log2 e) with the VNNI kernel's degree-3 polynomial
// for 2^f on [0, 1) (relative error below 1.6e-4, 25 times finer than the 255 steps they
// are rounded to next). y is clamped at -127, whose exponent field 0 makes the result 0:
// masked scores (around -3.4e38) underflow to 0, as vscalefps makes them there.
inline __m256 exp_coarse(__m256 x) {
  const __m256 y = _mm256_max_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                 _mm256_set1_ps(-127.0f));
  const __m256 n = _mm256_floor_ps(y);
  const __m256 f = _mm256_sub_ps(y, n);
  __m256 p = _mm256_set1_ps(7.5804844e-2f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.2905980e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9484705e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.9997616e-1f));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// The packed K and V of one (b, h), in 4-byte units (fm_attention_int8_head_floats):
//   kp [dh2][Tp]   K per key, word pairs along d (d, d + 1), zero past dh
//   sk [Tp]        K's per-key scales
//   vp [dv][Tp/2]  V per key, word pairs along t (t, t + 1), zero past the keys
//   sv [Tp]        V's per-key scales (0 for a zero V), folded into the probabilities
struct KvPack {
  int32_t* kp;
  float* sk;
  int32_t* vp;
  float* sv;
};

inline KvPack kv_pack_at(float* base, int64_t dh2, int64_t Tp, int64_t dv) {
  KvPack k;
  k.kp = reinterpret_cast<int32_t*>(base);
  k.sk = base + dh2 * Tp;
  k.vp = reinterpret_cast<int32_t*>(k.sk + Tp);
  k.sv = base + dh2 * Tp + Tp + dv * (Tp / 2);
  return k;
}

// Packs keys [k0, k0 + n) of (b, h), n <= kChunk, k0 a multiple of 16, and zeros up to
// the next multiple of 16 past them; tmp holds [max(dh, dv)][kChunk] floats for the copy
// where the keys' tokens are not contiguous.
void pack_keys(const FmAttentionArgs& a, int64_t b, int64_t h, int64_t k0, int64_t n,
               const KvPack& pk, float* tmp) {
  const int64_t H = a.heads, T = a.keys, dh = a.dh, dv = a.dv, P = a.panel;
  const int64_t Tp = (T + 15) / 16 * 16, dh2 = (dh + 1) / 2, n16 = (n + 15) / 16 * 16;
  const int64_t m = b * T + k0;
  const Rows kr = rows_of(a.k, P, H * dh, a.ld_k, h * dh, dh, m, n, tmp, kChunk);
  for (int64_t t = 0; t < n16; t += W) {
    const int64_t left = n - t;
    const float* src = kr.p + t;
    __m256 amax = _mm256_setzero_ps();
    for (int64_t d = 0; d < dh; ++d)
      amax = _mm256_max_ps(amax, abs_ps(load_n(src + d * kr.stride, left)));
    __m256 inv, scale;
    scales_of(amax, &inv, &scale);
    _mm256_storeu_ps(pk.sk + k0 + t, scale);
    for (int64_t d2 = 0; d2 < dh2; ++d2) {
      const int64_t d = 2 * d2;
      const __m256i lo = quantize(load_n(src + d * kr.stride, left), inv);
      const __m256i hi = d + 1 < dh ? quantize(load_n(src + (d + 1) * kr.stride, left), inv)
                                    : _mm256_setzero_si256();
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pk.kp + d2 * Tp + k0 + t), pair_words(lo, hi));
    }
  }
  // V: per-key scales over the channels, word pairs along t (16 keys give 8 pairs).
  const Rows vr = rows_of(a.v, P, H * dv, a.ld_v, h * dv, dv, m, n, tmp, kChunk);
  for (int64_t t = 0; t < n16; t += 2 * W) {
    const float* src = vr.p + t;
    const int64_t left0 = n - t, left1 = n - t - W;
    __m256 amax0 = _mm256_setzero_ps(), amax1 = _mm256_setzero_ps();
    for (int64_t j = 0; j < dv; ++j) {
      amax0 = _mm256_max_ps(amax0, abs_ps(load_n(src + j * vr.stride, left0)));
      amax1 = _mm256_max_ps(amax1, abs_ps(load_n(src + j * vr.stride + W, left1)));
    }
    __m256 inv0, inv1, scale;
    scales_of(amax0, &inv0, &scale);
    scales_of(amax1, &inv1, &scale);
    // A zero V (padding past the keys too) weighs nothing and must not set the head's
    // largest scale: its scale is 0 here, not scales_of's 1.
    const __m256 r127 = _mm256_set1_ps(1.0f / 127.0f);
    _mm256_storeu_ps(pk.sv + k0 + t, _mm256_mul_ps(amax0, r127));
    _mm256_storeu_ps(pk.sv + k0 + t + W, _mm256_mul_ps(amax1, r127));
    int32_t* dst = pk.vp + (k0 + t) / 2;
    for (int64_t j = 0; j < dv; ++j) {
      const __m256i q0 = quantize(load_n(src + j * vr.stride, left0), inv0);
      const __m256i q1 = quantize(load_n(src + j * vr.stride + W, left1), inv1);
      // packs works within 128-bit lanes (keys 0-3, 8-11 | 4-7, 12-15); vpermq restores
      // the key order. |q| <= 127: nothing saturates.
      const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j * (Tp / 2)), words);
    }
  }
}

enum MaskKind { kNoMask, kAddMask, kSelectMask };

// Scores of one item, p[t][0, SB) for every key t, KB keys x 16 queries per register
// block: dequantized to fp32 (acc sk sq, the VNNI kernel's order), the mask applied, and
// each query's maximum over the keys in m_out.
template <int kMask>
void scores(const FmAttentionArgs& a, int64_t mo, const int32_t* qp, const KvPack& pk, int64_t dh2,
            int64_t Tp, const __m256 sq[2], float* __restrict p, __m256 m_out[2]) {
  const int64_t T = a.keys;
  const int32_t* kp = pk.kp;
  const float* sk = pk.sk;
  const __m256 sq0 = sq[0], sq1 = sq[1];
  __m256 m0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), m1 = m0;
  auto finish = [&](int64_t t, __m256i acc0, __m256i acc1) {
    const __m256 s = _mm256_set1_ps(sk[t]);
    __m256 f0 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc0), s), sq0);
    __m256 f1 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc1), s), sq1);
    if constexpr (kMask == kAddMask) {
      const __m256 mv = _mm256_set1_ps(a.add_mask[mo + t * a.mask_t]);
      f0 = _mm256_add_ps(f0, mv);
      f1 = _mm256_add_ps(f1, mv);
    } else if constexpr (kMask == kSelectMask) {
      if (a.select_mask[mo + t * a.mask_t] != 0) f0 = f1 = _mm256_set1_ps(a.fill);
    }
    m0 = _mm256_max_ps(m0, f0);
    m1 = _mm256_max_ps(m1, f1);
    _mm256_storeu_ps(p + t * SB, f0);
    _mm256_storeu_ps(p + t * SB + W, f1);
  };
  int64_t t = 0;
  for (; t + KB <= T; t += KB) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
            c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t d2 = 0; d2 < dh2; ++d2) {
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp + d2 * SB));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp + d2 * SB + W));
      const int32_t* kr = kp + d2 * Tp + t;
      __m256i kv = _mm256_set1_epi32(kr[0]);
      madd(c00, x0, kv), madd(c01, x1, kv);
      kv = _mm256_set1_epi32(kr[1]);
      madd(c10, x0, kv), madd(c11, x1, kv);
      kv = _mm256_set1_epi32(kr[2]);
      madd(c20, x0, kv), madd(c21, x1, kv);
      kv = _mm256_set1_epi32(kr[3]);
      madd(c30, x0, kv), madd(c31, x1, kv);
      kv = _mm256_set1_epi32(kr[4]);
      madd(c40, x0, kv), madd(c41, x1, kv);
      kv = _mm256_set1_epi32(kr[5]);
      madd(c50, x0, kv), madd(c51, x1, kv);
    }
    finish(t + 0, c00, c01);
    finish(t + 1, c10, c11);
    finish(t + 2, c20, c21);
    finish(t + 3, c30, c31);
    finish(t + 4, c40, c41);
    finish(t + 5, c50, c51);
  }
  // The rest in pairs of keys (4 accumulator chains; a single key's 2 leave the loads
  // waiting on them), then one.
  for (; t + 2 <= T; t += 2) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
    for (int64_t d2 = 0; d2 < dh2; ++d2) {
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp + d2 * SB));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp + d2 * SB + W));
      const int32_t* kr = kp + d2 * Tp + t;
      __m256i kv = _mm256_set1_epi32(kr[0]);
      madd(c00, x0, kv), madd(c01, x1, kv);
      kv = _mm256_set1_epi32(kr[1]);
      madd(c10, x0, kv), madd(c11, x1, kv);
    }
    finish(t + 0, c00, c01);
    finish(t + 1, c10, c11);
  }
  for (; t < T; ++t) {
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0;
    for (int64_t d2 = 0; d2 < dh2; ++d2) {
      const __m256i kv = _mm256_set1_epi32(kp[d2 * Tp + t]);
      madd(acc0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp + d2 * SB)), kv);
      madd(acc1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qp + d2 * SB + W)), kv);
    }
    finish(t, acc0, acc1);
  }
  m_out[0] = m0;
  m_out[1] = m1;
}

}  // namespace

void fm_attention_int8_prep(const FmAttentionArgs& a, int64_t unit_begin, int64_t unit_end,
                            float* scratch) {
  const int64_t H = a.heads, T = a.keys, chunks = (T + kChunk - 1) / kChunk;
  const int64_t dh2 = (a.dh + 1) / 2, Tp = (T + 15) / 16 * 16,
                per_head = fm_attention_int8_head_floats(a);
  for (int64_t u = unit_begin; u < unit_end; ++u) {  // units (b, chunk, h)
    const int64_t b = u / (chunks * H), c = (u / H) % chunks, h = u % H;
    const KvPack pk = kv_pack_at(a.kv_packed + (b * H + h) * per_head, dh2, Tp, a.dv);
    pack_keys(a, b, h, c * kChunk, std::min(kChunk, T - c * kChunk), pk, scratch);
  }
}

void fm_attention_int8(const FmAttentionArgs& a, int64_t item_begin, int64_t item_end,
                       float* scratch) {
  const int64_t H = a.heads, S = a.seq, T = a.keys, dh = a.dh, dv = a.dv, P = a.panel;
  const int64_t blocks = (S + SB - 1) / SB;
  const int64_t dh2 = (dh + 1) / 2, T2 = (T + 1) / 2, Tp = (T + 15) / 16 * 16;
  const int64_t per_head = fm_attention_int8_head_floats(a);
  // Scratch (4-byte units); see fm_attention_scratch_floats.
  //   per item: qs f32 [dh][SB], qp [dh2][SB], p f32 [2*T2][SB], pp [T2][SB], os [SB]
  //   without a.kv_packed: one head's KvPack and pack_keys' [max(dh, dv)][kChunk]
  float* qs = scratch;
  int32_t* qp = reinterpret_cast<int32_t*>(qs + dh * SB);
  float* p = reinterpret_cast<float*>(qp + dh2 * SB);
  int32_t* pp = reinterpret_cast<int32_t*>(p + 2 * T2 * SB);
  float* os = reinterpret_cast<float*>(pp + T2 * SB);
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
        pk = kv_pack_at(a.kv_packed + (b * H + h) * per_head, dh2, Tp, dv);
      } else {
        pk = kv_pack_at(own_pack, dh2, Tp, dv);
        for (int64_t k0 = 0; k0 < T; k0 += kChunk)
          pack_keys(a, b, h, k0, std::min(kChunk, T - k0), pk, tmp);
      }
      __m256 m = _mm256_setzero_ps();
      for (int64_t t = 0; t < Tp; t += W) m = _mm256_max_ps(m, _mm256_loadu_ps(pk.sv + t));
      svmax = hmax(m);
      if (!(svmax > 0.0f)) svmax = 1.0f;  // V all zero: every weight is 0 anyway
      current = b * H + h;
    }
    // Q (scaled), zero past the block; per-query scales; word pairs along d (0 past dh).
    // Read in place unless the block spans two panels.
    const Rows qr = rows_of(a.q, P, H * dh, a.ld_q, h * dh, dh, q0, ns, qs, SB);
    const __m256 qscale = _mm256_set1_ps(a.scale);
    __m256 sq[2];
    for (int v = 0; v < 2; ++v) {
      const int64_t left = ns - v * W;
      const float* src = qr.p + v * W;
      __m256 amax = _mm256_setzero_ps();
      for (int64_t d = 0; d < dh; ++d)
        amax =
            _mm256_max_ps(amax, abs_ps(_mm256_mul_ps(load_n(src + d * qr.stride, left), qscale)));
      __m256 inv;
      scales_of(amax, &inv, &sq[v]);
      for (int64_t d2 = 0; d2 < dh2; ++d2) {
        const int64_t d = 2 * d2;
        const __m256i lo = quantize(_mm256_mul_ps(load_n(src + d * qr.stride, left), qscale), inv);
        const __m256i hi =
            d + 1 < dh
                ? quantize(_mm256_mul_ps(load_n(src + (d + 1) * qr.stride, left), qscale), inv)
                : _mm256_setzero_si256();
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(qp + d2 * SB + v * W), pair_words(lo, hi));
      }
    }
    __m256 mx[2];
    const int64_t mo = b * a.mask_b + h * a.mask_h;
    if (a.add_mask != nullptr) {
      scores<kAddMask>(a, mo, qp, pk, dh2, Tp, sq, p, mx);
    } else if (a.select_mask != nullptr) {
      scores<kSelectMask>(a, mo, qp, pk, dh2, Tp, sq, p, mx);
    } else {
      scores<kNoMask>(a, mo, qp, pk, dh2, Tp, sq, p, mx);
    }
    // exp in fp32; the weights e * sv[t] as integers in 255 steps of the head's largest
    // sv, in word pairs of keys (t, t + 1); the normalizer sums e in fp32.
    const float to_u8 = 255.0f / svmax;
    __m256 sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();
    auto weights = [&](int64_t tt, __m256i* w0, __m256i* w1) {
      const float* r = p + tt * SB;
      const __m256 f = _mm256_set1_ps(pk.sv[tt] * to_u8);
      const __m256 x0 = exp_coarse(_mm256_sub_ps(_mm256_loadu_ps(r), mx[0]));
      const __m256 x1 = exp_coarse(_mm256_sub_ps(_mm256_loadu_ps(r + W), mx[1]));
      sum0 = _mm256_add_ps(sum0, x0);
      sum1 = _mm256_add_ps(sum1, x1);
      *w0 = _mm256_cvtps_epi32(_mm256_mul_ps(x0, f));
      *w1 = _mm256_cvtps_epi32(_mm256_mul_ps(x1, f));
    };
    for (int64_t t2 = 0; t2 < T2; ++t2) {
      __m256i e00, e01, e10 = _mm256_setzero_si256(), e11 = e10;
      weights(2 * t2, &e00, &e01);
      if (2 * t2 + 1 < T) weights(2 * t2 + 1, &e10, &e11);
      // 0 <= w <= 255: the low word needs no mask.
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pp + t2 * SB),
                          _mm256_or_si256(e00, _mm256_slli_epi32(e10, 16)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pp + t2 * SB + W),
                          _mm256_or_si256(e01, _mm256_slli_epi32(e11, 16)));
    }
    // Each column's maximum gives exp(0) = 1, so the sums are at least 1.
    const __m256 back = _mm256_set1_ps(svmax / 255.0f);
    const __m256 inv0 = _mm256_div_ps(back, sum0), inv1 = _mm256_div_ps(back, sum1);
    const bool direct = ns == SB && (P == 0 || q0 / P == (q0 + SB - 1) / P);
    float* const out0 = a.out + fm_offset(P, H * dv, a.ld_out, h * dv, q0);
    const int64_t out_stride = fm_row_stride(P, a.ld_out);
    auto emit = [&](int64_t j, __m256i acc0, __m256i acc1) {
      const __m256 r0 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc0), inv0);
      const __m256 r1 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc1), inv1);
      if (direct) {
        float* orow = out0 + j * out_stride;
        _mm256_storeu_ps(orow, r0);
        _mm256_storeu_ps(orow + W, r1);
      } else {
        _mm256_storeu_ps(os, r0);
        _mm256_storeu_ps(os + W, r1);
        fm_store_row(a.out, P, H * dv, a.ld_out, h * dv + j, q0, ns, os);
      }
    };
    const int32_t* vp = pk.vp;
    const int64_t ldv = Tp / 2;
    int64_t j = 0;
    for (; j + KB <= dv; j += KB) {
      __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
              c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
      const int32_t* vr = vp + j * ldv;
      for (int64_t t2 = 0; t2 < T2; ++t2) {
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pp + t2 * SB));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pp + t2 * SB + W));
        __m256i vv = _mm256_set1_epi32(vr[t2]);
        madd(c00, x0, vv), madd(c01, x1, vv);
        vv = _mm256_set1_epi32(vr[ldv + t2]);
        madd(c10, x0, vv), madd(c11, x1, vv);
        vv = _mm256_set1_epi32(vr[2 * ldv + t2]);
        madd(c20, x0, vv), madd(c21, x1, vv);
        vv = _mm256_set1_epi32(vr[3 * ldv + t2]);
        madd(c30, x0, vv), madd(c31, x1, vv);
        vv = _mm256_set1_epi32(vr[4 * ldv + t2]);
        madd(c40, x0, vv), madd(c41, x1, vv);
        vv = _mm256_set1_epi32(vr[5 * ldv + t2]);
        madd(c50, x0, vv), madd(c51, x1, vv);
      }
      emit(j + 0, c00, c01);
      emit(j + 1, c10, c11);
      emit(j + 2, c20, c21);
      emit(j + 3, c30, c31);
      emit(j + 4, c40, c41);
      emit(j + 5, c50, c51);
    }
    for (; j + 2 <= dv; j += 2) {  // the rest in pairs of channels, then one
      __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
      const int32_t* vr = vp + j * ldv;
      for (int64_t t2 = 0; t2 < T2; ++t2) {
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pp + t2 * SB));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pp + t2 * SB + W));
        __m256i vv = _mm256_set1_epi32(vr[t2]);
        madd(c00, x0, vv), madd(c01, x1, vv);
        vv = _mm256_set1_epi32(vr[ldv + t2]);
        madd(c10, x0, vv), madd(c11, x1, vv);
      }
      emit(j + 0, c00, c01);
      emit(j + 1, c10, c11);
    }
    for (; j < dv; ++j) {
      __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0;
      const int32_t* vr = vp + j * ldv;
      for (int64_t t2 = 0; t2 < T2; ++t2) {
        const __m256i vv = _mm256_set1_epi32(vr[t2]);
        madd(acc0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pp + t2 * SB)), vv);
        madd(acc1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pp + t2 * SB + W)), vv);
      }
      emit(j, acc0, acc1);
    }
  }
}

}  // namespace avx2
}  // namespace sparq
