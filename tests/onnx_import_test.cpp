// formats/onnx_import on models built here with the ONNX protobuf API: structure,
// external data, and one clear error for each kind of bad input.
#include "formats/onnx_import.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <onnx/onnx_pb.h>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "formats/error.h"

namespace sparq::test {
namespace {

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/sparq_onnx_XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string path;
};

void add_dim(onnx::TensorShapeProto* s, int64_t v) { s->add_dim()->set_dim_value(v); }
void add_sym(onnx::TensorShapeProto* s, const char* name) { s->add_dim()->set_dim_param(name); }

// y = Relu(x . W + b), with x [batch, 4], W [4, 3] (raw data), b [3] (float_data).
onnx::ModelProto small_model(int64_t opset = 14) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* os = m.add_opset_import();
  os->set_domain("");
  os->set_version(opset);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("small");
  auto* x = g->add_input();
  x->set_name("x");
  x->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  add_sym(x->mutable_type()->mutable_tensor_type()->mutable_shape(), "batch");
  add_dim(x->mutable_type()->mutable_tensor_type()->mutable_shape(), 4);
  auto* w = g->add_initializer();
  w->set_name("W");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->add_dims(3);
  std::vector<float> wv(12);
  for (int i = 0; i < 12; ++i) wv[i] = 0.5f * static_cast<float>(i);
  w->set_raw_data(std::string(reinterpret_cast<const char*>(wv.data()), 48));
  auto* b = g->add_initializer();
  b->set_name("b");
  b->set_data_type(onnx::TensorProto::FLOAT);
  b->add_dims(3);
  for (float v : {1.0f, -2.0f, 3.0f}) b->add_float_data(v);
  auto* mm = g->add_node();
  mm->set_op_type("MatMul");
  mm->set_name("mm");
  mm->add_input("x");
  mm->add_input("W");
  mm->add_output("xw");
  auto* add = g->add_node();
  add->set_op_type("Add");
  add->add_input("xw");
  add->add_input("b");
  add->add_output("pre");
  auto* relu = g->add_node();
  relu->set_op_type("Relu");
  relu->set_name("act");
  relu->add_input("pre");
  relu->add_output("y");
  auto* t = g->add_node();  // a Transpose with an ints attribute, output unused
  t->set_op_type("Transpose");
  t->set_name("tr");
  t->add_input("y");
  t->add_output("yt");
  auto* perm = t->add_attribute();
  perm->set_name("perm");
  perm->set_type(onnx::AttributeProto::INTS);
  perm->add_ints(1);
  perm->add_ints(0);
  auto* y = g->add_output();
  y->set_name("y");
  y->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return m;
}

std::string bytes_of(const onnx::ModelProto& m) {
  std::string s;
  m.SerializeToString(&s);
  return s;
}

void expect_error(const std::string& bytes, Status status, const std::vector<std::string>& words,
                  const std::string& dir = "") {
  try {
    import_onnx_bytes(bytes, dir, "model.onnx");
    ADD_FAILURE() << "accepted; expected an error with '" << words.front() << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    for (const std::string& w : words)
      EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
  }
}

TEST(OnnxImport, ReadsStructure) {
  const Graph g = import_onnx_bytes(bytes_of(small_model()), "", "model.onnx");
  EXPECT_EQ(g.opset, 14);
  ASSERT_EQ(g.inputs.size(), 1u);
  EXPECT_EQ(g.inputs[0].name, "x");
  ASSERT_EQ(g.inputs[0].shape.size(), 2u);
  EXPECT_EQ(g.inputs[0].shape[0].symbol, "batch");
  EXPECT_EQ(g.inputs[0].shape[1].value, 4);
  ASSERT_EQ(g.nodes.size(), 4u);
  EXPECT_EQ(g.nodes[1].name, "Add_1");  // unnamed nodes get "<op>_<index>"
  EXPECT_EQ(g.nodes[3].attr("perm")->ints, (std::vector<int64_t>{1, 0}));
  const Constant* w = g.initializer("W");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(w->data<float>()[11], 5.5f);
  EXPECT_EQ(g.initializer("b")->data<float>()[1], -2.0f);
  ASSERT_EQ(g.outputs.size(), 1u);
}

// int8 / uint8 values stored widened in int32_data (a zero point written with
// helper.make_tensor) must fit their type: 300 is no uint8, and is refused, never wrapped.
TEST(OnnxImport, NarrowIntegersOutOfRange) {
  for (auto [type, value, ok] : {std::tuple{onnx::TensorProto::UINT8, 300, false},
                                 std::tuple{onnx::TensorProto::UINT8, -1, false},
                                 std::tuple{onnx::TensorProto::INT8, 128, false},
                                 std::tuple{onnx::TensorProto::INT8, -128, true},
                                 std::tuple{onnx::TensorProto::UINT8, 255, true}}) {
    onnx::ModelProto m = small_model();
    onnx::TensorProto* z = m.mutable_graph()->add_initializer();
    z->set_name("zp");
    z->set_data_type(type);
    z->add_int32_data(value);
    if (ok) {
      const Graph g = import_onnx_bytes(bytes_of(m), "", "model.onnx");
      EXPECT_EQ(static_cast<int>(type == onnx::TensorProto::INT8
                                     ? g.initializer("zp")->data<int8_t>()[0]
                                     : g.initializer("zp")->data<uint8_t>()[0]),
                value);
    } else {
      expect_error(bytes_of(m), Status::kFormatError,
                   {"zp", std::to_string(value), "out of range"});
    }
  }
}

TEST(OnnxImport, ExternalData) {
  TempDir dir;
  onnx::ModelProto m = small_model();
  auto* w = m.mutable_graph()->mutable_initializer(0);
  const std::string raw = w->raw_data();
  w->clear_raw_data();
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto kv = [&](const char* k, const std::string& v) {
    auto* e = w->add_external_data();
    e->set_key(k);
    e->set_value(v);
  };
  kv("location", "weights.bin");
  kv("offset", "16");
  kv("length", "48");
  {
    std::ofstream out(dir.path + "/weights.bin", std::ios::binary);
    out << std::string(16, 'x') << raw;
  }
  {
    std::ofstream out(dir.path + "/model.onnx", std::ios::binary);
    out << bytes_of(m);
  }
  const Graph g = import_onnx(dir.path + "/model.onnx");
  EXPECT_EQ(g.initializer("W")->data<float>()[11], 5.5f);

  // The same tensor with hostile locations and ranges.
  auto with = [&](const char* key, const std::string& value) {
    onnx::ModelProto c = m;
    auto* t = c.mutable_graph()->mutable_initializer(0);
    for (auto& e : *t->mutable_external_data()) {
      if (e.key() == key) e.set_value(value);
    }
    return bytes_of(c);
  };
  expect_error(with("location", "../weights.bin"), Status::kFormatError, {"outside"}, dir.path);
  expect_error(with("location", "/etc/passwd"), Status::kFormatError, {"outside"}, dir.path);
  expect_error(with("location", "missing.bin"), Status::kFormatError, {"cannot open"}, dir.path);
  expect_error(with("offset", "40"), Status::kFormatError, {"past the end"}, dir.path);
  expect_error(with("offset", "-1"), Status::kFormatError, {"bad external data offset"}, dir.path);
  expect_error(with("length", "12"), Status::kFormatError, {"does not match"}, dir.path);
  expect_error(bytes_of(m), Status::kFormatError, {"needs a model file path"}, "");
}

TEST(OnnxImport, UnsupportedOpNamesOpAndNode) {
  onnx::ModelProto m = small_model();
  m.mutable_graph()->mutable_node(2)->set_op_type("Selu");
  expect_error(bytes_of(m), Status::kUnsupported, {"'Selu'", "'act'"});
  onnx::ModelProto c = small_model();
  c.mutable_graph()->mutable_node(0)->set_domain("com.microsoft");
  expect_error(bytes_of(c), Status::kUnsupported, {"com.microsoft::MatMul", "'mm'"});
}

TEST(OnnxImport, OpsetRange) {
  EXPECT_NO_THROW(import_onnx_bytes(bytes_of(small_model(10)), "", "m"));
  EXPECT_NO_THROW(import_onnx_bytes(bytes_of(small_model(17)), "", "m"));
  expect_error(bytes_of(small_model(9)), Status::kUnsupported, {"opset 9", "10 to 17"});
  expect_error(bytes_of(small_model(18)), Status::kUnsupported, {"opset 18"});
  onnx::ModelProto m = small_model();
  m.clear_opset_import();
  expect_error(bytes_of(m), Status::kFormatError, {"no default-domain opset"});
}

TEST(OnnxImport, RefusesEmptyRandomAndEveryTruncation) {
  expect_error("", Status::kFormatError, {"empty"});
  std::mt19937 rng(5);
  for (int rep = 0; rep < 50; ++rep) {
    std::string junk(1 + rng() % 2000, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    try {
      import_onnx_bytes(junk, "", "junk.onnx");
      ADD_FAILURE() << "random bytes accepted";
    } catch (const Error&) {
    }
  }
  const std::string good = bytes_of(small_model());
  for (size_t n = 0; n < good.size(); ++n) {
    try {
      import_onnx_bytes(good.substr(0, n), "", "cut.onnx");
      ADD_FAILURE() << "a model cut to " << n << " of " << good.size() << " bytes was accepted";
    } catch (const Error&) {
    }
    if (HasFailure()) return;
  }
}

TEST(OnnxImport, RefusesInconsistentGraphs) {
  onnx::ModelProto m = small_model();
  m.mutable_graph()->mutable_node(1)->set_input(0, "nowhere");
  expect_error(bytes_of(m), Status::kFormatError, {"'nowhere'", "before it is defined"});
  onnx::ModelProto d = small_model();
  d.mutable_graph()->mutable_node(1)->set_output(0, "xw");
  expect_error(bytes_of(d), Status::kFormatError, {"defined twice"});
  onnx::ModelProto t = small_model();
  t.mutable_graph()->mutable_initializer(1)->add_float_data(9.0f);
  expect_error(bytes_of(t), Status::kFormatError, {"tensor 'b'", "4 values"});
  onnx::ModelProto r = small_model();
  r.mutable_graph()->mutable_initializer(0)->add_dims(2);
  expect_error(bytes_of(r), Status::kFormatError, {"tensor 'W'"});
  onnx::ModelProto big = small_model();
  big.mutable_graph()->mutable_initializer(0)->set_dims(0, INT64_MAX / 2);
  expect_error(bytes_of(big), Status::kFormatError, {"tensor 'W'"});
  onnx::ModelProto str = small_model();
  str.mutable_graph()->mutable_initializer(1)->set_data_type(onnx::TensorProto::STRING);
  expect_error(bytes_of(str), Status::kUnsupported, {"tensor 'b'", "data type"});
  onnx::ModelProto out = small_model();
  out.mutable_graph()->mutable_output(0)->set_name("ghost");
  expect_error(bytes_of(out), Status::kFormatError, {"'ghost'"});
}

TEST(OnnxImport, MissingFile) { EXPECT_THROW(import_onnx("/nonexistent/model.onnx"), Error); }

}  // namespace
}  // namespace sparq::test
