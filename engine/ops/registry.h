// The op registry (engine/ops/ops.inc): every op sparq imports, stores or runs, with its
// inputs, outputs and attributes. Import (convert) and load validate every node against
// its row before any pass or planner looks at it, so the code after them can rely on an
// op's arity and attribute kinds. DESIGN.md, "The engine, one op in one place".
#ifndef SPARQ_ENGINE_OPS_REGISTRY_H_
#define SPARQ_ENGINE_OPS_REGISTRY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "formats/graph.h"
#include "sparq/export.h"

namespace sparq {

enum class OpId : uint16_t {
#define SPARQ_OP(id, name, domain, inputs, outputs, attrs) id,
#include "engine/ops/ops.inc"
#undef SPARQ_OP
  kCount
};

enum class OpDomain : uint8_t { kOnnx, kSparq };

struct OpPort {
  std::string name;
  bool optional = false;  // may be omitted or ""
  bool variadic = false;  // one or more
  bool refused = false;   // optional in ONNX, refused by sparq when given
};

struct OpAttr {
  std::string name;
  Attribute::Kind kind = Attribute::Kind::kInt;
  bool required = false;
};

struct OpSpec {
  OpId id = OpId::kCount;
  const char* name = "";
  OpDomain domain = OpDomain::kOnnx;
  std::vector<OpPort> inputs, outputs;
  std::vector<OpAttr> attrs;
  size_t min_inputs = 0, max_inputs = 0;  // max SIZE_MAX for variadic
  size_t min_outputs = 0, max_outputs = 0;

  const OpAttr* attr(const std::string& key) const;
};

// A node's op id: resolved once (resolve_ops at import, convert and load; set_op for a
// node a pass creates). A node built by hand and never resolved is looked up by name;
// OpId::kCount for an op the registry does not know.
SPARQ_API OpId lookup_op(const std::string& name);
inline OpId op_of(const Node& n) {
  return n.op_id != Node::kUnresolved ? static_cast<OpId>(n.op_id) : lookup_op(n.op);
}
// Sets a node's op: its stored name and its id together.
SPARQ_API void set_op(Node& n, OpId id);
// Resolves every node's id from its name (after import or deserialization).
SPARQ_API void resolve_ops(Graph& g);

// The row of an op name, or nullptr when sparq does not know it.
SPARQ_API const OpSpec* find_op(const std::string& name);
SPARQ_API const OpSpec& op_spec(OpId id);
// Every registered op name of the given domain, in registry order.
SPARQ_API std::vector<std::string> op_names(OpDomain domain);

// Checks one node against its row: known op (and allowed here: sparq's own ops only in
// a converted model), input and output counts, refused optional outputs, attribute names
// and kinds, required attributes, and the op's own structural rules (its opset form,
// Constant's single value, Dropout's training mode). Throws Error(kUnsupported) for
// what sparq does not run and Error(kFormatError) for a malformed node; `source` names
// the file in the message.
SPARQ_API void validate_node(const Node& n, int64_t opset, bool allow_sparq_ops,
                             const std::string& source);

// validate_node on every node, then the graph's wiring: every input defined before use
// (graph inputs, initializers or an earlier output), no value defined twice, every graph
// output computed, no duplicate graph input names.
SPARQ_API void validate_graph(const Graph& g, bool allow_sparq_ops, const std::string& source);

}  // namespace sparq

#endif  // SPARQ_ENGINE_OPS_REGISTRY_H_
