#include "kernels/common/isa.h"

#include <cpuid.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sparq {
namespace {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;
  bool os_avx = false;     // XCR0: SSE and AVX (YMM) state
  bool os_avx512 = false;  // XCR0: opmask, ZMM_Hi256, Hi16_ZMM state
};

uint64_t read_xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

CpuFeatures query_cpu() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const bool avx = (c >> 28) & 1;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  if (!osxsave || !avx) return f;  // xgetbv itself is only legal with OSXSAVE
  const uint64_t xcr0 = read_xcr0();
  f.os_avx = (xcr0 & 0x6) == 0x6;
  f.os_avx512 = f.os_avx && (xcr0 & 0xE0) == 0xE0;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = (b >> 5) & 1;
  f.avx512f = (b >> 16) & 1;
  f.avx512dq = (b >> 17) & 1;
  f.avx512bw = (b >> 30) & 1;
  f.avx512vl = (b >> 31) & 1;
  f.avx512vnni = (c >> 11) & 1;
  __cpuid_count(7, 0, a, b, c, d);
  if (a >= 1) {  // max subleaf of leaf 7
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512bf16 = (a >> 5) & 1;
  }
  return f;
}

Isa compute_detected() {
  const CpuFeatures f = query_cpu();
  if (!(f.os_avx && f.avx2 && f.fma && f.f16c)) return Isa::kGeneric;
  if (!(f.os_avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq)) return Isa::kAvx2;
  if (!f.avx512vnni) return Isa::kAvx512;
  return Isa::kAvx512Vnni;
}

// Set by configure_dispatch (engine/options.cpp, when libsparq loads); constant-
// initialized, so they are valid whichever static initializer runs first.
char g_max_isa[32] = "";
bool g_verbose = false;

Isa compute_active() {
  Isa isa = detected_isa();
  if (const char* cap = g_max_isa; *cap != '\0') {
    Isa max{};
    if (!parse_isa(cap, &max)) {
      std::fprintf(stderr,
                   "sparq: warning: SPARQ_MAX_ISA=%s is not one of avx512vnni, avx512, avx2, "
                   "generic; ignored\n",
                   cap);
    } else if (max < isa) {
      isa = max;
    }
  }
  if (verbose()) {
    std::fprintf(stderr, "sparq: cpu supports %s, kernels use %s\n", isa_name(detected_isa()),
                 isa_name(isa));
  }
  return isa;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kGeneric: return "generic";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

bool parse_isa(const std::string& text, Isa* out) {
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Vnni}) {
    if (text == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

bool avx512_bf16_enabled() {
  static const bool on = [] {
    const CpuFeatures f = query_cpu();
    const bool ok = f.avx512bf16 && active_isa() >= Isa::kAvx512;
    if (verbose())
      std::fprintf(stderr, "sparq: avx512_bf16 %s\n",
                   ok             ? "in use"
                   : f.avx512bf16 ? "capped"
                                  : "absent");
    return ok;
  }();
  return on;
}

bool two_int16_madd_pipes() {
  static const bool on = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    char vendor[13] = {};
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const unsigned base = (a >> 8) & 0xF, ext = (a >> 20) & 0xFF;
    const unsigned family = base == 0xF ? base + ext : base;
    return std::strcmp(vendor, "AuthenticAMD") == 0 && family >= 0x19;
  }();
  return on;
}

Isa detected_isa() {
  static const Isa isa = compute_detected();
  return isa;
}

Isa active_isa() {
  static const Isa isa = compute_active();
  return isa;
}

bool isa_supported(Isa isa) { return isa <= detected_isa(); }

bool verbose() { return g_verbose; }

void configure_dispatch(const char* max_isa, bool verbose_on) {
  std::strncpy(g_max_isa, max_isa != nullptr ? max_isa : "", sizeof g_max_isa - 1);
  g_max_isa[sizeof g_max_isa - 1] = '\0';
  g_verbose = verbose_on;
}

}  // namespace sparq
