// ONNX's own backend node tests (Debian's libonnx-testdata), run through sparq: every
// node test whose ops are all in sparq's registry, through the interpreter (import ->
// interpret) and through the converter (import -> convert fp32 -> load -> Session::run),
// each output compared with ONNX's expected values (floats: |a - b| <= 1e-6 + 1e-3 |b|,
// ONNX's own backend tolerance; everything else exactly, dtype and shape included).
//
// Each test's outcome on each path is one of
//   pass                  the outputs match
//   refused(<class>)      sparq refused it with a documented class of error
//                         (docs/onnx-conformance.md lists the classes)
// and must equal its line in tests/onnx_node_expected.txt: CI fails on any change, so a
// regression shows and refusing is never a way to pass. A wrong answer, a crash or an
// error outside the documented classes fails the test whatever the file says.
// SPARQ_NODE_TESTS_RECORD=FILE writes the outcomes seen (to review, then commit).
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <map>
#include <onnx/onnx_pb.h>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/interpreter.h"
#include "engine/model.h"
#include "engine/ops/registry.h"
#include "formats/error.h"
#include "formats/onnx_import.h"
#include "tests/shape_check.h"

namespace {

const char* kNodeDir = "/usr/share/libonnx-testdata/data/node";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool exists(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0;
}

// The documented refusal classes, matched on the error's text. Anything else is an
// undocumented error: a failure.
std::string refusal_class(const sparq::Error& e) {
  const std::string m = e.what();
  struct Rule {
    const char* needle;
    const char* cls;
  };
  static const Rule rules[] = {
      {"unsupported data type", "dtype"},
      {"has element type", "dtype"},
      {"Cast to ONNX element type", "dtype"},
      {"training_mode", "training-mode"},
      {"optional output", "optional-output"},
      {"is not a tensor", "non-tensor-value"},
      {"attribute '", "attribute"},
      {"is not supported (supported: 10 to 17)", "opset"},
      {"must be int64 or int32", "input-dtype"},
      {"must be float32", "input-dtype"},
      {"has no graph inputs", "no-inputs"},
  };
  for (const Rule& r : rules) {
    if (m.find(r.needle) != std::string::npos) return r.cls;
  }
  return "";
}

bool is_float(sparq::ElemType t) {
  return t == sparq::ElemType::kF32 || t == sparq::ElemType::kF64;
}

double value_at(const sparq::Constant& c, int64_t i) {
  switch (c.type) {
    case sparq::ElemType::kF32: return c.data<float>()[i];
    case sparq::ElemType::kF64: return c.data<double>()[i];
    case sparq::ElemType::kI64: return static_cast<double>(c.data<int64_t>()[i]);
    case sparq::ElemType::kI32: return c.data<int32_t>()[i];
    case sparq::ElemType::kS8: return c.data<int8_t>()[i];
    case sparq::ElemType::kU8:
    case sparq::ElemType::kBool: return c.data<uint8_t>()[i];
  }
  return 0;
}

// "" when `got` matches `want`, else what differs.
std::string compare(const std::string& name, const sparq::Constant& got,
                    const sparq::Constant& want) {
  if (got.type != want.type) {
    return name + ": dtype " + sparq::elem_type_name(got.type) + ", expected " +
           sparq::elem_type_name(want.type);
  }
  if (got.shape != want.shape) return name + ": shape differs";
  for (int64_t i = 0; i < want.elements(); ++i) {
    const double a = value_at(got, i), b = value_at(want, i);
    if (is_float(want.type)) {
      if (std::isnan(b) ? !std::isnan(a) : !(std::fabs(a - b) <= 1e-6 + 1e-3 * std::fabs(b))) {
        return name + "[" + std::to_string(i) + "] = " + std::to_string(a) + ", expected " +
               std::to_string(b);
      }
    } else if (a != b) {
      return name + "[" + std::to_string(i) + "] = " + std::to_string(a) + ", expected " +
             std::to_string(b);
    }
  }
  return "";
}

// The model with every refused optional output (LayerNormalization's Mean and
// InvStdDev) dropped from its nodes and the graph outputs: what sparq does compute is
// still checked against ONNX's values for the output it keeps.
std::string without_refused_outputs(const std::string& bytes) {
  onnx::ModelProto m;
  if (!m.ParseFromString(bytes)) return "";
  std::set<std::string> dropped;
  for (auto& n : *m.mutable_graph()->mutable_node()) {
    const sparq::OpSpec* s = sparq::find_op(n.op_type());
    for (int i = n.output_size() - 1; i >= 0; --i) {
      if (s != nullptr && static_cast<size_t>(i) < s->outputs.size() &&
          s->outputs[static_cast<size_t>(i)].refused) {
        dropped.insert(n.output(i));
        n.mutable_output()->RemoveLast();  // refused outputs are the trailing ones
      }
    }
  }
  if (dropped.empty()) return "";
  auto* outs = m.mutable_graph()->mutable_output();
  for (int i = outs->size() - 1; i >= 0; --i) {
    if (dropped.count(outs->Get(i).name())) outs->DeleteSubrange(i, 1);
  }
  return m.SerializeAsString();
}

struct Case {
  std::string name, dir;
};

std::vector<Case> selected_cases() {
  std::vector<Case> out;
  std::set<std::string> ops;
  for (const std::string& o : sparq::op_names(sparq::OpDomain::kOnnx)) ops.insert(o);
  DIR* d = opendir(kNodeDir);
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name[0] == '.') continue;
    const std::string dir = std::string(kNodeDir) + "/" + name;
    if (!exists(dir + "/model.onnx")) continue;
    onnx::ModelProto m;
    const std::string bytes = slurp(dir + "/model.onnx");
    if (!m.ParseFromString(bytes)) continue;
    bool all = true;
    for (const auto& n : m.graph().node()) {
      all = all && ops.count(n.op_type()) && (n.domain().empty() || n.domain() == "ai.onnx");
    }
    if (all) out.push_back({name, dir});
  }
  closedir(d);
  std::sort(out.begin(), out.end(), [](const Case& a, const Case& b) { return a.name < b.name; });
  return out;
}

struct DataSet {
  std::map<std::string, sparq::Value> inputs;
  std::vector<std::pair<std::string, sparq::Constant>> outputs;  // by graph output order
};

// Runs one path over every data set; returns its outcome ("pass", "refused(x)", or
// "FAIL: ..." for a wrong answer or an undocumented error).
template <class Run>
std::string outcome(const std::vector<DataSet>& sets, Run run) {
  try {
    for (const DataSet& ds : sets) {
      const std::map<std::string, sparq::Value> got = run(ds.inputs);
      for (const auto& kv : ds.outputs) {
        auto it = got.find(kv.first);
        if (it == got.end() || !it->second) return "FAIL: output '" + kv.first + "' missing";
        const std::string diff = compare(kv.first, *it->second, kv.second);
        if (!diff.empty()) return "FAIL: wrong answer: " + diff;
      }
    }
    return "pass";
  } catch (const sparq::Error& e) {
    const std::string cls = refusal_class(e);
    if (cls.empty()) return std::string("FAIL: undocumented error: ") + e.what();
    return "refused(" + cls + ")";
  } catch (const std::exception& e) {
    return std::string("FAIL: exception: ") + e.what();
  }
}

TEST(OnnxNodeTests, OutcomesMatchTheCommittedExpectations) {
  if (!exists(kNodeDir))
    GTEST_SKIP() << "libonnx-testdata is not installed (scripts/deps.sh installs it)";
  const char* tmpdir_env = std::getenv("TMPDIR");
  const std::string tmp = std::string(tmpdir_env ? tmpdir_env : "/tmp") + "/sparq-node-test-" +
                          std::to_string(static_cast<long>(getpid())) + ".sparq";
  std::map<std::string, std::string> expected;
  {
    std::ifstream f(SPARQ_NODE_EXPECTED);
    std::string line;
    while (std::getline(f, line)) {
      if (line.empty() || line[0] == '#') continue;
      const size_t sp = line.find(' ');
      expected[line.substr(0, sp)] = line.substr(sp + 1);
    }
  }
  std::ostringstream record;
  int passes = 0, refusals = 0;
  std::vector<std::string> failures;
  const std::vector<Case> cases = selected_cases();
  ASSERT_GT(cases.size(), 150u) << "fewer node tests than expected: is libonnx-testdata complete?";
  for (const Case& c : cases) {
    // Both paths on one model's bytes (the file, or the file without refused outputs).
    auto evaluate = [&](const std::string& bytes, std::string* interp, std::string* conv) {
      std::vector<DataSet> sets;
      sparq::Graph g;
      try {
        g = sparq::import_onnx_bytes(bytes, c.dir, c.dir + "/model.onnx");
        std::vector<std::string> original_outputs;
        {
          onnx::ModelProto full;
          full.ParseFromString(slurp(c.dir + "/model.onnx"));
          for (const auto& o : full.graph().output()) original_outputs.push_back(o.name());
        }
        for (int k = 0;; ++k) {
          const std::string ds = c.dir + "/test_data_set_" + std::to_string(k);
          if (!exists(ds)) break;
          DataSet set;
          for (size_t i = 0; i < g.inputs.size(); ++i) {
            const std::string f = ds + "/input_" + std::to_string(i) + ".pb";
            set.inputs[g.inputs[i].name] =
                std::make_shared<sparq::Constant>(sparq::import_onnx_tensor(slurp(f), f));
          }
          // Expected outputs by the original graph's order; only those still requested.
          for (size_t i = 0; i < original_outputs.size(); ++i) {
            bool kept = false;
            for (const sparq::ValueInfo& vi : g.outputs)
              kept = kept || vi.name == original_outputs[i];
            if (!kept) continue;
            const std::string f = ds + "/output_" + std::to_string(i) + ".pb";
            set.outputs.emplace_back(original_outputs[i], sparq::import_onnx_tensor(slurp(f), f));
          }
          sets.push_back(std::move(set));
        }
        *interp = outcome(sets, [&](const std::map<std::string, sparq::Value>& in) {
          auto out = sparq::interpret(g, in);
          // The shape pass predicts every node's output from shapes (tests/shape_check.h).
          const std::string shapes = sparq::test::check_shapes(g, in);
          if (!shapes.empty()) throw std::runtime_error("shape pass: " + shapes);
          return out;
        });
        *conv = outcome(sets, [&](const std::map<std::string, sparq::Value>& in) {
          sparq::ConvertOptions o;
          o.threads = 1;
          sparq::convert_graph(g, tmp, o);
          auto model = sparq::Model::load(tmp);
          sparq::Session s(model, 1);
          return s.run(in);
        });
      } catch (const sparq::Error& e) {  // refused at import: both paths
        const std::string cls = refusal_class(e);
        *interp = *conv = cls.empty() ? std::string("FAIL: undocumented error: ") + e.what()
                                      : "refused(" + cls + ")";
      }
    };
    const std::string model_bytes = slurp(c.dir + "/model.onnx");
    std::string interp, conv, y_interp, y_conv;
    evaluate(model_bytes, &interp, &conv);
    if (interp == "refused(optional-output)") {
      const std::string stripped = without_refused_outputs(model_bytes);
      if (!stripped.empty()) evaluate(stripped, &y_interp, &y_conv);
    }
    auto shown = [](const std::string& o) {
      return o.rfind("FAIL", 0) == 0 ? std::string("FAIL") : o;
    };
    std::string got = "interp=" + shown(interp) + " convert=" + shown(conv);
    if (!y_interp.empty())
      got += " kept-outputs: interp=" + shown(y_interp) + " convert=" + shown(y_conv);
    record << c.name << " " << got << "\n";
    const std::pair<const char*, const std::string*> paths[] = {{"interp", &interp},
                                                                {"convert", &conv},
                                                                {"interp, kept outputs", &y_interp},
                                                                {"convert, kept outputs", &y_conv}};
    for (const auto& p : paths) {
      const std::string& o = *p.second;
      if (o.empty()) continue;
      if (o.rfind("FAIL", 0) == 0) failures.push_back(c.name + " (" + p.first + "): " + o);
      else if (o == "pass") ++passes;
      else ++refusals;
    }
    auto it = expected.find(c.name);
    if (it == expected.end()) {
      failures.push_back(c.name + ": no expected outcome committed (got '" + got + "')");
    } else if (it->second != got) {
      failures.push_back(c.name + ": outcome '" + got + "', expected '" + it->second + "'");
    }
  }
  std::remove(tmp.c_str());
  if (const char* rec = std::getenv("SPARQ_NODE_TESTS_RECORD")) {
    std::ofstream f(rec);
    f << "# ONNX node tests (libonnx-testdata 1.12) whose ops sparq supports: outcome per path.\n"
         "# Written by SPARQ_NODE_TESTS_RECORD=FILE tests/onnx_node_test; reviewed, then "
         "committed.\n"
      << record.str();
  }
  std::printf(
      "onnx node tests: %zu selected, %d path passes, %d documented refusals, %zu failures\n",
      cases.size(), passes, refusals, failures.size());
  for (const std::string& f : failures) ADD_FAILURE() << f;
}

}  // namespace
