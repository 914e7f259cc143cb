// Serializing the graph IR into a .sparq file: the structure goes into the file's
// metadata blob, and every constant (initializer or tensor attribute) becomes a tensor
// of the file, so a loaded graph uses them from the mapping without copies.
#ifndef SPARQ_FORMATS_GRAPH_IO_H_
#define SPARQ_FORMATS_GRAPH_IO_H_

#include <memory>
#include <string>

#include "formats/graph.h"
#include "formats/sparq_file.h"

namespace sparq {

// Adds the graph's constants to `w` (as "const/<n>") and returns the metadata bytes.
// The graph must outlive w.write().
SPARQ_API std::string serialize_graph(const Graph& g, SparqFileWriter& w);

// Rebuilds a graph from `file`'s metadata; constants are views into the mapping (kept
// alive by the returned graph). Every count, string and reference is bounds-checked;
// failures are Error(kFormatError).
SPARQ_API Graph deserialize_graph(const std::shared_ptr<const SparqFile>& file);

}  // namespace sparq

#endif  // SPARQ_FORMATS_GRAPH_IO_H_
