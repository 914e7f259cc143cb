// Fuzz target: the ONNX importer and the converter (bytes -> graph -> converted .sparq),
// then a load and one run of what convert wrote. The input's length picks the precision:
// odd int8; even fp32 for float weights, a quantized model's matmuls keeping their int8
// weights (convert's default flags), except a length of 2 mod 4, which gives fp32
// explicitly (--precision fp32: quantized weights dequantized; a float model converts the
// same either way).
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/model.h"
#include "formats/error.h"
#include "formats/onnx_import.h"
#include "tests/fuzz/fuzz_run.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string out = sparq::fuzz::scratch_dir() + "/converted.sparq";
  try {
    sparq::Graph g = sparq::import_onnx_bytes(bytes, "", "fuzz.onnx");
    sparq::ConvertOptions o;
    o.precision = size % 2 == 0 ? "fp32" : "int8";
    o.precision_given = size % 4 == 2;
    o.threads = 1;
    sparq::convert_graph(std::move(g), out, o);
  } catch (const sparq::Error&) {
    return 0;
  }
  try {
    sparq::fuzz::run_once(sparq::Model::load(out), false);
  } catch (const sparq::Error&) {
  }
  return 0;
}
