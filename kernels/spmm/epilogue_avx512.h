// AVX-512 epilogue: applies Epilogue to 16 consecutive tokens of one output row and
// stores them under a lane mask (masked-off lanes are neither read nor written).
// Included only by translation units compiled with AVX-512 flags; everything here is
// internal to the including unit.
#ifndef SPARQ_KERNELS_SPMM_EPILOGUE_AVX512_H_
#define SPARQ_KERNELS_SPMM_EPILOGUE_AVX512_H_

#include <immintrin.h>

#include <cstdint>

#include "kernels/common/avx512_math.h"
#include "kernels/spmm/spmm.h"

namespace sparq {
namespace {

// GELU(x) = x/2 (1 + erf(x / sqrt 2)) with erf(z) = 1 - (1 + a1 z + ... + a6 z^6)^-16 for
// z >= 0 (Abramowitz and Stegun 7.1.28, |error| <= 3e-7) and erf odd: a polynomial, one
// reciprocal and four squarings, about 20 vector operations against 27 for 7.1.26's form
// with an exponential (it was 16% of a BERT-base int8 run on one core). z is clamped at 8
// (erf is 1 in fp32 from about 3.9), so an infinite x cannot make 0 * inf. Measured
// against float64 over [-30, 30]: absolute error below 2.5e-7 (1 + |x|)
// (tests/spmm_test.cpp, ActivationsWideRange).
__attribute__((always_inline)) static inline __m512 avx512_gelu_erf(__m512 x) {
  __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.70710678118654752f));
  z = _mm512_min_ps(z, _mm512_set1_ps(8.0f));
  __m512 p = _mm512_set1_ps(0.0000430638f);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0002765672f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0001520143f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0092705272f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0422820123f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.0705230784f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.0f));
  __m512 r = _mm512_rcp14_ps(p);  // p >= 1; one Newton step: 2^-14 -> about 2^-28
  r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(p, r, _mm512_set1_ps(1.0f)), r);
  r = _mm512_mul_ps(r, r);
  r = _mm512_mul_ps(r, r);
  r = _mm512_mul_ps(r, r);
  r = _mm512_mul_ps(r, r);
  const __m512 erf_abs = _mm512_sub_ps(_mm512_set1_ps(1.0f), r);
  // erf takes x's sign: copy the sign bit (ternary logic: sign from x, rest from erf_abs).
  const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u));
  const __m512 erf = _mm512_castsi512_ps(
      _mm512_ternarylogic_epi32(sign, _mm512_castps_si512(x), _mm512_castps_si512(erf_abs), 0xCA));
  const __m512 h = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
  return _mm512_fmadd_ps(h, erf, h);
}

// GELU with the tanh approximation: x/2 (1 + tanh(u)) = x / (1 + exp(-2u)),
// u = sqrt(2/pi) (x + 0.044715 x^3).
__attribute__((always_inline)) static inline __m512 avx512_gelu_tanh(__m512 x) {
  const __m512 x2 = _mm512_mul_ps(x, x);
  const __m512 u =
      _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.79788456080286536f)),
                    _mm512_fmadd_ps(x2, _mm512_set1_ps(0.044715f), _mm512_set1_ps(1.0f)));
  const __m512 e = avx512_exp(_mm512_mul_ps(u, _mm512_set1_ps(-2.0f)));
  return _mm512_div_ps(x, _mm512_add_ps(e, _mm512_set1_ps(1.0f)));
}

// x * sigmoid(1.702 x) = x / (1 + exp(-1.702 x)).
__attribute__((always_inline)) static inline __m512 avx512_gelu_sigmoid(__m512 x) {
  const __m512 e = avx512_exp(_mm512_mul_ps(x, _mm512_set1_ps(-1.702f)));
  return _mm512_div_ps(x, _mm512_add_ps(e, _mm512_set1_ps(1.0f)));
}

// Everything after the activation: residual add and the fp32 or u8 store.
__attribute__((always_inline)) static inline void avx512_epilogue_finish(const Epilogue& ep,
                                                                         int64_t n, int64_t m,
                                                                         __m512 y, __mmask16 mask) {
  const bool full = mask == __mmask16(0xFFFF);
  if (ep.residual) {
    const float* res = ep.residual + n * ep.ld_residual + m;
    y = _mm512_add_ps(y, full ? _mm512_loadu_ps(res) : _mm512_maskz_loadu_ps(mask, res));
  }
  if (ep.out_u8) {
    __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(ep.out_inv_scale)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_add_ps(q, _mm512_set1_ps(static_cast<float>(ep.out_zero_point)));
    q = _mm512_min_ps(_mm512_max_ps(q, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q));
    if (full) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(ep.out_u8 + n * ep.ld_out + m), bytes);
    } else {
      _mm_mask_storeu_epi8(ep.out_u8 + n * ep.ld_out + m, mask, bytes);
    }
  } else if (full) {
    // Plain stores where the whole vector is valid: masked stores are much slower on
    // AMD cores.
    _mm512_storeu_ps(ep.out_f32 + n * ep.ld_out + m, y);
  } else {
    _mm512_mask_storeu_ps(ep.out_f32 + n * ep.ld_out + m, mask, y);
  }
}

// With an activation the epilogue runs in two phases so that no call happens while a
// tile's accumulators are live (a call clobbers every zmm register, and GCC would keep
// all of them on the stack): Avx512TileEpilogue::row() applies scales and bias and stages
// the values; this function then applies the activation and the rest, once per tile.
// Phase 2: rows [n0, n0 + rows) of a tile of `valid` tokens from m0, staged as
// stage[r * ld_stage + t].
__attribute__((noinline)) static void avx512_epilogue_stage_finish(const Epilogue& ep, int64_t n0,
                                                                   int64_t rows, int64_t m0,
                                                                   int64_t valid,
                                                                   const float* stage,
                                                                   int64_t ld_stage) {
  // One loop per activation, each with its function inlined (its constants stay in
  // registers across the tile).
  auto apply = [&](auto act) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t t = 0; t < valid; t += 16) {
        const int64_t left = valid - t;
        const __mmask16 mask =
            left >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
        const __m512 y = act(_mm512_load_ps(stage + r * ld_stage + t));
        avx512_epilogue_finish(ep, n0 + r, m0 + t, y, mask);
      }
    }
  };
  switch (ep.activation) {
    case Activation::kGeluErf: apply([](__m512 y) { return avx512_gelu_erf(y); }); break;
    case Activation::kGeluTanh: apply([](__m512 y) { return avx512_gelu_tanh(y); }); break;
    case Activation::kGeluSigmoid: apply([](__m512 y) { return avx512_gelu_sigmoid(y); }); break;
    default: apply([](__m512 y) { return y; }); break;
  }
}

// Asks for rows [0, k) of a token panel (each `row_bytes` long from `base`, rows `ld_bytes`
// apart) to be brought into L2. A sparse kernel reads those rows in an order the hardware
// prefetcher cannot guess. When the panel comes from DRAM, that costs a full miss
// latency per line. One sequential sweep before the tile streams it in at bandwidth
// instead.
static inline void avx512_prefetch_panel_l2(const void* base, int64_t k, int64_t ld_bytes,
                                            int64_t row_bytes) {
  const char* p = static_cast<const char*>(base);
  for (int64_t r = 0; r < k; ++r, p += ld_bytes) {
    for (int64_t b = 0; b < row_bytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
  }
}

// Lane mask for the valid tokens of vector j of a tile with `valid` tokens.
static inline __mmask16 avx512_lane_mask(int64_t valid, int j) {
  const int64_t left = valid - 16 * j;
  if (left >= 16) return static_cast<__mmask16>(0xFFFF);
  if (left <= 0) return 0;
  return static_cast<__mmask16>((1u << left) - 1u);
}

// The epilogue of one kernel call, resolved once: every field copied out of Epilogue
// into a local object, so that stores to the output cannot force reloads, the tile's
// token scales loaded once per token tile, and each row's channel scale and bias once per
// row. Used inlined: the kernel builds one per call and its tile function calls
// begin_tile() and row(). Rows with an activation go through stage_finish() once per tile
// (see above).
template <int NV>
class Avx512TileEpilogue {
 public:
  explicit Avx512TileEpilogue(const Epilogue& ep)
      : channel_scale_(ep.channel_scale),
        token_scale_(ep.token_scale),
        bias_(ep.bias),
        residual_(ep.residual),
        out_f32_(ep.out_f32),
        out_u8_(ep.out_u8),
        ld_residual_(ep.ld_residual),
        ld_out_(ep.ld_out),
        inv_scale_(ep.out_inv_scale),
        zero_point_(static_cast<float>(ep.out_zero_point)),
        staged_(ep.activation != Activation::kNone) {}

  bool staged() const { return staged_; }

  __attribute__((always_inline)) void begin_tile(int64_t m0, int64_t valid) {
    m0_ = m0;
    for (int j = 0; j < NV; ++j) {
      mask_[j] = avx512_lane_mask(valid, j);
      ts_[j] = token_scale_ ? _mm512_maskz_loadu_ps(mask_[j], token_scale_ + m0 + 16 * j)
                            : _mm512_set1_ps(1.0f);
    }
  }

  // y[j] holds tokens [m0 + 16j, m0 + 16j + 16) of row n before scaling. With an
  // activation the scaled values go to stage_row[16j ...] instead of the output.
  __attribute__((always_inline)) void row(int64_t n, __m512 (&y)[NV], float* stage_row) const {
    const __m512 cs = _mm512_set1_ps(channel_scale_ ? channel_scale_[n] : 1.0f);
    const __m512 b = _mm512_set1_ps(bias_ ? bias_[n] : 0.0f);
    for (int j = 0; j < NV; ++j) {
      if (!mask_[j]) continue;
      __m512 v = _mm512_mul_ps(_mm512_mul_ps(y[j], cs), ts_[j]);
      v = _mm512_add_ps(v, b);
      if (staged_) {
        _mm512_store_ps(stage_row + 16 * j, v);
        continue;
      }
      store(n, m0_ + 16 * j, v, mask_[j]);
    }
  }

 private:
  __attribute__((always_inline)) void store(int64_t n, int64_t m, __m512 y, __mmask16 mask) const {
    const bool full = mask == __mmask16(0xFFFF);
    if (residual_) {
      const float* res = residual_ + n * ld_residual_ + m;
      y = _mm512_add_ps(y, full ? _mm512_loadu_ps(res) : _mm512_maskz_loadu_ps(mask, res));
    }
    if (out_u8_) {
      __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(inv_scale_)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_add_ps(q, _mm512_set1_ps(zero_point_));
      q = _mm512_min_ps(_mm512_max_ps(q, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
      const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q));
      uint8_t* out = out_u8_ + n * ld_out_ + m;
      if (full) _mm_storeu_si128(reinterpret_cast<__m128i*>(out), bytes);
      else _mm_mask_storeu_epi8(out, mask, bytes);
    } else if (full) {
      _mm512_storeu_ps(out_f32_ + n * ld_out_ + m, y);  // masked stores are slow on AMD
    } else {
      _mm512_mask_storeu_ps(out_f32_ + n * ld_out_ + m, mask, y);
    }
  }

  const float* channel_scale_;
  const float* token_scale_;
  const float* bias_;
  const float* residual_;
  float* out_f32_;
  uint8_t* out_u8_;
  int64_t ld_residual_, ld_out_;
  float inv_scale_, zero_point_;
  bool staged_;
  int64_t m0_ = 0;
  __mmask16 mask_[NV] = {};
  __m512 ts_[NV] = {};
};

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_EPILOGUE_AVX512_H_
