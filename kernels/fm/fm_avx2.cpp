// f32_mha_fm_ukernel_8x16__avx2 and the feature-major LayerNorm / quantize loops,
// compiled for AVX2 + FMA.
#include <xsimd/xsimd.hpp>

#include "kernels/fm/fm_impl.h"
#include "kernels/fm/fm_xsimd_ops.h"

namespace sparq {
namespace avx2 {
const FmKernels& fm_table() {
  using Ops = FmXsimdOps<xsimd::fma3<xsimd::avx2>>;
  static const FmKernels t = [] {
    FmKernels k;
    k.attention = fm_attention_items<Ops>;
    k.layernorm = fm_layernorm_loops;
    k.quantize = fm_quantize_loops;
    k.query_block = 2 * Ops::kWidth;
    k.attention_name = "f32_mha_fm_ukernel_8x16__avx2";
    k.name = "avx2";
    return k;
  }();
  return t;
}
}  // namespace avx2
}  // namespace sparq
