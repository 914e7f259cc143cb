// Conformance of the generic path: every model tools/make_models.py generated into
// SPARQ_MODELS_DIR (one folder each: model.onnx, input_*.npy, ref_*.npy from float64
// PyTorch) is imported and interpreted, and each output must satisfy
//   max |out - ref| <= 1e-3 * max |ref|   and   cosine(out, ref) >= 0.99999.
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <dirent.h>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/interpreter.h"
#include "engine/model.h"
#include "formats/error.h"
#include "formats/npy.h"
#include "formats/onnx_import.h"

namespace sparq::test {
namespace {

std::string models_dir() {
  const char* e = std::getenv("SPARQ_MODELS_DIR");
  return e ? e : "";
}

std::vector<std::string> list(const std::string& dir, const std::string& prefix,
                              const std::string& suffix) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() >= prefix.size() + suffix.size() && n.compare(0, prefix.size(), prefix) == 0 &&
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
      out.push_back(n);
    }
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

double as_double(const Constant& c, int64_t i) {
  return c.type == ElemType::kF64 ? c.data<double>()[i] : c.data<float>()[i];
}

std::map<std::string, Value> load_inputs(const std::string& dir) {
  std::map<std::string, Value> inputs;
  for (const std::string& f : list(dir, "input_", ".npy")) {
    inputs[f.substr(6, f.size() - 10)] = std::make_shared<Constant>(read_npy(dir + "/" + f));
  }
  return inputs;
}

// mode: "interpret" (the generic path on the imported graph), "fp32" or "int8"
// (converted to .sparq, loaded, run by a Session with `threads`).
std::map<std::string, Value> run_model(const std::string& dir, const std::string& mode, int threads,
                                       bool mode_generic = false) {
  const Graph g = import_onnx(dir + "/model.onnx");
  if (mode == "interpret") return interpret(g, load_inputs(dir));
  ConvertOptions o;
  o.precision = mode;
  const std::string out = dir + "/model-" + mode + ".sparq";
  convert_graph(g, out, o);
  Session s(Model::load(out), threads);
  const auto inputs = load_inputs(dir);
  if (mode_generic) {
    s.use_interpreter(true);
    return s.run(inputs);
  }
  // The first run records a plan; a second shape gets its own; the third run replays
  // the first plan (arena buffers reused) and must give the same bytes.
  const auto first = s.run(inputs);
  std::map<std::string, Value> shorter;
  for (const auto& kv : inputs) {
    const Constant& c = *kv.second;
    auto t = std::make_shared<Constant>();
    t->type = c.type;
    t->shape = c.shape;
    const int64_t S = c.shape.back(), B = c.elements() / S,
                  es = static_cast<int64_t>(elem_type_size(c.type));
    t->shape.back() = S > 1 ? S - 1 : S;
    for (int64_t b = 0; b < B; ++b) {
      t->bytes.insert(t->bytes.end(), c.raw() + b * S * es,
                      c.raw() + (b * S + t->shape.back()) * es);
    }
    shorter[kv.first] = t;
  }
  const auto other = s.run(shorter);
  EXPECT_EQ(other.size(), first.size());
  const auto again = s.run(inputs);
  for (const auto& kv : first) {
    EXPECT_EQ(kv.second->bytes, again.at(kv.first)->bytes)
        << dir << " " << mode << ": replayed plan differs, " << kv.first;
  }
  return again;
}

void check_model(const std::string& dir, const std::string& mode = "interpret", int threads = 1,
                 bool mode_generic = false) {
  SCOPED_TRACE(dir + " " + mode + " threads=" + std::to_string(threads) +
               (mode_generic ? " op by op" : ""));
  const auto outputs = run_model(dir, mode, threads, mode_generic);
  const auto refs = list(dir, "ref_", ".npy");
  ASSERT_FALSE(refs.empty());
  for (const std::string& f : refs) {
    const std::string name = f.substr(4, f.size() - 8);
    SCOPED_TRACE(name);
    const Constant ref = read_npy(dir + "/" + f);
    auto it = outputs.find(name);
    ASSERT_NE(it, outputs.end());
    const Constant& out = *it->second;
    ASSERT_EQ(out.shape, ref.shape);
    double max_ref = 0, max_err = 0, dot = 0, na = 0, nb = 0;
    for (int64_t i = 0; i < ref.elements(); ++i) {
      const double r = as_double(ref, i), o = as_double(out, i);
      max_ref = std::max(max_ref, std::fabs(r));
      max_err = std::max(max_err, std::fabs(r - o));
      dot += r * o;
      na += r * r;
      nb += o * o;
    }
    const double cosine = dot / std::sqrt(na * nb);
    if (mode == "int8") {
      // int8: cosine >= 0.99 for every token (each row of the last dimension).
      const int64_t width = ref.shape.back(), rows = ref.elements() / width;
      double worst = 1.0;
      for (int64_t r = 0; r < rows; ++r) {
        double d = 0, a2 = 0, b2 = 0;
        for (int64_t j = 0; j < width; ++j) {
          const double x = as_double(ref, r * width + j), y = as_double(out, r * width + j);
          d += x * y;
          a2 += x * x;
          b2 += y * y;
        }
        worst = std::min(worst, d / std::sqrt(a2 * b2));
      }
      EXPECT_GE(worst, 0.99) << "worst per-token cosine";
      continue;
    }
    EXPECT_LE(max_err, 1e-3 * max_ref) << "max |err| " << max_err << ", max |ref| " << max_ref;
    EXPECT_GE(cosine, 0.99999);
  }
}

TEST(Conformance, GenericPathMatchesFloat64References) {
  const std::string root = models_dir();
  if (root.empty()) GTEST_SKIP() << "SPARQ_MODELS_DIR is not set";
  std::vector<std::string> dirs;
  DIR* d = opendir(root.c_str());
  if (!d) GTEST_SKIP() << "no models at " << root << " (python3-torch missing?)";
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    struct stat st {};
    if (n[0] != '.' && stat((root + "/" + n + "/manifest.json").c_str(), &st) == 0)
      dirs.push_back(n);
  }
  closedir(d);
  std::sort(dirs.begin(), dirs.end());
  if (dirs.empty()) GTEST_SKIP() << "no models at " << root;
  for (const std::string& n : dirs) check_model(root + "/" + n);
  RecordProperty("models", static_cast<int>(dirs.size()));
}

std::vector<std::string> model_dirs() {
  std::vector<std::string> dirs;
  const std::string root = models_dir();
  DIR* d = root.empty() ? nullptr : opendir(root.c_str());
  if (!d) return dirs;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    struct stat st {};
    if (n[0] != '.' && stat((root + "/" + n + "/manifest.json").c_str(), &st) == 0)
      dirs.push_back(root + "/" + n);
  }
  closedir(d);
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

TEST(Conformance, ConvertedFp32MatchesFloat64References) {
  const auto dirs = model_dirs();
  if (dirs.empty()) GTEST_SKIP() << "no models";
  for (const std::string& d : dirs) check_model(d, "fp32", 1);
}

// The converted graph run op by op through the interpreter (SparqMatMul and the fused
// ops included): the generic path stays correct for graphs the planner cannot improve.
TEST(Conformance, ConvertedGraphOpByOp) {
  const auto dirs = model_dirs();
  if (dirs.empty()) GTEST_SKIP() << "no models";
  for (const std::string& d : dirs) {
    check_model(d, "fp32", 1, true);
    check_model(d, "int8", 2, true);
  }
}

TEST(Conformance, ConvertedInt8CosinePerToken) {
  const auto dirs = model_dirs();
  if (dirs.empty()) GTEST_SKIP() << "no models";
  for (const std::string& d : dirs) check_model(d, "int8", 1);
}

TEST(Conformance, SameOutputsAtOneAndTwoThreads) {
  const auto dirs = model_dirs();
  if (dirs.empty()) GTEST_SKIP() << "no models";
  for (const std::string& d : dirs) {
    for (const char* mode : {"fp32", "int8"}) {
      const auto a = run_model(d, mode, 1), b = run_model(d, mode, 2);
      for (const auto& kv : a)
        EXPECT_EQ(kv.second->bytes, b.at(kv.first)->bytes) << d << " " << mode << " " << kv.first;
    }
  }
}

// Enough tokens for several 64-token panels (the batch repeated to 200+ tokens): each
// thread then runs runs of panel-local steps (SpMM, LayerNorm, quantization, Add) for
// its own panels in one parallel region, and a panel count that does not divide evenly
// between the threads. Same bytes at 1 and 2 threads, every row equal to its original.
TEST(Conformance, ManyPanelsSameOutputsAtOneAndTwoThreads) {
  const auto dirs = model_dirs();
  if (dirs.empty()) GTEST_SKIP() << "no models";
  for (const std::string& d : dirs) {
    const auto inputs = load_inputs(d);
    const Constant& ids = *inputs.at("input_ids");
    const int64_t S = ids.shape.back(), B = ids.elements() / S, reps = (200 + B * S - 1) / (B * S);
    std::map<std::string, Value> big;
    for (const auto& kv : inputs) {
      auto t = std::make_shared<Constant>(*kv.second);
      t->shape[0] *= reps;
      for (int64_t r = 1; r < reps; ++r)
        t->bytes.insert(t->bytes.end(), kv.second->bytes.begin(), kv.second->bytes.end());
      big[kv.first] = t;
    }
    for (const char* mode : {"fp32", "int8"}) {
      SCOPED_TRACE(d + " " + mode);
      ConvertOptions o;
      o.precision = mode;
      convert_graph(import_onnx(d + "/model.onnx"), d + "/panels.sparq", o);
      Session s1(Model::load(d + "/panels.sparq"), 1), s2(Model::load(d + "/panels.sparq"), 2);
      const auto one = s1.run(big), two = s2.run(big), two_again = s2.run(big),
                 small = s1.run(inputs);
      for (const auto& kv : one) {
        EXPECT_EQ(kv.second->bytes, two.at(kv.first)->bytes) << kv.first;
        EXPECT_EQ(kv.second->bytes, two_again.at(kv.first)->bytes) << kv.first;
        // Repeated sequences give repeated answers (up to the per-token int8 attention
        // and quantization, which see the same tokens): compare with the original batch.
        const std::vector<uint8_t>& a = small.at(kv.first)->bytes;
        const std::vector<uint8_t>& b = kv.second->bytes;
        ASSERT_EQ(b.size(), a.size() * static_cast<size_t>(reps));
        for (int64_t r = 0; r < reps; ++r) {
          EXPECT_TRUE(
              std::equal(a.begin(), a.end(), b.begin() + static_cast<std::ptrdiff_t>(a.size()) * r))
              << kv.first << " repeat " << r;
        }
      }
    }
  }
}

// Export variants (tools/make_test_models.sh): freshly initialized LayerNorm parameters
// (torch shares equal initializers through Identity) and exports without constant
// folding (weights behind Transpose) reach the same plan as the default export of the
// same model after canonicalization: the same fused counts, no more op-by-op steps.
// Their outputs are checked against float64 by the tests above like every model's.
TEST(Conformance, ExportVariantsReachTheFastPath) {
  const std::string root = models_dir();
  struct stat st {};
  if (root.empty() || stat((root + "/bert-14-nofold/model.onnx").c_str(), &st) != 0)
    GTEST_SKIP() << "no variant models";
  // Every export variant tools/make_test_models.sh writes, against its family's default
  // export (<family>-14): the same fused counts, no more steps op by op or in all.
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const std::string& dir : model_dirs()) {
    const std::string name = dir.substr(dir.rfind('/') + 1);
    for (const char* family : {"bert", "distilbert", "roberta"}) {
      const std::string base = std::string(family) + "-14";
      const bool variant = name.rfind(base + "-", 0) == 0 || name == std::string(family) + "-11";
      if (variant) pairs.push_back({name, base});
    }
  }
  ASSERT_GE(pairs.size(), 27u) << "variant models missing from " << root;
  for (const auto& [variant, base] : pairs) {
    for (const char* precision : {"fp32", "int8"}) {
      SCOPED_TRACE(variant + " " + precision);
      PlanSummary sum[2];
      for (int k = 0; k < 2; ++k) {
        const std::string dir = root + "/" + (k == 0 ? variant : base);
        ConvertOptions o;
        o.precision = precision;
        const auto report =
            convert_graph(import_onnx(dir + "/model.onnx"), dir + "/variant.sparq", o);
        Session s(Model::load(dir + "/variant.sparq"), 1);
        s.run(load_inputs(dir));
        sum[k] = s.plan_summary();
        EXPECT_FALSE(report.empty());
      }
      EXPECT_EQ(sum[0].matmuls, sum[1].matmuls);
      EXPECT_EQ(sum[0].fused_attention, sum[1].fused_attention);
      EXPECT_EQ(sum[0].fused_residual, sum[1].fused_residual);
      EXPECT_EQ(sum[0].fused_embeddings, sum[1].fused_embeddings);
      EXPECT_EQ(sum[0].fused_add_layernorm, sum[1].fused_add_layernorm);
      EXPECT_EQ(sum[0].fused_quantize, sum[1].fused_quantize);
      EXPECT_LE(sum[0].generic_steps, sum[1].generic_steps);
      EXPECT_LE(sum[0].steps, sum[1].steps);
    }
  }
}

// The planned executor's fusions fire on real exports: one embeddings step, the
// attention of every layer, both residuals of every layer; RoBERTa's computed position
// ids (left padding) included. Outputs are checked by the tests above.
TEST(Conformance, PlanFusesEncoderLayers) {
  const std::string root = models_dir();
  struct stat st {};
  if (root.empty() || stat((root + "/bert-14/model.onnx").c_str(), &st) != 0)
    GTEST_SKIP() << "no models";
  for (const char* name :
       {"bert-14", "bert-17", "distilbert-14", "roberta-14", "roberta-left-pad"}) {
    SCOPED_TRACE(name);
    const std::string dir = root + "/" + name;
    for (const char* precision : {"fp32", "int8"}) {
      ConvertOptions o;
      o.precision = precision;
      convert_graph(import_onnx(dir + "/model.onnx"), dir + "/plan.sparq", o);
      Session s(Model::load(dir + "/plan.sparq"), 2);
      s.run(load_inputs(dir));
      const PlanSummary& p = s.plan_summary();
      EXPECT_EQ(p.fused_embeddings, 1);
      EXPECT_EQ(p.fused_attention, 2);  // 2 layers
      EXPECT_EQ(p.fused_residual, 4);
      // int8: every LayerNorm an int8 matmul reads quantizes its own output (the
      // embeddings' and each layer's but the encoder's last): 4 in 2 layers.
      EXPECT_EQ(p.fused_quantize, std::string(precision) == "int8" ? 4 : 0);
      EXPECT_GT(p.folded, 0);
      EXPECT_LT(p.arena_bytes, p.unshared_bytes);
    }
  }
}

// With residuals kept out of the SpMM epilogue, each residual Add + LayerNorm runs as
// one step instead, and the answers stay within the fp32 / int8 bounds.
TEST(Conformance, ResidualAddLayerNormStep) {
  const std::string root = models_dir();
  struct stat st {};
  if (root.empty() || stat((root + "/bert-14/model.onnx").c_str(), &st) != 0)
    GTEST_SKIP() << "no models";
  for (const char* name : {"bert-14", "distilbert-14", "roberta-left-pad"}) {
    SCOPED_TRACE(name);
    const std::string dir = root + "/" + name;
    convert_graph(import_onnx(dir + "/model.onnx"), dir + "/addln.sparq", ConvertOptions{});
    Session s(Model::load(dir + "/addln.sparq"), 2);
    PlanOptions o;
    o.residual_epilogue = false;
    s.set_plan_options(o);
    const auto out = s.run(load_inputs(dir));
    EXPECT_EQ(s.plan_summary().fused_residual, 0);
    EXPECT_EQ(s.plan_summary().fused_add_layernorm, 4);
    Session ref(Model::load(dir + "/addln.sparq"), 1);
    const auto base = ref.run(load_inputs(dir));
    for (const auto& kv : base) {
      const Constant& a = *kv.second;
      const Constant& b = *out.at(kv.first);
      ASSERT_EQ(a.shape, b.shape);
      double mx = 0, err = 0;
      for (int64_t i = 0; i < a.elements(); ++i) {
        mx = std::max(mx, std::fabs(static_cast<double>(a.data<float>()[i])));
        err =
            std::max(err, std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
      }
      EXPECT_LE(err, 1e-5 * mx) << kv.first;
    }
  }
}

// int32 ids and masks are widened: the same answer as int64, also when the session's
// input map holds the only reference to the int32 tensors (a use-after-free once).
TEST(Conformance, Int32InputsMatchInt64) {
  const auto dirs = model_dirs();
  if (dirs.empty()) GTEST_SKIP() << "no models";
  const std::string d = dirs.front();
  convert_graph(import_onnx(d + "/model.onnx"), d + "/i32.sparq", ConvertOptions{});
  Session s(Model::load(d + "/i32.sparq"), 1);
  const auto in64 = load_inputs(d);
  const auto base = s.run(in64);
  std::map<std::string, Value> in32;
  for (const auto& kv : in64) {
    auto c = std::make_shared<Constant>();
    c->type = ElemType::kI32;
    c->shape = kv.second->shape;
    c->bytes.resize(static_cast<size_t>(c->elements()) * 4);
    for (int64_t i = 0; i < c->elements(); ++i) {
      reinterpret_cast<int32_t*>(c->bytes.data())[i] =
          static_cast<int32_t>(kv.second->data<int64_t>()[i]);
    }
    in32[kv.first] = c;
  }
  const auto got = s.run(std::move(in32));
  for (const auto& kv : base) EXPECT_EQ(kv.second->bytes, got.at(kv.first)->bytes) << kv.first;
}

TEST(Conformance, TokenIdOutsideVocabularyIsAnError) {
  const std::string root = models_dir();
  const std::string dir = root + "/bert-14";
  struct stat st {};
  if (root.empty() || stat((dir + "/model.onnx").c_str(), &st) != 0)
    GTEST_SKIP() << "no bert-14 model";
  const Graph g = import_onnx(dir + "/model.onnx");
  std::map<std::string, Value> inputs;
  for (const std::string& f : list(dir, "input_", ".npy")) {
    inputs[f.substr(6, f.size() - 10)] = std::make_shared<Constant>(read_npy(dir + "/" + f));
  }
  auto ids = std::make_shared<Constant>(*inputs["input_ids"]);
  reinterpret_cast<int64_t*>(ids->bytes.data())[3] = 1000000;
  inputs["input_ids"] = ids;
  try {
    interpret(g, inputs);
    ADD_FAILURE() << "out-of-vocabulary id accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sparq::test

namespace sparq::test {
namespace {

std::map<std::string, int> op_counts(const Graph& g) {
  std::map<std::string, int> c;
  for (const Node& n : g.nodes) ++c[n.op];
  return c;
}

// The converter's fusions fire on real exports (opset 14 spells LayerNorm out op by op;
// DistilBERT masks with Where, BERT and RoBERTa with an additive mask) and the fused
// models still pass the conformance tests above.
TEST(Fusion, AppliesToExportedEncoders) {
  const std::string root = models_dir();
  struct stat st {};
  if (root.empty() || stat((root + "/bert-14/model.onnx").c_str(), &st) != 0)
    GTEST_SKIP() << "no models";
  for (const char* name : {"bert-14", "distilbert-14", "roberta-14", "bert-17"}) {
    SCOPED_TRACE(name);
    const std::string dir = root + "/" + name;
    const auto before = op_counts(import_onnx(dir + "/model.onnx"));
    convert_graph(import_onnx(dir + "/model.onnx"), dir + "/fused.sparq", ConvertOptions{});
    auto model = Model::load(dir + "/fused.sparq");
    auto after = op_counts(model->graph());
    // 2 layers x 2 LayerNorms + the embeddings' one.
    EXPECT_EQ(after["LayerNormalization"], 5);
    EXPECT_EQ(after["Erf"], 0);
    // 6 per layer, plus the pooler's Gemm in BERT and RoBERTa.
    const int pooler = std::string(name).find("distil") == std::string::npos ? 1 : 0;
    EXPECT_EQ(after["SparqMatMul"], 12 + pooler);
    EXPECT_EQ(after["Gemm"], 0);
    EXPECT_EQ(after["MatMul"], 0);  // attention's two per layer are fused
    EXPECT_EQ(after["SparqAttention"], 2);
    EXPECT_EQ(after["Softmax"], 0);
    EXPECT_LT(
        model->graph().nodes.size(),
        static_cast<size_t>(std::accumulate(before.begin(), before.end(), 0,
                                            [](int a, const auto& kv) { return a + kv.second; })));
    int with_bias = 0, with_gelu = 0;
    for (const Node& n : model->graph().nodes) {
      if (n.op != "SparqMatMul") continue;
      with_bias += n.inputs.size() == 2;
      if (const Attribute* a = n.attr("activation")) with_gelu += a->s == "gelu_erf";
    }
    EXPECT_EQ(with_bias, 12 + pooler);
    EXPECT_EQ(with_gelu, 2);
  }
}

}  // namespace
}  // namespace sparq::test
