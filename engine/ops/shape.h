// The shape pass's per-op rule: the output shapes and types of a node from its inputs'
// shapes and types, and the values of the inputs that decide a shape (Reshape's target,
// Expand's shape, ...), without running it. Built on engine/shapes.h, the same rules the
// interpreter sizes its outputs with; tests/shape_test.cpp checks every node of every
// test model and ONNX node test against what the interpreter produces.
#ifndef SPARQ_ENGINE_OPS_SHAPE_H_
#define SPARQ_ENGINE_OPS_SHAPE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "formats/graph.h"
#include "sparq/export.h"

namespace sparq {

struct ValueMeta {
  std::vector<int64_t> shape;
  ElemType type = ElemType::kF32;
  std::shared_ptr<const Constant> value;  // known at plan time (constant or folded), else null
};

// Output metas of node `n` (one per output; omitted optional outputs get an empty meta).
// `ins` has one entry per node input (nullptr where omitted). `matmul_n` gives a
// SparqMatMul's output features (its packed weight's N). Throws Error: kInvalidArgument
// when the inputs do not fit the op, kUnsupported when an output shape depends on a
// value only known at run time.
SPARQ_API std::vector<ValueMeta> infer_node(const Node& n, int64_t opset,
                                            const std::vector<const ValueMeta*>& ins,
                                            const std::function<int64_t(const Node&)>& matmul_n);

}  // namespace sparq

#endif  // SPARQ_ENGINE_OPS_SHAPE_H_
