// The generic (portable, scalar) SpMM path, for every block-row size:
// f32_bsr{4x1,1x1}_spmm_ukernel_1x1__scalar and u8s8_bsr{4x1,1x1}_spmm_ukernel_1x1c4__scalar.
#include "kernels/spmm/spmm_scalar_impl.h"

namespace sparq {
namespace generic {

const SpmmKernels& kernels() {
  static const SpmmKernels table = [] {
    SpmmKernels t;
    t.isa = Isa::kGeneric;
    t.f32_r4 = t.f32_r1 = scalar_f32_spmm;
    t.u8s8_r4 = t.u8s8_r1 = scalar_u8s8_spmm;
    t.f32_r4_name = "f32_bsr4x1_spmm_ukernel_1x1__scalar";
    t.f32_r1_name = "f32_bsr1x1_spmm_ukernel_1x1__scalar";
    t.u8s8_r4_name = "u8s8_bsr4x1_spmm_ukernel_1x1c4__scalar";
    t.u8s8_r1_name = "u8s8_bsr1x1_spmm_ukernel_1x1c4__scalar";
    t.u8_pack_quads = scalar_u8_pack_quads;
    t.u8s8_quads_r1 = scalar_u8s8_quads_spmm;
    t.u8s8_quads_r1_name = "u8s8_bsr1x4_spmm_ukernel_1x1c4__scalar";
    return t;
  }();
  return table;
}

}  // namespace generic
}  // namespace sparq
