// Scalar epilogue shared by the generic kernels and by the tail paths of the vector
// kernels of every ISA. Header-only and `static inline`, so every translation unit gets
// its own copy compiled with its own flags (no shared inline symbol can leak wider
// instructions into the generic path).
#ifndef SPARQ_KERNELS_SPMM_EPILOGUE_SCALAR_H_
#define SPARQ_KERNELS_SPMM_EPILOGUE_SCALAR_H_

#include <cmath>
#include <cstdint>

#include "kernels/spmm/spmm.h"

namespace sparq {
namespace {

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kSqrtTwoOverPi = 0.79788456080286536f;
constexpr float kGeluTanhCubic = 0.044715f;
constexpr float kGeluSigmoidScale = 1.702f;

static inline float scalar_activation(Activation act, float y) {
  switch (act) {
    case Activation::kNone: return y;
    case Activation::kGeluErf: return 0.5f * y * (1.0f + std::erf(y * kSqrtHalf));
    case Activation::kGeluTanh:
      return 0.5f * y * (1.0f + std::tanh(kSqrtTwoOverPi * (y + kGeluTanhCubic * y * y * y)));
    case Activation::kGeluSigmoid: return y / (1.0f + std::exp(-kGeluSigmoidScale * y));
  }
  return y;
}

static inline uint8_t scalar_requantize(float y, float inv_scale, int32_t zero_point) {
  float q = std::nearbyint(y * inv_scale) + static_cast<float>(zero_point);
  q = !(q >= 0.0f) ? 0.0f : (q > 255.0f ? 255.0f : q);  // NaN -> 0, as the SIMD paths
  return static_cast<uint8_t>(q);
}

// Applies the epilogue to one value of row n, token m and stores it.
static inline void scalar_epilogue_store(const Epilogue& ep, int64_t n, int64_t m, float y) {
  if (ep.channel_scale) y *= ep.channel_scale[n];
  if (ep.token_scale) y *= ep.token_scale[m];
  if (ep.bias) y += ep.bias[n];
  y = scalar_activation(ep.activation, y);
  if (ep.residual) y += ep.residual[n * ep.ld_residual + m];
  if (ep.out_u8) {
    ep.out_u8[n * ep.ld_out + m] = scalar_requantize(y, ep.out_inv_scale, ep.out_zero_point);
  } else {
    ep.out_f32[n * ep.ld_out + m] = y;
  }
}

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_EPILOGUE_SCALAR_H_
