#include "engine/options.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/common/isa.h"

namespace sparq {
namespace {

void bad_value(const char* name, const std::string& v, const char* allowed, const char* used) {
  std::fprintf(stderr, "sparq: warning: %s=%s is not one of %s; using %s\n", name, v.c_str(),
               allowed, used);
}

bool flag(const char* name) {
  const std::string v = knob(name);
  return !v.empty() && v != "0";
}

RuntimeOptions parse() {
  RuntimeOptions o;
  const std::string ex = knob("SPARQ_EXECUTOR");
  if (ex == "interpret") o.executor = ExecutorKind::kInterpret;
  else if (!ex.empty() && ex != "planned")
    bad_value("SPARQ_EXECUTOR", ex, "planned, interpret", "planned");
  const std::string at = knob("SPARQ_ATTENTION");
  if (at == "bf16") o.attention = FmAttentionPref::kBf16;
  else if (at == "fp32") o.attention = FmAttentionPref::kFp32;
  else if (!at.empty() && at != "int8")
    bad_value("SPARQ_ATTENTION", at, "int8, bf16, fp32", "int8");
  const std::string pool = knob("SPARQ_POOL");
  if (pool == "team") o.pool = PoolKind::kTeam;
  else if (!pool.empty() && pool != "tbb") bad_value("SPARQ_POOL", pool, "tbb, team", "tbb");
  o.profile_segments = knob("SPARQ_PROFILE") == "segments";
  o.profile = o.profile_segments || flag("SPARQ_PROFILE");
  return o;
}

// At load time: the dispatch cap and verbosity for kernels/common/isa.
const bool g_dispatch_configured = [] {
  configure_dispatch(knob("SPARQ_MAX_ISA").c_str(), flag("SPARQ_VERBOSE"));
  return true;
}();

}  // namespace

std::string knob(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr ? e : "";
}

const RuntimeOptions& RuntimeOptions::from_environment() {
  (void)g_dispatch_configured;
  static const RuntimeOptions o = parse();
  return o;
}

}  // namespace sparq
