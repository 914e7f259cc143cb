// f32_mha_fm_ukernel_8x16__avx2 and the feature-major LayerNorm / quantize loops,
// compiled for AVX2 + FMA.
#include <xsimd/xsimd.hpp>

#include "kernels/attention/attention_xsimd_ops.h"
#include "kernels/fm/fm_impl.h"

namespace sparq {
namespace avx2 {
const FmKernels& fm_table() {
  static const FmKernels t = [] {
    FmKernels k =
        fm_table_for<XsimdOps<xsimd::fma3<xsimd::avx2>>>("f32_mha_fm_ukernel_8x16__avx2", "avx2");
    return k;
  }();
  return t;
}
}  // namespace avx2
}  // namespace sparq
