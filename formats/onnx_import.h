// ONNX import through Debian's libonnx (onnx_proto) and protobuf: reads a ModelProto,
// including initializers held in external data files, into the graph IR.
//
// Refused with sparq::Error, one message each:
//   - unreadable, empty, truncated or non-ONNX bytes              (FormatError)
//   - a default-domain opset outside 11..17                        (Unsupported)
//   - an op outside the supported set, naming the op and the node  (Unsupported)
//   - nodes that use a value before it is defined, tensors whose data does not match
//     their shape, external data outside its file or outside the model's directory
//                                                                  (FormatError)
#ifndef SPARQ_FORMATS_ONNX_IMPORT_H_
#define SPARQ_FORMATS_ONNX_IMPORT_H_

#include <string>
#include <vector>

#include "formats/graph.h"

namespace sparq {

// Opset 10 is the first with the quantized ops (QuantizeLinear, DequantizeLinear,
// MatMulInteger, QLinearMatMul); every other registered op means the same there as at
// 11 (11 widened negative axes and indices, which an opset-10 model does not use), and
// the ops that came in 11 (CumSum, Range, DynamicQuantizeLinear) are refused at 10.
inline constexpr int64_t kMinOpset = 10;
inline constexpr int64_t kMaxOpset = 17;

// The default-domain op types the importer accepts (and the executor will run).
const std::vector<std::string>& supported_onnx_ops();

Graph import_onnx(const std::string& path);
// The same from bytes; `base_dir` resolves external data ("" = none allowed).
Graph import_onnx_bytes(const std::string& bytes, const std::string& base_dir,
                        const std::string& source_name);
// One serialized TensorProto (an ONNX test's input_N.pb / output_N.pb), with the
// importer's checks; external data is refused.
Constant import_onnx_tensor(const std::string& bytes, const std::string& source_name);

}  // namespace sparq

#endif  // SPARQ_FORMATS_ONNX_IMPORT_H_
