// The shape pass's rules (engine/ops/shape.h) against the interpreter on every node of
// every generated test model (BERT, DistilBERT, RoBERTa at opsets 11-17 and every export
// variant), and on hand-built nodes whose shapes depend on run-time values.
#include "engine/ops/shape.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <dirent.h>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "formats/npy.h"
#include "formats/onnx_import.h"
#include "tests/shape_check.h"

namespace sparq {
namespace {

TEST(ShapePass, EveryNodeOfEveryTestModel) {
  const char* root = std::getenv("SPARQ_MODELS_DIR");
  if (root == nullptr) GTEST_SKIP() << "SPARQ_MODELS_DIR is not set";
  std::vector<std::string> dirs;
  if (DIR* d = opendir(root)) {
    while (dirent* e = readdir(d)) {
      struct stat st {};
      const std::string m = std::string(root) + "/" + e->d_name;
      if (e->d_name[0] != '.' && stat((m + "/model.onnx").c_str(), &st) == 0) dirs.push_back(m);
    }
    closedir(d);
  }
  if (dirs.empty()) GTEST_SKIP() << "no models";
  std::sort(dirs.begin(), dirs.end());
  size_t nodes = 0;
  for (const std::string& dir : dirs) {
    SCOPED_TRACE(dir);
    const Graph g = import_onnx(dir + "/model.onnx");
    std::map<std::string, Value> inputs;
    for (const ValueInfo& v : g.inputs) {
      inputs[v.name] = std::make_shared<Constant>(read_npy(dir + "/input_" + v.name + ".npy"));
      if (v.type == ElemType::kBool && inputs[v.name]->type != ElemType::kBool) FAIL();
    }
    EXPECT_EQ(test::check_shapes(g, inputs), "");
    nodes += g.nodes.size();
  }
  std::printf("shape pass: %zu nodes of %zu models checked\n", nodes, dirs.size());
  EXPECT_GT(nodes, 1000u);
}

ValueMeta m(std::vector<int64_t> s, ElemType t = ElemType::kF32) {
  ValueMeta v;
  v.shape = std::move(s);
  v.type = t;
  return v;
}

Node node(const char* op, size_t inputs) {
  Node n;
  n.op = op;
  n.name = op;
  for (size_t i = 0; i < inputs; ++i) n.inputs.push_back("i" + std::to_string(i));
  n.outputs = {"y"};
  return n;
}

TEST(ShapePass, RunTimeShapesAreNamedAndBadShapesRefused) {
  // A Reshape whose target is computed at run time cannot be planned from shapes.
  const ValueMeta x = m({2, 6}), target = m({2}, ElemType::kI64);
  try {
    infer_node(node("Reshape", 2), 14, {&x, &target}, nullptr);
    FAIL() << "a run-time Reshape target was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("known only at run time"), std::string::npos);
  }
  const ValueMeta a = m({2, 3}), b = m({4, 3});
  EXPECT_THROW(infer_node(node("Add", 2), 14, {&a, &b}, nullptr), Error);
  EXPECT_THROW(infer_node(node("MatMul", 2), 14, {&a, &b}, nullptr), Error);
  const ValueMeta bt = m({3, 4});
  EXPECT_EQ(infer_node(node("MatMul", 2), 14, {&a, &bt}, nullptr)[0].shape,
            (std::vector<int64_t>{2, 4}));
  // SparqMatMul's features come from its weight.
  const ValueMeta h = m({1, 7, 3});
  EXPECT_EQ(
      infer_node(node("SparqMatMul", 1), 14, {&h}, [](const Node&) { return int64_t{5}; })[0].shape,
      (std::vector<int64_t>{1, 7, 5}));
}

}  // namespace
}  // namespace sparq
