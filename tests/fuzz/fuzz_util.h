// Shared helpers of the fuzz targets: a private scratch directory, bounded sessions,
// and the one rule every target checks: a sparq::Error (or bad_alloc from a limit the
// caller set) is an answer, anything else escaping is a bug.
#ifndef SPARQ_TESTS_FUZZ_FUZZ_UTIL_H_
#define SPARQ_TESTS_FUZZ_FUZZ_UTIL_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace sparq::fuzz {

// A directory of this process's own under $TMPDIR (or /tmp), removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t != nullptr && *t != '\0' ? t : "/tmp") + "/sparq-fuzz-XXXXXX";
    if (mkdtemp(&tmpl[0]) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::string keep = tmpl;
    std::atexit([] {
      std::string cmd = "rm -rf '" + keep + "'";
      if (std::system(cmd.c_str()) != 0)
        std::fprintf(stderr, "fuzz: could not remove %s\n", keep.c_str());
    });
    return tmpl;
  }();
  return dir;
}

// Writes `data` to a file of the scratch directory and returns its path.
inline std::string write_scratch(const char* name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

}  // namespace sparq::fuzz

#endif  // SPARQ_TESTS_FUZZ_FUZZ_UTIL_H_
