// The graph IR: what the ONNX importer produces, what the engine's passes rewrite and
// what the converter will serialize into a .sparq file's metadata. Plain data, no
// behaviour beyond lookups; values are named by strings as in ONNX.
#ifndef SPARQ_FORMATS_GRAPH_H_
#define SPARQ_FORMATS_GRAPH_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sparq/export.h"

namespace sparq {

// Element types of graph values (a superset of the file's DType).
enum class ElemType : uint8_t {
  kF32 = 1,
  kS8 = 2,
  kU8 = 3,
  kI32 = 4,
  kI64 = 5,
  kBool = 6,
  kF64 = 7
};

SPARQ_API const char* elem_type_name(ElemType t);
SPARQ_API size_t elem_type_size(ElemType t);

// Elements of a tensor with this shape (1 for a scalar). Never overflows: a shape with
// a zero dimension has 0 elements whatever the others, and a product beyond int64
// saturates to INT64_MAX (such a shape can never be allocated; the limits refuse it).
inline int64_t shape_elements(const std::vector<int64_t>& shape) {
  for (int64_t d : shape) {
    if (d == 0) return 0;
  }
  int64_t e = 1;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(e, d, &e)) return INT64_MAX;
  }
  return e;
}

// A constant: an initializer, a Constant node's value or a tensor attribute. Data is
// owned, dense, row-major, host-endian.
struct Constant {
  ElemType type = ElemType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  // Set instead of `bytes` for data that lives elsewhere (a mapped .sparq file), kept
  // alive by `owner`.
  const uint8_t* view = nullptr;
  std::shared_ptr<const void> owner;

  const uint8_t* raw() const { return view != nullptr ? view : bytes.data(); }
  int64_t elements() const { return shape_elements(shape); }
  template <class T>
  const T* data() const {
    return reinterpret_cast<const T*>(raw());
  }
};

struct Attribute {
  enum class Kind : uint8_t { kInt, kFloat, kString, kInts, kFloats, kTensor };
  Kind kind = Kind::kInt;
  int64_t i = 0;
  float f = 0.0f;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::shared_ptr<const Constant> t;
};

struct NodeAttrs;  // engine/ops/attrs.h

struct Node {
  // op_id when no op is resolved yet (the engine's OpId, engine/ops/registry.h).
  static constexpr uint16_t kUnresolved = 0xFFFF;

  std::string name;  // ONNX node name, or "<op>_<index>" when the export left it empty
  std::string op;    // ONNX op type (default domain); the name stored in .sparq files
  // The engine's OpId for `op`, resolved once by the op registry at import, convert and
  // load (resolve_ops; set_op for nodes a pass creates); formats/ never reads it.
  uint16_t op_id = kUnresolved;
  // `attrs` parsed into the engine's typed struct (engine/ops/attrs.h) by resolve_ops;
  // null for a node built or rewritten after that (set_op clears it).
  std::shared_ptr<const NodeAttrs> parsed;
  std::vector<std::string> inputs;  // "" = an omitted optional input
  std::vector<std::string> outputs;
  std::map<std::string, Attribute> attrs;

  const Attribute* attr(const std::string& key) const {
    auto it = attrs.find(key);
    return it == attrs.end() ? nullptr : &it->second;
  }
};

// A dimension of a graph input or output: a fixed size, or a named symbolic one
// (batch, sequence).
struct Dim {
  int64_t value = -1;  // -1 when symbolic
  std::string symbol;
};

struct ValueInfo {
  std::string name;
  ElemType type = ElemType::kF32;
  std::vector<Dim> shape;
};

struct Graph {
  int64_t opset = 0;              // default-domain opset the model was exported with
  std::vector<ValueInfo> inputs;  // graph inputs that are not initializers
  std::vector<ValueInfo> outputs;
  std::vector<Node> nodes;  // topologically sorted
  std::map<std::string, std::shared_ptr<const Constant>> initializers;

  const Constant* initializer(const std::string& name) const {
    auto it = initializers.find(name);
    return it == initializers.end() ? nullptr : it->second.get();
  }
};

}  // namespace sparq

#endif  // SPARQ_FORMATS_GRAPH_H_
