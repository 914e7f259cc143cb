#include "engine/limits.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "engine/options.h"
#include "formats/error.h"

namespace sparq {
namespace {

uint64_t env_u64(const char* name, uint64_t def) {
  const std::string text = knob(name);
  if (text.empty()) return def;
  const char* e = text.c_str();
  char* end = nullptr;
  const unsigned long long v = std::strtoull(e, &end, 10);
  if (*end != '\0' || v == 0 || e[0] == '-') {
    throw Error(Status::kInvalidArgument,
                std::string(name) + "=" + e + " is not a positive integer");
  }
  return v;
}

Limits read_limits() {
  Limits l;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) {
    const uint64_t phys = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
    l.max_plan_bytes = std::min(l.max_plan_bytes, phys / 4 * 3);
  }
  l.max_tokens =
      static_cast<int64_t>(env_u64("SPARQ_MAX_TOKENS", static_cast<uint64_t>(l.max_tokens)));
  l.max_input_elements = static_cast<int64_t>(
      env_u64("SPARQ_MAX_INPUT_ELEMENTS", static_cast<uint64_t>(l.max_input_elements)));
  l.max_tensor_bytes = env_u64("SPARQ_MAX_TENSOR_BYTES", l.max_tensor_bytes);
  l.max_plan_bytes = env_u64("SPARQ_MAX_PLAN_BYTES", l.max_plan_bytes);
  return l;
}

}  // namespace

const Limits& limits() {
  static const Limits l = read_limits();
  return l;
}

std::string human_bytes(uint64_t bytes) {
  char buf[64];
  if (bytes >= (uint64_t{1} << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1 << 30));
  else if (bytes >= (uint64_t{1} << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  else std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  return buf;
}

// Runs for every value the interpreter makes: no string is built unless a check fails.
int64_t checked_elements(const std::vector<int64_t>& shape, size_t elem_bytes, const char* what) {
  uint64_t e = 1;
  for (int64_t d : shape) {
    if (d < 0)
      throw Error(Status::kInvalidArgument,
                  std::string(what) + ": negative dimension " + std::to_string(d));
  }
  for (int64_t d : shape) {
    if (d == 0) return 0;  // empty, whatever the other dimensions
  }
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(e, static_cast<uint64_t>(d), &e)) {
      throw Error(Status::kOutOfMemory,
                  std::string(what) + ": the shape's element count overflows");
    }
  }
  uint64_t bytes = 0;
  const uint64_t cap = limits().max_tensor_bytes;
  if (__builtin_mul_overflow(e, static_cast<uint64_t>(elem_bytes), &bytes) || bytes > cap) {
    throw Error(Status::kOutOfMemory,
                std::string(what) + " would need " +
                    (bytes > cap && bytes / elem_bytes == e ? human_bytes(bytes)
                                                            : std::string("more than 2^64 bytes")) +
                    ", above the limit of " + human_bytes(cap) +
                    " for one tensor (SPARQ_MAX_TENSOR_BYTES)");
  }
  return static_cast<int64_t>(e);
}

}  // namespace sparq
