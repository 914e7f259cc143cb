// Declarations shared by the AVX-512 translation units (fp32 kernels live in the
// AVX-512F unit and are reused by the VNNI table).
#ifndef SPARQ_KERNELS_SPMM_SPMM_AVX512_H_
#define SPARQ_KERNELS_SPMM_SPMM_AVX512_H_

#include "kernels/spmm/spmm.h"

namespace sparq {
namespace avx512 {
void f32_bsr4x1_spmm_ukernel_4x64__avx512f(const PackedWeights& w, const float* x, int64_t ldx,
                                           int64_t m_begin, int64_t m_end, int64_t br_begin,
                                           int64_t br_end, const Epilogue& ep);
void f32_bsr1x1_spmm_ukernel_1x128__avx512f(const PackedWeights& w, const float* x, int64_t ldx,
                                            int64_t m_begin, int64_t m_end, int64_t br_begin,
                                            int64_t br_end, const Epilogue& ep);
}  // namespace avx512
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_SPMM_AVX512_H_
