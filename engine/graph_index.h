// Who produces and who reads each value of a graph: built once per pass over the graph
// (the converter's patterns, the planner, the fast-path report), the one place that
// indexes a graph's wiring.
#ifndef SPARQ_ENGINE_GRAPH_INDEX_H_
#define SPARQ_ENGINE_GRAPH_INDEX_H_

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "formats/graph.h"

namespace sparq {

class GraphIndex {
 public:
  using Use = std::pair<size_t, size_t>;  // (node index, input index)

  // Nodes for which skip(i) is true are left out (patterns that have removed them).
  template <class Skip>
  GraphIndex(const Graph& g, Skip skip) {
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (skip(i)) continue;
      const Node& n = g.nodes[i];
      for (size_t j = 0; j < n.inputs.size(); ++j) {
        if (!n.inputs[j].empty()) uses_[n.inputs[j]].push_back({i, j});
      }
      for (const std::string& o : n.outputs) {
        if (!o.empty()) producer_[o] = i;
      }
    }
    for (const ValueInfo& v : g.outputs) outputs_.insert(v.name);
  }
  explicit GraphIndex(const Graph& g) : GraphIndex(g, [](size_t) { return false; }) {}

  // The node that produces v; false for graph inputs, initializers and unknown names.
  bool producer(const std::string& v, size_t* node) const {
    auto it = producer_.find(v);
    if (it == producer_.end()) return false;
    *node = it->second;
    return true;
  }
  // Every read of v, in node order (a node reading v twice appears twice).
  const std::vector<Use>& uses(const std::string& v) const {
    static const std::vector<Use> none;
    auto it = uses_.find(v);
    return it == uses_.end() ? none : it->second;
  }
  size_t use_count(const std::string& v) const { return uses(v).size(); }
  bool is_output(const std::string& v) const { return outputs_.count(v) != 0; }
  // The one read of v, when v has exactly one and is not a graph output.
  bool only_use(const std::string& v, Use* use) const {
    const auto& u = uses(v);
    if (u.size() != 1 || is_output(v)) return false;
    *use = u[0];
    return true;
  }

 private:
  std::map<std::string, size_t> producer_;
  std::map<std::string, std::vector<Use>> uses_;
  std::set<std::string> outputs_;
};

}  // namespace sparq

#endif  // SPARQ_ENGINE_GRAPH_INDEX_H_
