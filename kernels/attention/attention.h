// Scaled dot-product attention, fp32, one query row at a time (the SparqAttention op):
//   out[b,h,s,:] = softmax(scale * Q[b,h,s,:] . K^T[b,h,:,:] (+ mask | masked = fill)) . V[b,h]
// Layouts (row-major): Q [B,H,S,dh], K^T [B,H,dh,T], V [B,H,T,dv], out [B,H,S,dv] (must be
// zero on entry). The mask is optional: additive floats or a byte select (nonzero ->
// fill), addressed with broadcast strides over [B,H,S,T] (0 where it broadcasts).
// A kernel computes query rows [row_begin, row_end) of the flattened [B*H*S] range,
// single-threaded, using `scratch` (at least T floats).
#ifndef SPARQ_KERNELS_ATTENTION_ATTENTION_H_
#define SPARQ_KERNELS_ATTENTION_ATTENTION_H_

#include <cstdint>

#include "kernels/common/isa.h"
#include "sparq/export.h"

namespace sparq {

struct AttentionArgs {
  const float* q = nullptr;
  const float* kt = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  int64_t heads = 0, seq = 0, keys = 0, dh = 0, dv = 0;  // H, S, T, dh, dv
  float scale = 1.0f;
  const float* add_mask = nullptr;
  const uint8_t* select_mask = nullptr;
  float fill = 0.0f;
  int64_t mask_stride[4] = {0, 0, 0, 0};  // over [B, H, S, T]
};

using F32AttentionFn = void (*)(const AttentionArgs& a, int64_t row_begin, int64_t row_end,
                                float* scratch);

struct AttentionKernels {
  F32AttentionFn f32 = nullptr;
  const char* f32_name = "";
};

SPARQ_API const AttentionKernels& attention_kernels(Isa isa);
SPARQ_API const AttentionKernels& attention_kernels();

namespace generic {
const AttentionKernels& attention_table();
}
namespace avx2 {
const AttentionKernels& attention_table();
}
namespace avx512 {
const AttentionKernels& attention_table();
}

}  // namespace sparq

#endif  // SPARQ_KERNELS_ATTENTION_ATTENTION_H_
