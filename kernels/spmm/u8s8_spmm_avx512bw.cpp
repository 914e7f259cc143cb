// u8s8_bsr4x1_spmm_ukernel_4x64c4{,p}__avx512bw, u8s8_bsr1x1_spmm_ukernel_1x64c4__avx512bw,
// u8s8_bsr1x1_spmm_ukernel_1x64c4p__avx512bw, u8s8_bsr1x4_spmm_ukernel_2x64c4__avx512bw and
// the dense u8s8_gemm_ukernel_4x64c4{,p}__avx512bw:
// the u8 x s8 SpMM for AVX-512 CPUs without VNNI (Skylake-SP), with the dot product
// widened to 16 bits (vpmaddwd), except on a sparse matrix's sign-paired groups and a dense
// matrix's pair-safe form, which the saturating vpmaddubsw cannot overflow (DotPaired). Layout and
// contracts: u8s8_spmm_avx512_impl.h.
#include "kernels/spmm/spmm.h"
#include "kernels/spmm/spmm_avx512.h"
#include "kernels/spmm/u8s8_spmm_avx512_impl.h"

namespace sparq {
namespace avx512 {

const SpmmKernels& kernels() {
  static const SpmmKernels table = [] {
    SpmmKernels t;
    t.isa = Isa::kAvx512;
    t.f32_r4 = f32_bsr4x1_spmm_ukernel_4x64__avx512f;
    t.f32_r1 = f32_bsr1x1_spmm_ukernel_1x128__avx512f;
    t.u8s8_r4 = u8s8_spmm_paired<DotWiden16, 4>;
    t.u8s8_r1 = u8s8_spmm_paired<DotWiden16, 1>;
    t.f32_r4_name = "f32_bsr4x1_spmm_ukernel_4x64__avx512f";
    t.f32_r1_name = "f32_bsr1x1_spmm_ukernel_1x128__avx512f";
    t.u8s8_r4_name = "u8s8_bsr4x1_spmm_ukernel_4x64c4__avx512bw";
    t.u8s8_r1_name = "u8s8_bsr1x1_spmm_ukernel_1x64c4__avx512bw";
    t.u8s8_r1_sign_paired = true;
    t.u8s8_r1_paired_name = "u8s8_bsr1x1_spmm_ukernel_1x64c4p__avx512bw";
    t.u8s8_r4_sign_paired = true;
    t.u8s8_r4_paired_name = "u8s8_bsr4x1_spmm_ukernel_4x64c4p__avx512bw";
    t.u8_pack_quads = u8_pack_quads;
    t.u8s8_gemm_r4 = u8s8_gemm_packed_r4_paired<DotWiden16>;
    t.u8s8_gemm_r4_name = "u8s8_gemm_ukernel_4x64c4__avx512bw";
    t.u8s8_gemm_r4_paired = true;
    t.u8s8_gemm_r4_paired_name = "u8s8_gemm_ukernel_4x64c4p__avx512bw";
    t.u8s8_quads_r1 = u8s8_quads_spmm<DotWiden16>;
    t.u8s8_quads_r1_name = "u8s8_bsr1x4_spmm_ukernel_" SPARQ_QUAD_SHAPE "__avx512bw";
    return t;
  }();
  return table;
}

}  // namespace avx512
}  // namespace sparq
