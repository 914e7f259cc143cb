// u8s8_mha_fm_ukernel_8x32__avx512vnni: feature-major attention with both products in
// int8 (vpdpbusd: four u8 x s8 products summed into each int32 lane, twice the work of a
// vdpbf16ps and four times an fp32 FMA per instruction) and the softmax in fp32. Used for
// int8 models only, under the same per-token cosine rule as their matmuls.
//
// The same work items and transposed-score scheme as fm_impl.h (32 queries per item):
//   scores  p[t][:] = sk[t] sq[:] (sum over d quads Kq[d..d+3][t] . Qu[d..d+3][:] - comp[t])
//   out[j][:]       = sv[j] (sum over t quads Vq[j][t..t+3] . Pu[t..t+3][:]) / sum_t Pu[t][:]
// Quantization, all symmetric to 127 steps:
//   Q per query (over the head's dh values, after the score scale), stored as u8 with zero
//   point 128; comp[t] = 128 sum_d Kq[d][t] removes that offset exactly;
//   K per key (over dh), s8;  V per channel (over the keys), s8;
//   the unnormalized probabilities exp(s - max) in [0, 1] as u8 in 255 steps, and the
//   normalizer is the sum of those same integers, so the weights sum to one exactly.
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

// Bytes of four int32 vectors (values in [-128, 255]) packed into one: byte i of dword
// lane l = low byte of r_i[l].
inline __m512i pack_quads(__m512i r0, __m512i r1, __m512i r2, __m512i r3) {
  const __m512i ff = _mm512_set1_epi32(0xFF);
  __m512i v = _mm512_and_si512(r0, ff);
  v = _mm512_ternarylogic_epi32(v, _mm512_slli_epi32(r1, 8), _mm512_set1_epi32(0xFF00), 0xF8);
  v = _mm512_ternarylogic_epi32(v, _mm512_slli_epi32(r2, 16), _mm512_set1_epi32(0xFF0000), 0xF8);
  return _mm512_or_si512(v, _mm512_slli_epi32(r3, 24));
}

inline float hmax(__m512 v) { return _mm512_reduce_max_ps(v); }

// 127 / max|x| as the quantization multiplier, and max|x| / 127 as the scale (1 for zero).
inline void scales_of(__m512 amax, __m512* inv, __m512* scale) {
  const __mmask16 nz = _mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ);
  *scale = _mm512_mask_mul_ps(_mm512_set1_ps(1.0f), nz, amax, _mm512_set1_ps(1.0f / 127.0f));
  *inv = _mm512_mask_div_ps(_mm512_set1_ps(1.0f), nz, _mm512_set1_ps(127.0f), amax);
}

inline __m512i quantize(__m512 x, __m512 inv) { return _mm512_cvtps_epi32(_mm512_mul_ps(x, inv)); }

}  // namespace

void fm_attention_int8(const FmAttentionArgs& a, int64_t item_begin, int64_t item_end, float* scratch) {
  const int64_t H = a.heads, S = a.seq, T = a.keys, dh = a.dh, dv = a.dv, P = a.panel;
  const int64_t blocks = (S + SB - 1) / SB;
  const int64_t dh4 = (dh + 3) / 4, T4 = (T + 3) / 4, Tp = (T + W - 1) / W * W;
  // Scratch (4-byte units); see fm_attention_scratch_floats.
  //   per item: qs f32 [dh][SB], qq [dh4][SB], p f32 [4*T4][SB], pq [T4][SB], os [SB]
  //   per head: kf f32 [dh][Tp], kq [dh4][Tp], comp [Tp], sk [Tp], vq [dv][Tp/4], sv [dv],
  //             row f32 [Tp]
  float* qs = scratch;
  int32_t* qq = reinterpret_cast<int32_t*>(qs + dh * SB);
  float* p = reinterpret_cast<float*>(qq + dh4 * SB);
  int32_t* pq = reinterpret_cast<int32_t*>(p + 4 * T4 * SB);
  float* os = reinterpret_cast<float*>(pq + T4 * SB);
  float* kf = os + SB;
  int32_t* kq = reinterpret_cast<int32_t*>(kf + dh * Tp);
  float* comp = reinterpret_cast<float*>(kq + dh4 * Tp);
  float* sk = comp + Tp;
  int32_t* vq = reinterpret_cast<int32_t*>(sk + Tp);
  float* sv = reinterpret_cast<float*>(vq + dv * (Tp / 4));
  float* row = sv + dv;
  int64_t gathered = -1;
  for (int64_t item = item_begin; item < item_end; ++item) {
    int64_t b = 0, h = 0, blk = 0;
    if (!fm_attention_item(a, blocks, item, &b, &h, &blk)) continue;
    const int64_t s0 = blk * SB;
    const int64_t ns = std::min(SB, S - s0), q0 = b * S + s0;
    if (gathered != b * H + h) {
      // K: per-key scales over d, s8 quads along d, and the zero-point compensation.
      for (int64_t d = 0; d < dh; ++d) {
        float* kr = kf + d * Tp;
        fm_copy_row(a.k, P, H * dh, a.ld_k, h * dh + d, b * T, T, 1.0f, kr);
        std::fill(kr + T, kr + Tp, 0.0f);
      }
      for (int64_t t = 0; t < Tp; t += W) {
        __m512 amax = _mm512_setzero_ps();
        for (int64_t d = 0; d < dh; ++d) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(kf + d * Tp + t)));
        __m512 inv, scale;
        scales_of(amax, &inv, &scale);
        _mm512_storeu_ps(sk + t, scale);
        __m512i csum = _mm512_setzero_si512();
        for (int64_t d4 = 0; d4 < dh4; ++d4) {
          __m512i r[4];
          for (int i = 0; i < 4; ++i) {
            const int64_t d = 4 * d4 + i;
            r[i] = d < dh ? quantize(_mm512_loadu_ps(kf + d * Tp + t), inv) : _mm512_setzero_si512();
            csum = _mm512_add_epi32(csum, r[i]);
          }
          _mm512_storeu_si512(kq + d4 * Tp + t, pack_quads(r[0], r[1], r[2], r[3]));
        }
        _mm512_storeu_ps(comp + t, _mm512_cvtepi32_ps(_mm512_slli_epi32(csum, 7)));
      }
      // V: per-channel scales over the keys, s8 quads along t (zero past T).
      for (int64_t j = 0; j < dv; ++j) {
        fm_copy_row(a.v, P, H * dv, a.ld_v, h * dv + j, b * T, T, 1.0f, row);
        std::fill(row + T, row + Tp, 0.0f);
        __m512 amax = _mm512_setzero_ps();
        for (int64_t t = 0; t < Tp; t += W) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(row + t)));
        const float m = hmax(amax);
        sv[j] = m > 0.0f ? m / 127.0f : 1.0f;
        const __m512 inv = _mm512_set1_ps(m > 0.0f ? 127.0f / m : 1.0f);
        for (int64_t t = 0; t < Tp; t += W) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(vq + j * (Tp / 4) + t / 4),
                          _mm512_cvtsepi32_epi8(quantize(_mm512_loadu_ps(row + t), inv)));
        }
      }
      gathered = b * H + h;
    }
    // Q (scaled), zero past the block; per-query scales; u8 quads along d (128 past dh).
    for (int64_t d = 0; d < dh; ++d) {
      fm_copy_row(a.q, P, H * dh, a.ld_q, h * dh + d, q0, ns, a.scale, qs + d * SB);
      for (int64_t j = ns; j < SB; ++j) qs[d * SB + j] = 0.0f;
    }
    __m512 sq[2], invq[2];
    for (int v = 0; v < 2; ++v) {
      __m512 amax = _mm512_setzero_ps();
      for (int64_t d = 0; d < dh; ++d) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(qs + d * SB + v * W)));
      scales_of(amax, &invq[v], &sq[v]);
      const __m512i zp = _mm512_set1_epi32(128);
      for (int64_t d4 = 0; d4 < dh4; ++d4) {
        __m512i r[4];
        for (int i = 0; i < 4; ++i) {
          const int64_t d = 4 * d4 + i;
          r[i] = d < dh ? _mm512_add_epi32(quantize(_mm512_loadu_ps(qs + d * SB + v * W), invq[v]), zp) : zp;
        }
        _mm512_storeu_si512(qq + d4 * SB + v * W, pack_quads(r[0], r[1], r[2], r[3]));
      }
    }
    // Scores, 8 keys x 32 queries per register block; dequantized to fp32.
    auto finish_scores = [&](int64_t t, __m512i acc0, __m512i acc1) {
      const __m512 c = _mm512_set1_ps(comp[t]), s = _mm512_set1_ps(sk[t]);
      const __m512 f0 = _mm512_sub_ps(_mm512_cvtepi32_ps(acc0), c), f1 = _mm512_sub_ps(_mm512_cvtepi32_ps(acc1), c);
      _mm512_storeu_ps(p + t * SB, _mm512_mul_ps(_mm512_mul_ps(f0, s), sq[0]));
      _mm512_storeu_ps(p + t * SB + W, _mm512_mul_ps(_mm512_mul_ps(f1, s), sq[1]));
    };
    int64_t t = 0;
    for (; t + 8 <= T; t += 8) {
      __m512i acc0[8], acc1[8];
      for (int i = 0; i < 8; ++i) acc0[i] = acc1[i] = _mm512_setzero_si512();
      for (int64_t d4 = 0; d4 < dh4; ++d4) {
        const __m512i x0 = _mm512_loadu_si512(qq + d4 * SB), x1 = _mm512_loadu_si512(qq + d4 * SB + W);
        const int32_t* kr = kq + d4 * Tp + t;
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          const __m512i kv = _mm512_set1_epi32(kr[i]);
          acc0[i] = dot(acc0[i], x0, kv);
          acc1[i] = dot(acc1[i], x1, kv);
        }
      }
      for (int i = 0; i < 8; ++i) finish_scores(t + i, acc0[i], acc1[i]);
    }
    for (; t < T; ++t) {
      __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
      for (int64_t d4 = 0; d4 < dh4; ++d4) {
        const __m512i kv = _mm512_set1_epi32(kq[d4 * Tp + t]);
        acc0 = dot(acc0, _mm512_loadu_si512(qq + d4 * SB), kv);
        acc1 = dot(acc1, _mm512_loadu_si512(qq + d4 * SB + W), kv);
      }
      finish_scores(t, acc0, acc1);
    }
    // Mask and column maxima, then exp in fp32, as u8 in 255 steps, packed in quads of
    // keys; the normalizer is the sum of the quantized values.
    const int64_t mo = b * a.mask_b + h * a.mask_h;
    __m512 m0 = _mm512_set1_ps(-std::numeric_limits<float>::infinity()), m1 = m0;
    for (t = 0; t < T; ++t) {
      float* r = p + t * SB;
      __m512 r0 = _mm512_loadu_ps(r), r1 = _mm512_loadu_ps(r + W);
      if (a.add_mask != nullptr) {
        const __m512 mv = _mm512_set1_ps(a.add_mask[mo + t * a.mask_t]);
        r0 = _mm512_add_ps(r0, mv);
        r1 = _mm512_add_ps(r1, mv);
        _mm512_storeu_ps(r, r0);
        _mm512_storeu_ps(r + W, r1);
      } else if (a.select_mask != nullptr && a.select_mask[mo + t * a.mask_t] != 0) {
        r0 = r1 = _mm512_set1_ps(a.fill);
        _mm512_storeu_ps(r, r0);
        _mm512_storeu_ps(r + W, r1);
      }
      m0 = _mm512_max_ps(m0, r0);
      m1 = _mm512_max_ps(m1, r1);
    }
    const __m512 k255 = _mm512_set1_ps(255.0f);
    __m512i sum0 = _mm512_setzero_si512(), sum1 = _mm512_setzero_si512();
    for (int64_t t4 = 0; t4 < T4; ++t4) {
      __m512i e0[4], e1[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t tt = 4 * t4 + i;
        if (tt < T) {
          const float* r = p + tt * SB;
          e0[i] = _mm512_cvtps_epi32(_mm512_mul_ps(avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(r), m0)), k255));
          e1[i] = _mm512_cvtps_epi32(_mm512_mul_ps(avx512_exp(_mm512_sub_ps(_mm512_loadu_ps(r + W), m1)), k255));
        } else {
          e0[i] = e1[i] = _mm512_setzero_si512();
        }
        sum0 = _mm512_add_epi32(sum0, e0[i]);
        sum1 = _mm512_add_epi32(sum1, e1[i]);
      }
      _mm512_storeu_si512(pq + t4 * SB, pack_quads(e0[0], e0[1], e0[2], e0[3]));
      _mm512_storeu_si512(pq + t4 * SB + W, pack_quads(e1[0], e1[1], e1[2], e1[3]));
    }
    // Each column's maximum gives exp(0) * 255 = 255, so the sums are positive.
    const __m512 inv0 = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_cvtepi32_ps(sum0));
    const __m512 inv1 = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_cvtepi32_ps(sum1));
    const bool direct = ns == SB && (P == 0 || q0 / P == (q0 + SB - 1) / P);
    auto emit = [&](int64_t j, __m512i acc0, __m512i acc1) {
      const __m512 s = _mm512_set1_ps(sv[j]);
      const __m512 r0 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc0), s), inv0);
      const __m512 r1 = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc1), s), inv1);
      if (direct) {
        float* orow = a.out + fm_offset(P, H * dv, a.ld_out, h * dv + j, q0);
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
        const __m512i x0 = _mm512_loadu_si512(pq + t4 * SB), x1 = _mm512_loadu_si512(pq + t4 * SB + W);
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
