// xsimd vector operations for attention_impl.h and fm_impl.h, for one architecture A.
#ifndef SPARQ_KERNELS_ATTENTION_ATTENTION_XSIMD_OPS_H_
#define SPARQ_KERNELS_ATTENTION_ATTENTION_XSIMD_OPS_H_

#include <xsimd/xsimd.hpp>

namespace sparq {
namespace {

template <class A>
struct XsimdOps {
  using Batch = xsimd::batch<float, A>;
  static constexpr int64_t kWidth = static_cast<int64_t>(Batch::size);
  static Batch load(const float* p) { return Batch::load_unaligned(p); }
  static void store(float* p, const Batch& b) { b.store_unaligned(p); }
  static Batch fma(const Batch& a, const Batch& b, const Batch& c) { return xsimd::fma(a, b, c); }
  static Batch exp(const Batch& a) { return xsimd::exp(a); }
  static Batch max(const Batch& a, const Batch& b) { return xsimd::max(a, b); }
  static double sum(const Batch& a) {
    alignas(64) float tmp[Batch::size];
    a.store_aligned(tmp);
    double s = 0;
    for (float v : tmp) s += v;
    return s;
  }
};

}  // namespace
}  // namespace sparq

#endif  // SPARQ_KERNELS_ATTENTION_ATTENTION_XSIMD_OPS_H_
