// The op registry (engine/ops/ops.inc) on hand-built nodes: every kind of malformed node
// is refused with the right status and a message naming the node, and well-formed ones
// pass. Import and load both rely on this (issue 9's fuzzing found arity and attribute
// holes that crashed the passes before it existed).
#include "engine/ops/registry.h"

#include <string>

#include <gtest/gtest.h>

#include "formats/error.h"

namespace {

using sparq::Attribute;
using sparq::Node;
using sparq::Status;

Node make(const char* op, std::vector<std::string> in, std::vector<std::string> out) {
  Node n;
  n.name = "n0";
  n.op = op;
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return n;
}

Attribute ints(std::vector<int64_t> v) {
  Attribute a;
  a.kind = Attribute::Kind::kInts;
  a.ints = std::move(v);
  return a;
}
Attribute i(int64_t v) {
  Attribute a;
  a.kind = Attribute::Kind::kInt;
  a.i = v;
  return a;
}

// The status of validating `n` (kOk when it passes) and the message.
std::pair<Status, std::string> check(const Node& n, int64_t opset = 14, bool sparq_ops = false) {
  try {
    sparq::validate_node(n, opset, sparq_ops, "model.onnx");
    return {Status::kOk, ""};
  } catch (const sparq::Error& e) {
    return {e.status(), e.what()};
  }
}

TEST(Registry, EveryOnnxOpHasARowAndSparqOpsAreSeparate) {
  for (const std::string& op : sparq::op_names(sparq::OpDomain::kOnnx)) {
    const sparq::OpSpec* s = sparq::find_op(op);
    ASSERT_NE(s, nullptr) << op;
    EXPECT_EQ(s->domain, sparq::OpDomain::kOnnx);
    EXPECT_EQ(&sparq::op_spec(s->id), s);
  }
  EXPECT_EQ(sparq::find_op("Frobnicate"), nullptr);
  EXPECT_EQ(sparq::find_op("SparqMatMul")->domain, sparq::OpDomain::kSparq);
  const auto onnx = sparq::op_names(sparq::OpDomain::kOnnx);
  EXPECT_EQ(std::count(onnx.begin(), onnx.end(), "SparqMatMul"), 0);
}

TEST(Registry, WellFormedNodesPass) {
  EXPECT_EQ(check(make("Add", {"a", "b"}, {"c"})).first, Status::kOk);
  Node c = make("Concat", {"a", "b", "c", "d"}, {"y"});
  c.attrs["axis"] = i(1);
  EXPECT_EQ(check(c).first, Status::kOk);
  EXPECT_EQ(check(make("Gemm", {"a", "b", ""}, {"y"})).first, Status::kOk);  // omitted optional C
  EXPECT_EQ(check(make("Slice", {"x", "s", "e"}, {"y"})).first, Status::kOk);
  Node u = make("Unsqueeze", {"x", "axes"}, {"y"});
  EXPECT_EQ(check(u, 13).first, Status::kOk);
  Node u11 = make("Unsqueeze", {"x"}, {"y"});
  u11.attrs["axes"] = ints({0});
  EXPECT_EQ(check(u11, 11).first, Status::kOk);
  Node d = make("Dropout", {"x"}, {"y", "mask"});  // the mask is computed (all true)
  EXPECT_EQ(check(d).first, Status::kOk);
}

TEST(Registry, ArityIsChecked) {
  auto [st, msg] = check(make("MatMul", {"a"}, {"y"}));
  EXPECT_EQ(st, Status::kFormatError);
  EXPECT_NE(msg.find("node 'n0' (MatMul): has 1 inputs, MatMul takes 2"), std::string::npos) << msg;
  EXPECT_EQ(check(make("Softmax", {}, {"y"})).first, Status::kFormatError);
  EXPECT_EQ(check(make("Pow", {"a", "b", "c"}, {"y"})).first, Status::kFormatError);
  EXPECT_EQ(check(make("ReduceMean", {"a"}, {})).first, Status::kFormatError);
  EXPECT_EQ(check(make("Add", {"a", ""}, {"c"})).first,
            Status::kFormatError);  // a required input empty
  Node c = make("Concat", {}, {"y"});
  c.attrs["axis"] = i(0);
  EXPECT_EQ(check(c).first, Status::kFormatError);  // variadic: at least one
}

TEST(Registry, AttributesAreCheckedByNameAndKind) {
  Node t = make("Transpose", {"x"}, {"y"});
  t.attrs["perm"] = i(1);  // an int where a list of ints belongs
  auto [st, msg] = check(t);
  EXPECT_EQ(st, Status::kFormatError);
  EXPECT_NE(msg.find("attribute 'perm' must be a list of ints, not an int"), std::string::npos)
      << msg;
  Node u = make("Softmax", {"x"}, {"y"});
  u.attrs["beta"] = i(1);  // unknown to the row: refused, never ignored
  EXPECT_EQ(check(u).first, Status::kUnsupported);
  EXPECT_EQ(check(make("Cast", {"x"}, {"y"})).first,
            Status::kFormatError);  // required 'to' missing
  Node cast = make("Cast", {"x"}, {"y"});
  cast.attrs["to"] = i(10);  // float16
  EXPECT_EQ(check(cast).first, Status::kUnsupported);
  Node p = make("Transpose", {"x"}, {"y"});
  p.attrs["perm"] = ints({0, 0});  // not a permutation: would read past its input
  EXPECT_EQ(check(p).first, Status::kFormatError);
}

TEST(Registry, ConstantNeedsExactlyOneTensorValue) {
  Node c = make("Constant", {}, {"y"});
  EXPECT_EQ(check(c).first, Status::kFormatError);
  Attribute s;
  s.kind = Attribute::Kind::kString;
  c.attrs["value"] = s;  // a string where the tensor belongs
  EXPECT_EQ(check(c).first, Status::kFormatError);
  c.attrs["value"] = i(3);
  EXPECT_EQ(check(c).first, Status::kFormatError);
  Attribute t;
  t.kind = Attribute::Kind::kTensor;  // the kind, but no tensor in it
  c.attrs["value"] = t;
  EXPECT_EQ(check(c).first, Status::kFormatError);
  c.attrs.clear();
  c.attrs["value_int"] = i(3);
  EXPECT_EQ(check(c).first, Status::kOk);
  c.attrs["value_ints"] = ints({1});
  EXPECT_EQ(check(c).first, Status::kFormatError);
}

TEST(Registry, OpsetFormsAreChecked) {
  Node sq = make("Squeeze", {"x"}, {"y"});
  sq.attrs["axes"] = ints({0});
  EXPECT_EQ(check(sq, 11).first, Status::kOk);
  EXPECT_EQ(check(sq, 13).first, Status::kFormatError);
  EXPECT_EQ(check(make("Squeeze", {"x", "a"}, {"y"}), 12).first, Status::kFormatError);
  EXPECT_EQ(check(make("Unsqueeze", {"x"}, {"y"}), 13).first,
            Status::kFormatError);  // no axes at all
}

TEST(Registry, RefusedOptionalOutputsAreNamed) {
  Node ln = make("LayerNormalization", {"x", "g", "b"}, {"y", "mean"});
  auto [st, msg] = check(ln, 17);
  EXPECT_EQ(st, Status::kUnsupported);
  EXPECT_NE(msg.find("the optional output 'Mean' is not supported"), std::string::npos) << msg;
  EXPECT_EQ(check(make("LayerNormalization", {"x", "g", "b"}, {"y", "", ""}), 17).first,
            Status::kOk);
}

TEST(Registry, SparqOpsOnlyInConvertedModels) {
  Node m = make("SparqMatMul", {"x"}, {"y"});
  Attribute w, p;
  w.kind = p.kind = Attribute::Kind::kString;
  w.s = "packed/0";
  p.s = "int8";
  m.attrs = {{"weight", w}, {"precision", p}};
  EXPECT_EQ(check(m, 14, false).first, Status::kUnsupported);  // an ONNX file may not hold it
  EXPECT_EQ(check(m, 14, true).first, Status::kOk);
  m.attrs["precision"].s = "fp16";
  EXPECT_EQ(check(m, 14, true).first, Status::kFormatError);
  Node a = make("SparqAttention", {"q", "k", "v"}, {"y"});
  Attribute sc, mk;
  sc.kind = Attribute::Kind::kFloat;
  mk.kind = Attribute::Kind::kString;
  mk.s = "add";  // a mask kind without a mask input
  a.attrs = {{"scale", sc}, {"mask_kind", mk}};
  EXPECT_EQ(check(a, 14, true).first, Status::kFormatError);
}

TEST(Registry, GraphWiringAndDropoutTrainingMode) {
  sparq::Graph g;
  g.opset = 14;
  g.inputs = {{"x", sparq::ElemType::kF32, {}}};
  g.nodes = {make("Relu", {"x"}, {"y"}), make("Relu", {"z"}, {"w"})};
  g.outputs = {{"w", sparq::ElemType::kF32, {}}};
  try {
    sparq::validate_graph(g, false, "m");
    ADD_FAILURE() << "undefined input accepted";
  } catch (const sparq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("uses 'z' before it is defined"), std::string::npos)
        << e.what();
  }
  // Dropout with training_mode: refused unless a constant false.
  auto flag = [](uint8_t v) {
    auto c = std::make_shared<sparq::Constant>();
    c->type = sparq::ElemType::kBool;
    c->bytes = {v};
    return c;
  };
  sparq::Graph d;
  d.opset = 14;
  d.inputs = {{"x", sparq::ElemType::kF32, {}}, {"t", sparq::ElemType::kBool, {}}};
  d.initializers["off"] = flag(0);
  d.initializers["on"] = flag(1);
  d.nodes = {make("Dropout", {"x", "", "off"}, {"y"})};
  d.outputs = {{"y", sparq::ElemType::kF32, {}}};
  EXPECT_NO_THROW(sparq::validate_graph(d, false, "m"));
  d.nodes[0].inputs[2] = "on";
  EXPECT_THROW(sparq::validate_graph(d, false, "m"), sparq::Error);
  d.nodes[0].inputs[2] = "t";  // a graph input: not known to be false
  EXPECT_THROW(sparq::validate_graph(d, false, "m"), sparq::Error);
}

}  // namespace
