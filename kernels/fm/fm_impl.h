// The feature-major kernels written once: attention over a vector type `Ops` (xsimd batch
// or a scalar stand-in), LayerNorm and quantization as plain loops the compiler
// vectorizes with the including unit's ISA flags. Included into one translation unit per
// ISA (internal linkage there).
#ifndef SPARQ_KERNELS_FM_FM_IMPL_H_
#define SPARQ_KERNELS_FM_FM_IMPL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/fm/fm.h"

namespace sparq {
namespace {

// Offset of element (r, m) of a feature-major tensor with R rows: row stride ld, or
// panels of P tokens when P > 0 (FmAttentionArgs::panel).
inline int64_t fm_offset(int64_t P, int64_t R, int64_t ld, int64_t r, int64_t m) {
  return P > 0 ? (m / P) * R * P + r * P + m % P : r * ld + m;
}

// The row stride of that tensor within a panel (or the whole tensor when P = 0): row
// r0 + j of a token range inside one panel starts at fm_offset(.., r0, m) + j * stride.
inline int64_t fm_row_stride(int64_t P, int64_t ld) { return P > 0 ? P : ld; }

// dst[r * ld_dst + j] = sc * row (r0 + r), token m + j, for r < nr, j < n: one integer
// division per contiguous run of tokens, not one per row (a division by the runtime
// panel size costs more than copying a row of an attention block).
inline void fm_copy_rows(const float* src, int64_t P, int64_t R, int64_t ld, int64_t r0, int64_t nr,
                         int64_t m, int64_t n, float sc, float* dst, int64_t ld_dst) {
  const int64_t stride = fm_row_stride(P, ld);
  for (int64_t j = 0; j < n;) {
    const int64_t mm = m + j, off = P > 0 ? mm % P : 0,
                  run = P > 0 ? std::min(n - j, P - off) : n - j;
    const float* s = src + fm_offset(P, R, ld, r0, mm);
    for (int64_t r = 0; r < nr; ++r) {
      const float* __restrict sr = s + r * stride;
      float* __restrict d = dst + r * ld_dst + j;
      for (int64_t i = 0; i < run; ++i) d[i] = sr[i] * sc;
    }
    j += run;
  }
}

// dst[0, n) = sc * row r, tokens [m, m + n).
inline void fm_copy_row(const float* src, int64_t P, int64_t R, int64_t ld, int64_t r, int64_t m,
                        int64_t n, float sc, float* dst) {
  fm_copy_rows(src, P, R, ld, r, 1, m, n, sc, dst, n);
}

// Where one head's rows [r0, r0 + nr) of tokens [m, m + n) are read by the int8 kernels:
// in place when those tokens are one contiguous run (row-major, or inside one panel), else
// copied into `tmp` with row stride ld_tmp. Lanes past n are never read
// from the source.
struct Rows {
  const float* p;
  int64_t stride;
};

inline Rows rows_of(const float* src, int64_t P, int64_t R, int64_t ld, int64_t r0, int64_t nr,
                    int64_t m, int64_t n, float* tmp, int64_t ld_tmp) {
  if (P == 0 || m % P + n <= P) return {src + fm_offset(P, R, ld, r0, m), fm_row_stride(P, ld)};
  fm_copy_rows(src, P, R, ld, r0, nr, m, n, 1.0f, tmp, ld_tmp);
  return {tmp, ld_tmp};
}

// Row r, tokens [m, m + n) = src[0, n).
inline void fm_store_row(float* dst, int64_t P, int64_t R, int64_t ld, int64_t r, int64_t m,
                         int64_t n, const float* src) {
  for (int64_t s = 0; s < n;) {
    const int64_t mm = m + s, run = P > 0 ? std::min(n - s, P - mm % P) : n - s;
    float* d = dst + fm_offset(P, R, ld, r, mm);
    for (int64_t i = 0; i < run; ++i) d[i] = src[s + i];
    s += run;
  }
}

// One work item = (b, h, a block of SB = 2W queries). Scores are kept transposed,
// p[t][j] for key t and query j of the block, so every step is "broadcast one scalar of
// K or V, multiply-add against a vector of queries":
//   p[t][:]   = sum_d K[d][t] * (scale * Q[d][:])       (8 keys x 2 vectors in registers;
//                                                         6 keys on AVX2)
//   softmax down each column (max, exp, sum vectorized over queries)
//   out[j][:] = sum_t V[j][t] * p[t][:] / sum            (8 channels x 2 vectors; 6)
template <class Ops>
void fm_attention_items(const FmAttentionArgs& a, int64_t item_begin, int64_t item_end,
                        float* scratch) {
  using B = typename Ops::Batch;
  constexpr int64_t W = Ops::kWidth, SB = 2 * W;
  // Keys (and value channels) per register block: 2 KB accumulators, 2 query vectors and a
  // broadcast. 8 on AVX-512's 32 registers; 6 on AVX2's 16 (8 spilled: 433 stack
  // accesses in the AVX2 kernel). Every score and output is the same sum in the same
  // order whatever KB is.
  constexpr int KB = W == 8 ? 6 : 8;
  const int64_t H = a.heads, S = a.seq, T = a.keys, dh = a.dh, dv = a.dv;
  const int64_t blocks = (S + SB - 1) / SB;
  float* qs = scratch;        // [dh][SB]
  float* p = qs + dh * SB;    // [T][SB]
  float* os = p + T * SB;     // [dv][SB], for a partial last block
  float* kvs = os + dv * SB;  // panel layout: this (b, h)'s K [dh][T] and V [dv][T]
  const int64_t P = a.panel;
  int64_t gathered = -1;  // the (b, h) whose K and V sit in kvs
  for (int64_t item = item_begin; item < item_end; ++item) {
    int64_t b = 0, h = 0, blk = 0;
    if (!fm_attention_item(a, blocks, item, &b, &h, &blk)) continue;
    const int64_t s0 = blk * SB;
    const int64_t ns = std::min(SB, S - s0);
    fm_copy_rows(a.q, P, H * dh, a.ld_q, h * dh, dh, b * S + s0, ns, a.scale, qs, SB);
    if (ns < SB) {
      for (int64_t d = 0; d < dh; ++d) std::fill(qs + d * SB + ns, qs + (d + 1) * SB, 0.0f);
    }
    const float* kb;
    const float* vb;
    int64_t ld_k = a.ld_k, ld_v = a.ld_v;
    if (P > 0) {
      if (gathered != b * H + h) {
        fm_copy_rows(a.k, P, H * dh, 0, h * dh, dh, b * T, T, 1.0f, kvs, T);
        fm_copy_rows(a.v, P, H * dv, 0, h * dv, dv, b * T, T, 1.0f, kvs + dh * T, T);
        gathered = b * H + h;
      }
      kb = kvs;
      vb = kvs + dh * T;
      ld_k = ld_v = T;
    } else {
      kb = a.k + h * dh * a.ld_k + b * T;
      vb = a.v + h * dv * a.ld_v + b * T;
    }
    int64_t t = 0;
    for (; t + KB <= T; t += KB) {
      B acc0[KB], acc1[KB];
      for (int i = 0; i < KB; ++i) acc0[i] = acc1[i] = B(0.0f);
      for (int64_t d = 0; d < dh; ++d) {
        const B q0 = Ops::load(qs + d * SB), q1 = Ops::load(qs + d * SB + W);
        const float* kr = kb + d * ld_k + t;
#pragma GCC unroll 8
        for (int i = 0; i < KB; ++i) {
          const B kv(kr[i]);
          acc0[i] = Ops::fma(kv, q0, acc0[i]);
          acc1[i] = Ops::fma(kv, q1, acc1[i]);
        }
      }
      for (int i = 0; i < KB; ++i) {
        Ops::store(p + (t + i) * SB, acc0[i]);
        Ops::store(p + (t + i) * SB + W, acc1[i]);
      }
    }
    for (; t < T; ++t) {
      B acc0(0.0f), acc1(0.0f);
      for (int64_t d = 0; d < dh; ++d) {
        const B kv(kb[d * ld_k + t]);
        acc0 = Ops::fma(kv, Ops::load(qs + d * SB), acc0);
        acc1 = Ops::fma(kv, Ops::load(qs + d * SB + W), acc1);
      }
      Ops::store(p + t * SB, acc0);
      Ops::store(p + t * SB + W, acc1);
    }
    // Mask, then the column maxima.
    const int64_t mo = b * a.mask_b + h * a.mask_h;
    B m0(-std::numeric_limits<float>::infinity()), m1 = m0;
    for (t = 0; t < T; ++t) {
      float* row = p + t * SB;
      B r0 = Ops::load(row), r1 = Ops::load(row + W);
      if (a.add_mask != nullptr) {
        const B mv(a.add_mask[mo + t * a.mask_t]);
        r0 = r0 + mv;
        r1 = r1 + mv;
        Ops::store(row, r0);
        Ops::store(row + W, r1);
      } else if (a.select_mask != nullptr && a.select_mask[mo + t * a.mask_t] != 0) {
        r0 = r1 = B(a.fill);
        Ops::store(row, r0);
        Ops::store(row + W, r1);
      }
      m0 = Ops::max(m0, r0);
      m1 = Ops::max(m1, r1);
    }
    B sum0(0.0f), sum1(0.0f);
    for (t = 0; t < T; ++t) {
      float* row = p + t * SB;
      const B e0 = Ops::exp(Ops::load(row) - m0), e1 = Ops::exp(Ops::load(row + W) - m1);
      Ops::store(row, e0);
      Ops::store(row + W, e1);
      sum0 = sum0 + e0;
      sum1 = sum1 + e1;
    }
    const B inv0 = B(1.0f) / sum0, inv1 = B(1.0f) / sum1;
    const int64_t q0 = b * S + s0;
    // A whole block lands contiguously unless it is partial or straddles two panels.
    const bool direct = ns == SB && (P == 0 || q0 / P == (q0 + SB - 1) / P);
    float* const out0 = a.out + fm_offset(P, H * dv, a.ld_out, h * dv, q0);
    const int64_t out_stride = fm_row_stride(P, a.ld_out);
    auto emit = [&](int64_t j, const B& r0, const B& r1) {
      float* orow = out0 + j * out_stride;
      if (direct) {
        Ops::store(orow, r0 * inv0);
        Ops::store(orow + W, r1 * inv1);
      } else {
        Ops::store(os, r0 * inv0);
        Ops::store(os + W, r1 * inv1);
        fm_store_row(a.out, P, H * dv, a.ld_out, h * dv + j, q0, ns, os);
      }
    };
    int64_t j = 0;
    for (; j + KB <= dv; j += KB) {
      B acc0[KB], acc1[KB];
      for (int i = 0; i < KB; ++i) acc0[i] = acc1[i] = B(0.0f);
      const float* vr = vb + j * ld_v;
      for (t = 0; t < T; ++t) {
        const B p0 = Ops::load(p + t * SB), p1 = Ops::load(p + t * SB + W);
#pragma GCC unroll 8
        for (int i = 0; i < KB; ++i) {
          const B vv(vr[i * ld_v + t]);
          acc0[i] = Ops::fma(vv, p0, acc0[i]);
          acc1[i] = Ops::fma(vv, p1, acc1[i]);
        }
      }
      for (int i = 0; i < KB; ++i) emit(j + i, acc0[i], acc1[i]);
    }
    for (; j < dv; ++j) {
      B acc0(0.0f), acc1(0.0f);
      const float* vr = vb + j * ld_v;
      for (t = 0; t < T; ++t) {
        const B vv(vr[t]);
        acc0 = Ops::fma(vv, Ops::load(p + t * SB), acc0);
        acc1 = Ops::fma(vv, Ops::load(p + t * SB + W), acc1);
      }
      emit(j, acc0, acc1);
    }
  }
}

constexpr int64_t kFmTokenBlock = 64;

// One block of n <= kFmTokenBlock tokens. Instantiated with N = kFmTokenBlock (a
// compile-time trip count: four full vectors per row, no remainder code) for full blocks
// and N = 0 (runtime n) for the tail. kMax: also the maxima of |y| (the same y values,
// one expression for both instantiations).
template <int64_t N, bool kMax>
void fm_layernorm_block(const float* x, int64_t ldx, int64_t features, int64_t n_rt,
                        const float* gamma, const float* beta, float eps, float* y, int64_t ldy,
                        float* absmax) {
  const int64_t n = N > 0 ? N : n_rt;
  const float inv_f = 1.0f / static_cast<float>(features);
  alignas(64) float mean[kFmTokenBlock] = {}, var[kFmTokenBlock] = {}, mx[kFmTokenBlock] = {};
  for (int64_t f = 0; f < features; ++f) {
    const float* xr = x + f * ldx;
    for (int64_t j = 0; j < n; ++j) mean[j] += xr[j];
  }
  for (int64_t j = 0; j < n; ++j) mean[j] *= inv_f;
  for (int64_t f = 0; f < features; ++f) {
    const float* xr = x + f * ldx;
    for (int64_t j = 0; j < n; ++j) {
      const float d = xr[j] - mean[j];
      var[j] += d * d;
    }
  }
  for (int64_t j = 0; j < n; ++j) var[j] = 1.0f / std::sqrt(var[j] * inv_f + eps);
  for (int64_t f = 0; f < features; ++f) {
    const float* xr = x + f * ldx;
    float* yr = y + f * ldy;
    const float g = gamma[f], bt = beta != nullptr ? beta[f] : 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      const float v = (xr[j] - mean[j]) * var[j] * g + bt;
      yr[j] = v;
      if (kMax) mx[j] = std::max(mx[j], std::fabs(v));  // as fm_quantize_block takes it
    }
  }
  if (kMax) {
    for (int64_t j = 0; j < n; ++j) absmax[j] = mx[j];
  }
}

template <bool kMax>
inline void fm_layernorm_blocks(const float* x, int64_t ldx, int64_t features, int64_t t0,
                                int64_t t1, const float* gamma, const float* beta, float eps,
                                float* y, int64_t ldy, float* absmax) {
  for (int64_t tb = t0; tb < t1; tb += kFmTokenBlock) {
    const int64_t n = std::min(kFmTokenBlock, t1 - tb);
    float* am = kMax ? absmax + tb : nullptr;
    if (n == kFmTokenBlock)
      fm_layernorm_block<kFmTokenBlock, kMax>(x + tb, ldx, features, n, gamma, beta, eps, y + tb,
                                              ldy, am);
    else fm_layernorm_block<0, kMax>(x + tb, ldx, features, n, gamma, beta, eps, y + tb, ldy, am);
  }
}

inline void fm_layernorm_loops(const float* x, int64_t ldx, int64_t features, int64_t t0,
                               int64_t t1, const float* gamma, const float* beta, float eps,
                               float* y, int64_t ldy, float* absmax) {
  if (absmax != nullptr)
    fm_layernorm_blocks<true>(x, ldx, features, t0, t1, gamma, beta, eps, y, ldy, absmax);
  else fm_layernorm_blocks<false>(x, ldx, features, t0, t1, gamma, beta, eps, y, ldy, nullptr);
}

template <int64_t N>
void fm_quantize_block(const float* x, int64_t ldx, int64_t features, int64_t n_rt,
                       const float* absmax, uint8_t* q, int64_t ldq, float* scale) {
  const int64_t n = N > 0 ? N : n_rt;
  alignas(64) float mx[kFmTokenBlock] = {}, inv[kFmTokenBlock];
  if (absmax != nullptr) {
    for (int64_t j = 0; j < n; ++j) mx[j] = absmax[j];
  } else {
    for (int64_t f = 0; f < features; ++f) {
      const float* xr = x + f * ldx;
      for (int64_t j = 0; j < n; ++j) mx[j] = std::max(mx[j], std::fabs(xr[j]));
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    const float sc = mx[j] > 0.0f ? mx[j] / 127.0f : 1.0f;
    scale[j] = sc;
    inv[j] = 1.0f / sc;
  }
  for (int64_t f = 0; f < features; ++f) {
    // restrict: u8 stores may alias anything, which keeps the loop scalar otherwise.
    const float* __restrict xr = x + f * ldx;
    const float* __restrict iv = inv;
    uint8_t* __restrict qr = q + f * ldq;
    for (int64_t j = 0; j < n; ++j) {
      float v = xr[j] * iv[j];
      v = std::min(127.0f, std::max(-127.0f, v));
      qr[j] = static_cast<uint8_t>(static_cast<int>(v + std::copysign(0.5f, v)) + 128);
    }
  }
}

inline void fm_quantize_loops(const float* x, int64_t ldx, int64_t features, int64_t t0, int64_t t1,
                              const float* absmax, uint8_t* q, int64_t ldq, float* scale) {
  for (int64_t tb = t0; tb < t1; tb += kFmTokenBlock) {
    const int64_t n = std::min(kFmTokenBlock, t1 - tb);
    const float* am = absmax != nullptr ? absmax + tb : nullptr;
    if (n == kFmTokenBlock)
      fm_quantize_block<kFmTokenBlock>(x + tb, ldx, features, n, am, q + tb, ldq, scale + tb);
    else fm_quantize_block<0>(x + tb, ldx, features, n, am, q + tb, ldq, scale + tb);
  }
}

// The kernel table of one ISA: attention on `Ops`, the loops compiled for that ISA.
template <class Ops>
FmKernels fm_table_for(const char* attention_name, const char* isa_name) {
  FmKernels k;
  k.attention = fm_attention_items<Ops>;
  k.layernorm = fm_layernorm_loops;
  k.quantize = fm_quantize_loops;
  k.query_block = 2 * Ops::kWidth;
  k.attention_name = attention_name;
  k.name = isa_name;
  return k;
}

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_FM_FM_IMPL_H_
