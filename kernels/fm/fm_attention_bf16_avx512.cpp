// bf16_mha_fm_ukernel_8x32__avx512bf16: feature-major attention with both products in
// bf16 (vdpbf16ps: two bf16 products summed into each fp32 lane, twice the work of an
// fp32 FMA per instruction) and the softmax in fp32. Used for int8 models only: bf16
// keeps 8 bits of mantissa, well inside their per-token cosine budget, not fp32's 1e-3.
//
// The same work items and transposed-score scheme as fm_impl.h (32 queries per item):
//   scores  p[t][:] = sum over d pairs  (K[d][t], K[d+1][t]) . (Q[d][:], Q[d+1][:])
//   out[j][:]      = sum over t pairs  (V[j][t], V[j][t+1]) . (P[t][:], P[t+1][:])
// so the broadcast operand is one 32-bit pair and the vector operand holds, per query
// lane, the matching pair of the other tensor (interleaved here, per item or per head).
#include <immintrin.h>

#include <cstring>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "kernels/common/avx512_math.h"
#include "kernels/fm/fm_impl.h"

namespace sparq {
namespace avx512bf16 {
namespace {

constexpr int64_t W = 16, SB = 32;

inline uint16_t to_bf16(float x) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// out[i] = (bf16(hi[i]) << 16) | bf16(lo[i]) for i < n.
inline void pack_pairs(const float* lo, const float* hi, int64_t n, uint32_t* out) {
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const __m256i l = (__m256i)(_mm512_cvtneps_pbh(_mm512_loadu_ps(lo + i)));
    const __m256i h = (__m256i)(_mm512_cvtneps_pbh(_mm512_loadu_ps(hi + i)));
    const __m512i v =
        _mm512_or_si512(_mm512_cvtepu16_epi32(l), _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    _mm512_storeu_si512(out + i, v);
  }
  for (; i < n; ++i)
    out[i] = static_cast<uint32_t>(to_bf16(lo[i])) | (static_cast<uint32_t>(to_bf16(hi[i])) << 16);
}

// exp(x) for x <= 0 (scores minus their column maximum): 2^(x log2 e) split into an
// integer part, applied with vscalefps (underflows to 0 for masked scores), and a
// degree-5 polynomial for 2^f on [0, 1) (relative error below 4e-6, far inside bf16's
// 2^-8, which the probabilities are rounded to next).
inline __m512 exp_nonpositive(__m512 x) {
  static constexpr float kC[] = {9.9999994e-1f, 6.9315308e-1f, 2.4015361e-1f,
                                 5.5826318e-2f, 8.9893397e-3f, 1.8775767e-3f};
  return avx512_exp_poly(x, kC);
}

inline __m512bh as_bh(__m512i v) { return (__m512bh)v; }  // NOLINT: vector reinterpretation

}  // namespace

void fm_attention(const FmAttentionArgs& a, int64_t item_begin, int64_t item_end, float* scratch) {
  using B = xsimd::batch<float, xsimd::avx512f>;
  const int64_t H = a.heads, S = a.seq, T = a.keys, dh = a.dh, dv = a.dv, P = a.panel;
  const int64_t blocks = (S + SB - 1) / SB, dh2 = (dh + 1) / 2, T2 = (T + 1) / 2;
  // Scratch (4-byte units): qs f32 [dh+1][SB], qp [dh2][SB], p f32 [2*T2][SB], pp [T2][SB],
  // os [SB], kp [dh2][T], vp [dv][T2] (bf16 pairs of V's rows), two f32 rows of T.
  float* qs = scratch;
  uint32_t* qp = reinterpret_cast<uint32_t*>(qs + (dh + 1) * SB);
  float* p = reinterpret_cast<float*>(qp + dh2 * SB);
  uint32_t* pp = reinterpret_cast<uint32_t*>(p + 2 * T2 * SB);
  float* os = reinterpret_cast<float*>(pp + T2 * SB);
  uint32_t* kp = reinterpret_cast<uint32_t*>(os + SB);
  uint32_t* vp = kp + dh2 * T;
  float* row0 = reinterpret_cast<float*>(vp + dv * T2);
  float* row1 = row0 + T + 1;
  int64_t gathered = -1;
  for (int64_t item = item_begin; item < item_end; ++item) {
    int64_t b = 0, h = 0, blk = 0;
    if (!fm_attention_item(a, blocks, item, &b, &h, &blk)) continue;
    const int64_t s0 = blk * SB;
    const int64_t ns = std::min(SB, S - s0), q0 = b * S + s0;
    if (gathered != b * H + h) {
      // K as pairs over d; V as pairs over t (each row's bf16s, two per 32-bit slot).
      for (int64_t d2 = 0; d2 < dh2; ++d2) {
        const int64_t nr = 2 * d2 + 1 < dh ? 2 : 1;  // row1 = row0 + T + 1
        fm_copy_rows(a.k, P, H * dh, a.ld_k, h * dh + 2 * d2, nr, b * T, T, 1.0f, row0, T + 1);
        if (nr == 1) std::fill(row1, row1 + T, 0.0f);
        pack_pairs(row0, row1, T, kp + d2 * T);
      }
      for (int64_t j = 0; j < dv; ++j) {
        fm_copy_row(a.v, P, H * dv, a.ld_v, h * dv + j, b * T, T, 1.0f, row0);
        row0[T] = 0.0f;
        uint16_t* dst = reinterpret_cast<uint16_t*>(vp + j * T2);
        int64_t t = 0;
        for (; t + W <= 2 * T2; t += W) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + t),
                              (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(row0 + t)));
        }
        for (; t < 2 * T2; ++t) dst[t] = to_bf16(row0[t]);
      }
      gathered = b * H + h;
    }
    // Q (scaled), zero past the block and past dh, then pairs over d.
    fm_copy_rows(a.q, P, H * dh, a.ld_q, h * dh, dh, q0, ns, a.scale, qs, SB);
    if (ns < SB) {
      for (int64_t d = 0; d < dh; ++d) std::fill(qs + d * SB + ns, qs + (d + 1) * SB, 0.0f);
    }
    std::fill(qs + dh * SB, qs + (dh + 1) * SB, 0.0f);
    for (int64_t d2 = 0; d2 < dh2; ++d2)
      pack_pairs(qs + 2 * d2 * SB, qs + (2 * d2 + 1) * SB, SB, qp + d2 * SB);
    // Scores, 8 keys x 32 queries per register block.
    int64_t t = 0;
    for (; t + 8 <= T; t += 8) {
      __m512 acc0[8], acc1[8];
      for (int i = 0; i < 8; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
      for (int64_t d2 = 0; d2 < dh2; ++d2) {
        const __m512bh x0 = as_bh(_mm512_loadu_si512(qp + d2 * SB)),
                       x1 = as_bh(_mm512_loadu_si512(qp + d2 * SB + W));
        const uint32_t* kr = kp + d2 * T + t;
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          const __m512bh kv = as_bh(_mm512_set1_epi32(static_cast<int>(kr[i])));
          acc0[i] = _mm512_dpbf16_ps(acc0[i], kv, x0);
          acc1[i] = _mm512_dpbf16_ps(acc1[i], kv, x1);
        }
      }
      for (int i = 0; i < 8; ++i) {
        _mm512_storeu_ps(p + (t + i) * SB, acc0[i]);
        _mm512_storeu_ps(p + (t + i) * SB + W, acc1[i]);
      }
    }
    for (; t < T; ++t) {
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
      for (int64_t d2 = 0; d2 < dh2; ++d2) {
        const __m512bh kv = as_bh(_mm512_set1_epi32(static_cast<int>(kp[d2 * T + t])));
        acc0 = _mm512_dpbf16_ps(acc0, kv, as_bh(_mm512_loadu_si512(qp + d2 * SB)));
        acc1 = _mm512_dpbf16_ps(acc1, kv, as_bh(_mm512_loadu_si512(qp + d2 * SB + W)));
      }
      _mm512_storeu_ps(p + t * SB, acc0);
      _mm512_storeu_ps(p + t * SB + W, acc1);
    }
    // Mask, column maxima, exp and sums in fp32.
    const int64_t mo = b * a.mask_b + h * a.mask_h;
    B m0(-std::numeric_limits<float>::infinity()), m1 = m0;
    for (t = 0; t < T; ++t) {
      float* row = p + t * SB;
      B r0 = B::load_unaligned(row), r1 = B::load_unaligned(row + W);
      if (a.add_mask != nullptr) {
        const B mv(a.add_mask[mo + t * a.mask_t]);
        r0 = r0 + mv;
        r1 = r1 + mv;
        r0.store_unaligned(row);
        r1.store_unaligned(row + W);
      } else if (a.select_mask != nullptr && a.select_mask[mo + t * a.mask_t] != 0) {
        r0 = r1 = B(a.fill);
        r0.store_unaligned(row);
        r1.store_unaligned(row + W);
      }
      m0 = xsimd::max(m0, r0);
      m1 = xsimd::max(m1, r1);
    }
    B sum0(0.0f), sum1(0.0f);
    for (t = 0; t < T; ++t) {
      float* row = p + t * SB;
      const B e0(exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row), m0))),
          e1(exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + W), m1)));
      e0.store_unaligned(row);
      e1.store_unaligned(row + W);
      sum0 = sum0 + e0;
      sum1 = sum1 + e1;
    }
    if (T % 2 != 0) std::fill(p + T * SB, p + (T + 1) * SB, 0.0f);
    for (int64_t t2 = 0; t2 < T2; ++t2)
      pack_pairs(p + 2 * t2 * SB, p + (2 * t2 + 1) * SB, SB, pp + t2 * SB);
    const __m512 inv0 = _mm512_div_ps(_mm512_set1_ps(1.0f), sum0),
                 inv1 = _mm512_div_ps(_mm512_set1_ps(1.0f), sum1);
    const bool direct = ns == SB && (P == 0 || q0 / P == (q0 + SB - 1) / P);
    float* const out0 = a.out + fm_offset(P, H * dv, a.ld_out, h * dv, q0);
    const int64_t out_stride = fm_row_stride(P, a.ld_out);
    auto emit = [&](int64_t j, __m512 r0, __m512 r1) {
      r0 = _mm512_mul_ps(r0, inv0);
      r1 = _mm512_mul_ps(r1, inv1);
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
      __m512 acc0[8], acc1[8];
      for (int i = 0; i < 8; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
      for (int64_t t2 = 0; t2 < T2; ++t2) {
        const __m512bh x0 = as_bh(_mm512_loadu_si512(pp + t2 * SB)),
                       x1 = as_bh(_mm512_loadu_si512(pp + t2 * SB + W));
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          const __m512bh vv = as_bh(_mm512_set1_epi32(static_cast<int>(vp[(j + i) * T2 + t2])));
          acc0[i] = _mm512_dpbf16_ps(acc0[i], vv, x0);
          acc1[i] = _mm512_dpbf16_ps(acc1[i], vv, x1);
        }
      }
      for (int i = 0; i < 8; ++i) emit(j + i, acc0[i], acc1[i]);
    }
    for (; j < dv; ++j) {
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
      for (int64_t t2 = 0; t2 < T2; ++t2) {
        const __m512bh vv = as_bh(_mm512_set1_epi32(static_cast<int>(vp[j * T2 + t2])));
        acc0 = _mm512_dpbf16_ps(acc0, vv, as_bh(_mm512_loadu_si512(pp + t2 * SB)));
        acc1 = _mm512_dpbf16_ps(acc1, vv, as_bh(_mm512_loadu_si512(pp + t2 * SB + W)));
      }
      emit(j, acc0, acc1);
    }
  }
}

}  // namespace avx512bf16
}  // namespace sparq
