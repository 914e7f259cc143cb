// The attention row kernel written once over a vector type; included into one
// translation unit per ISA (internal linkage there). `V` is an xsimd batch<float, A>, or
// ScalarBatch for the generic unit.
#ifndef SPARQ_KERNELS_ATTENTION_ATTENTION_IMPL_H_
#define SPARQ_KERNELS_ATTENTION_ATTENTION_IMPL_H_

#include <cmath>
#include <cstdint>

#include "kernels/attention/attention.h"

namespace sparq {
namespace {

template <class Ops>
void attention_rows(const AttentionArgs& a, int64_t row_begin, int64_t row_end, float* sc) {
  using B = typename Ops::Batch;
  constexpr int64_t W = Ops::kWidth;
  const int64_t H = a.heads, S = a.seq, T = a.keys, dh = a.dh, dv = a.dv;
  const int64_t t_vec = T / W * W, j_vec = dv / W * W;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t b = row / (H * S), h = (row / S) % H, s = row % S;
    const float* qr = a.q + row * dh;
    const float* kb = a.kt + (b * H + h) * dh * T;
    // scores = q . K^T, vectorized over keys
    for (int64_t t = 0; t < T; ++t) sc[t] = 0.0f;
    for (int64_t d = 0; d < dh; ++d) {
      const B x(qr[d]);
      const float* kr = kb + d * T;
      int64_t t = 0;
      for (; t < t_vec; t += W)
        Ops::store(sc + t, Ops::fma(x, Ops::load(kr + t), Ops::load(sc + t)));
      for (; t < T; ++t) sc[t] += qr[d] * kr[t];
    }
    const int64_t mo = b * a.mask_stride[0] + h * a.mask_stride[1] + s * a.mask_stride[2];
    const int64_t mt = a.mask_stride[3];
    float mx = -INFINITY;
    for (int64_t t = 0; t < T; ++t) {
      float z = sc[t] * a.scale;
      if (a.add_mask != nullptr) z += a.add_mask[mo + t * mt];
      else if (a.select_mask != nullptr && a.select_mask[mo + t * mt]) z = a.fill;
      sc[t] = z;
      mx = z > mx ? z : mx;
    }
    // exp and sum, vectorized
    const B m(mx);
    B acc(0.0f);
    int64_t t = 0;
    for (; t < t_vec; t += W) {
      const B e = Ops::exp(Ops::load(sc + t) - m);
      Ops::store(sc + t, e);
      acc = acc + e;
    }
    double sum = Ops::sum(acc);
    for (; t < T; ++t) {
      sc[t] = std::exp(sc[t] - mx);
      sum += sc[t];
    }
    const float inv = static_cast<float>(1.0 / sum);
    float* orow = a.out + row * dv;
    const float* vb = a.v + (b * H + h) * T * dv;
    for (int64_t k = 0; k < T; ++k) {
      const float p = sc[k] * inv;
      const B pb(p);
      const float* vr = vb + k * dv;
      int64_t j = 0;
      for (; j < j_vec; j += W)
        Ops::store(orow + j, Ops::fma(pb, Ops::load(vr + j), Ops::load(orow + j)));
      for (; j < dv; ++j) orow[j] += p * vr[j];
    }
  }
}

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_ATTENTION_ATTENTION_IMPL_H_
