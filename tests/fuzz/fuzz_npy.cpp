// Fuzz target: the .npy reader (what `sparq run -i NAME=FILE.npy` reads).
#include <cstddef>
#include <cstdint>

#include "formats/error.h"
#include "formats/npy.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = sparq::fuzz::write_scratch("input.npy", data, size);
  try {
    const sparq::Constant c = sparq::read_npy(path);
    // What was read is consistent: shape x element size = bytes.
    const size_t want = static_cast<size_t>(c.elements()) * sparq::elem_type_size(c.type);
    if (want != c.bytes.size()) __builtin_trap();
  } catch (const sparq::Error&) {
  }
  return 0;
}
