// The generic path: runs an imported graph op by op, exactly as ONNX defines each op,
// with no fusion and no packing. Slow, simple and the reference the fused path is
// tested against. fp32 math is done in double per op and rounded to float on store.
#ifndef SPARQ_ENGINE_INTERPRETER_H_
#define SPARQ_ENGINE_INTERPRETER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/graph.h"
#include "sparq/export.h"

namespace sparq {

using Value = std::shared_ptr<const Constant>;

// Evaluates `graph` on `inputs` (by graph input name) and returns every graph output.
// Throws Error(kInvalidArgument) for bad data found while running (an index out of
// range, incompatible shapes) naming the node, Error(kUnsupported) for an attribute
// combination the op implementation does not cover.
// `custom` (optional) runs ops the interpreter does not know, such as SparqMatMul.
// `peak_bytes` (optional) receives the most bytes of intermediate values alive at once
// (values are released after their last use).
using CustomOp = std::function<Value(const Node& node, const std::vector<Value>& inputs)>;
// `parallel` (optional) runs body(part) for part in [0, parts) on worker threads and
// waits; the fp32 fast paths split their rows or elements over it.
using ParallelFor = std::function<void(int64_t parts, const std::function<void(int64_t)>& body)>;
SPARQ_API std::map<std::string, Value> interpret(const Graph& graph,
                                                 const std::map<std::string, Value>& inputs,
                                                 const CustomOp& custom = nullptr,
                                                 size_t* peak_bytes = nullptr,
                                                 const ParallelFor& parallel = nullptr,
                                                 bool profile = false);  // per-op times on stderr

// SparqMaskBias: an attention mask [B, S] (any numeric or bool type) as the additive bias
// [B, 1, 1, S] float32 (1 - float(mask)) * fill, the exported chain Unsqueeze, Unsqueeze,
// Cast(float), Sub(1, .), Mul(., fill) computed in the same float operations (so the same
// bits, -0.0 included). The interpreter's reference and the planned step both call it.
SPARQ_API Value mask_bias(const Constant& mask, float fill);

// Runs one node of `graph` on `inputs` (one per node input, null where omitted) and
// returns its first output; the building block of the planned executor's generic steps.
SPARQ_API Value interpret_node(const Graph& graph, const Node& node,
                               const std::vector<Value>& inputs, const CustomOp& custom = nullptr,
                               const ParallelFor& parallel = nullptr);
// The same, returning every output: one per node output, null where the node does not
// compute it (an omitted optional output). DynamicQuantizeLinear has three.
SPARQ_API std::vector<Value> interpret_node_outputs(const Graph& graph, const Node& node,
                                                    const std::vector<Value>& inputs,
                                                    const CustomOp& custom = nullptr,
                                                    const ParallelFor& parallel = nullptr);

}  // namespace sparq

#endif  // SPARQ_ENGINE_INTERPRETER_H_
