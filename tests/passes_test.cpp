// The fusion patterns on hand-built graphs (engine/passes.cpp): each spelling of a GELU
// and of scaled, masked attention that exporters write must fuse into the fused op with
// the right parameters, and forms that are numerically different (another constant, a
// value read elsewhere) must not. Every case also runs: the converted model (planned and
// op by op) against the reference interpreter on the unconverted graph.
#include "engine/passes.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/interpreter.h"
#include "engine/model.h"
#include "formats/error.h"

namespace sparq {
namespace {

std::string tmp_path(const std::string& name) {
  const char* t = std::getenv("TMPDIR");
  return std::string(t ? t : "/tmp") + "/sparq-passes-" + name + ".sparq";
}

std::shared_ptr<Constant> f32(std::vector<int64_t> shape, uint32_t seed, float scale = 1.0f) {
  auto c = std::make_shared<Constant>();
  c->type = ElemType::kF32;
  c->shape = std::move(shape);
  c->bytes.resize(static_cast<size_t>(c->elements()) * 4);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < c->elements(); ++i) reinterpret_cast<float*>(c->bytes.data())[i] = d(rng);
  return c;
}

std::shared_ptr<Constant> scalar(float v) {
  auto c = std::make_shared<Constant>();
  c->type = ElemType::kF32;
  c->bytes.resize(4);
  std::memcpy(c->bytes.data(), &v, 4);
  return c;
}

std::shared_ptr<Constant> i64(std::vector<int64_t> v) {
  auto c = std::make_shared<Constant>();
  c->type = ElemType::kI64;
  c->shape = {static_cast<int64_t>(v.size())};
  c->bytes.resize(v.size() * 8);
  if (!v.empty()) std::memcpy(c->bytes.data(), v.data(), v.size() * 8);
  return c;
}

// A graph under construction: nodes named after their output.
struct Builder {
  Graph g;
  int counter = 0;

  Builder(int64_t opset = 14) { g.opset = opset; }
  std::string constant(float v) {
    const std::string name = "c" + std::to_string(counter++);
    g.initializers[name] = scalar(v);
    return name;
  }
  std::string op(const char* type, std::vector<std::string> in,
                 std::map<std::string, Attribute> attrs = {}) {
    Node n;
    n.op = type;
    n.inputs = std::move(in);
    n.outputs = {std::string(type) + "_" + std::to_string(counter++)};
    n.name = n.outputs[0];
    n.attrs = std::move(attrs);
    g.nodes.push_back(n);
    return n.outputs[0];
  }
  void input(const std::string& name, ElemType t, std::vector<int64_t> dims) {
    ValueInfo v;
    v.name = name;
    v.type = t;
    for (int64_t d : dims)
      v.shape.push_back(Dim{d < 0 ? -1 : d, d < 0 ? "n" + std::to_string(-d) : ""});
    g.inputs.push_back(v);
  }
  void output(const std::string& name) {
    ValueInfo v;
    v.name = name;
    v.type = ElemType::kF32;
    g.outputs.push_back(v);
  }
};

Attribute ints(std::vector<int64_t> v) {
  Attribute a;
  a.kind = Attribute::Kind::kInts;
  a.ints = std::move(v);
  return a;
}
Attribute int_attr(int64_t v) {
  Attribute a;
  a.kind = Attribute::Kind::kInt;
  a.i = v;
  return a;
}

struct Converted {
  std::shared_ptr<const Model> model;
  PlanSummary plan;  // of the planned run
  std::vector<const Node*> nodes(const char* op) const {
    std::vector<const Node*> r;
    for (const Node& n : model->graph().nodes)
      if (n.op == op) r.push_back(&n);
    return r;
  }
};

// Converts (fp32, fused), then checks the planned and op-by-op runs against the
// reference interpreter on the unconverted graph.
Converted convert_and_check(const Graph& g, const std::map<std::string, Value>& inputs,
                            const std::string& name, double tol = 2e-5) {
  const std::string path = tmp_path(name);
  ConvertOptions o;
  o.threads = 1;
  convert_graph(g, path, o);
  Converted c;
  c.model = Model::load(path);
  std::remove(path.c_str());
  const auto want = interpret(g, inputs);
  for (bool op_by_op : {false, true}) {
    Session s(c.model, 1);
    s.use_interpreter(op_by_op);
    const auto got = s.run(inputs);
    if (!op_by_op) c.plan = s.plan_summary();
    for (const auto& kv : want) {
      SCOPED_TRACE(name + " " + kv.first + (op_by_op ? " op by op" : " planned"));
      const Constant& w = *kv.second;
      const Constant& r = *got.at(kv.first);
      EXPECT_EQ(r.shape, w.shape);
      if (r.shape != w.shape) continue;
      double worst = 0;
      for (int64_t i = 0; i < w.elements(); ++i) {
        const double a = w.data<float>()[i], b = r.data<float>()[i];
        worst = std::max(worst, std::fabs(a - b) / (1.0 + std::fabs(a)));
      }
      EXPECT_LE(worst, tol);
    }
  }
  return c;
}

// ---- GELU ---------------------------------------------------------------------------

// x [2, 5, 8] -> MatMul(W [8, 12]) -> Add(b) -> h; `gelu(b, h)` builds the activation.
template <class F>
Converted gelu_case(const std::string& name, F gelu) {
  Builder b;
  b.input("x", ElemType::kF32, {2, 5, 8});
  b.g.initializers["W"] = f32({8, 12}, 1, 0.8f);
  b.g.initializers["bias"] = f32({12}, 2, 0.3f);
  const std::string h = b.op("Add", {b.op("MatMul", {"x", "W"}), "bias"});
  b.output(gelu(b, h));
  std::map<std::string, Value> in = {{"x", f32({2, 5, 8}, 3, 1.5f)}};
  return convert_and_check(b.g, in, name);
}

std::string activation_of(const Converted& c) {
  const auto mm = c.nodes("SparqMatMul");
  if (mm.size() != 1) return "?";
  const Attribute* a = mm[0]->attr("activation");
  return a ? a->s : "none";
}

TEST(Passes, GeluErfSpellings) {
  // torch: Div(h, sqrt 2) -> Erf -> Add(1) -> Mul(h, .) -> Mul(0.5)
  auto c = gelu_case("erf-torch", [](Builder& b, const std::string& h) {
    const std::string e = b.op("Erf", {b.op("Div", {h, b.constant(std::sqrt(2.0f))})});
    return b.op("Mul", {b.op("Mul", {h, b.op("Add", {e, b.constant(1.0f)})}), b.constant(0.5f)});
  });
  EXPECT_EQ(activation_of(c), "gelu_erf");
  EXPECT_TRUE(c.nodes("Erf").empty());
  // transformers' own: h * 0.5 * (1 + erf(h * 0.70710678)), constants first
  c = gelu_case("erf-hf", [](Builder& b, const std::string& h) {
    const std::string half_h = b.op("Mul", {b.constant(0.5f), h});
    const std::string e = b.op("Erf", {b.op("Mul", {b.constant(0.70710678f), h})});
    return b.op("Mul", {half_h, b.op("Add", {b.constant(1.0f), e})});
  });
  EXPECT_EQ(activation_of(c), "gelu_erf");
  // 0.5 * (h + h * erf(h / sqrt 2)), distributed
  c = gelu_case("erf-distributed", [](Builder& b, const std::string& h) {
    const std::string e = b.op("Erf", {b.op("Div", {h, b.constant(1.41421356f)})});
    return b.op("Mul", {b.op("Add", {h, b.op("Mul", {h, e})}), b.constant(0.5f)});
  });
  EXPECT_EQ(activation_of(c), "gelu_erf");
}

TEST(Passes, GeluTanhAndSigmoidSpellings) {
  const float k = std::sqrt(2.0f / static_cast<float>(M_PI));
  // transformers' NewGELU: 0.5 h (1 + tanh(k (h + 0.044715 Pow(h, 3))))
  auto c = gelu_case("tanh-hf", [k](Builder& b, const std::string& h) {
    const std::string cube = b.op("Pow", {h, b.constant(3.0f)});
    const std::string inner = b.op("Add", {h, b.op("Mul", {b.constant(0.044715f), cube})});
    const std::string t = b.op("Tanh", {b.op("Mul", {b.constant(k), inner})});
    const std::string half_h = b.op("Mul", {b.constant(0.5f), h});
    return b.op("Mul", {half_h, b.op("Add", {b.constant(1.0f), t})});
  });
  EXPECT_EQ(activation_of(c), "gelu_tanh");
  EXPECT_TRUE(c.nodes("Tanh").empty());
  // h*h*h, the inner product distributed, constants folded by an exporter
  c = gelu_case("tanh-folded", [k](Builder& b, const std::string& h) {
    const std::string cube = b.op("Mul", {b.op("Mul", {h, h}), h});
    const std::string inner = b.op(
        "Add", {b.op("Mul", {h, b.constant(k)}), b.op("Mul", {cube, b.constant(k * 0.044715f)})});
    const std::string t = b.op("Tanh", {inner});
    return b.op("Mul", {b.op("Mul", {h, b.op("Add", {t, b.constant(1.0f)})}), b.constant(0.5f)});
  });
  EXPECT_EQ(activation_of(c), "gelu_tanh");
  // QuickGELU: h * sigmoid(1.702 h)
  c = gelu_case("sigmoid", [](Builder& b, const std::string& h) {
    return b.op("Mul", {h, b.op("Sigmoid", {b.op("Mul", {b.constant(1.702f), h})})});
  });
  EXPECT_EQ(activation_of(c), "gelu_sigmoid");
  EXPECT_TRUE(c.nodes("Sigmoid").empty());
}

// Forms that are not GELU (another constant, SiLU) or whose intermediate values are read
// elsewhere stay op by op, and still give the reference's answers.
TEST(Passes, NearGeluFormsDoNotFuse) {
  auto c = gelu_case("erf-0.6", [](Builder& b, const std::string& h) {
    const std::string e = b.op("Erf", {b.op("Div", {h, b.constant(std::sqrt(2.0f))})});
    return b.op("Mul", {b.op("Mul", {h, b.op("Add", {e, b.constant(1.0f)})}), b.constant(0.6f)});
  });
  EXPECT_EQ(activation_of(c), "none");
  EXPECT_EQ(c.nodes("Erf").size(), 1u);
  c = gelu_case("tanh-cubic", [](Builder& b, const std::string& h) {
    const std::string cube = b.op("Pow", {h, b.constant(3.0f)});
    const std::string inner = b.op("Add", {h, b.op("Mul", {b.constant(0.0447f), cube})});
    const std::string t = b.op("Tanh", {b.op("Mul", {b.constant(0.7978845608f), inner})});
    return b.op("Mul", {b.op("Mul", {b.constant(0.5f), h}), b.op("Add", {b.constant(1.0f), t})});
  });
  EXPECT_EQ(activation_of(c), "none");
  c = gelu_case("silu", [](Builder& b, const std::string& h) {
    return b.op("Mul", {h, b.op("Sigmoid", {h})});
  });
  EXPECT_EQ(activation_of(c), "none");
  c = gelu_case("sigmoid-1.5", [](Builder& b, const std::string& h) {
    return b.op("Mul", {h, b.op("Sigmoid", {b.op("Mul", {b.constant(1.5f), h})})});
  });
  EXPECT_EQ(activation_of(c), "none");
  // h is also read by another consumer (a second output): no fusion.
  c = gelu_case("h-shared", [](Builder& b, const std::string& h) {
    b.output(b.op("Mul", {h, b.constant(2.0f)}));
    return b.op("Mul", {h, b.op("Sigmoid", {b.op("Mul", {b.constant(1.702f), h})})});
  });
  EXPECT_EQ(activation_of(c), "none");
}

// ---- LayerNorm ----------------------------------------------------------------------

struct LnForm {
  const char* name;
  bool mul_square, reciprocal, constants_first, beta, eps_outside;
  std::vector<int64_t> axes;
  bool fuses;
};

Converted layernorm_case(const LnForm& f) {
  Builder b;
  b.input("x", ElemType::kF32, {2, 5, 8});
  b.g.initializers["gamma"] = f32({8}, 4, 0.5f);
  b.g.initializers["beta"] = f32({8}, 5, 0.5f);
  Attribute axes;
  axes.kind = Attribute::Kind::kInts;
  axes.ints = f.axes;
  const std::string mean = b.op("ReduceMean", {"x"}, {{"axes", axes}});
  const std::string d = b.op("Sub", {"x", mean});
  const std::string sq = f.mul_square ? b.op("Mul", {d, d}) : b.op("Pow", {d, b.constant(2.0f)});
  const std::string var = b.op("ReduceMean", {sq}, {{"axes", axes}});
  const std::string eps = b.constant(1e-5f);
  const std::string sd = f.eps_outside ? b.op("Add", {b.op("Sqrt", {var}), eps})
                                       : b.op("Sqrt", {b.op("Add", {var, eps})});
  const std::string q =
      f.reciprocal ? b.op("Mul", {d, b.op("Reciprocal", {sd})}) : b.op("Div", {d, sd});
  std::string y = f.constants_first ? b.op("Mul", {"gamma", q}) : b.op("Mul", {q, "gamma"});
  if (f.beta) y = f.constants_first ? b.op("Add", {"beta", y}) : b.op("Add", {y, "beta"});
  b.output(y);
  return convert_and_check(b.g, {{"x", f32({2, 5, 8}, 6, 2.0f)}}, f.name, 1e-5);
}

TEST(Passes, LayerNormForms) {
  const LnForm forms[] = {
      {"ln-torch", false, false, false, true, false, {-1}, true},
      {"ln-mul-reciprocal", true, true, true, true, false, {-1}, true},
      {"ln-no-beta", false, false, false, false, false, {-1}, true},
      {"ln-eps-outside-sqrt", false, false, false, true, true, {-1}, false},
      {"ln-not-last-axis", false, false, false, true, false, {1}, false},
  };
  for (const LnForm& f : forms) {
    SCOPED_TRACE(f.name);
    const Converted c = layernorm_case(f);
    EXPECT_EQ(c.nodes("LayerNormalization").size(), f.fuses ? 1u : 0u);
    EXPECT_EQ(c.nodes("ReduceMean").size(), f.fuses ? 0u : 2u);
  }
}

// ---- attention ----------------------------------------------------------------------

struct AttentionSpec {
  std::string name;
  int64_t opset = 14;
  const char* scale = "div";  // div | mul | q-div | q-mul | qk-mul | none
  const char* mask = "add";   // add | where | where-nocast | none | per-query
  bool softmax_axis = true;   // give Softmax an explicit axis (-1)
  float fill = -3.4e38f;
};

constexpr int64_t kB = 2, kS = 5, kH = 8, kHeads = 2, kDh = 4;

// x [B, S, H] -> Q, K, V (MatMul + Add) -> heads -> scores (scaled as spec.scale) ->
// masked (spec.mask) -> Softmax -> MatMul(V) -> back to [B, S, H].
Converted attention_case(const AttentionSpec& spec) {
  Builder b(spec.opset);
  b.input("x", ElemType::kF32, {-1, -2, kH});
  b.input("attention_mask", ElemType::kI64, {-1, -2});
  auto proj = [&](const char* w, uint32_t seed) {
    b.g.initializers[w] = f32({kH, kH}, seed, 0.5f);
    b.g.initializers[std::string(w) + "_b"] = f32({kH}, seed + 10, 0.1f);
    return b.op("Add", {b.op("MatMul", {"x", w}), std::string(w) + "_b"});
  };
  b.g.initializers["heads_shape"] = i64({0, 0, kHeads, kDh});
  b.g.initializers["back_shape"] = i64({0, 0, kH});
  auto split = [&](const std::string& v, std::vector<int64_t> perm) {
    return b.op("Transpose", {b.op("Reshape", {v, "heads_shape"})}, {{"perm", ints(perm)}});
  };
  std::string q = split(proj("Wq", 1), {0, 2, 1, 3});
  std::string kt = split(proj("Wk", 2), {0, 2, 3, 1});
  const std::string v = split(proj("Wv", 3), {0, 2, 1, 3});
  const float c = std::sqrt(static_cast<float>(kDh));
  const std::string sc = spec.scale;
  if (sc == "q-div") q = b.op("Div", {q, b.constant(c)});
  if (sc == "q-mul") q = b.op("Mul", {b.constant(1.0f / c), q});
  if (sc == "qk-mul") {
    q = b.op("Mul", {q, b.constant(1.0f / std::sqrt(c))});
    kt = b.op("Mul", {kt, b.constant(1.0f / std::sqrt(c))});
  }
  std::string s = b.op("MatMul", {q, kt});
  if (sc == "div") s = b.op("Div", {s, b.constant(c)});
  if (sc == "mul") s = b.op("Mul", {s, b.constant(1.0f / c)});
  const std::string m = spec.mask;
  b.g.initializers["mask_axes"] = i64({1, 2});
  auto unsq = [&](const std::string& x) {
    if (spec.opset >= 13) return b.op("Unsqueeze", {x, "mask_axes"});
    return b.op("Unsqueeze", {x}, {{"axes", ints({1, 2})}});
  };
  Attribute to_f, to_b;
  to_f.kind = to_b.kind = Attribute::Kind::kInt;
  to_f.i = 1;
  to_b.i = 9;
  if (m == "per-query") {  // an additive [B, 1, S, S] mask that differs per query row
    b.input("qmask", ElemType::kF32, {-1, 1, -2, -2});
    s = b.op("Add", {s, "qmask"});
  } else if (m == "add") {
    const std::string mf = b.op("Cast", {unsq("attention_mask")}, {{"to", to_f}});
    const std::string ext =
        b.op("Mul", {b.op("Sub", {b.constant(1.0f), mf}), b.constant(-10000.0f)});
    s = b.op("Add", {s, ext});
  } else if (m == "where" || m == "where-nocast") {
    b.g.initializers["zero"] = i64({0});
    std::string cond = b.op("Equal", {unsq("attention_mask"), "zero"});
    cond = b.op("Expand", {cond, b.op("Shape", {s})});
    if (m == "where") cond = b.op("Cast", {cond}, {{"to", to_b}});
    s = b.op("Where", {cond, b.constant(spec.fill), s});
  }
  std::map<std::string, Attribute> sm_attrs;
  if (spec.softmax_axis) sm_attrs["axis"] = int_attr(-1);
  const std::string p = b.op("Softmax", {s}, sm_attrs);
  const std::string ctx = b.op("MatMul", {p, v});
  const std::string t = b.op("Transpose", {ctx}, {{"perm", ints({0, 2, 1, 3})}});
  b.output(b.op("Reshape", {t, "back_shape"}));
  auto mask = std::make_shared<Constant>();
  mask->type = ElemType::kI64;
  mask->shape = {kB, kS};
  mask->bytes.assign(static_cast<size_t>(kB * kS) * 8, 0);
  for (int64_t i = 0; i < kB * kS; ++i)  // row 1 has 2 padding tokens
    reinterpret_cast<int64_t*>(mask->bytes.data())[i] = (i / kS == 1 && i % kS >= 3) ? 0 : 1;
  std::map<std::string, Value> in = {{"x", f32({kB, kS, kH}, 7, 1.0f)}, {"attention_mask", mask}};
  if (m == "per-query") in["qmask"] = f32({kB, 1, kS, kS}, 9, 1.0f);
  return convert_and_check(b.g, in, spec.name);
}

TEST(Passes, AttentionScaleAndMaskForms) {
  const float want = 1.0f / std::sqrt(static_cast<float>(kDh));
  for (const char* scale : {"div", "mul", "q-div", "q-mul", "qk-mul", "none"}) {
    for (const char* mask : {"add", "where", "where-nocast", "none"}) {
      AttentionSpec spec;
      spec.name = std::string("att-") + scale + "-" + mask;
      spec.scale = scale;
      spec.mask = mask;
      SCOPED_TRACE(spec.name);
      const Converted c = attention_case(spec);
      const auto att = c.nodes("SparqAttention");
      ASSERT_EQ(att.size(), 1u);
      EXPECT_TRUE(c.nodes("Softmax").empty());
      const float s = att[0]->attr("scale")->f;
      EXPECT_NEAR(s, std::string(scale) == "none" ? 1.0f : want, 1e-6f);
      EXPECT_EQ(c.plan.fused_attention, 1) << "the plan ran the attention op by op";
      if (std::string(mask) == "add") {  // its mask chain: one SparqMaskBias step
        EXPECT_EQ(c.nodes("SparqMaskBias").size(), 1u);
        EXPECT_EQ(c.plan.fused_mask_bias, 1);
      }
      const std::string kind = att[0]->attr("mask_kind")->s;
      EXPECT_EQ(kind, std::string(mask) == "add"    ? "add"
                      : std::string(mask) == "none" ? "none"
                                                    : "where");
    }
  }
}

// Before opset 13 Softmax coerces its input to 2D at `axis` (default 1): only an explicit
// last axis is the per-row softmax the attention kernel computes.
TEST(Passes, AttentionSoftmaxAxisBeforeOpset13) {
  AttentionSpec spec;
  spec.name = "att-opset11";
  spec.opset = 11;
  Converted c = attention_case(spec);
  EXPECT_EQ(c.nodes("SparqAttention").size(), 1u);
  EXPECT_EQ(c.plan.fused_attention, 1);
  spec.name = "att-opset11-default-axis";
  spec.softmax_axis = false;
  c = attention_case(spec);
  EXPECT_TRUE(c.nodes("SparqAttention").empty());
  EXPECT_EQ(c.nodes("Softmax").size(), 1u);
  spec.name = "att-opset13-default-axis";
  spec.opset = 13;
  c = attention_case(spec);
  EXPECT_EQ(c.nodes("SparqAttention").size(), 1u);
}

// An attention the kernel cannot take (a mask that varies by query row) is decided
// against before lowering: every node of it runs op by op in graph order, the reason is
// in the plan summary, and the answer is the reference's.
TEST(Passes, AttentionDeclinedAtPlanTimeRunsOpByOp) {
  AttentionSpec spec;
  spec.name = "att-per-query-mask";
  spec.mask = "per-query";
  const Converted c = attention_case(spec);
  ASSERT_EQ(c.nodes("SparqAttention").size(), 1u);  // fused at convert time
  EXPECT_EQ(c.plan.fused_attention, 0);             // not by the plan
  bool reported = false;
  for (const OffPathNode& o : c.plan.op_by_op)
    reported |=
        o.op == "SparqAttention" && o.cause.find("mask varies by query") != std::string::npos;
  EXPECT_TRUE(reported);
}

// The additive mask chain, in other spellings: Cast first and one Unsqueeze with both
// axes fuses; 2 - mask (not 1 - mask) and axes that give another layout do not. Each runs
// to the reference's bits either way (convert_and_check).
TEST(Passes, MaskBiasForms) {
  struct Form {
    const char* name;
    bool cast_first;
    std::vector<int64_t> axes1, axes2;  // axes2 empty: one Unsqueeze
    float one;
    bool fuses;
  };
  const Form forms[] = {
      {"mask-cast-first", true, {1, 2}, {}, 1.0f, true},
      {"mask-two-unsqueezes", false, {1}, {2}, 1.0f, true},
      {"mask-two-minus", false, {1}, {2}, 2.0f, false},
      {"mask-same-layout", false, {1}, {1}, 1.0f, true},    // [B,1,S] then [B,1,1,S]
      {"mask-other-layout", false, {0}, {2}, 1.0f, false},  // [1,B,1,S]
  };
  for (const Form& f : forms) {
    SCOPED_TRACE(f.name);
    Builder b;
    b.input("attention_mask", ElemType::kI64, {-1, -2});
    Attribute to_f;
    to_f.kind = Attribute::Kind::kInt;
    to_f.i = 1;
    b.g.initializers["ax1"] = i64(f.axes1);
    b.g.initializers["ax2"] = i64(f.axes2);
    std::string v = "attention_mask";
    if (f.cast_first) v = b.op("Cast", {v}, {{"to", to_f}});
    v = b.op("Unsqueeze", {v, "ax1"});
    if (!f.axes2.empty()) v = b.op("Unsqueeze", {v, "ax2"});
    if (!f.cast_first) v = b.op("Cast", {v}, {{"to", to_f}});
    v = b.op("Mul", {b.constant(-10000.0f), b.op("Sub", {b.constant(f.one), v})});
    b.output(v);
    auto mask = std::make_shared<Constant>();
    mask->type = ElemType::kI64;
    mask->shape = {2, 3};
    mask->bytes.resize(6 * 8);
    const int64_t vals[6] = {1, 1, 0, 1, 0, 0};
    std::memcpy(mask->bytes.data(), vals, sizeof vals);
    const Converted c = convert_and_check(b.g, {{"attention_mask", mask}}, f.name, 0.0);
    EXPECT_EQ(c.nodes("SparqMaskBias").size(), f.fuses ? 1u : 0u);
  }
}

TEST(Passes, AttentionWithInfiniteFill) {
  AttentionSpec spec;
  spec.name = "att-where-inf";
  spec.mask = "where";
  spec.fill = -INFINITY;
  const Converted c = attention_case(spec);
  EXPECT_EQ(c.nodes("SparqAttention").size(), 1u);
  EXPECT_EQ(c.plan.fused_attention, 1);
}

}  // namespace
}  // namespace sparq

namespace sparq {
namespace {

// Plans are made from shapes alone: a graph whose output shape depends on a run-time
// value (here a Reshape target that is a graph input) cannot be planned, and runs op by
// op instead, with the reason in the plan summary and the same answer.
TEST(Planner, ShapesKnownOnlyAtRunTimeRunOpByOp) {
  Builder b;
  b.input("x", ElemType::kF32, {2, 6});
  b.input("target", ElemType::kI64, {2});
  b.output(b.op("Reshape", {b.op("Mul", {"x", b.constant(2.0f)}), "target"}));
  const std::string path = tmp_path("unplannable");
  convert_graph(b.g, path, ConvertOptions());
  auto model = Model::load(path);
  std::remove(path.c_str());
  Session s(model, 1);
  for (std::vector<int64_t> t : {std::vector<int64_t>{3, 4}, std::vector<int64_t>{4, 3}}) {
    const auto out = s.run({{"x", f32({2, 6}, 1)}, {"target", i64(t)}});
    EXPECT_EQ(out.at(b.g.outputs[0].name)->shape, t);
    EXPECT_NE(s.plan_summary().not_planned.find("known only at run time"), std::string::npos)
        << s.plan_summary().not_planned;
  }
}

// A plannable graph: the first run is already a replay of the plan (same bytes as the
// second), and the plan summary says it was planned.
TEST(Planner, FirstRunIsAReplay) {
  Builder b;
  b.input("x", ElemType::kF32, {3, 8});
  b.g.initializers["W"] = f32({8, 5}, 2, 0.5f);
  b.output(b.op("Tanh", {b.op("MatMul", {"x", "W"})}));
  const std::string path = tmp_path("replay");
  convert_graph(b.g, path, ConvertOptions());
  auto model = Model::load(path);
  std::remove(path.c_str());
  Session s(model, 2);
  const auto in = std::map<std::string, Value>{{"x", f32({3, 8}, 3)}};
  const auto a = s.run(in);
  EXPECT_TRUE(s.plan_summary().not_planned.empty());
  EXPECT_EQ(s.plan_summary().matmuls, 1);
  const auto c = s.run(in);
  EXPECT_EQ(a.begin()->second->bytes, c.begin()->second->bytes);
}

}  // namespace
}  // namespace sparq
