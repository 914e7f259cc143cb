// f32_attention_ukernel_1x1__scalar: the generic path of the attention row kernel.
#include <cmath>

#include "kernels/attention/attention_impl.h"

namespace sparq {
namespace {

struct ScalarOps {
  struct Batch {
    float v;
    explicit Batch(float x) : v(x) {}
    Batch operator-(const Batch& o) const { return Batch(v - o.v); }
    Batch operator+(const Batch& o) const { return Batch(v + o.v); }
  };
  static constexpr int64_t kWidth = 1;
  static Batch load(const float* p) { return Batch(*p); }
  static void store(float* p, const Batch& b) { *p = b.v; }
  static Batch fma(const Batch& a, const Batch& b, const Batch& c) {
    return Batch(a.v * b.v + c.v);
  }
  static Batch exp(const Batch& a) { return Batch(std::exp(a.v)); }
  static double sum(const Batch& a) { return a.v; }
};

}  // namespace

namespace generic {
const AttentionKernels& attention_table() {
  static const AttentionKernels t{attention_rows<ScalarOps>, "f32_attention_ukernel_1x1__scalar"};
  return t;
}
}  // namespace generic

}  // namespace sparq
