// f32_mha_fm_ukernel_8x32__avx512f and the feature-major LayerNorm / quantize loops,
// compiled for AVX-512.
#include <xsimd/xsimd.hpp>

#include "kernels/attention/attention_xsimd_ops.h"
#include "kernels/fm/fm_impl.h"

namespace sparq {
namespace avx512 {
const FmKernels& fm_table() {
  static const FmKernels t = [] {
    FmKernels k =
        fm_table_for<XsimdOps<xsimd::avx512f>>("f32_mha_fm_ukernel_8x32__avx512f", "avx512");
    if (avx512_bf16_enabled()) {
      k.attention_bf16 = avx512bf16::fm_attention;
      k.attention_bf16_name = "bf16_mha_fm_ukernel_8x32__avx512bf16";
    }
    return k;
  }();
  return t;
}
}  // namespace avx512

namespace avx512vnni {
const FmKernels& fm_table() {
  static const FmKernels t = [] {
    FmKernels k = avx512::fm_table();
    k.attention_int8 = fm_attention_int8;
    k.attention_int8_prep = fm_attention_int8_prep;
    k.attention_int8_name = "u8s8_mha_fm_ukernel_8x32__avx512vnni";
    return k;
  }();
  return t;
}
}  // namespace avx512vnni
}  // namespace sparq
