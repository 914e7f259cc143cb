#include <cassert>
#include <cstdio>

#include "kernels/spmm/spmm.h"

namespace sparq {

const SpmmKernels& spmm_kernels(Isa isa) {
  assert(isa_supported(isa) && "kernels of an ISA this CPU lacks");
  switch (isa) {
    case Isa::kAvx512Vnni: return avx512vnni::kernels();
    case Isa::kAvx512: return avx512::kernels();
    case Isa::kAvx2: return avx2::kernels();
    case Isa::kGeneric: break;
  }
  return generic::kernels();
}

const SpmmKernels& spmm_kernels() {
  static const SpmmKernels& table = [&]() -> const SpmmKernels& {
    const SpmmKernels& t = spmm_kernels(active_isa());
    if (verbose()) {
      std::fprintf(stderr, "sparq: spmm kernels: %s, %s, %s, %s\n", t.f32_r4_name, t.f32_r1_name,
                   t.u8s8_r4_name, t.u8s8_r1_name);
    }
    return t;
  }();
  return table;
}

}  // namespace sparq
