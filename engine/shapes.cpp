#include "engine/shapes.h"

namespace sparq {

bool safe_elements(const std::vector<int64_t>& shape, int64_t* out) {
  int64_t e = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(e, d, &e)) return false;
  }
  *out = e;
  return true;
}

bool reshape_target(const std::vector<int64_t>& in, std::vector<int64_t>* target, bool allowzero,
                    std::string* why) {
  std::vector<int64_t>& t = *target;
  int64_t in_elems = 0;
  if (!safe_elements(in, &in_elems)) {
    *why = "the input shape overflows";
    return false;
  }
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == 0 && !allowzero) {
      if (i >= in.size()) {
        *why = "0 refers to a missing input dimension";
        return false;
      }
      t[i] = in[i];
    }
    if (t[i] == -1) {
      if (infer >= 0) {
        *why = "more than one -1";
        return false;
      }
      infer = static_cast<int64_t>(i);
    } else if (t[i] < 0) {
      *why = "negative dimension";
      return false;
    } else if (__builtin_mul_overflow(known, t[i], &known)) {
      *why = "the target's element count overflows";
      return false;
    }
  }
  if (infer >= 0) {
    if (known == 0 || in_elems % known != 0) {
      *why = "cannot infer the -1 dimension";
      return false;
    }
    t[static_cast<size_t>(infer)] = in_elems / known;
    known = in_elems;
  }
  if (known != in_elems) {
    *why = "element count changes";
    return false;
  }
  return true;
}

}  // namespace sparq
