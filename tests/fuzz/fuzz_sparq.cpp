// Fuzz target: the .sparq loader (header, tensor table, packed weights, stored graph),
// then a plan and one run on a tiny input: bytes -> Model -> Session::run.
#include <cstddef>
#include <cstdint>

#include "engine/model.h"
#include "formats/error.h"
#include "tests/fuzz/fuzz_run.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = sparq::fuzz::write_scratch("model.sparq", data, size);
  std::shared_ptr<const sparq::Model> model;
  try {
    model = sparq::Model::load(path);
  } catch (const sparq::Error&) {
    return 0;
  }
  // The planned executor, then the op-by-op interpreter on the same graph.
  for (bool interpret : {false, true}) {
    try {
      sparq::fuzz::run_once(model, interpret);
    } catch (const sparq::Error&) {
    }
  }
  return 0;
}
