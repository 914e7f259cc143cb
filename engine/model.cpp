#include "engine/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>

#include "engine/convert/canonicalize.h"
#include "engine/convert/quantized.h"
#include "engine/layout.h"
#include "engine/limits.h"
#include "engine/ops/attrs.h"
#include "engine/ops/registry.h"
#include "engine/parallel.h"
#include "engine/passes.h"
#include "formats/aligned_buffer.h"
#include "formats/error.h"
#include "formats/graph_io.h"
#include "kernels/fm/fm.h"

namespace sparq {
namespace {

int64_t count_nonzero(const float* w, int64_t count) {
  int64_t nz = 0;
  for (int64_t i = 0; i < count; ++i) nz += w[i] != 0.0f;
  return nz;
}

// Slots a block shape needs to hold every nonzero (nonzero blocks x block size).
int64_t block_slots(const float* wt, int64_t n, int64_t k, BlockShape b) {
  const BsrMatrix m = bsr_from_dense(wt, n, k, b);
  return m.nnz_blocks() * b.out * b.in;
}

std::string weight_name(const Node& n) { return n.inputs.size() > 1 ? n.inputs[1] : n.name; }

// Dropout in inference (validation refused training mode) is the identity; its optional
// mask is all true. Lowered at convert time to Identity, and Shape + ConstantOfShape for
// a requested mask, so the planner never sees a two-output node.
void lower_inference_dropout(Graph& g) {
  std::vector<Node> out;
  out.reserve(g.nodes.size());
  for (Node& n : g.nodes) {
    if (op_of(n) != OpId::kDropout) {
      out.push_back(std::move(n));
      continue;
    }
    Node id;
    id.name = n.name;
    set_op(id, OpId::kIdentity);
    id.inputs = {n.inputs[0]};
    id.outputs = {n.outputs[0]};
    out.push_back(id);
    if (n.outputs.size() > 1 && !n.outputs[1].empty()) {
      Node shape;
      shape.name = n.name + "/mask_shape";
      set_op(shape, OpId::kShape);
      shape.inputs = {n.inputs[0]};
      shape.outputs = {n.outputs[1] + "/shape"};
      Node fill;
      fill.name = n.name + "/mask";
      set_op(fill, OpId::kConstantOfShape);
      fill.inputs = shape.outputs;
      fill.outputs = {n.outputs[1]};
      auto one = std::make_shared<Constant>();
      one->type = ElemType::kBool;
      one->shape = {1};
      one->bytes = {1};
      Attribute v;
      v.kind = Attribute::Kind::kTensor;
      v.t = one;
      fill.attrs["value"] = v;
      out.push_back(std::move(shape));
      out.push_back(std::move(fill));
    }
  }
  g.nodes = std::move(out);
}

}  // namespace

double sparse_break_even_density(bool int8, BlockShape block) {
  // The density at and below which a matrix is packed sparse, per kernel family: the
  // 4-row kernels (4x1 and any out % 4 == 0 block), the quad kernel (1x4, in % 4 == 0) and
  // the one-row kernel (1x1 and the rest). Measured with `sparq kernel-bench` (M 128, 1
  // thread, K x N = 768x768, 768x3072, 3072x768; docs/performance.md, session 6) against
  // sparq's own dense path, which every dense matrix takes (packed 4 rows at a time):
  // int8 4x1 still wins at density 0.9 (0.73 against 0.87 ms at 768x3072), 1x4 breaks
  // even at about 0.4 and 1x1 at about 0.36; fp32 4x1 at about 0.7, 1x4 at 0.25, 1x1 at
  // 0.32. Compiled in, so the same input and flags give the same file on every machine.
  const bool rows4 = block.out % 4 == 0;
  const bool quads = !rows4 && block.in % 4 == 0;
  if (int8) return rows4 ? 0.90 : quads ? 0.40 : 0.36;
  return rows4 ? 0.70 : quads ? 0.25 : 0.32;
}

BlockShape detect_block(const float* wt, int64_t n, int64_t k) {
  const int64_t nz = count_nonzero(wt, n * k);
  if (nz == 0) return kBlock4x1;
  // A pattern fits when it holds the nonzeros with at most 2% zero-filled slots.
  auto fits = [&](BlockShape b) { return block_slots(wt, n, k, b) * 100 <= nz * 102; };
  if (fits(kBlock4x1)) return kBlock4x1;
  if (fits(kBlock1x4)) return kBlock1x4;
  return kBlock1x1;
}

std::vector<LayerReport> convert_graph(Graph g, const std::string& out_path,
                                       const ConvertOptions& opts,
                                       const std::function<void(size_t, size_t)>& progress,
                                       FastPathReport* fast_path, std::vector<std::string>* notes) {
  const bool int8 = opts.precision == "int8";
  if (!int8 && opts.precision != "fp32") {
    throw Error(Status::kInvalidArgument,
                "precision must be fp32 or int8, not '" + opts.precision + "'");
  }
  BlockShape requested = kBlock4x1;
  const bool auto_block = opts.block == "auto";
  if (!auto_block && !(opts.block == "4x1" || opts.block == "1x4" || opts.block == "1x1")) {
    throw Error(Status::kInvalidArgument,
                "block must be auto, 4x1, 1x4 or 1x1, not '" + opts.block + "'");
  }
  if (!auto_block) parse_block_shape(opts.block, &requested);
  if (opts.prune >= 1.0) throw Error(Status::kInvalidArgument, "prune sparsity must be in [0, 1)");
  validate_graph(g, /*allow_sparq_ops=*/false, "graph");
  resolve_ops(g);
  lower_inference_dropout(g);
  // A quantized model's scales and zero points are checked whatever the flags.
  check_quantized_params(g);
  // One canonical spelling before the patterns (--no-fuse keeps the exported graph, and
  // a quantized model's matmuls op by op with their exact ONNX semantics).
  QuantizedMatMuls quantized;
  if (opts.fuse) {
    canonicalize(g);
    quantized = fuse_quantized_matmuls(g);
  }
  auto note = [&](const std::string& s) {
    if (notes != nullptr) notes->push_back(s);
    else std::fprintf(stderr, "sparq: note: %s\n", s.c_str());
  };
  // A quantized weight stays int8 unless fp32 is chosen explicitly (then dequantized).
  const bool dequantize = opts.precision_given && !int8;
  if (quantized.fused() > 0 && opts.prune >= 0) {
    note(
        "--prune on a quantized model: the smallest blocks (by their dequantized values) "
        "are set to the weight's zero point");
  }
  if (quantized.fused() > 0 && dequantize) {
    note("--precision fp32 on a quantized model: its " + std::to_string(quantized.weights.size()) +
         " quantized matmul weights are dequantized to float32 (scale x (q - zero point)) and "
         "run in fp32; without --precision they stay int8");
  } else {
    // One line per reason: how many, and the first nodes.
    std::map<std::string, std::vector<std::string>> requantized;
    for (const auto& kv : quantized.weights) {
      if (!kv.second.exact) requantized[kv.second.note].push_back(kv.second.node);
    }
    for (const auto& kv : requantized) {
      std::string names;
      for (size_t i = 0; i < kv.second.size() && i < 3; ++i)
        names += std::string(i ? ", " : "") + "'" + kv.second[i] + "'";
      if (kv.second.size() > 3) names += ", ...";
      note(std::to_string(kv.second.size()) + " quantized matmuls (" + names + "): " + kv.first +
           ": their weights are dequantized and requantized symmetric per output channel "
           "(sparq's int8 scheme), not kept exactly; zero weights stay zero");
    }
  }

  // Uses of each initializer, to drop the ones only a converted MatMul read.
  std::map<std::string, int> uses;
  for (const Node& n : g.nodes)
    for (const std::string& s : n.inputs) ++uses[s];
  std::vector<size_t> targets;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (op_of(n) == OpId::kGemm) {
      // Gemm(A, B constant, C constant [N]) with alpha = beta = 1 and no transA: the
      // classifier and pooler dense layers. C becomes the SparqMatMul bias.
      auto attr_i = [&](const char* k, int64_t d) {
        const Attribute* a = n.attr(k);
        return a ? a->i : d;
      };
      auto attr_f = [&](const char* k, float d) {
        const Attribute* a = n.attr(k);
        return a ? a->f : d;
      };
      if (n.inputs.size() < 2 || attr_i("transA", 0) != 0 || attr_f("alpha", 1.0f) != 1.0f ||
          attr_f("beta", 1.0f) != 1.0f || g.initializer(n.inputs[0])) {
        continue;
      }
      const Constant* w = g.initializer(n.inputs[1]);
      const bool exact_int8 = w != nullptr && w->type == ElemType::kS8 &&
                              quantized.weights.count(n.inputs[1]) != 0 &&
                              quantized.weights.at(n.inputs[1]).exact;
      if (w == nullptr || (w->type != ElemType::kF32 && !exact_int8) || w->shape.size() != 2)
        continue;
      const int64_t nn = attr_i("transB", 0) ? w->shape[0] : w->shape[1];
      if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
        const Constant* c = g.initializer(n.inputs[2]);
        if (c == nullptr || c->type != ElemType::kF32 || c->elements() != nn ||
            c->shape.size() > 2 || (c->shape.size() == 2 && c->shape[0] != 1)) {
          continue;
        }
      }
      targets.push_back(i);
      continue;
    }
    if (op_of(n) != OpId::kMatMul || n.inputs.size() != 2) continue;
    const Constant* w = g.initializer(n.inputs[1]);
    const bool exact_int8 = w != nullptr && w->type == ElemType::kS8 &&
                            quantized.weights.count(n.inputs[1]) != 0 &&
                            quantized.weights.at(n.inputs[1]).exact;
    if (w == nullptr || (w->type != ElemType::kF32 && !exact_int8) || w->shape.size() != 2 ||
        g.initializer(n.inputs[0]))
      continue;
    targets.push_back(i);
  }

  // Each weight is transposed, pruned, measured, quantized and packed on its own, in
  // parallel on opts.threads; the file and the graph are then written
  // in weight order, so the output does not depend on the thread count.
  struct Packed {
    std::unique_ptr<PackedMatrix> matrix;
    int64_t k = 0, n = 0;
    double density = 0;
    BlockShape block = kBlock4x1;
    bool sparse = true;
    bool int8 = false;
    const QuantizedWeight* quantized = nullptr;
  };
  std::vector<Packed> results(targets.size());
  std::mutex progress_mu;
  size_t finished = 0;
  auto pack_one = [&](size_t t) {
    const Node& n = g.nodes[targets[t]];
    const Constant& w = *g.initializer(n.inputs[1]);
    const Attribute* tb = n.attr("transB");
    const bool trans_b =
        op_of(n) == OpId::kGemm && tb != nullptr && tb->i != 0;  // B is already [N][K]
    const int64_t k = trans_b ? w.shape[1] : w.shape[0], nn = trans_b ? w.shape[0] : w.shape[1];
    Packed& r = results[t];
    r.k = k;
    r.n = nn;
    auto qit = quantized.weights.find(n.inputs[1]);
    r.quantized = qit != quantized.weights.end() ? &qit->second : nullptr;
    r.int8 = r.quantized != nullptr ? !dequantize : int8;
    if (k == 0 || nn == 0) return;
    std::vector<float> wt(static_cast<size_t>(nn * k));
    // A quantized weight's integers q - zp, W^T[N][K] (MatMul's W[K, N] transposed).
    std::vector<int8_t> s8;
    if (w.type == ElemType::kS8) {
      s8.resize(wt.size());
      const int8_t* src = w.data<int8_t>();
      for (int64_t kk = 0; kk < k; ++kk)
        for (int64_t c = 0; c < nn; ++c) s8[static_cast<size_t>(c * k + kk)] = src[kk * nn + c];
      // Dequantized (exactly zero where q equals the zero point), for pruning, the block
      // pattern and fp32.
      const std::vector<float>& sc = r.quantized->scales;
      for (int64_t c = 0; c < nn; ++c)
        for (int64_t kk = 0; kk < k; ++kk)
          wt[static_cast<size_t>(c * k + kk)] =
              static_cast<float>(s8[static_cast<size_t>(c * k + kk)]) * sc[static_cast<size_t>(c)];
    } else {
      const float* src = w.data<float>();
      if (trans_b) {
        std::copy(src, src + nn * k, wt.begin());
      } else {
        transpose_tiled(src, k, nn, nn, wt.data(), k);
      }
    }
    if (opts.prune >= 0) prune_blocks(wt.data(), nn, k, requested, opts.prune);
    r.block = auto_block ? detect_block(wt.data(), nn, k) : requested;
    r.density = static_cast<double>(count_nonzero(wt.data(), nn * k)) / static_cast<double>(nn * k);
    r.sparse = r.density <= sparse_break_even_density(r.int8, r.block);
    // A dense matrix is packed 4 rows at a time whatever its pattern: the 4-row dense
    // kernels are 2.2-2.8x faster than the one-row ones (kernel-bench, session 6).
    const BlockShape pack_block = r.sparse ? r.block : kBlock4x1;
    if (r.int8 && !s8.empty()) {
      // The model's own integers and scales; a pruned weight becomes the zero point.
      if (k > kMaxInt8K) {
        throw Error(Status::kUnsupported, "weight '" + weight_name(n) + "' has K = " +
                                              std::to_string(k) + ", above the int8 limit");
      }
      for (size_t i = 0; i < s8.size(); ++i) {
        if (wt[i] == 0.0f) s8[i] = 0;
      }
      r.matrix = std::make_unique<PackedMatrix>(PackedMatrix::pack_s8(
          s8.data(), r.quantized->scales.data(), nn, k, pack_block, !r.sparse));
    } else if (r.int8) {
      if (k > kMaxInt8K) {
        throw Error(Status::kUnsupported, "weight '" + weight_name(n) + "' has K = " +
                                              std::to_string(k) + ", above the int8 limit");
      }
      std::vector<int8_t> q(wt.size());
      std::vector<float> scales(static_cast<size_t>(nn));
      quantize_per_channel(wt.data(), nn, k, q.data(), scales.data());
      r.matrix = std::make_unique<PackedMatrix>(
          PackedMatrix::pack_s8(q.data(), scales.data(), nn, k, pack_block, !r.sparse));
    } else {
      r.matrix = std::make_unique<PackedMatrix>(
          PackedMatrix::pack_f32(wt.data(), nn, k, pack_block, !r.sparse));
    }
    if (progress) {
      std::lock_guard<std::mutex> lock(progress_mu);
      progress(++finished, targets.size());
    }
  };
  // On the session pool type (a oneTBB arena; SPARQ_POOL=team under ThreadSanitizer,
  // which cannot see inside Debian's uninstrumented libtbb). The first error (e.g. a K
  // above the int8 limit) is rethrown here, on the calling thread.
  ThreadPool pool(opts.threads);
  std::mutex error_mu;
  std::exception_ptr error;
  pool.parallel_for(static_cast<int64_t>(targets.size()), [&](int64_t t) {
    try {
      pack_one(static_cast<size_t>(t));
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);

  SparqFileWriter writer;
  std::vector<LayerReport> report;
  for (size_t t = 0; t < targets.size(); ++t) {
    Node& n = g.nodes[targets[t]];
    const Packed& pr = results[t];  // its matrix stays alive until write()
    if (!pr.matrix) continue;       // an empty weight stays a MatMul
    const int64_t nn = pr.n;
    const std::string bias =
        op_of(n) == OpId::kGemm && n.inputs.size() > 2 ? n.inputs[2] : std::string();
    const std::string pname = "packed/" + std::to_string(t);
    add_packed(writer, pname, *pr.matrix);
    LayerReport r;
    r.name = weight_name(n);
    r.k = pr.k;
    r.n = nn;
    r.sparsity = 1.0 - pr.density;
    r.block = block_shape_name(pr.block);
    r.sparse = pr.sparse;
    r.bytes = pr.matrix->bytes();
    r.precision = pr.int8 ? "int8" : "fp32";
    r.quantized = pr.quantized != nullptr;
    r.exact = pr.quantized != nullptr && pr.quantized->exact && pr.int8;
    if (pr.quantized != nullptr) r.name = pr.quantized->node;  // the quantized matmul
    report.push_back(r);
    if (--uses[n.inputs[1]] == 0) g.initializers.erase(n.inputs[1]);
    Attribute wa, pa, ka, na;
    wa.kind = pa.kind = Attribute::Kind::kString;
    wa.s = pname;
    pa.s = pr.int8 ? "int8" : "fp32";
    set_op(n, OpId::kSparqMatMul);
    n.inputs.resize(1);
    if (!bias.empty()) {  // a [1, N] bias is stored flat
      auto flat = std::make_shared<Constant>(*g.initializers.at(bias));
      flat->shape = {nn};
      const std::string bname = bias + "/flat";
      g.initializers[bname] = flat;
      n.inputs.push_back(bname);
      if (--uses[bias] == 0) g.initializers.erase(bias);
    }
    n.attrs = {{"weight", wa}, {"precision", pa}};
  }
  // fuse = false (convert --no-fuse) keeps the graph op by op (debugging, A/B runs).
  if (opts.fuse) optimize_graph(g);
  FastPathReport fp = fast_path_report(g);
  fp.quantized_attention_matmuls = quantized.attention;
  if (fast_path) *fast_path = fp;
  if (opts.require_fused && !fp.fused()) {
    throw Error(Status::kUnsupported, "--require-fused: " + std::to_string(fp.off.size()) +
                                          " encoder pieces are not fused: " + fp.summary() +
                                          " (nothing written)");
  }
  writer.set_metadata(serialize_graph(g, writer));
  writer.write(out_path);
  return report;
}

std::shared_ptr<const Model> Model::load(const std::string& path) {
  auto m = std::shared_ptr<Model>(new Model());
  m->path_ = path;
  m->file_ = SparqFile::open(path);
  m->graph_ = deserialize_graph(m->file_);
  // A stored graph is untrusted input too: every node against its registry row.
  validate_graph(m->graph_, /*allow_sparq_ops=*/true, path);
  resolve_ops(m->graph_);
  for (const Node& n : m->graph_.nodes) {
    if (op_of(n) != OpId::kSparqMatMul) continue;
    const Attribute* w = n.attr("weight");
    const Attribute* p = n.attr("precision");
    if (w == nullptr || p == nullptr || w->kind != Attribute::Kind::kString || n.inputs.empty() ||
        n.inputs.size() > 2) {
      throw Error(Status::kFormatError,
                  path + ": node '" + n.name + "' is a malformed SparqMatMul");
    }
    if (!m->packed_.count(w->s)) {
      Loaded& l = m->packed_[w->s];
      l.w = read_packed(*m->file_, w->s);
      l.quad_index = quad_index_of(l.w);
      if (l.quad_index.size() > 0) l.w.quad_index = l.quad_index.as<uint16_t>();
      if (spmm_kernels().reads_pair_safe()) {
        l.pair_safe = pair_safe_of(l.w, spmm_kernels().u8s8_r4_sign_paired);
        l.pair_safe.attach(&l.w);
      }
    }
    const PackedWeights& pw = m->packed_[w->s].w;
    if ((p->s == "int8") != (pw.type == WeightType::kS8)) {
      throw Error(Status::kFormatError,
                  path + ": node '" + n.name + "' precision does not match its weights");
    }
  }
  return m;
}

const PackedWeights& Model::packed(const std::string& name) const {
  auto it = packed_.find(name);
  if (it == packed_.end()) throw Error(Status::kFormatError, "no packed weight '" + name + "'");
  return it->second.w;
}

Session::Session(std::shared_ptr<const Model> model, int threads, const RuntimeOptions& options)
    : model_(std::move(model)),
      options_(options),
      pool_(threads, options.pool),
      executor_(model_, &pool_, options) {}

Value Session::sparq_matmul(const Node& n, const std::vector<Value>& in) {
  const auto at = attrs_of(n, model_->graph().opset);
  const PackedWeights& w = model_->packed(at->weight);
  const Value& xv = in.at(0);
  if (!xv || xv->type != ElemType::kF32 || xv->shape.empty() || xv->shape.back() != w.k) {
    throw Error(Status::kInvalidArgument,
                "node '" + n.name + "': input does not have K = " + std::to_string(w.k));
  }
  const int64_t k = w.k, nn = w.n, m = xv->elements() / k;
  const float* x = xv->data<float>();
  auto y = std::make_shared<Constant>();
  y->type = ElemType::kF32;
  y->shape = xv->shape;
  y->shape.back() = nn;
  y->bytes.resize(static_cast<size_t>(m * nn) * 4);
  if (m == 0) return y;
  // Layout scratch is the session's, grown once and reused by every call (no page
  // faults or zeroing per call).
  auto scratch = [](AlignedBuffer& b, size_t bytes) -> AlignedBuffer& {
    if (b.size() < bytes) b.resize(bytes);
    return b;
  };
  AlignedBuffer& yt = scratch(scratch_y_, static_cast<size_t>(nn * m) * 4);
  Epilogue ep;
  ep.out_f32 = yt.as<float>();
  ep.ld_out = m;
  if (in.size() > 1 && in[1]) {
    if (in[1]->type != ElemType::kF32 || in[1]->elements() != nn) {
      throw Error(Status::kFormatError,
                  "node '" + n.name + "': bias must be float32 [" + std::to_string(nn) + "]");
    }
    ep.bias = in[1]->data<float>();
  }
  ep.activation = at->activation;
  const SpmmKernels& kernels = spmm_kernels();
  if (w.type == WeightType::kS8) {
    // Dynamic per-token quantization (symmetric, shifted to u8 with zero point 128) by
    // the same kernel the planned path uses (kernels/fm: fm_kernels().quantize), on the
    // activations transposed to feature-major [K][M].
    AlignedBuffer& xt = scratch(scratch_xt_, static_cast<size_t>(k * m) * 4);
    transpose_tiled(x, m, k, k, xt.as<float>(), m);
    AlignedBuffer& xq = scratch(scratch_x_, static_cast<size_t>(k * m));
    std::vector<float> scale(static_cast<size_t>(m));
    const FmKernels& fm = fm_kernels();
    const int64_t parts =
        std::max<int64_t>(1, std::min<int64_t>(pool_.threads(), m * k / (int64_t{1} << 15)));
    pool_.parallel_for(parts, [&](int64_t p) {
      fm.quantize(xt.as<float>(), m, k, m * p / parts, m * (p + 1) / parts, nullptr,
                  xq.as<uint8_t>(), m, scale.data());
    });
    ep.channel_scale = w.scales;
    ep.token_scale = scale.data();
    spmm_u8s8(kernels, &pool_, w, xq.as<uint8_t>(), m, m, ep);
  } else {
    AlignedBuffer& xt = scratch(scratch_x_, static_cast<size_t>(k * m) * 4);
    transpose_tiled(x, m, k, k, xt.as<float>(), m);
    spmm_f32(kernels, &pool_, w, xt.as<float>(), m, m, ep);
  }
  transpose_tiled(yt.as<float>(), nn, m, m, reinterpret_cast<float*>(y->bytes.data()), nn);
  return y;
}

std::map<std::string, Value> Session::run(std::map<std::string, Value> inputs, size_t* peak_bytes) {
  const Graph& g = model_->graph();
  auto bad = [](const std::string& what) { throw Error(Status::kInvalidArgument, what); };
  std::set<std::string> known;
  std::string names;
  for (const ValueInfo& v : g.inputs) {
    known.insert(v.name);
    names += (names.empty() ? "" : ", ") + v.name;
  }
  for (const auto& kv : inputs) {
    if (!known.count(kv.first))
      bad("unknown input '" + kv.first + "' (the model's inputs: " + names + ")");
    if (!kv.second) bad("input '" + kv.first + "' has no data");
  }
  const ValueInfo* ids_info = nullptr;
  for (const ValueInfo& v : g.inputs) {
    if (v.name == "input_ids") ids_info = &v;
  }
  std::vector<int64_t> ref_shape;
  if (ids_info != nullptr) {
    if (!inputs.count("input_ids")) bad("missing required input 'input_ids'");
  }
  // Integer inputs: int64 or int32 (widened), rank 2, all of one [batch, sequence] shape.
  for (const ValueInfo& v : g.inputs) {
    auto it = inputs.find(v.name);
    if (it == inputs.end()) continue;
    const Value held = it->second;  // keeps `c` alive when the widening below replaces it
    const Constant& c = *held;
    if (v.type == ElemType::kI64 || v.type == ElemType::kI32) {
      if (c.type != ElemType::kI64 && c.type != ElemType::kI32) {
        bad("input '" + v.name + "' must be int64 or int32, got " + elem_type_name(c.type));
      }
      // The caller's int32 or int64 becomes the type the graph declares (int32 ids and
      // masks are accepted for int64 inputs, and the other way round within range).
      if (c.type == ElemType::kI32 && v.type == ElemType::kI64) {
        auto w = std::make_shared<Constant>();
        w->type = ElemType::kI64;
        w->shape = c.shape;
        w->bytes.resize(static_cast<size_t>(c.elements()) * 8);
        for (int64_t i = 0; i < c.elements(); ++i)
          reinterpret_cast<int64_t*>(w->bytes.data())[i] = c.data<int32_t>()[i];
        it->second = w;
      } else if (c.type == ElemType::kI64 && v.type == ElemType::kI32) {
        auto w = std::make_shared<Constant>();
        w->type = ElemType::kI32;
        w->shape = c.shape;
        w->bytes.resize(static_cast<size_t>(c.elements()) * 4);
        for (int64_t i = 0; i < c.elements(); ++i) {
          const int64_t x = c.data<int64_t>()[i];
          if (x < INT32_MIN || x > INT32_MAX)
            bad("input '" + v.name + "' is int32 and " + std::to_string(x) + " does not fit");
          reinterpret_cast<int32_t*>(w->bytes.data())[i] = static_cast<int32_t>(x);
        }
        it->second = w;
      }
    } else if (c.type != v.type) {
      bad("input '" + v.name + "' must be " + std::string(elem_type_name(v.type)) + ", got " +
          elem_type_name(c.type));
    }
    if (!v.shape.empty() && c.shape.size() != v.shape.size()) {
      bad("input '" + v.name + "' must have rank " + std::to_string(v.shape.size()) + ", got " +
          std::to_string(c.shape.size()));
    }
    for (size_t d = 0; d < v.shape.size() && d < c.shape.size(); ++d) {
      if (v.shape[d].value >= 0 && v.shape[d].value != c.shape[d]) {
        bad("input '" + v.name + "' dimension " + std::to_string(d) + " must be " +
            std::to_string(v.shape[d].value));
      }
    }
    // (`c` may be gone: widening replaced the map's value, possibly its only owner.)
    if (v.name == "input_ids") ref_shape = it->second->shape;
  }
  if (!ref_shape.empty()) {
    uint64_t tokens = 1;
    for (int64_t d : ref_shape) {
      if (d < 0 || __builtin_mul_overflow(tokens, static_cast<uint64_t>(d), &tokens))
        tokens = UINT64_MAX;
    }
    if (tokens > static_cast<uint64_t>(limits().max_tokens)) {
      bad("input_ids has " +
          (tokens == UINT64_MAX ? std::string("too many") : std::to_string(tokens)) +
          " tokens (batch x sequence), above the limit of " + std::to_string(limits().max_tokens) +
          " per run (SPARQ_MAX_TOKENS)");
    }
  }
  for (const auto& kv : inputs) {
    if (!ref_shape.empty() && kv.second->shape != ref_shape) {
      bad("input '" + kv.first + "' has a different [batch, sequence] shape than input_ids");
    }
  }
  // Defaults: attention_mask all ones, token_type_ids zeros.
  for (const ValueInfo& v : g.inputs) {
    if (inputs.count(v.name)) continue;
    if ((v.name == "attention_mask" || v.name == "token_type_ids") && !ref_shape.empty()) {
      auto c = std::make_shared<Constant>();
      c->type = v.type;
      c->shape = ref_shape;
      c->bytes.assign(static_cast<size_t>(c->elements()) * elem_type_size(v.type), 0);
      if (v.name == "attention_mask") {
        for (int64_t i = 0; i < c->elements(); ++i) {
          if (v.type == ElemType::kI64) reinterpret_cast<int64_t*>(c->bytes.data())[i] = 1;
          else if (v.type == ElemType::kI32) reinterpret_cast<int32_t*>(c->bytes.data())[i] = 1;
          else if (v.type == ElemType::kF32) reinterpret_cast<float*>(c->bytes.data())[i] = 1.0f;
          else if (v.type == ElemType::kF64) reinterpret_cast<double*>(c->bytes.data())[i] = 1.0;
          else c->bytes[static_cast<size_t>(i)] = 1;  // one-byte types
        }
      }
      inputs[v.name] = c;
      continue;
    }
    bad("missing required input '" + v.name + "'");
  }
  // Index ranges: every graph input gathered directly from a constant table.
  for (const Node& n : g.nodes) {
    if (op_of(n) != OpId::kGather || n.inputs.size() < 2) continue;
    auto it = inputs.find(n.inputs[1]);
    const Constant* table = g.initializer(n.inputs[0]);
    if (it == inputs.end() || table == nullptr || table->shape.empty()) continue;
    const int64_t rows = table->shape[0];
    const Constant& ids = *it->second;
    if (ids.type != ElemType::kI64 && ids.type != ElemType::kI32) {
      bad("input '" + n.inputs[1] + "' indexes '" + n.inputs[0] + "' but is " +
          elem_type_name(ids.type) + ", not an integer tensor");
    }
    for (int64_t i = 0; i < ids.elements(); ++i) {
      const int64_t id =
          ids.type == ElemType::kI64 ? ids.data<int64_t>()[i] : ids.data<int32_t>()[i];
      if (id < 0 || id >= rows) {
        const int64_t seq = ids.shape.size() == 2 ? ids.shape[1] : 1;
        bad("input '" + n.inputs[1] + "': value " + std::to_string(id) + " at [" +
            std::to_string(i / seq) + ", " + std::to_string(i % seq) + "] is outside [0, " +
            std::to_string(rows) + ") of '" + n.inputs[0] + "'");
      }
    }
  }
  // Sequence length against a position table, when the model has one.
  if (ref_shape.size() == 2) {
    for (const auto& kv : g.initializers) {
      if (kv.first.find("position_embeddings") != std::string::npos && !kv.second->shape.empty() &&
          ref_shape[1] > kv.second->shape[0]) {
        bad("sequence length " + std::to_string(ref_shape[1]) + " exceeds the position table (" +
            std::to_string(kv.second->shape[0]) + " positions)");
      }
    }
  }
  // ExecutorKind::kInterpret (SPARQ_EXECUTOR=interpret) runs the converted graph op by op
  // (the generic path, kept for debugging and tested by the conformance suite).
  if (options_.executor == ExecutorKind::kPlanned && !interpret_only_) {
    try {
      return executor_.run(inputs, peak_bytes, &summary_);
    } catch (const Unplannable& e) {
      // These shapes cannot be planned from shapes alone: the same graph, op by op.
      summary_ = PlanSummary();
      summary_.not_planned = e.what();
    }
  }
  return interpret(
      g, inputs,
      [this](const Node& n, const std::vector<Value>& in) -> Value {
        if (op_of(n) == OpId::kSparqMatMul) return sparq_matmul(n, in);
        return nullptr;
      },
      peak_bytes,
      [this](int64_t parts, const std::function<void(int64_t)>& body) {
        pool_.parallel_for(parts, body);
      },
      options_.profile);
}

}  // namespace sparq
