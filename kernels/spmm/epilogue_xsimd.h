// Vector epilogue written with xsimd for a batch of tokens, full or partial (the first
// `count` lanes): a token gets the same arithmetic wherever its tile starts, so outputs
// never depend on how the tokens were split into tiles, panels or threads. Internal to
// the including unit.
#ifndef SPARQ_KERNELS_SPMM_EPILOGUE_XSIMD_H_
#define SPARQ_KERNELS_SPMM_EPILOGUE_XSIMD_H_

#include <cstdint>

#include <xsimd/xsimd.hpp>

#include "kernels/spmm/epilogue_scalar.h"
#include "kernels/spmm/spmm.h"

namespace sparq {
namespace {

template <class B>
static inline B xsimd_activation(Activation act, B y) {
  if (act == Activation::kGeluErf) {
    return B(0.5f) * y * (B(1.0f) + xsimd::erf(y * B(0.70710678118654752f)));
  }
  if (act == Activation::kGeluTanh) {
    return B(0.5f) * y *
           (B(1.0f) + xsimd::tanh(B(0.79788456080286536f) * (y + B(0.044715f) * y * y * y)));
  }
  if (act == Activation::kGeluSigmoid) return y / (B(1.0f) + xsimd::exp(B(-1.702f) * y));
  return y;
}

// The first `count` floats at p, the other lanes zero (nothing past p + count is read).
template <class B>
static inline B xsimd_load_n(const float* p, int64_t count) {
  if (count == static_cast<int64_t>(B::size)) return B::load_unaligned(p);
  alignas(64) float tmp[B::size] = {};
  for (int64_t i = 0; i < count; ++i) tmp[i] = p[i];
  return B::load_aligned(tmp);
}

// `y` holds tokens [m, m + count) of output row n in its first count lanes
// (count <= B::size; nothing is read or written past token m + count).
template <class B>
static inline void xsimd_epilogue_store(const Epilogue& ep, int64_t n, int64_t m, B y,
                                        int64_t count = static_cast<int64_t>(B::size)) {
  if (ep.channel_scale) y *= B(ep.channel_scale[n]);
  if (ep.token_scale) y *= xsimd_load_n<B>(ep.token_scale + m, count);
  if (ep.bias) y += B(ep.bias[n]);
  if (ep.activation != Activation::kNone) y = xsimd_activation(ep.activation, y);
  if (ep.residual) y += xsimd_load_n<B>(ep.residual + n * ep.ld_residual + m, count);
  alignas(64) float tmp[B::size];
  if (ep.out_u8) {
    y.store_aligned(tmp);
    uint8_t* out = ep.out_u8 + n * ep.ld_out + m;
    for (int64_t i = 0; i < count; ++i) {
      out[i] = scalar_requantize(tmp[i], ep.out_inv_scale, ep.out_zero_point);
    }
  } else if (count == static_cast<int64_t>(B::size)) {
    y.store_unaligned(ep.out_f32 + n * ep.ld_out + m);
  } else {
    y.store_aligned(tmp);
    float* out = ep.out_f32 + n * ep.ld_out + m;
    for (int64_t i = 0; i < count; ++i) out[i] = tmp[i];
  }
}

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_EPILOGUE_XSIMD_H_
