// Converting an imported graph into a .sparq file, loading it, and running it.
//
// This is the first, generic version of the executor: the graph runs through the
// reference interpreter, except that every MatMul with a constant 2-D weight becomes a
// `SparqMatMul` node that runs sparq's SpMM (or dense) kernels on packed weights in
// fp32 or int8 (dynamic per-token activation quantization). Fusions, layouts and a
// static memory plan come next (docs/architecture.md).
#ifndef SPARQ_ENGINE_MODEL_H_
#define SPARQ_ENGINE_MODEL_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/fast_path.h"
#include "engine/interpreter.h"
#include "engine/parallel.h"
#include "formats/aligned_buffer.h"
#include "formats/bsr.h"
#include "formats/graph.h"
#include "formats/sparq_file.h"
#include "sparq/export.h"

namespace sparq {

struct ConvertOptions {
  std::string precision = "fp32";  // fp32 | int8: for float weights
  // Whether the caller chose `precision` (convert --precision). The matmuls of a model
  // that arrives quantized keep their int8 weights unless fp32 is chosen explicitly, which
  // dequantizes them (docs/quantized-models.md).
  bool precision_given = false;
  std::string block = "auto";  // auto | 4x1 | 1x4 | 1x1
  double prune = -1.0;         // < 0: no pruning; else sparsity in [0, 1)
  int threads = 0;             // weights packed in parallel; 0 = every core
  bool fuse = true;            // false (--no-fuse): no fusion passes, op by op
  // true (--require-fused): refuse to write a file in which an encoder matmul, attention,
  // LayerNorm or GELU is not fused (engine/fast_path.h), naming each.
  bool require_fused = false;
};

struct LayerReport {
  std::string name;  // the weight's initializer name
  int64_t k = 0, n = 0;
  double sparsity = 0;     // fraction of zero weights after pruning
  std::string block;       // detected or chosen pattern
  bool sparse = true;      // false: runs through the dense path
  uint64_t bytes = 0;      // packed bytes
  std::string precision;   // int8 | fp32
  bool quantized = false;  // the weight arrived quantized (engine/convert/quantized.h)
  bool exact = false;      // ... and its integers and scales are kept exactly
};

// At or below this fraction of nonzero weights a layer runs sparse, per precision and
// block pattern (the kernel family it selects); compiled in, measured in
// docs/performance.md. Dense layers are packed 4 rows at a time whatever their pattern.
SPARQ_API double sparse_break_even_density(bool int8, BlockShape block);

// Detects the block pattern the nonzeros of W^T[N][K] follow: 4x1 or 1x4 when every
// nonzero lies in such blocks with almost no zero-filled slots, else 1x1.
SPARQ_API BlockShape detect_block(const float* wt, int64_t n, int64_t k);

// Converts `g` (from import_onnx) and writes `out_path` atomically. `progress` is called
// with (done, total) weights; `fast_path` receives what stays off the fast path;
// `notes` what the conversion changed that the caller should know (a quantized weight
// requantized or dequantized), each one line; when null they go to stderr.
SPARQ_API std::vector<LayerReport> convert_graph(
    Graph g, const std::string& out_path, const ConvertOptions& opts,
    const std::function<void(size_t, size_t)>& progress = nullptr,
    FastPathReport* fast_path = nullptr, std::vector<std::string>* notes = nullptr);

class SPARQ_API Model {
 public:
  static std::shared_ptr<const Model> load(const std::string& path);
  const Graph& graph() const { return graph_; }
  const SparqFile& file() const { return *file_; }
  const PackedWeights& packed(const std::string& name) const;
  std::string path() const { return path_; }

 private:
  std::shared_ptr<const SparqFile> file_;
  Graph graph_;
  struct Loaded {
    PackedWeights w;
    AlignedBuffer quad_index;   // derived at load (quad_index_of)
    PairSafeWeights pair_safe;  // derived at load where the kernels read it (pair_safe_of)
  };
  std::map<std::string, Loaded> packed_;
  std::string path_;
};

class SPARQ_API Session {
 public:
  Session(std::shared_ptr<const Model> model, int threads,
          const RuntimeOptions& options = RuntimeOptions::from_environment());
  // Applies the input rules of DESIGN.md (input_ids required, attention_mask and
  // token_type_ids defaulted, int32 accepted, names, ranks and shapes checked, ids in
  // range) and runs the graph. Throws Error(kInvalidArgument) on bad input.
  // `peak_bytes` (optional) receives the bytes of intermediate values the run held at
  // its peak.
  std::map<std::string, Value> run(std::map<std::string, Value> inputs,
                                   size_t* peak_bytes = nullptr);
  int threads() const { return pool_.threads(); }
  // Runs the converted graph op by op through the interpreter instead of the planned
  // executor (also: RuntimeOptions::executor, SPARQ_EXECUTOR=interpret).
  void use_interpreter(bool on) { interpret_only_ = on; }
  void set_plan_options(const PlanOptions& o) { executor_.set_options(o); }
  // The planned executor's summary of the last run's plan.
  const PlanSummary& plan_summary() const { return summary_; }

 private:
  Value sparq_matmul(const Node& n, const std::vector<Value>& in);
  std::shared_ptr<const Model> model_;
  RuntimeOptions options_;
  ThreadPool pool_;
  AlignedBuffer scratch_x_, scratch_xt_, scratch_y_;
  Executor executor_;
  PlanSummary summary_;
  bool interpret_only_ = false;
};

}  // namespace sparq

#endif  // SPARQ_ENGINE_MODEL_H_
