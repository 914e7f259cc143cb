// Declarations shared by the AVX2 translation units.
#ifndef SPARQ_KERNELS_SPMM_SPMM_AVX2_H_
#define SPARQ_KERNELS_SPMM_SPMM_AVX2_H_

#include "kernels/spmm/spmm.h"

namespace sparq {
namespace avx2 {
void f32_bsr4x1_spmm_ukernel_4x16__avx2(const PackedWeights& w, const float* x, int64_t ldx,
                                        int64_t m_begin, int64_t m_end, int64_t br_begin,
                                        int64_t br_end, const Epilogue& ep);
void f32_bsr1x1_spmm_ukernel_1x64__avx2(const PackedWeights& w, const float* x, int64_t ldx,
                                        int64_t m_begin, int64_t m_end, int64_t br_begin,
                                        int64_t br_end, const Epilogue& ep);
}  // namespace avx2
}  // namespace sparq

#endif  // SPARQ_KERNELS_SPMM_SPMM_AVX2_H_
