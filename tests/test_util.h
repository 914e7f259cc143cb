// Test helpers: guard-page buffers that fault on any access past their end, and
// seeded random data.
#ifndef SPARQ_TESTS_TEST_UTIL_H_
#define SPARQ_TESTS_TEST_UTIL_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

namespace sparq::test {

// `count` elements of T whose last element ends exactly where a PROT_NONE page
// begins, so a kernel that reads or writes even one byte past the end crashes the
// test instead of passing silently.
// SPARQ_TEST_GUARD_SLACK=B leaves B bytes between the end and the guard page. Only
// the qemu run sets it: QEMU 7.2's TCG loads 16 bytes for the 4-byte memory operand
// of vfmadd231ss, an emulator over-read that real CPUs do not do.
template <class T>
class GuardedBuffer {
 public:
  explicit GuardedBuffer(std::size_t count) : count_(count) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    std::size_t slack = 0;
    if (const char* e = std::getenv("SPARQ_TEST_GUARD_SLACK")) slack = std::strtoul(e, nullptr, 10);
    const std::size_t bytes = count * sizeof(T) + slack;
    data_pages_ = (bytes + page - 1) / page * page;
    if (data_pages_ == 0) data_pages_ = page;
    total_ = data_pages_ + page;
    void* p = mmap(nullptr, total_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<char*>(p);
    if (mprotect(base_ + data_pages_, page, PROT_NONE) != 0) throw std::runtime_error("mprotect");
    data_ = reinterpret_cast<T*>(base_ + data_pages_ - bytes);
  }
  ~GuardedBuffer() { munmap(base_, total_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return count_; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }

 private:
  std::size_t count_;
  std::size_t data_pages_ = 0, total_ = 0;
  char* base_ = nullptr;
  T* data_ = nullptr;
};

inline std::vector<float> random_floats(std::size_t count, uint32_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(count);
  for (auto& x : v) x = dist(rng);
  return v;
}

}  // namespace sparq::test

#endif  // SPARQ_TESTS_TEST_UTIL_H_
