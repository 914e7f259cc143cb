// Node attributes parsed once into one typed struct (DESIGN.md, "An op is one row"):
// every attribute the engine reads, with ONNX's defaults (the opset-dependent ones
// resolved), so the interpreter, the shape pass and the planner read the same values
// and no reader spells a default of its own. resolve_ops (engine/ops/registry.h) parses
// every node at import, convert and load, after validation checked names and kinds.
#ifndef SPARQ_ENGINE_OPS_ATTRS_H_
#define SPARQ_ENGINE_OPS_ATTRS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "formats/graph.h"
#include "kernels/spmm/spmm.h"
#include "sparq/export.h"

namespace sparq {

enum class MaskKind : uint8_t { kNone, kAdd, kWhere };

struct NodeAttrs {
  // Concat, Gather (0); Softmax (-1 from opset 13, else 1); LayerNormalization (-1);
  // QuantizeLinear, DequantizeLinear (1: the per-axis form's axis, opset 13 on).
  int64_t axis = 0;
  float epsilon = 1e-5f;  // LayerNormalization
  int64_t to = 0;         // Cast: the ONNX element type
  // Gemm
  float alpha = 1.0f, beta = 1.0f;
  bool trans_a = false, trans_b = false;
  // ReduceMean and the attribute form of Squeeze / Unsqueeze (before opset 13)
  std::vector<int64_t> axes;
  bool has_axes = false;
  bool keepdims = true;                     // ReduceMean
  bool allowzero = false;                   // Reshape
  std::vector<int64_t> perm;                // Transpose (empty: reversed)
  int64_t start = 0, end = INT64_MAX;       // Shape (end: the input's rank when not given)
  bool exclusive = false, reverse = false;  // CumSum
  // Constant: its value as a tensor, whichever value_* attribute holds it;
  // ConstantOfShape: the fill value (null: float32 zero).
  std::shared_ptr<const Constant> value;
  // SparqMatMul
  std::string weight;
  bool int8 = false;
  Activation activation = Activation::kNone;
  // SparqAttention (scale, fill, mask); SparqMaskBias (fill)
  float scale = 1.0f, fill = 0.0f;
  MaskKind mask = MaskKind::kNone;
};

// Parses node n's attributes (for a graph of `opset`). Throws Error(kFormatError) for a
// value the op cannot take (an unknown activation, mask kind or precision).
SPARQ_API std::shared_ptr<const NodeAttrs> parse_attrs(const Node& n, int64_t opset);
// The node's parsed attributes; a node built by hand and never resolved is parsed now.
inline std::shared_ptr<const NodeAttrs> attrs_of(const Node& n, int64_t opset) {
  return n.parsed ? n.parsed : parse_attrs(n, opset);
}

}  // namespace sparq

#endif  // SPARQ_ENGINE_OPS_ATTRS_H_
