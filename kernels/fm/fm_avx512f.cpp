// f32_mha_fm_ukernel_8x32__avx512f and the feature-major LayerNorm / quantize loops,
// compiled for AVX-512.
#include <xsimd/xsimd.hpp>

#include "kernels/fm/fm_impl.h"
#include "kernels/fm/fm_xsimd_ops.h"

namespace sparq {
namespace avx512 {
const FmKernels& fm_table() {
  using Ops = FmXsimdOps<xsimd::avx512f>;
  static const FmKernels t = [] {
    FmKernels k;
    k.attention = fm_attention_items<Ops>;
    k.layernorm = fm_layernorm_loops;
    k.quantize = fm_quantize_loops;
    k.query_block = 2 * Ops::kWidth;
    k.attention_name = "f32_mha_fm_ukernel_8x32__avx512f";
    k.name = "avx512";
    if (avx512_bf16_enabled()) {
      k.attention_bf16 = avx512bf16::fm_attention;
      k.attention_bf16_name = "bf16_mha_fm_ukernel_8x32__avx512bf16";
    }
    return k;
  }();
  return t;
}
}  // namespace avx512
}  // namespace sparq
