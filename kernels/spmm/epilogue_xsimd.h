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

// xsimd_epilogue_store on rows [n0, n0 + rows) x tokens [m0, m0 + tokens) (a multiple of
// B::size), staged as stage[r * ld_stage + t], out of line and once per tile: the
// activations' code then keeps its constants in registers across the tile, and the
// kernel's tile loop none of its registers on the stack.
template <class B>
__attribute__((noinline)) static void xsimd_epilogue_rows(const Epilogue& epilogue, int64_t n0,
                                                          int64_t rows, int64_t m0, int64_t tokens,
                                                          const float* stage, int64_t ld_stage) {
  const Epilogue ep = epilogue;  // a copy: no output store can alias it
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < tokens; t += static_cast<int64_t>(B::size))
      xsimd_epilogue_store(ep, n0 + r, m0 + t, B::load_unaligned(stage + r * ld_stage + t));
}

// The epilogue of one kernel call on whole vectors, with its fields read once. Through
// `const Epilogue&` every store to the output (a u8 store may alias anything) made the
// compiler reload each field for every vector, and the inlined activations kept a tile's
// values on the stack: an empty 768 x 3072 int8 call (M 128, 99.99% sparse, no groups)
// took 0.37 ms, against 0.11 ms with plain stores (Zen 3). Scales, bias and residual run
// inline (store); a kernel stages a tile for an activation or a u8 output
// (xsimd_epilogue_rows). Same operations in the same order as xsimd_epilogue_store: the
// outputs are bit-identical to it.
template <class B>
class XsimdEpilogue {
 public:
  explicit XsimdEpilogue(const Epilogue& ep)
      : ep_(ep),
        channel_scale_(ep.channel_scale),
        token_scale_(ep.token_scale),
        bias_(ep.bias),
        residual_(ep.residual),
        out_(ep.out_f32),
        ld_residual_(ep.ld_residual),
        ld_out_(ep.ld_out),
        inline_(ep.activation == Activation::kNone && ep.out_u8 == nullptr) {}

  // The token scales of [m, m + B::size), loaded once for all the rows of a tile.
  B token_scales(int64_t m) const {
    return token_scale_ != nullptr ? B::load_unaligned(token_scale_ + m) : B(1.0f);
  }

  // Whether store applies this epilogue; if not, a kernel stages its tile for rows().
  bool inlined() const { return inline_; }

  // Row n, tokens [m, m + B::size); ts = token_scales(m). Only when inlined().
  void store(int64_t n, int64_t m, B y, B ts) const {
    if (channel_scale_ != nullptr) y *= B(channel_scale_[n]);
    if (token_scale_ != nullptr) y *= ts;
    if (bias_ != nullptr) y += B(bias_[n]);
    if (residual_ != nullptr) y += B::load_unaligned(residual_ + n * ld_residual_ + m);
    y.store_unaligned(out_ + n * ld_out_ + m);
  }

  // The whole epilogue on a staged tile (xsimd_epilogue_rows).
  void rows(int64_t n0, int64_t rows, int64_t m0, int64_t tokens, const float* stage,
            int64_t ld_stage) const {
    xsimd_epilogue_rows<B>(ep_, n0, rows, m0, tokens, stage, ld_stage);
  }

 private:
  const Epilogue& ep_;
  const float* channel_scale_;
  const float* token_scale_;
  const float* bias_;
  const float* residual_;
  float* out_;
  int64_t ld_residual_, ld_out_;
  bool inline_;
};

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_EPILOGUE_XSIMD_H_
