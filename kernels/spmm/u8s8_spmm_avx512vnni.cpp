// u8s8_bsr4x1_spmm_ukernel_4x64c4__avx512vnni, u8s8_bsr1x1_spmm_ukernel_1x64c4__avx512vnni
// and the 1x4 kernel u8s8_bsr1x4_spmm_ukernel_2x64c4__avx512vnni: the u8 x s8 SpMM with
// vpdpbusd. Layout and contracts: u8s8_spmm_avx512_impl.h.
#include "kernels/spmm/spmm.h"
#include "kernels/spmm/spmm_avx512.h"
#include "kernels/spmm/u8s8_spmm_avx512_impl.h"

namespace sparq {
namespace avx512vnni {

const SpmmKernels& kernels() {
  static const SpmmKernels table = [] {
    SpmmKernels t;
    t.isa = Isa::kAvx512Vnni;
    t.f32_r4 = avx512::f32_bsr4x1_spmm_ukernel_4x64__avx512f;
    t.f32_r1 = avx512::f32_bsr1x1_spmm_ukernel_1x128__avx512f;
    t.u8s8_r4 = u8s8_spmm<DotVnni, 4>;
    t.u8s8_r1 = u8s8_spmm<DotVnni, 1>;
    t.f32_r4_name = "f32_bsr4x1_spmm_ukernel_4x64__avx512f";
    t.f32_r1_name = "f32_bsr1x1_spmm_ukernel_1x128__avx512f";
    t.u8s8_r4_name = "u8s8_bsr4x1_spmm_ukernel_4x64c4__avx512vnni";
    t.u8s8_r1_name = "u8s8_bsr1x1_spmm_ukernel_1x64c4__avx512vnni";
    t.u8_pack_quads = u8_pack_quads;
    t.u8s8_gemm_r4 = u8s8_gemm_packed<DotVnni, 4>;
    t.u8s8_gemm_r4_name = "u8s8_gemm_ukernel_4x64c4__avx512vnni";
    t.u8s8_quads_r1 = u8s8_quads_spmm<DotVnni>;
    t.u8s8_quads_r1_name = "u8s8_bsr1x4_spmm_ukernel_" SPARQ_QUAD_SHAPE "__avx512vnni";
    return t;
  }();
  return table;
}

}  // namespace avx512vnni
}  // namespace sparq
