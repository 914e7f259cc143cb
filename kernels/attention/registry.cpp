#include <cassert>
#include <cstdio>

#include "kernels/attention/attention.h"

namespace sparq {

const AttentionKernels& attention_kernels(Isa isa) {
  assert(isa_supported(isa) && "kernels of an ISA this CPU lacks");
  switch (isa) {
    case Isa::kAvx512Vnni:
    case Isa::kAvx512: return avx512::attention_table();
    case Isa::kAvx2: return avx2::attention_table();
    case Isa::kGeneric: break;
  }
  return generic::attention_table();
}

const AttentionKernels& attention_kernels() {
  static const AttentionKernels& t = [&]() -> const AttentionKernels& {
    const AttentionKernels& k = attention_kernels(active_isa());
    if (verbose()) std::fprintf(stderr, "sparq: attention kernel: %s\n", k.f32_name);
    return k;
  }();
  return t;
}

}  // namespace sparq
