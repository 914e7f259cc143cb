// f32_mha_fm_ukernel_8x32__avx512f and the feature-major LayerNorm / quantize loops,
// compiled for AVX-512.
#include <xsimd/xsimd.hpp>

#include "kernels/fm/fm_impl.h"
#include "kernels/fm/fm_xsimd_ops.h"

namespace sparq {
namespace avx512 {
const FmKernels& fm_table() {
  using Ops = FmXsimdOps<xsimd::avx512f>;
  static const FmKernels t{fm_attention_items<Ops>, fm_layernorm_loops, fm_quantize_loops, 2 * Ops::kWidth,
                           "f32_mha_fm_ukernel_8x32__avx512f", "avx512"};
  return t;
}
}  // namespace avx512
}  // namespace sparq
