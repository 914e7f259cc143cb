// Run-time CPU feature detection and the ISA ladder the kernels dispatch on.
//
// The ladder, widest first: avx512vnni > avx512 (F+BW+VL+DQ) > avx2 (AVX2+FMA) > generic.
// A level is usable only when CPUID reports every feature it needs AND the OS has
// enabled the matching register state in XCR0 (checked with xgetbv), so a CPU or
// hypervisor without AVX-512 state never sees an AVX-512 instruction.
// SPARQ_MAX_ISA=avx512vnni|avx512|avx2|generic caps the choice (tests use it to run
// every path on one machine); SPARQ_VERBOSE=1 logs the chosen kernels to stderr.
#ifndef SPARQ_KERNELS_COMMON_ISA_H_
#define SPARQ_KERNELS_COMMON_ISA_H_

#include <string>

#include "sparq/export.h"

namespace sparq {

enum class Isa : int { kGeneric = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Vnni = 3 };

SPARQ_API const char* isa_name(Isa isa);
// Parses "generic", "avx2", "avx512", "avx512vnni"; returns false on anything else.
SPARQ_API bool parse_isa(const std::string& text, Isa* out);

// The widest level this CPU and OS support (ignores SPARQ_MAX_ISA).
SPARQ_API Isa detected_isa();
// detected_isa() capped by the configured maximum (SPARQ_MAX_ISA, handed over by
// configure_dispatch; fixed at first use; an invalid value is reported and ignored).
SPARQ_API Isa active_isa();
// True when `isa` can run here (isa <= detected_isa()).
SPARQ_API bool isa_supported(Isa isa);
// AVX512-BF16 (vdpbf16ps) is present and the active ISA is at least avx512: int8 models
// may then run attention in bf16.
SPARQ_API bool avx512_bf16_enabled();
// The CPU issues two vpmaddwd (16-bit multiply-add) a cycle, twice its fp32 FMA's
// multiplies: AMD family 19h and later (Zen 3, 4, 5), measured on Zen 3. Zen 1/2 have one
// such pipe; Intel CPUs without AVX-512 are not measured and count as false. The AVX2
// int8 attention is chosen only where this holds.
SPARQ_API bool two_int16_madd_pipes();
// Verbose logging (SPARQ_VERBOSE) was configured.
SPARQ_API bool verbose();
// The process's ISA cap text ("" = none) and verbosity. Kernels never read the
// environment: engine/options.cpp calls this when libsparq loads, before any dispatch.
SPARQ_API void configure_dispatch(const char* max_isa, bool verbose);

}  // namespace sparq

#endif  // SPARQ_KERNELS_COMMON_ISA_H_
