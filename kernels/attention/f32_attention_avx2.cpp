// f32_attention_ukernel_1x8__avx2: the attention row kernel on AVX2+FMA (xsimd).
#include "kernels/attention/attention_impl.h"
#include "kernels/attention/attention_xsimd_ops.h"

namespace sparq {
namespace avx2 {
const AttentionKernels& attention_table() {
  static const AttentionKernels t{attention_rows<XsimdOps<xsimd::fma3<xsimd::avx2>>>,
                                  "f32_attention_ukernel_1x8__avx2"};
  return t;
}
}  // namespace avx2
}  // namespace sparq
