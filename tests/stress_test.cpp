// Bounded concurrency stress (issue 9, section 3): one loaded model shared by several
// sessions, each on its own thread with its own pool of 2 threads, running a mixed
// sequence of shapes many times; every output must be bit-identical to a serial run of
// the same shape on a fresh session. Then the C API's misuse cases: concurrent runs on
// one session refused, outputs before a run, and freeing the model before its sessions.
// Bounded: SPARQ_STRESS_RUNS (default 64) runs per session, for fp32 and int8.
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine/model.h"
#include "formats/onnx_import.h"
#include "sparq/sparq.h"

namespace {

struct Shape {
  int64_t batch, seq;
};
const std::vector<Shape> kShapes = {{1, 7}, {2, 11}, {3, 5}, {1, 33}, {2, 1}, {1, 64}, {4, 9}};

std::string convert(const std::string& family, const std::string& precision) {
  const char* dir = std::getenv("SPARQ_MODELS_DIR");
  if (dir == nullptr) return "";
  const std::string onnx = std::string(dir) + "/" + family + "/model.onnx";
  struct stat st {};
  if (stat(onnx.c_str(), &st) != 0) return "";
  const std::string out = std::string(dir) + "/" + family + "/stress-" + precision + ".sparq";
  sparq::ConvertOptions o;
  o.precision = precision;
  sparq::convert_graph(sparq::import_onnx(onnx), out, o);
  return out;
}

std::map<std::string, sparq::Value> inputs_for(const Shape& s, int salt) {
  auto ids = std::make_shared<sparq::Constant>();
  ids->type = sparq::ElemType::kI64;
  ids->shape = {s.batch, s.seq};
  ids->bytes.resize(static_cast<size_t>(s.batch * s.seq) * 8);
  auto mask = std::make_shared<sparq::Constant>(*ids);
  for (int64_t i = 0; i < s.batch * s.seq; ++i) {
    reinterpret_cast<int64_t*>(ids->bytes.data())[i] = 2 + (i * 7 + salt) % 90;
    // The last row's tail is padding, so masks are exercised too.
    const bool pad = s.batch > 1 && i / s.seq == s.batch - 1 && i % s.seq >= s.seq / 2 + 1;
    reinterpret_cast<int64_t*>(mask->bytes.data())[i] = pad ? 0 : 1;
  }
  return {{"input_ids", ids}, {"attention_mask", mask}};
}

std::vector<uint8_t> flat(const std::map<std::string, sparq::Value>& out) {
  std::vector<uint8_t> v;
  for (const auto& kv : out)
    v.insert(v.end(), kv.second->raw(), kv.second->raw() + kv.second->bytes.size());
  return v;
}

int stress_runs() {
  const char* e = std::getenv("SPARQ_STRESS_RUNS");
  return e != nullptr && std::atoi(e) > 0 ? std::atoi(e) : 64;
}

void stress(const std::string& precision) {
  const std::string path = convert("bert-14", precision);
  if (path.empty()) GTEST_SKIP() << "SPARQ_MODELS_DIR has no bert-14 (python3-torch missing?)";
  const auto model = sparq::Model::load(path);
  // Serial references: one fresh single-thread session per shape.
  std::vector<std::vector<uint8_t>> ref;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    sparq::Session s(model, 1);
    ref.push_back(flat(s.run(inputs_for(kShapes[i], static_cast<int>(i)))));
  }
  constexpr int kSessions = 3;
  const int runs = stress_runs();
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kSessions; ++t) {
    threads.emplace_back([&, t] {
      sparq::Session s(model, 2);
      for (int r = 0; r < runs; ++r) {
        const size_t i = static_cast<size_t>((r * (t + 2) + t) % static_cast<int>(kShapes.size()));
        try {
          if (flat(s.run(inputs_for(kShapes[i], static_cast<int>(i)))) != ref[i]) ++mismatches;
        } catch (const std::exception& e) {
          ++errors;
          std::fprintf(stderr, "stress: %s\n", e.what());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0) << "outputs differ from the serial run (" << precision << ")";
}

TEST(Stress, Fp32SessionsOnThreadsMatchSerialRuns) { stress("fp32"); }
TEST(Stress, Int8SessionsOnThreadsMatchSerialRuns) { stress("int8"); }

TEST(Stress, CApiMisuse) {
  const std::string path = convert("bert-14", "int8");
  if (path.empty()) GTEST_SKIP() << "no bert-14 model";
  sparq_model* m = nullptr;
  ASSERT_EQ(sparq_model_load(path.c_str(), &m), SPARQ_OK) << sparq_last_error_message();
  sparq_session* s = nullptr;
  ASSERT_EQ(sparq_session_create(m, 1, &s), SPARQ_OK);
  // Outputs before any successful run.
  sparq_tensor out;
  EXPECT_EQ(sparq_session_output(s, 0, &out), SPARQ_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(sparq_last_error_message(), "no successful run"), nullptr);
  EXPECT_EQ(sparq_session_output_count(s), 0u);
  // A failed run leaves no outputs either.
  const int64_t bad_shape[2] = {1, 100000};
  std::vector<int64_t> big(100000, 1);
  sparq_tensor bad = {"input_ids", SPARQ_INT64, 2, bad_shape, big.data()};
  EXPECT_NE(sparq_session_run(s, &bad, 1), SPARQ_OK);
  EXPECT_EQ(sparq_session_output(s, 0, &out), SPARQ_INVALID_ARGUMENT);

  // Concurrent runs on one session: the second caller is refused, never let in.
  const int64_t shape[2] = {4, 64};
  std::vector<int64_t> ids(256, 5);
  sparq_tensor in = {"input_ids", SPARQ_INT64, 2, shape, ids.data()};
  std::atomic<bool> stop{false};
  std::atomic<int> refused{0}, other{0};
  // Either thread may be the one refused; anything but OK or that refusal is a bug.
  auto attempt = [&] {
    const sparq_status st = sparq_session_run(s, &in, 1);
    if (st == SPARQ_OK) return;
    if (st == SPARQ_INVALID_ARGUMENT &&
        std::strstr(sparq_last_error_message(), "already running")) {
      ++refused;
    } else if (other++ == 0) {
      std::fprintf(stderr, "stress: run failed: %s\n", sparq_last_error_message());
    }
  };
  std::thread a([&] {
    for (int r = 0; r < 400 && refused.load() < 3; ++r) attempt();
    stop = true;
  });
  std::thread b([&] {
    while (!stop.load()) attempt();
  });
  a.join();
  b.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(refused.load(), 0) << "two threads never overlapped in 400 runs";
  // The session still works after the contention.
  ASSERT_EQ(sparq_session_run(s, &in, 1), SPARQ_OK) << sparq_last_error_message();
  ASSERT_EQ(sparq_session_output(s, 0, &out), SPARQ_OK);

  // Free order: the model first, the session keeps it alive and still runs.
  sparq_model_free(m);
  EXPECT_EQ(sparq_session_run(s, &in, 1), SPARQ_OK) << sparq_last_error_message();
  EXPECT_EQ(sparq_session_output(s, 0, &out), SPARQ_OK);
  EXPECT_EQ(out.shape[0], 4);
  sparq_session_free(s);
  sparq_session_free(nullptr);
  sparq_model_free(nullptr);
}

}  // namespace
