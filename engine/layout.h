// Layout conversions between token-major ([tokens][features], as ONNX sees a tensor)
// and feature-major ([features][tokens], what the kernels read and write).
#ifndef SPARQ_ENGINE_LAYOUT_H_
#define SPARQ_ENGINE_LAYOUT_H_

#include <algorithm>
#include <cstdint>

namespace sparq {

// dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols, in 32 x 32 tiles so
// that both sides stay in cache. Writes run along dst rows and the strided side is the
// read: the other order wrote every element to its own line, a multiple of 4 KiB apart
// for hidden sizes like 768 and 3072, and the lines fought over a few L1 sets.
template <class T>
void transpose_tiled(const T* src, int64_t rows, int64_t cols, int64_t ld_src, T* dst,
                     int64_t ld_dst, int64_t c_begin = 0, int64_t c_end = -1) {
  constexpr int64_t kT = 32;
  if (c_end < 0) c_end = cols;
  for (int64_t r0 = 0; r0 < rows; r0 += kT) {
    const int64_t r1 = std::min(rows, r0 + kT);
    for (int64_t c0 = c_begin; c0 < c_end; c0 += kT) {
      const int64_t c1 = std::min(c_end, c0 + kT);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
  }
}

}  // namespace sparq

#endif  // SPARQ_ENGINE_LAYOUT_H_
