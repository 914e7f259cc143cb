// Hostile sizes (docs/limits.md): a model or an input that declares shapes needing more
// memory than is sensible gets a clear error before anything large is allocated. Each
// case checks the error, that it came within 2 s, and that the process's peak RSS grew
// by less than 1 GiB.
#include "engine/limits.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "engine/model.h"
#include "formats/error.h"
#include "sparq/sparq.h"

namespace {

long peak_rss_kib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

std::string tmp_path(const char* name) {
  const char* t = std::getenv("TMPDIR");
  return std::string(t ? t : "/tmp") + "/sparq-limits-" + name + ".sparq";
}

sparq::ValueInfo input(const char* name, sparq::ElemType t, std::vector<int64_t> dims) {
  sparq::ValueInfo v;
  v.name = name;
  v.type = t;
  for (int64_t d : dims) v.shape.push_back(sparq::Dim{d, d < 0 ? "n" : ""});
  return v;
}

sparq::Node node(const char* op, std::vector<std::string> in, const char* out) {
  sparq::Node n;
  n.name = out;
  n.op = op;
  n.inputs = std::move(in);
  n.outputs = {out};
  return n;
}

std::shared_ptr<sparq::Constant> i64(std::vector<int64_t> v) {
  auto c = std::make_shared<sparq::Constant>();
  c->type = sparq::ElemType::kI64;
  c->shape = {static_cast<int64_t>(v.size())};
  c->bytes.resize(v.size() * 8);
  std::memcpy(c->bytes.data(), v.data(), v.size() * 8);
  return c;
}

// Runs `f`, which must throw sparq::Error with `status` and a message containing
// `needle`, quickly and without a large allocation.
template <class F>
void expect_refused_cheaply(F f, sparq::Status status, const std::string& needle) {
  const long rss0 = peak_rss_kib();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    f();
    ADD_FAILURE() << "not refused";
  } catch (const sparq::Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 2.0);
  EXPECT_LT(peak_rss_kib() - rss0, 1L << 20) << "peak RSS grew by more than 1 GiB";
}

// Expand of a one-element input to [2^20, 2^20] floats: 4 TiB, refused when the plan is
// made (the shape comes from a constant, so it is known at the first run).
TEST(Limits, PlanNeedingTerabytesIsRefused) {
  sparq::Graph g;
  g.opset = 14;
  g.inputs = {input("x", sparq::ElemType::kF32, {1})};
  g.initializers["big"] = i64({int64_t{1} << 20, int64_t{1} << 20});
  g.nodes = {node("Expand", {"x", "big"}, "y")};
  g.outputs = {input("y", sparq::ElemType::kF32, {})};
  const std::string path = tmp_path("expand");
  sparq::convert_graph(g, path, sparq::ConvertOptions());
  auto model = sparq::Model::load(path);
  std::remove(path.c_str());
  auto x = std::make_shared<sparq::Constant>();
  x->shape = {1};
  x->bytes.resize(4);
  for (bool interpret : {false, true}) {
    sparq::Session s(model, 1);
    s.use_interpreter(interpret);
    expect_refused_cheaply(
        [&] {
          s.run({{"x", x}});
        },
        sparq::Status::kOutOfMemory, "SPARQ_MAX_TENSOR_BYTES");
  }
}

// The same through a Reshape target whose product overflows int64: an error, not UB.
TEST(Limits, OverflowingReshapeTargetIsRefused) {
  sparq::Graph g;
  g.opset = 14;
  g.inputs = {input("x", sparq::ElemType::kF32, {4})};
  g.initializers["t"] = i64({int64_t{1} << 40, int64_t{1} << 40, 4});
  g.nodes = {node("Reshape", {"x", "t"}, "y")};
  g.outputs = {input("y", sparq::ElemType::kF32, {})};
  const std::string path = tmp_path("reshape");
  sparq::convert_graph(g, path, sparq::ConvertOptions());
  auto model = sparq::Model::load(path);
  std::remove(path.c_str());
  auto x = std::make_shared<sparq::Constant>();
  x->shape = {4};
  x->bytes.resize(16);
  sparq::Session s(model, 1);
  expect_refused_cheaply([&] { s.run({{"x", x}}); }, sparq::Status::kInvalidArgument, "overflows");
}

// A constant subgraph that would fold to terabytes fails at convert, with the limit.
TEST(Limits, ConvertFoldingTerabytesIsRefused) {
  sparq::Graph g;
  g.opset = 14;
  g.inputs = {input("x", sparq::ElemType::kF32, {1})};
  g.initializers["shape"] = i64({int64_t{1} << 21, int64_t{1} << 21});
  sparq::Node c = node("ConstantOfShape", {"shape"}, "zeros");
  g.nodes = {c, node("Add", {"zeros", "x"}, "y")};
  g.outputs = {input("y", sparq::ElemType::kF32, {})};
  const std::string path = tmp_path("fold");
  expect_refused_cheaply(
      [&] {
        sparq::convert_graph(g, path, sparq::ConvertOptions());
        auto model = sparq::Model::load(path);
        auto x = std::make_shared<sparq::Constant>();
        x->shape = {1};
        x->bytes.resize(4);
        sparq::Session(model, 1).run({{"x", x}});
      },
      sparq::Status::kOutOfMemory, "SPARQ_MAX_TENSOR_BYTES");
  std::remove(path.c_str());
}

// batch x sequence in the millions, through the C API: refused before the run, and an
// input above the element limit is refused before the library reads its buffer.
TEST(Limits, MillionsOfTokensAreRefused) {
  sparq::Graph g;
  g.opset = 14;
  g.inputs = {input("input_ids", sparq::ElemType::kI64, {-1, -1})};
  g.nodes = {node("Identity", {"input_ids"}, "y")};
  g.outputs = {input("y", sparq::ElemType::kI64, {})};
  const std::string path = tmp_path("tokens");
  sparq::convert_graph(g, path, sparq::ConvertOptions());
  sparq_model* m = nullptr;
  ASSERT_EQ(sparq_model_load(path.c_str(), &m), SPARQ_OK) << sparq_last_error_message();
  std::remove(path.c_str());
  sparq_session* s = nullptr;
  ASSERT_EQ(sparq_session_create(m, 1, &s), SPARQ_OK);
  const long rss0 = peak_rss_kib();
  std::vector<int64_t> ids(size_t{1} << 21, 1);  // 2M tokens: above 262144, below 2^24 elements
  const int64_t shape[2] = {2048, 1024};
  sparq_tensor in = {"input_ids", SPARQ_INT64, 2, shape, ids.data()};
  EXPECT_EQ(sparq_session_run(s, &in, 1), SPARQ_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sparq_last_error_message()).find("SPARQ_MAX_TOKENS"), std::string::npos)
      << sparq_last_error_message();
  // 2^40 claimed elements with a one-element buffer: refused before any read.
  const int64_t huge[2] = {1 << 20, 1 << 20};
  sparq_tensor lie = {"input_ids", SPARQ_INT64, 2, huge, ids.data()};
  EXPECT_EQ(sparq_session_run(s, &lie, 1), SPARQ_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sparq_last_error_message()).find("SPARQ_MAX_INPUT_ELEMENTS"),
            std::string::npos);
  EXPECT_LT(peak_rss_kib() - rss0, 1L << 20);
  sparq_session_free(s);
  sparq_model_free(m);
}

// The default limits keep BERT-large at batch 64, seq 512 allowed.
TEST(Limits, DefaultsAllowBertLargeBatch64Seq512) {
  const sparq::Limits& l = sparq::limits();
  EXPECT_GE(l.max_tokens, 64 * 512);
  EXPECT_GE(l.max_input_elements, 64 * 512);
  EXPECT_GE(l.max_tensor_bytes, uint64_t{64} * 16 * 512 * 512 * 4);  // its attention scores
  EXPECT_NO_THROW(sparq::checked_elements({64, 16, 512, 512}, 4, "scores"));
  EXPECT_THROW(sparq::checked_elements({int64_t{1} << 40, int64_t{1} << 40}, 4, "x"), sparq::Error);
}

}  // namespace
