// f32_mha_fm_ukernel_8x2__scalar and the portable feature-major LayerNorm / quantize loops.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/fm/fm_impl.h"

namespace sparq {
namespace {

struct FmScalarOps {
  struct Batch {
    float v = 0.0f;
    Batch() = default;
    explicit Batch(float x) : v(x) {}
    Batch operator-(const Batch& o) const { return Batch(v - o.v); }
    Batch operator+(const Batch& o) const { return Batch(v + o.v); }
    Batch operator*(const Batch& o) const { return Batch(v * o.v); }
    Batch operator/(const Batch& o) const { return Batch(v / o.v); }
  };
  static constexpr int64_t kWidth = 1;
  static Batch load(const float* p) { return Batch(*p); }
  static void store(float* p, const Batch& b) { *p = b.v; }
  static Batch fma(const Batch& a, const Batch& b, const Batch& c) {
    return Batch(a.v * b.v + c.v);
  }
  static Batch exp(const Batch& a) { return Batch(std::exp(a.v)); }
  static Batch max(const Batch& a, const Batch& b) { return Batch(std::max(a.v, b.v)); }
};

}  // namespace

namespace generic {
const FmKernels& fm_table() {
  static const FmKernels t = fm_table_for<FmScalarOps>("f32_mha_fm_ukernel_8x2__scalar", "scalar");
  return t;
}
}  // namespace generic

const FmKernels& fm_kernels(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Vnni: return avx512vnni::fm_table();
    case Isa::kAvx512: return avx512::fm_table();
    case Isa::kAvx2: return avx2::fm_table();
    case Isa::kGeneric: break;
  }
  return generic::fm_table();
}

const FmKernels& fm_kernels() {
  static const FmKernels& t = fm_kernels(active_isa());
  return t;
}

FmAttentionFn fm_low_precision_attention(const FmKernels& k, FmAttentionPref pref,
                                         const char** name) {
  const int want = static_cast<int>(pref);
  FmAttentionFn fn = k.attention;
  const char* fn_name = k.attention_name;
  if (want >= 2 && k.attention_int8 != nullptr && k.attention_int8_preferred) {
    fn = k.attention_int8;
    fn_name = k.attention_int8_name;
  } else if (want >= 1 && k.attention_bf16 != nullptr) {
    fn = k.attention_bf16;
    fn_name = k.attention_bf16_name;
  }
  if (name != nullptr) *name = fn_name;
  return fn;
}

}  // namespace sparq
