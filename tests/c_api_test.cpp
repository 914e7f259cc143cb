// The C API contract (DESIGN.md): statuses, the thread-local message, NULL handling,
// descriptions, outputs as session views, and one model shared by sessions on threads.
#include <sys/stat.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine/model.h"
#include "formats/onnx_import.h"
#include "sparq/sparq.h"

namespace {

std::string model_path() {
  const char* dir = std::getenv("SPARQ_MODELS_DIR");
  if (!dir) return "";
  const std::string onnx = std::string(dir) + "/bert-14/model.onnx";
  struct stat st {};
  if (stat(onnx.c_str(), &st) != 0) return "";
  const std::string out = std::string(dir) + "/bert-14/c_api.sparq";
  sparq::ConvertOptions o;
  o.precision = "int8";
  sparq::convert_graph(sparq::import_onnx(onnx), out, o);
  return out;
}

std::vector<float> run_once(sparq_session* s, int64_t seq, int64_t offset) {
  std::vector<int64_t> ids(static_cast<size_t>(seq));
  for (int64_t i = 0; i < seq; ++i) ids[static_cast<size_t>(i)] = 3 + (i * 5 + offset) % 90;
  const int64_t shape[2] = {1, seq};
  sparq_tensor in = {"input_ids", SPARQ_INT64, 2, shape, ids.data()};
  EXPECT_EQ(sparq_session_run(s, &in, 1), SPARQ_OK) << sparq_last_error_message();
  sparq_tensor out;
  EXPECT_EQ(sparq_session_output(s, 0, &out), SPARQ_OK);
  const float* v = static_cast<const float*>(out.data);
  return std::vector<float>(v, v + seq * out.shape[2]);
}

TEST(CApi, NullsAndErrors) {
  EXPECT_STREQ(sparq_version(), "0.1.0");
  EXPECT_NE(sparq_last_error_message(), nullptr);
  sparq_model_free(nullptr);
  sparq_session_free(nullptr);
  sparq_model* m = reinterpret_cast<sparq_model*>(0x1);
  EXPECT_EQ(sparq_model_load("/nonexistent.sparq", &m), SPARQ_INVALID_ARGUMENT);
  EXPECT_EQ(m, nullptr);
  EXPECT_NE(std::string(sparq_last_error_message()).find("nonexistent"), std::string::npos);
  EXPECT_EQ(sparq_model_load(nullptr, &m), SPARQ_INVALID_ARGUMENT);
  EXPECT_EQ(sparq_model_load("/etc/hostname", &m), SPARQ_FORMAT_ERROR);
  sparq_session* s = nullptr;
  EXPECT_EQ(sparq_session_create(nullptr, 1, &s), SPARQ_INVALID_ARGUMENT);
  EXPECT_EQ(sparq_session_output_count(nullptr), 0u);
  // The message is per thread.
  std::string other;
  std::thread([&] { other = sparq_last_error_message(); }).join();
  EXPECT_EQ(other, "");
}

TEST(CApi, DescribeRunAndOutputs) {
  const std::string path = model_path();
  if (path.empty()) GTEST_SKIP() << "no models";
  sparq_model* m = nullptr;
  ASSERT_EQ(sparq_model_load(path.c_str(), &m), SPARQ_OK) << sparq_last_error_message();
  ASSERT_EQ(sparq_model_input_count(m), 3u);
  sparq_tensor d;
  ASSERT_EQ(sparq_model_input(m, 0, &d), SPARQ_OK);
  EXPECT_STREQ(d.name, "input_ids");
  EXPECT_EQ(d.dtype, SPARQ_INT64);
  EXPECT_EQ(d.rank, 2);
  EXPECT_EQ(d.shape[0], -1);  // symbolic batch
  EXPECT_EQ(sparq_model_input(m, 3, &d), SPARQ_INVALID_ARGUMENT);
  ASSERT_EQ(sparq_model_output_count(m), 2u);
  sparq_session* s = nullptr;
  ASSERT_EQ(sparq_session_create(m, 1, &s), SPARQ_OK);
  sparq_model_free(m);  // the session keeps the model alive
  sparq_tensor out;
  EXPECT_EQ(sparq_session_output(s, 0, &out), SPARQ_INVALID_ARGUMENT);  // before a run
  sparq_plan_summary plan;
  plan.struct_size = sizeof plan;
  EXPECT_EQ(sparq_session_plan_summary(s, &plan), SPARQ_INVALID_ARGUMENT);  // before a run
  const std::vector<float> a = run_once(s, 7, 0);
  // The plan of that run's shapes: every encoder piece fused (bert-14, 2 layers); the
  // op-by-op steps (the mask's few small ops) each with a node, an op and a reason.
  ASSERT_EQ(sparq_session_plan_summary(s, &plan), SPARQ_OK) << sparq_last_error_message();
  EXPECT_EQ(plan.struct_size, sizeof plan);
  EXPECT_EQ(plan.fused_attention, 2);
  EXPECT_EQ(plan.fused_residual, 4);
  EXPECT_EQ(plan.fused_embeddings, 1);
  EXPECT_EQ(plan.matmuls, 13);
  EXPECT_EQ(plan.fused_quantize, 4);  // int8: each LayerNorm a matmul reads quantizes itself
  EXPECT_GT(plan.steps, plan.op_by_op_steps);
  EXPECT_GT(plan.arena_bytes, 0u);
  EXPECT_LE(plan.arena_bytes, plan.unshared_bytes);
  for (int i = 0; i < plan.op_by_op_steps; ++i) {
    const char *node = nullptr, *op = nullptr, *reason = nullptr;
    ASSERT_EQ(sparq_session_op_by_op_step(s, static_cast<size_t>(i), &node, &op, &reason),
              SPARQ_OK);
    EXPECT_TRUE(node && op && reason && *op && *reason);
  }
  EXPECT_EQ(sparq_session_op_by_op_step(s, static_cast<size_t>(plan.op_by_op_steps), nullptr,
                                        nullptr, nullptr),
            SPARQ_INVALID_ARGUMENT);
  // An older caller's smaller struct gets only its prefix.
  struct {
    size_t struct_size;
    int steps;
  } old = {sizeof old, -1};
  ASSERT_EQ(sparq_session_plan_summary(s, reinterpret_cast<sparq_plan_summary*>(&old)), SPARQ_OK);
  EXPECT_EQ(old.steps, plan.steps);
  plan.struct_size = 0;
  EXPECT_EQ(sparq_session_plan_summary(s, &plan), SPARQ_INVALID_ARGUMENT);
  EXPECT_EQ(sparq_session_output_count(s), 2u);
  ASSERT_EQ(sparq_session_output(s, 1, &out), SPARQ_OK);
  EXPECT_STREQ(out.name, "pooler_output");
  EXPECT_EQ(out.dtype, SPARQ_FLOAT32);
  EXPECT_GT(sparq_session_peak_bytes(s), 0u);
  // Bad inputs: status and message, then the session still works.
  const int64_t shape[2] = {1, 2};
  int64_t ids[2] = {1000000, 3};
  sparq_tensor bad = {"input_ids", SPARQ_INT64, 2, shape, ids};
  EXPECT_EQ(sparq_session_run(s, &bad, 1), SPARQ_INVALID_ARGUMENT);
  EXPECT_NE(std::string(sparq_last_error_message()).find("outside"), std::string::npos);
  sparq_tensor noname = {nullptr, SPARQ_INT64, 2, shape, ids};
  EXPECT_EQ(sparq_session_run(s, &noname, 1), SPARQ_INVALID_ARGUMENT);
  const int64_t neg[2] = {1, -2};
  sparq_tensor negshape = {"input_ids", SPARQ_INT64, 2, neg, ids};
  EXPECT_EQ(sparq_session_run(s, &negshape, 1), SPARQ_INVALID_ARGUMENT);
  EXPECT_EQ(run_once(s, 7, 0), a);
  sparq_session_free(s);
}

// Outputs that are not float32 carry their own dtype (bool, float64, int8), so a caller
// reads the right number of bytes. A hand-built graph: Equal(x, x), Cast(x -> double),
// Cast(x -> int8).
TEST(CApi, OutputsCarryTheirOwnDtype) {
  sparq::Graph g;
  g.opset = 14;
  sparq::ValueInfo x;
  x.name = "x";
  x.type = sparq::ElemType::kF32;
  x.shape = {sparq::Dim{3, ""}};
  g.inputs = {x};
  auto node = [](const char* op, const char* out, int64_t to) {
    sparq::Node n;
    n.name = out;
    n.op = op;
    n.inputs = {"x"};
    if (std::string(op) == "Equal") n.inputs.push_back("x");
    n.outputs = {out};
    if (to != 0) {
      sparq::Attribute a;
      a.kind = sparq::Attribute::Kind::kInt;
      a.i = to;
      n.attrs["to"] = a;
    }
    return n;
  };
  g.nodes = {node("Equal", "same", 0), node("Cast", "wide", 11), node("Cast", "small", 3)};
  g.outputs = {{"same", sparq::ElemType::kBool, {}},
               {"wide", sparq::ElemType::kF64, {}},
               {"small", sparq::ElemType::kS8, {}}};
  const char* tmp = std::getenv("TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/sparq-c-api-dtypes.sparq";
  sparq::convert_graph(g, path, sparq::ConvertOptions());
  sparq_model* m = nullptr;
  ASSERT_EQ(sparq_model_load(path.c_str(), &m), SPARQ_OK) << sparq_last_error_message();
  std::remove(path.c_str());
  sparq_tensor d;
  ASSERT_EQ(sparq_model_output(m, 0, &d), SPARQ_OK);
  EXPECT_EQ(d.dtype, SPARQ_BOOL);
  sparq_session* s = nullptr;
  ASSERT_EQ(sparq_session_create(m, 1, &s), SPARQ_OK);
  const float xs[3] = {1.5f, -2.0f, 0.0f};
  const int64_t shape[1] = {3};
  sparq_tensor in = {"x", SPARQ_FLOAT32, 1, shape, const_cast<float*>(xs)};
  ASSERT_EQ(sparq_session_run(s, &in, 1), SPARQ_OK) << sparq_last_error_message();
  ASSERT_EQ(sparq_session_output_count(s), 3u);
  sparq_tensor o;
  ASSERT_EQ(sparq_session_output(s, 0, &o), SPARQ_OK);
  EXPECT_EQ(o.dtype, SPARQ_BOOL);
  EXPECT_EQ(static_cast<const uint8_t*>(o.data)[1], 1);
  ASSERT_EQ(sparq_session_output(s, 1, &o), SPARQ_OK);
  EXPECT_EQ(o.dtype, SPARQ_FLOAT64);
  EXPECT_EQ(static_cast<const double*>(o.data)[0], 1.5);
  ASSERT_EQ(sparq_session_output(s, 2, &o), SPARQ_OK);
  EXPECT_EQ(o.dtype, SPARQ_INT8);
  EXPECT_EQ(static_cast<const int8_t*>(o.data)[1], -2);
  // An input of a type the C API did not have before (float64) is accepted as well; a
  // mismatch with the graph's declared type is still an error.
  const double xd[3] = {1, 2, 3};
  sparq_tensor bad = {"x", SPARQ_FLOAT64, 1, shape, const_cast<double*>(xd)};
  EXPECT_EQ(sparq_session_run(s, &bad, 1), SPARQ_INVALID_ARGUMENT);
  sparq_session_free(s);
  sparq_model_free(m);
}

TEST(CApi, OneModelManySessionsOnThreads) {
  const std::string path = model_path();
  if (path.empty()) GTEST_SKIP() << "no models";
  sparq_model* m = nullptr;
  ASSERT_EQ(sparq_model_load(path.c_str(), &m), SPARQ_OK);
  sparq_session* ref_s = nullptr;
  ASSERT_EQ(sparq_session_create(m, 1, &ref_s), SPARQ_OK);
  std::vector<std::vector<float>> expect;
  for (int t = 0; t < 4; ++t) expect.push_back(run_once(ref_s, 9 + t, t));
  sparq_session_free(ref_s);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      sparq_session* s = nullptr;
      if (sparq_session_create(m, 1, &s) != SPARQ_OK) {
        mismatches[static_cast<size_t>(t)] = 1000;
        return;
      }
      for (int rep = 0; rep < 5; ++rep)
        mismatches[static_cast<size_t>(t)] +=
            run_once(s, 9 + t, t) != expect[static_cast<size_t>(t)];
      sparq_session_free(s);
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[static_cast<size_t>(t)], 0) << "thread " << t;
  sparq_model_free(m);
}

}  // namespace
