// f32_attention_ukernel_1x16__avx512f: the attention row kernel on AVX-512F (xsimd).
#include "kernels/attention/attention_impl.h"
#include "kernels/attention/attention_xsimd_ops.h"

namespace sparq {
namespace avx512 {
const AttentionKernels& attention_table() {
  static const AttentionKernels t{attention_rows<XsimdOps<xsimd::avx512f>>,
                                  "f32_attention_ukernel_1x16__avx512f"};
  return t;
}
}  // namespace avx512
}  // namespace sparq
