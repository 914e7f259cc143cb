// Canonical graphs (DESIGN.md, "Canonical graphs and the fast path"): before any fusion,
// convert rewrites the spellings exporters differ in into one form, so the patterns see
// the same graph whatever exported it. Each rewrite keeps the graph's meaning exactly
// (values are computed by the reference interpreter, bit for bit as at run time).
#ifndef SPARQ_ENGINE_CONVERT_CANONICALIZE_H_
#define SPARQ_ENGINE_CONVERT_CANONICALIZE_H_

#include <cstdint>

#include "formats/graph.h"

namespace sparq {

struct CanonicalizeReport {
  int identities_removed = 0;  // Identity nodes whose consumers now read the source
  int constants_hoisted = 0;   // Constant nodes turned into initializers
  int nodes_folded = 0;        // nodes of constant-only subgraphs evaluated at convert time
  int initializers_dropped = 0;
};

// In order:
//   - Constant nodes become initializers;
//   - Identity nodes are bypassed (a weight shared through Identity, as torch writes
//     deduplicated initializers, is a constant weight again);
//   - every node whose inputs are all constant is evaluated and becomes an initializer
//     (weights behind Transpose or Cast in exports without constant folding), up to
//     `max_fold_bytes` per result, except a DequantizeLinear of an integer matmul weight
//     (engine/convert/quantized.h), which the converter packs as its integers;
//   - initializers nothing reads any more are dropped.
// Graph outputs are never renamed: a node producing one stays.
CanonicalizeReport canonicalize(Graph& g, uint64_t max_fold_bytes = uint64_t{256} << 20);

}  // namespace sparq

#endif  // SPARQ_ENGINE_CONVERT_CANONICALIZE_H_
