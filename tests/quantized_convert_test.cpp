// Models that arrive quantized, on hand-built graphs (engine/convert/quantized.cpp): each
// form of a constant-weight quantized matmul fuses into MatMul on an int8 weight that
// holds q - zp exactly with the model's scales, and converts into an int8 SparqMatMul
// whose run matches the quantized graph's ONNX semantics; near forms (a weight that is
// not constant, a Cast to another type, a scale chain that is not the dequantization)
// stay op by op; every malformed quantized model is refused at convert with nothing
// written.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/convert/quantized.h"
#include "engine/interpreter.h"
#include "engine/model.h"
#include "engine/ops/registry.h"
#include "engine/passes.h"
#include "formats/error.h"

namespace sparq {
namespace {

constexpr int64_t kK = 16, kN = 8;

std::string tmp_path(const std::string& name) {
  const char* t = std::getenv("TMPDIR");
  return std::string(t ? t : "/tmp") + "/sparq-quantized-" + name + ".sparq";
}

template <class T>
std::shared_ptr<Constant> tensor(ElemType type, std::vector<int64_t> shape, std::vector<T> v) {
  auto c = std::make_shared<Constant>();
  c->type = type;
  c->shape = std::move(shape);
  c->bytes.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(c->bytes.data(), v.data(), v.size() * sizeof(T));
  return c;
}
std::shared_ptr<Constant> f32(std::vector<int64_t> shape, std::vector<float> v) {
  return tensor(ElemType::kF32, std::move(shape), std::move(v));
}

Attribute int_attr(int64_t v) {
  Attribute a;
  a.kind = Attribute::Kind::kInt;
  a.i = v;
  return a;
}

// A weight W[K, N] with zeros (pruned, = the zero point) in every third position.
struct Weight {
  ElemType type = ElemType::kS8;
  std::vector<int32_t> q;  // [K][N], as stored
  int32_t zp = 0;
};
Weight make_weight(ElemType type, int32_t zp) {
  Weight w;
  w.type = type;
  w.zp = zp;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> d(-100, 100);
  for (int64_t i = 0; i < kK * kN; ++i) w.q.push_back(i % 3 == 0 ? zp : zp + d(rng));
  // q - zp = -128, the int8 end the kernels take (u8 x s8 products, exact in int32).
  if (zp - 128 >= (type == ElemType::kS8 ? -128 : 0)) w.q[1] = zp - 128;
  return w;
}
std::shared_ptr<Constant> weight_tensor(const Weight& w, bool transposed = false) {
  std::vector<uint8_t> b(static_cast<size_t>(kK * kN));
  for (int64_t k = 0; k < kK; ++k)
    for (int64_t n = 0; n < kN; ++n)
      b[static_cast<size_t>(transposed ? n * kK + k : k * kN + n)] =
          static_cast<uint8_t>(w.q[static_cast<size_t>(k * kN + n)]);
  return tensor(w.type, transposed ? std::vector<int64_t>{kN, kK} : std::vector<int64_t>{kK, kN},
                b);
}
std::shared_ptr<Constant> zp_tensor(ElemType type, std::vector<int64_t> shape, int32_t zp,
                                    int64_t count = 1) {
  return tensor(type, std::move(shape),
                std::vector<uint8_t>(static_cast<size_t>(count), static_cast<uint8_t>(zp)));
}

std::vector<float> channel_scales() {
  std::vector<float> s;
  for (int64_t n = 0; n < kN; ++n) s.push_back(0.01f + 0.002f * static_cast<float>(n));
  return s;
}

// A graph under construction around x [2, 5, K] -> ... -> y.
struct Builder {
  Graph g;
  Builder() {
    g.opset = 14;
    ValueInfo x;
    x.name = "x";
    x.type = ElemType::kF32;
    x.shape = {Dim{2, ""}, Dim{5, ""}, Dim{kK, ""}};
    g.inputs.push_back(x);
  }
  void node(const char* op, std::vector<std::string> in, std::vector<std::string> out,
            std::map<std::string, Attribute> attrs = {}) {
    Node n;
    n.op = op;
    n.name = out[0] + "_node";
    n.inputs = std::move(in);
    n.outputs = std::move(out);
    n.attrs = std::move(attrs);
    g.nodes.push_back(n);
  }
  void output(const std::string& name) {
    ValueInfo v;
    v.name = name;
    v.type = ElemType::kF32;
    g.outputs.push_back(v);
  }
  Graph done() {
    resolve_ops(g);
    return g;
  }
};

enum class Chain { kProduct, kProductSwapped, kChain, kChainScaleFirst };

// ONNX Runtime's dynamic form, with the scale Muls associated as `chain` says.
Builder ort_dynamic(const Weight& w, const std::vector<float>& scales, Chain chain,
                    bool per_channel_zp = false) {
  Builder b;
  b.g.initializers["W"] = weight_tensor(w);
  b.g.initializers["Wzp"] =
      per_channel_zp ? zp_tensor(w.type, {kN}, w.zp, kN) : zp_tensor(w.type, {}, w.zp);
  b.g.initializers["Ws"] =
      scales.size() == 1 ? f32({}, scales) : f32({static_cast<int64_t>(scales.size())}, scales);
  b.node("DynamicQuantizeLinear", {"x"}, {"xq", "xs", "xz"});
  b.node("MatMulInteger", {"xq", "W", "xz", "Wzp"}, {"acc"});
  b.node("Cast", {"acc"}, {"f"}, {{"to", int_attr(1)}});
  switch (chain) {
    case Chain::kProduct:
      b.node("Mul", {"xs", "Ws"}, {"s"});
      b.node("Mul", {"f", "s"}, {"y"});
      break;
    case Chain::kProductSwapped:
      b.node("Mul", {"Ws", "xs"}, {"s"});
      b.node("Mul", {"s", "f"}, {"y"});
      break;
    case Chain::kChain:
      b.node("Mul", {"f", "xs"}, {"fx"});
      b.node("Mul", {"fx", "Ws"}, {"y"});
      break;
    case Chain::kChainScaleFirst:
      b.node("Mul", {"Ws", "f"}, {"fw"});
      b.node("Mul", {"xs", "fw"}, {"y"});
      break;
  }
  b.output("y");
  return b;
}

Value random_x(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(2 * 5 * kK));
  for (float& f : v) f = d(rng);
  return f32({2, 5, kK}, v);
}

// The fused weight: an int8 MatMul weight equal to q - zp, and the model's scales.
void expect_fused_exactly(const Graph& g, const QuantizedMatMuls& r, const Weight& w,
                          const std::vector<float>& scales) {
  ASSERT_EQ(r.weights.size(), 1u);
  const auto& kv = *r.weights.begin();
  EXPECT_TRUE(kv.second.exact);
  const Constant* c = g.initializer(kv.first);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->type, ElemType::kS8);
  ASSERT_EQ(c->shape, (std::vector<int64_t>{kK, kN}));
  for (int64_t i = 0; i < kK * kN; ++i)
    ASSERT_EQ(c->data<int8_t>()[i], w.q[static_cast<size_t>(i)] - w.zp) << i;
  ASSERT_EQ(kv.second.scales.size(), static_cast<size_t>(kN));
  for (int64_t n = 0; n < kN; ++n) {
    EXPECT_EQ(kv.second.scales[static_cast<size_t>(n)],
              scales.size() == 1 ? scales[0] : scales[static_cast<size_t>(n)]);
  }
  int matmuls = 0;
  for (const Node& n : g.nodes) {
    if (op_of(n) == OpId::kMatMul) {
      ++matmuls;
      EXPECT_EQ(n.inputs, (std::vector<std::string>{"x", kv.first}));
    }
    EXPECT_NE(op_of(n), OpId::kMatMulInteger);
    EXPECT_NE(op_of(n), OpId::kQLinearMatMul);
  }
  EXPECT_EQ(matmuls, 1);
}

// Converts with default flags and compares the run with the quantized graph's ONNX
// semantics (the interpreter on the unconverted graph): per-token cosine >= 0.995.
void convert_and_compare(const Graph& g, const std::string& name, int want_int8 = 1) {
  const std::string path = tmp_path(name);
  ConvertOptions o;
  o.threads = 1;
  FastPathReport fp;
  std::vector<std::string> notes;
  const auto report = convert_graph(g, path, o, nullptr, &fp, &notes);
  int int8 = 0;
  for (const LayerReport& r : report) int8 += r.precision == "int8" && r.quantized;
  EXPECT_EQ(int8, want_int8);
  EXPECT_EQ(fp.matmuls, 1);
  auto model = Model::load(path);
  std::remove(path.c_str());
  const Value x = random_x(3);
  const auto want = interpret(g, {{"x", x}});
  Session s(model, 1);
  const auto got = s.run({{"x", x}});
  const Constant& a = *want.at("y");
  const Constant& b = *got.at("y");
  ASSERT_EQ(a.shape, b.shape);
  const int64_t n = a.shape.back();
  for (int64_t t = 0; t < a.elements() / n; ++t) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double u = a.data<float>()[t * n + j], v = b.data<float>()[t * n + j];
      ab += u * v, aa += u * u, bb += v * v;
    }
    EXPECT_GE(ab / std::sqrt(aa * bb), 0.995) << name << " token " << t;
  }
}

TEST(QuantizedConvert, OrtDynamicEveryAssociation) {
  const Weight w = make_weight(ElemType::kS8, 0);
  for (Chain c :
       {Chain::kProduct, Chain::kProductSwapped, Chain::kChain, Chain::kChainScaleFirst}) {
    for (const auto& scales : {channel_scales(), std::vector<float>{0.02f}}) {
      SCOPED_TRACE(static_cast<int>(c));
      Graph g = ort_dynamic(w, scales, c).done();
      const Graph before = g;
      const QuantizedMatMuls r = fuse_quantized_matmuls(g);
      EXPECT_EQ(r.dynamic, 1);
      expect_fused_exactly(g, r, w, scales);
      convert_and_compare(before, "ort" + std::to_string(static_cast<int>(c)));
    }
  }
}

// Neural Magic's uint8 weights shifted by 128: a pruned weight is 128, and stays a zero.
TEST(QuantizedConvert, Uint8ZeroPoint128KeepsPrunedWeightsZero) {
  const Weight w = make_weight(ElemType::kU8, 128);
  for (bool per_channel_zp : {false, true}) {
    Graph g = ort_dynamic(w, channel_scales(), Chain::kProduct, per_channel_zp).done();
    const Graph before = g;
    const QuantizedMatMuls r = fuse_quantized_matmuls(g);
    expect_fused_exactly(g, r, w, channel_scales());
    const std::string path = tmp_path("u8-128");
    ConvertOptions o;
    convert_graph(before, path, o, nullptr, nullptr, nullptr);
    auto model = Model::load(path);
    std::remove(path.c_str());
    const PackedWeights& pw = model->packed("packed/0");
    int64_t nonzero = 0, slots = pw.num_groups * pw.rows_per_block * pw.group;
    for (int64_t i = 0; i < slots; ++i) nonzero += static_cast<const int8_t*>(pw.values)[i] != 0;
    int64_t want = 0;
    for (int32_t q : w.q) want += q != 128;
    EXPECT_EQ(nonzero, want);
    for (int64_t n = 0; n < kN; ++n)
      EXPECT_EQ(pw.scales[n], channel_scales()[static_cast<size_t>(n)]);
    convert_and_compare(before, "u8-128");
  }
}

// Asymmetric uint8 weights whose q - zp leaves int8 are requantized, with a note.
TEST(QuantizedConvert, AsymmetricUint8IsRequantizedWithANote) {
  Weight w = make_weight(ElemType::kU8, 30);
  w.q[5] = 255;  // 225 above the zero point
  Graph g = ort_dynamic(w, channel_scales(), Chain::kProduct).done();
  const Graph before = g;
  const QuantizedMatMuls r = fuse_quantized_matmuls(g);
  ASSERT_EQ(r.weights.size(), 1u);
  EXPECT_FALSE(r.weights.begin()->second.exact);
  EXPECT_EQ(g.initializer(r.weights.begin()->first)->type, ElemType::kF32);
  std::vector<std::string> notes;
  const std::string path = tmp_path("asym");
  convert_graph(before, path, ConvertOptions(), nullptr, nullptr, &notes);
  std::remove(path.c_str());
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("requantized"), std::string::npos) << notes[0];
  convert_and_compare(before, "asym");
}

TEST(QuantizedConvert, PrecisionFp32DequantizesAndSaysSo) {
  const Weight w = make_weight(ElemType::kS8, 0);
  const Graph g = ort_dynamic(w, channel_scales(), Chain::kProduct).done();
  ConvertOptions o;
  o.precision = "fp32";
  o.precision_given = true;
  std::vector<std::string> notes;
  const std::string path = tmp_path("fp32");
  const auto report = convert_graph(g, path, o, nullptr, nullptr, &notes);
  std::remove(path.c_str());
  ASSERT_EQ(report.size(), 1u);
  EXPECT_EQ(report[0].precision, "fp32");
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("dequantized"), std::string::npos) << notes[0];
}

TEST(QuantizedConvert, PruneSetsBlocksToTheZeroPoint) {
  const Weight w = make_weight(ElemType::kU8, 128);
  const Graph g = ort_dynamic(w, channel_scales(), Chain::kProduct).done();
  ConvertOptions o;
  o.prune = 0.75;
  o.block = "4x1";
  std::vector<std::string> notes;
  const std::string path = tmp_path("prune");
  const auto report = convert_graph(g, path, o, nullptr, nullptr, &notes);
  auto model = Model::load(path);
  std::remove(path.c_str());
  ASSERT_EQ(report.size(), 1u);
  EXPECT_EQ(report[0].precision, "int8");
  EXPECT_EQ(report[0].block, "4x1");
  EXPECT_GE(report[0].sparsity, 0.75);
  const PackedWeights& pw = model->packed("packed/0");
  EXPECT_EQ(pw.rows_per_block, 4);
  EXPECT_FALSE(notes.empty());
}

// The QOperator forms: MatMulInteger on a static QuantizeLinear, and QLinearMatMul.
TEST(QuantizedConvert, QOperatorForms) {
  const Weight w = make_weight(ElemType::kU8, 128);
  {
    Builder b;
    b.g.initializers["W"] = weight_tensor(w);
    b.g.initializers["Wzp"] = zp_tensor(ElemType::kU8, {}, 128);
    b.g.initializers["xs"] = f32({}, {0.02f});
    b.g.initializers["xz"] = zp_tensor(ElemType::kU8, {}, 120);
    std::vector<float> c;
    for (float s : channel_scales()) c.push_back(0.02f * s);
    b.g.initializers["c"] = f32({kN}, c);
    b.node("QuantizeLinear", {"x", "xs", "xz"}, {"xq"});
    b.node("MatMulInteger", {"xq", "W", "xz", "Wzp"}, {"acc"});
    b.node("Cast", {"acc"}, {"f"}, {{"to", int_attr(1)}});
    b.node("Mul", {"f", "c"}, {"y"});
    b.output("y");
    Graph g = b.done();
    const Graph before = g;
    const QuantizedMatMuls r = fuse_quantized_matmuls(g);
    EXPECT_EQ(r.integer, 1);
    ASSERT_EQ(r.weights.size(), 1u);
    for (int64_t n = 0; n < kN; ++n) {
      EXPECT_NEAR(r.weights.begin()->second.scales[static_cast<size_t>(n)],
                  channel_scales()[static_cast<size_t>(n)], 1e-8);
    }
    convert_and_compare(before, "integer");
  }
  for (bool dequantized_output : {true, false}) {
    Builder b;
    b.g.initializers["W"] = weight_tensor(w);
    b.g.initializers["Wzp"] = zp_tensor(ElemType::kU8, {kN}, 128, kN);  // the scale's shape
    b.g.initializers["Ws"] = f32({kN}, channel_scales());
    b.g.initializers["xs"] = f32({}, {0.02f});
    b.g.initializers["xz"] = zp_tensor(ElemType::kU8, {}, 120);
    b.g.initializers["ys"] = f32({}, {0.05f});
    b.g.initializers["yz"] = zp_tensor(ElemType::kU8, {}, 128);
    b.node("QuantizeLinear", {"x", "xs", "xz"}, {"xq"});
    b.node("QLinearMatMul", {"xq", "xs", "xz", "W", "Ws", "Wzp", "ys", "yz"}, {"yq"});
    if (dequantized_output) {
      b.node("DequantizeLinear", {"yq", "ys", "yz"}, {"y"});
    } else {  // another scale: the output is requantized, then read back
      b.g.initializers["ys2"] = f32({}, {0.06f});
      b.node("DequantizeLinear", {"yq", "ys2", "yz"}, {"y"});
    }
    b.output("y");
    Graph g = b.done();
    const Graph before = g;
    const QuantizedMatMuls r = fuse_quantized_matmuls(g);
    EXPECT_EQ(r.qlinear, 1);
    expect_fused_exactly(g, r, w, channel_scales());
    int requantize = 0;
    for (const Node& n : g.nodes) requantize += op_of(n) == OpId::kQuantizeLinear;
    EXPECT_EQ(requantize, dequantized_output ? 1 : 2);  // x's (dead now) and y's
    convert_and_compare(before, dequantized_output ? "qlinear" : "qlinear-requant");
  }
}

// QDQ: DequantizeLinear(W) per output channel, and the QAT export's [N, K] + Transpose.
Builder qdq(const Weight& w, bool transposed, std::vector<float> scales, int64_t axis,
            std::shared_ptr<Constant> zp = nullptr) {
  Builder b;
  b.g.initializers["W"] = weight_tensor(w, transposed);
  b.g.initializers["Ws"] = f32({static_cast<int64_t>(scales.size())}, scales);
  b.g.initializers["Wzp"] = zp ? zp
                               : zp_tensor(w.type, {static_cast<int64_t>(scales.size())}, w.zp,
                                           static_cast<int64_t>(scales.size()));
  b.g.initializers["xs"] = f32({}, {0.02f});
  b.g.initializers["xz"] = zp_tensor(ElemType::kU8, {}, 128);
  b.node("QuantizeLinear", {"x", "xs", "xz"}, {"xq"});
  b.node("DequantizeLinear", {"xq", "xs", "xz"}, {"xdq"});
  b.node("DequantizeLinear", {"W", "Ws", "Wzp"}, {transposed ? "Wt" : "Wf"},
         {{"axis", int_attr(axis)}});
  if (transposed) {
    Attribute perm;
    perm.kind = Attribute::Kind::kInts;
    perm.ints = {1, 0};
    b.node("Transpose", {"Wt"}, {"Wf"}, {{"perm", perm}});
  }
  b.node("MatMul", {"xdq", "Wf"}, {"y"});
  b.output("y");
  return b;
}

TEST(QuantizedConvert, QdqWeights) {
  const Weight w = make_weight(ElemType::kS8, 0);
  for (bool transposed : {false, true}) {
    Graph g = qdq(w, transposed, channel_scales(), transposed ? 0 : 1).done();
    const Graph before = g;
    const QuantizedMatMuls r = fuse_quantized_matmuls(g);
    EXPECT_EQ(r.qdq, 1);
    expect_fused_exactly(g, r, w, channel_scales());
    convert_and_compare(before, transposed ? "qdq-t" : "qdq");
  }
  // Scales along K: requantized with a note.
  Graph g = qdq(w, false, std::vector<float>(kK, 0.01f), 0).done();
  const QuantizedMatMuls r = fuse_quantized_matmuls(g);
  ASSERT_EQ(r.weights.size(), 1u);
  EXPECT_FALSE(r.weights.begin()->second.exact);
  EXPECT_NE(r.weights.begin()->second.note.find("along K"), std::string::npos);
}

// A QDQ Gemm (the pooler / classifier on 2-D activations), W stored [N, K] with transB.
TEST(QuantizedConvert, QdqGemmTransB) {
  const Weight w = make_weight(ElemType::kS8, 0);
  Builder b;
  b.g.inputs[0].shape = {Dim{10, ""}, Dim{kK, ""}};
  b.g.initializers["W"] = weight_tensor(w, /*transposed=*/true);
  b.g.initializers["Ws"] = f32({kN}, channel_scales());
  b.g.initializers["Wzp"] = zp_tensor(ElemType::kS8, {kN}, 0, kN);
  b.g.initializers["C"] = f32({kN}, std::vector<float>(kN, 0.5f));
  b.node("DequantizeLinear", {"W", "Ws", "Wzp"}, {"Wf"}, {{"axis", int_attr(0)}});
  b.node("Gemm", {"x", "Wf", "C"}, {"y"}, {{"transB", int_attr(1)}});
  b.output("y");
  Graph g = b.done();
  const Graph before = g;
  const QuantizedMatMuls r = fuse_quantized_matmuls(g);
  EXPECT_EQ(r.qdq, 1);
  ASSERT_EQ(r.weights.size(), 1u);
  const Constant* c = g.initializer(r.weights.begin()->first);
  ASSERT_EQ(c->type, ElemType::kS8);
  for (int64_t i = 0; i < kK * kN; ++i)
    ASSERT_EQ(c->data<int8_t>()[i], w.q[static_cast<size_t>(i)]);
  const std::string path = tmp_path("gemm");
  FastPathReport fp;
  const auto report = convert_graph(before, path, ConvertOptions(), nullptr, &fp);
  auto model = Model::load(path);
  std::remove(path.c_str());
  ASSERT_EQ(report.size(), 1u);
  EXPECT_EQ(report[0].precision, "int8");
  EXPECT_TRUE(report[0].exact);
  EXPECT_TRUE(fp.off.empty());
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> xv(static_cast<size_t>(10 * kK));
  for (float& f : xv) f = d(rng);
  const Value x = f32({10, kK}, xv);
  const auto want = interpret(before, {{"x", x}});
  Session s(model, 1);
  const auto got = s.run({{"x", x}});
  for (int64_t i = 0; i < 10 * kN; ++i) {
    EXPECT_NEAR(got.at("y")->data<float>()[i], want.at("y")->data<float>()[i], 0.05) << i;
  }
}

// ---- near misses: each must leave the graph op by op ----------------------------------

int fused(Graph g) { return fuse_quantized_matmuls(g).fused(); }

TEST(QuantizedConvert, NearMissesDoNotFuse) {
  const Weight w = make_weight(ElemType::kS8, 0);
  const std::vector<float> s = channel_scales();
  EXPECT_EQ(fused(ort_dynamic(w, s, Chain::kProduct).done()), 1);  // the control
  {                                                                // the weight is not a constant
    Builder b = ort_dynamic(w, s, Chain::kProduct);
    b.g.initializers.erase("W");
    ValueInfo v;
    v.name = "W";
    v.type = ElemType::kS8;
    b.g.inputs.push_back(v);
    EXPECT_EQ(fused(b.done()), 0);
  }
  {  // Cast to double; convert then reports the matmul off the fast path
    Builder b = ort_dynamic(w, s, Chain::kProduct);
    b.g.nodes[2].attrs["to"] = int_attr(11);
    b.node("Cast", {"y"}, {"y32"}, {{"to", int_attr(1)}});
    b.g.outputs.clear();
    b.output("y32");
    const Graph g = b.done();
    EXPECT_EQ(fused(g), 0);
    FastPathReport fp;
    const std::string path = tmp_path("cast-double");
    convert_graph(g, path, ConvertOptions(), nullptr, &fp);
    std::remove(path.c_str());
    EXPECT_EQ(fp.matmuls, 0);
    // Its DynamicQuantizeLinear runs op by op too.
    ASSERT_EQ(fp.off.size(), 2u);
    EXPECT_EQ(fp.off[0].op, "DynamicQuantizeLinear");
    EXPECT_EQ(fp.off[0].cause, "quantize");
    EXPECT_EQ(fp.off[1].op, "MatMulInteger");
    EXPECT_EQ(fp.off[1].cause, "matmul");
  }
  {  // the chain never multiplies by x's scale
    Builder b = ort_dynamic(w, s, Chain::kProduct);
    b.g.nodes[3].inputs = {"Ws", "Ws"};
    EXPECT_EQ(fused(b.done()), 0);
  }
  {  // x's scale twice
    Builder b = ort_dynamic(w, s, Chain::kChain);
    b.g.nodes[4].inputs = {"fx", "xs"};
    EXPECT_EQ(fused(b.done()), 0);
  }
  {  // a zero point that is not the one DynamicQuantizeLinear computed
    Builder b = ort_dynamic(w, s, Chain::kProduct);
    b.g.initializers["z0"] = zp_tensor(ElemType::kU8, {}, 0);
    b.g.nodes[1].inputs[2] = "z0";
    EXPECT_EQ(fused(b.done()), 0);
  }
  {  // the integer product is read elsewhere too
    Builder b = ort_dynamic(w, s, Chain::kProduct);
    b.g.outputs.clear();
    b.output("y");
    b.output("f");
    EXPECT_EQ(fused(b.done()), 0);
  }
  {  // a scale of the wrong length for the output's last axis
    Builder b = ort_dynamic(w, std::vector<float>(kN - 1, 0.01f), Chain::kProduct);
    EXPECT_EQ(fused(b.done()), 0);
  }
  {  // QDQ activation whose Q and DQ scales differ: the weight fuses, x stays fake-quantized
    Builder b = qdq(w, false, s, 1);
    b.g.initializers["xs2"] = f32({}, {0.03f});
    b.g.nodes[1].inputs[1] = "xs2";
    Graph g = b.done();
    EXPECT_EQ(fuse_quantized_matmuls(g).qdq, 1);
    for (const Node& n : g.nodes) {
      if (op_of(n) == OpId::kMatMul) {
        EXPECT_EQ(n.inputs[0], "xdq");
      }
    }
  }
}

// ---- malformed quantized models: a clear error at convert, nothing written -----------

void expect_refused(const Graph& g, const std::string& name,
                    const std::vector<std::string>& words) {
  const std::string path = tmp_path(name);
  std::remove(path.c_str());
  try {
    convert_graph(g, path, ConvertOptions());
    ADD_FAILURE() << name << ": converted; expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidArgument) << e.what();
    for (const std::string& w : words)
      EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << name << ": " << e.what();
  }
  EXPECT_NE(access(path.c_str(), F_OK), 0) << name << ": a file was written";
}

TEST(QuantizedConvert, MalformedModelsAreRefused) {
  const Weight w = make_weight(ElemType::kS8, 0);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float bad : {0.0f, nan, inf, -0.5f}) {
    std::vector<float> s = channel_scales();
    s[3] = bad;
    expect_refused(qdq(w, false, s, 1).done(), "qdq-scale", {"x_scale", "malformed"});
    expect_refused(ort_dynamic(w, s, Chain::kProduct).done(), "ort-scale",
                   {"weight scale", "malformed"});
  }
  // An activation's static scale of 0.
  {
    Builder b = qdq(w, false, channel_scales(), 1);
    b.g.initializers["xs"] = f32({}, {0.0f});
    expect_refused(b.done(), "act-scale", {"y_scale", "not positive"});
  }
  // Per-axis scale length not matching the axis (N = 8 along axis 1).
  expect_refused(qdq(w, false, std::vector<float>(kN + 1, 0.01f), 1).done(), "qdq-len",
                 {"x_scale has 9 elements"});
  // Per-axis zero point of another length than its scale.
  expect_refused(qdq(w, false, channel_scales(), 1, zp_tensor(ElemType::kS8, {3}, 0, 3)).done(),
                 "qdq-zp-len", {"x_zero_point has 3 elements"});
  // Zero point of another type than the weight.
  expect_refused(qdq(w, false, channel_scales(), 1, zp_tensor(ElemType::kU8, {kN}, 128, kN)).done(),
                 "qdq-zp-type", {"x_zero_point is uint8, not int8"});
  {
    Builder b = ort_dynamic(w, channel_scales(), Chain::kProduct);
    b.g.initializers["Wzp"] = zp_tensor(ElemType::kU8, {}, 0);
    expect_refused(b.done(), "mmi-zp-type", {"b_zero_point is uint8, not int8"});
  }
  {
    Builder b = ort_dynamic(w, channel_scales(), Chain::kProduct);
    b.g.initializers["Wzp"] = zp_tensor(ElemType::kS8, {5}, 0, 5);
    expect_refused(b.done(), "mmi-zp-len", {"b_zero_point has 5 elements, not 1 or N = 8"});
  }
}

}  // namespace
}  // namespace sparq

namespace sparq {
namespace {

// The compiled-in break-even table per kernel family, and a dense layer of any pattern
// packed 4 rows at a time (the one-row dense kernels are 2-3x slower): a float MatMul
// with an explicit 1x4 block, kept dense at 50% density (above 1x4's break-even) and
// sparse, in the quad kernel's form, at 25%.
TEST(ConvertBreakEven, PerPatternAndDenseFourRows) {
  EXPECT_DOUBLE_EQ(sparse_break_even_density(true, kBlock4x1), 0.90);
  EXPECT_DOUBLE_EQ(sparse_break_even_density(true, kBlock1x4), 0.40);
  EXPECT_DOUBLE_EQ(sparse_break_even_density(true, kBlock1x1), 0.36);
  EXPECT_DOUBLE_EQ(sparse_break_even_density(false, kBlock4x1), 0.70);
  EXPECT_DOUBLE_EQ(sparse_break_even_density(false, BlockShape{16, 1}), 0.70);
  EXPECT_DOUBLE_EQ(sparse_break_even_density(false, kBlock1x4), 0.25);
  EXPECT_DOUBLE_EQ(sparse_break_even_density(false, kBlock1x1), 0.32);
  for (const double sparsity : {0.5, 0.75}) {
    for (const char* precision : {"int8", "fp32"}) {
      Builder b;
      std::vector<float> w(static_cast<size_t>(kK * kN));
      std::mt19937 rng(3);
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      for (float& v : w) v = u(rng);
      b.g.initializers["W"] = f32({kK, kN}, w);
      b.node("MatMul", {"x", "W"}, {"y"});
      b.output("y");
      const Graph g = b.done();
      const std::string path = tmp_path(std::string("breakeven-") + precision);
      ConvertOptions o;
      o.threads = 1;
      o.precision = precision;
      o.block = "1x4";
      o.prune = sparsity;
      const auto report = convert_graph(g, path, o, nullptr, nullptr, nullptr);
      ASSERT_EQ(report.size(), 1u);
      const bool int8 = std::string(precision) == "int8";
      const bool want_sparse = 1.0 - sparsity <= sparse_break_even_density(int8, kBlock1x4);
      EXPECT_EQ(report[0].sparse, want_sparse) << precision << " " << sparsity;
      auto model = Model::load(path);
      std::remove(path.c_str());
      const PackedWeights& p = model->packed(model->graph().nodes[0].attr("weight")->s);
      EXPECT_EQ(p.dense, !want_sparse);
      EXPECT_EQ(p.rows_per_block, want_sparse ? 1 : 4) << precision << " " << sparsity;
      if (int8) {
        EXPECT_EQ(p.quad_index != nullptr, want_sparse);
      }
      // The same product as the float graph either way.
      const Value x = random_x(5);
      Session s(model, 1);
      const auto got = s.run({{"x", x}});
      Graph pruned = g;
      std::vector<float> wt(w.size());
      for (int64_t kk = 0; kk < kK; ++kk)
        for (int64_t n = 0; n < kN; ++n) wt[n * kK + kk] = w[kk * kN + n];
      prune_blocks(wt.data(), kN, kK, kBlock1x4, sparsity);
      for (int64_t kk = 0; kk < kK; ++kk)
        for (int64_t n = 0; n < kN; ++n) w[kk * kN + n] = wt[n * kK + kk];
      pruned.initializers["W"] = f32({kK, kN}, w);
      const auto want = interpret(pruned, {{"x", x}});
      const Constant& a = *want.at("y");
      const Constant& c = *got.at("y");
      double ab = 0, aa = 0, cc = 0;
      for (int64_t i = 0; i < a.elements(); ++i) {
        const double u1 = a.data<float>()[i], v1 = c.data<float>()[i];
        ab += u1 * v1, aa += u1 * u1, cc += v1 * v1;
      }
      EXPECT_GE(ab / std::sqrt(aa * cc), int8 ? 0.999 : 0.999999) << precision << " " << sparsity;
    }
  }
}

}  // namespace
}  // namespace sparq

namespace sparq {
namespace {

// Attention as quantized exports write it, on Q [1, 2, 4, 8], K^T [1, 2, 8, 4], V [1, 2, 4, 8]:
// MatMul(Q, K^T) -> Mul(scale) -> Softmax -> MatMul(P, V), each matmul input fake-quantized
// by a QuantizeLinear -> DequantizeLinear pair (kQdq) or both matmuls QLinearMatMul
// (kQLinear); `skip` names an input ("q", "kt", "p", "v") left unquantized.
enum class AttentionForm { kQdq, kQLinear };
struct AttentionBuilder {
  Graph g;
  AttentionBuilder() {
    g.opset = 14;
    for (const char* name : {"q", "kt", "v"}) {
      ValueInfo x;
      x.name = name;
      x.type = ElemType::kF32;
      const bool t = std::string(name) == "kt";
      x.shape = {Dim{1, ""}, Dim{2, ""}, Dim{t ? 8 : 4, ""}, Dim{t ? 4 : 8, ""}};
      g.inputs.push_back(x);
    }
    ValueInfo y;
    y.name = "y";
    y.type = ElemType::kF32;
    g.outputs.push_back(y);
    g.initializers["scale"] = f32({}, {0.35f});
    g.initializers["s"] = f32({}, {0.03f});
    g.initializers["sp"] = f32({}, {1.0f / 255});
    g.initializers["z"] = zp_tensor(ElemType::kU8, {}, 128);
    g.initializers["zp"] = zp_tensor(ElemType::kU8, {}, 0);
    g.initializers["ys"] = f32({}, {0.05f});
  }
  void node(const char* op, std::vector<std::string> in, std::vector<std::string> out) {
    Node n;
    n.op = op;
    n.name = out[0] + "_node";
    n.inputs = std::move(in);
    n.outputs = std::move(out);
    g.nodes.push_back(n);
  }
  // x fake-quantized with scale s and zero point z: returns the DequantizeLinear output.
  std::string pair(const std::string& x, const std::string& s, const std::string& z,
                   const std::string& tag = "") {
    node("QuantizeLinear", {x, s, z}, {x + tag + "_q"});
    node("DequantizeLinear", {x + tag + "_q", s, z}, {x + tag + "_dq"});
    return x + tag + "_dq";
  }
  // scores: also fake-quantize the scores and the scaled scores (quantize_static's QDQ
  // around the scale and the Softmax).
  Graph build(AttentionForm form, const std::string& skip = "", bool scores = false) {
    auto in = [&](const std::string& x, bool prob) {
      return skip == x ? x : pair(x, prob ? "sp" : "s", prob ? "zp" : "z");
    };
    if (form == AttentionForm::kQdq) {
      const std::string a = in("q", false), b = in("kt", false);
      node("MatMul", {a, b}, {"scores"});
    } else {
      node("QuantizeLinear", {"q", "s", "z"}, {"q_q"});
      node("QuantizeLinear", {"kt", "s", "z"}, {"kt_q"});
      node("QLinearMatMul", {"q_q", "s", "z", "kt_q", "s", "z", "ys", "z"}, {"scores_q"});
      node("DequantizeLinear", {"scores_q", "ys", "z"}, {"scores"});
    }
    node("Mul", {scores ? pair("scores", "ys", "z", "_f") : "scores", "scale"}, {"scaled"});
    node("Softmax", {scores ? pair("scaled", "ys", "z", "_f") : "scaled"}, {"p"});
    if (form == AttentionForm::kQdq) {
      const std::string a = in("p", true), b = in("v", false);
      node("MatMul", {a, b}, {"y"});
    } else {
      node("QuantizeLinear", {"p", "sp", "zp"}, {"p_q"});
      node("QuantizeLinear", {"v", "s", "z"}, {"v_q"});
      node("QLinearMatMul", {"p_q", "sp", "zp", "v_q", "s", "z", "ys", "z"}, {"y_q"});
      node("DequantizeLinear", {"y_q", "ys", "z"}, {"y"});
    }
    resolve_ops(g);
    return g;
  }
};

int count_op(const Graph& g, OpId op) {
  int c = 0;
  for (const Node& n : g.nodes) c += op_of(n) == op;
  return c;
}

Value random_tensor(std::vector<int64_t> shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  int64_t count = 1;
  for (int64_t s : shape) count *= s;
  std::vector<float> v(static_cast<size_t>(count));
  for (float& f : v) f = d(rng);
  return f32(std::move(shape), v);
}

// The matmuls read the float activations, no quantized op is left, the attention pattern
// fuses, and the converted model stays within the int8 rule of the quantized graph's
// exact semantics (per row cosine >= 0.995).
// Also with the scores fake-quantized on the way to the Softmax.
TEST(QuantizedAttention, QdqPairsAndQLinearMatMulReadInFloat) {
  for (const bool scores : {false, true})
    for (AttentionForm form : {AttentionForm::kQdq, AttentionForm::kQLinear}) {
      SCOPED_TRACE(std::to_string(static_cast<int>(form)) + (scores ? " with the scores" : ""));
      const Graph quantized = AttentionBuilder().build(form, "", scores);
      Graph g = quantized;
      EXPECT_EQ(read_attention_activations_in_float(g), 2);
      for (OpId op : {OpId::kQuantizeLinear, OpId::kDequantizeLinear, OpId::kQLinearMatMul})
        EXPECT_EQ(count_op(g, op), 0);
      ASSERT_EQ(count_op(g, OpId::kMatMul), 2);
      EXPECT_EQ(g.nodes.front().inputs, (std::vector<std::string>{"q", "kt"}));
      EXPECT_EQ(g.nodes.back().inputs, (std::vector<std::string>{"p", "v"}));
      EXPECT_EQ(g.nodes.back().outputs, (std::vector<std::string>{"y"}));
      EXPECT_EQ(optimize_graph(g).attention, 1);

      const std::string path = tmp_path("attention");
      ConvertOptions o;
      o.threads = 1;
      FastPathReport fp;
      std::vector<std::string> notes;
      convert_graph(quantized, path, o, nullptr, &fp, &notes);
      EXPECT_EQ(fp.attention, 1);
      auto model = Model::load(path);
      std::remove(path.c_str());
      const std::map<std::string, Value> feeds = {{"q", random_tensor({1, 2, 4, 8}, 1)},
                                                  {"kt", random_tensor({1, 2, 8, 4}, 2)},
                                                  {"v", random_tensor({1, 2, 4, 8}, 3)}};
      const auto want = interpret(quantized, feeds);
      Session s(model, 1);
      const auto got = s.run(feeds);
      const Constant& a = *want.at("y");
      const Constant& b = *got.at("y");
      ASSERT_EQ(a.shape, b.shape);
      for (int64_t t = 0; t < a.elements() / 8; ++t) {
        double ab = 0, aa = 0, bb = 0;
        for (int64_t j = 0; j < 8; ++j) {
          const double u = a.data<float>()[t * 8 + j], v = b.data<float>()[t * 8 + j];
          ab += u * v, aa += u * u, bb += v * v;
        }
        EXPECT_GE(ab / std::sqrt(aa * bb), 0.995) << "row " << t;
      }
    }
}

// One input left float: the other pairs go, attention still fuses.
TEST(QuantizedAttention, SomeInputsUnquantized) {
  Graph g = AttentionBuilder().build(AttentionForm::kQdq, "v");
  EXPECT_EQ(read_attention_activations_in_float(g), 2);
  EXPECT_EQ(count_op(g, OpId::kQuantizeLinear), 0);
  EXPECT_EQ(optimize_graph(g).attention, 1);
}

// Near misses keep their pair (exact ONNX semantics for what reads it).
TEST(QuantizedAttention, NearMissesKeepThePair) {
  {  // a scale that is not a constant: that pair stays, the others go
    AttentionBuilder b;
    ValueInfo s;
    s.name = "s_in";
    s.type = ElemType::kF32;
    b.g.inputs.push_back(s);
    b.pair("q", "s_in", "z");
    Graph g = b.build(AttentionForm::kQdq, "q");
    // q's pair was built by hand, so the MatMul reads "q" directly: rewire it to the pair.
    for (Node& n : g.nodes) {
      if (op_of(n) == OpId::kMatMul && n.inputs[0] == "q") n.inputs[0] = "q_dq";
    }
    EXPECT_EQ(read_attention_activations_in_float(g), 2);
    EXPECT_EQ(count_op(g, OpId::kQuantizeLinear), 1);
    EXPECT_EQ(count_op(g, OpId::kDequantizeLinear), 1);
    for (const Node& n : g.nodes) {
      if (op_of(n) == OpId::kMatMul && n.outputs[0] == "scores") {
        EXPECT_EQ(n.inputs, (std::vector<std::string>{"q_dq", "kt"}));
      }
    }
  }
  {  // a per-axis pair (scale and zero point along the last axis): stays
    AttentionBuilder b;
    b.g.initializers["s8"] = f32({8}, std::vector<float>(8, 0.03f));
    b.g.initializers["z8"] = zp_tensor(ElemType::kU8, {8}, 128, 8);
    b.pair("v", "s8", "z8");
    for (Node& n : b.g.nodes) n.attrs["axis"] = int_attr(3);
    Graph g = b.build(AttentionForm::kQdq, "v");
    for (Node& n : g.nodes) {
      if (op_of(n) == OpId::kMatMul && n.inputs[1] == "v") n.inputs[1] = "v_dq";
    }
    EXPECT_EQ(read_attention_activations_in_float(g), 2);
    EXPECT_EQ(count_op(g, OpId::kDequantizeLinear), 1);
    EXPECT_EQ(g.nodes.back().inputs, (std::vector<std::string>{"p", "v_dq"}));
  }
  {  // the pair's consumer is not an activation matmul (an Add, a constant-weight MatMul)
    AttentionBuilder b;
    b.g.initializers["w"] = f32({8, 8}, std::vector<float>(64, 0.1f));
    const std::string x = b.pair("q", "s", "z");
    b.node("Add", {x, x}, {"y"});
    const std::string v = b.pair("v", "s", "z");
    b.node("MatMul", {v, "w"}, {"y2"});
    resolve_ops(b.g);
    Graph g = b.g;
    EXPECT_EQ(read_attention_activations_in_float(g), 0);
    EXPECT_EQ(g.nodes.size(), b.g.nodes.size());
  }
  {  // an activation matmul outside the attention pattern: left as it is
    AttentionBuilder b;
    const std::string q = b.pair("q", "s", "z"), k = b.pair("kt", "s", "z");
    b.node("MatMul", {q, k}, {"y"});
    resolve_ops(b.g);
    Graph g = b.g;
    EXPECT_EQ(read_attention_activations_in_float(g), 0);
    EXPECT_EQ(count_op(g, OpId::kQuantizeLinear), 2);
  }
  {  // the scaled scores' pair also read outside the attention: everything stays
    Graph g = AttentionBuilder().build(AttentionForm::kQdq, "", true);
    ValueInfo extra;
    extra.name = "scaled_f_dq";
    g.outputs.push_back(extra);
    const size_t nodes = g.nodes.size();
    Graph kept = g;
    EXPECT_EQ(read_attention_activations_in_float(kept), 0);
    EXPECT_EQ(kept.nodes.size(), nodes);
    // convert says so: the attention and the model's quantization run op by op.
    FastPathReport fp;
    const std::string path = tmp_path("scores-pair-read-outside");
    convert_graph(g, path, ConvertOptions(), nullptr, &fp);
    std::remove(path.c_str());
    std::set<std::string> causes;
    for (const OffPathNode& o : fp.off) causes.insert(o.cause);
    EXPECT_EQ(causes, (std::set<std::string>{"attention", "quantize"})) << fp.summary();
  }
  {  // one QuantizeLinear read by two DequantizeLinears, one of them a graph output: that
     // quantization stays (exact) for both, the rest goes and the attention still fuses
    AttentionBuilder b;
    const std::string q = b.pair("q", "s", "z");
    b.node("DequantizeLinear", {"q_q", "s", "z"}, {"q_dq2"});
    Graph g = b.build(AttentionForm::kQdq, "q");
    for (Node& n : g.nodes) {
      if (op_of(n) == OpId::kMatMul && n.inputs[0] == "q") n.inputs[0] = q;
    }
    ValueInfo extra;
    extra.name = "q_dq2";
    g.outputs.push_back(extra);
    EXPECT_EQ(read_attention_activations_in_float(g), 2);
    EXPECT_EQ(count_op(g, OpId::kQuantizeLinear), 1);
    EXPECT_EQ(count_op(g, OpId::kDequantizeLinear), 2);
    EXPECT_EQ(optimize_graph(g).attention, 1);
  }
  {  // the same: its two DequantizeLinears feed Q and V of one attention, so both go
    AttentionBuilder b;
    const std::string q = b.pair("q", "s", "z");
    b.node("DequantizeLinear", {"q_q", "s", "z"}, {"q_dq2"});
    Graph g = b.build(AttentionForm::kQdq, "q");
    std::vector<Node> kept;
    for (Node& n : g.nodes) {
      if (n.outputs[0] == "v_q" || n.outputs[0] == "v_dq") continue;  // V is q here
      if (op_of(n) == OpId::kMatMul && n.inputs[0] == "q") n.inputs[0] = q;
      if (op_of(n) == OpId::kMatMul && n.inputs[1] == "v_dq") n.inputs[1] = "q_dq2";
      kept.push_back(n);
    }
    g.nodes = std::move(kept);
    EXPECT_EQ(read_attention_activations_in_float(g), 2);
    EXPECT_EQ(count_op(g, OpId::kQuantizeLinear), 0);
    EXPECT_EQ(count_op(g, OpId::kDequantizeLinear), 0);
    EXPECT_EQ(g.nodes.back().inputs, (std::vector<std::string>{"p", "q"}));
    EXPECT_EQ(optimize_graph(g).attention, 1);
  }
  {  // QLinearMatMul whose output is read by something else than the DequantizeLinear
    Graph g = AttentionBuilder().build(AttentionForm::kQLinear);
    ValueInfo extra;
    extra.name = "y_q";
    g.outputs.push_back(extra);
    // P V stays, so the pattern does not match and Q K^T stays too.
    EXPECT_EQ(read_attention_activations_in_float(g), 0);
    EXPECT_EQ(count_op(g, OpId::kQLinearMatMul), 2);
  }
}

}  // namespace
}  // namespace sparq
