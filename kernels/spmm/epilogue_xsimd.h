// Vector epilogue written with xsimd for any full batch of tokens (no tail handling:
// callers send token tails to the scalar path). Internal to the including unit.
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

// `y` holds tokens [m, m + B::size) of output row n.
template <class B>
static inline void xsimd_epilogue_store(const Epilogue& ep, int64_t n, int64_t m, B y) {
  if (ep.channel_scale) y *= B(ep.channel_scale[n]);
  if (ep.token_scale) y *= B::load_unaligned(ep.token_scale + m);
  if (ep.bias) y += B(ep.bias[n]);
  if (ep.activation != Activation::kNone) y = xsimd_activation(ep.activation, y);
  if (ep.residual) y += B::load_unaligned(ep.residual + n * ep.ld_residual + m);
  if (ep.out_u8) {
    alignas(64) float tmp[B::size];
    y.store_aligned(tmp);
    uint8_t* out = ep.out_u8 + n * ep.ld_out + m;
    for (std::size_t i = 0; i < B::size; ++i) {
      out[i] = scalar_requantize(tmp[i], ep.out_inv_scale, ep.out_zero_point);
    }
  } else {
    y.store_unaligned(ep.out_f32 + n * ep.ld_out + m);
  }
}

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_EPILOGUE_XSIMD_H_
