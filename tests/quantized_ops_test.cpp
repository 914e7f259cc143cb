// The quantized ONNX ops on hand-built nodes (issue 12, step 1): QuantizeLinear,
// DequantizeLinear, DynamicQuantizeLinear, MatMulInteger and QLinearMatMul in the
// reference interpreter, against formulas written out here in double; their input
// errors (each an Error with a message, never a crash); and the shape rule against the
// interpreter for every output. ONNX's own cases run in onnx_node_test.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/interpreter.h"
#include "engine/ops/registry.h"
#include "engine/ops/shape.h"
#include "formats/error.h"

namespace sparq {
namespace {

template <class T>
std::shared_ptr<Constant> tensor(ElemType type, std::vector<int64_t> shape, std::vector<T> v) {
  auto c = std::make_shared<Constant>();
  c->type = type;
  c->shape = std::move(shape);
  EXPECT_EQ(static_cast<int64_t>(v.size()), c->elements());
  c->bytes.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(c->bytes.data(), v.data(), v.size() * sizeof(T));
  return c;
}
auto f32(std::vector<int64_t> s, std::vector<float> v) { return tensor(ElemType::kF32, s, v); }
auto s8(std::vector<int64_t> s, std::vector<int8_t> v) { return tensor(ElemType::kS8, s, v); }
auto u8(std::vector<int64_t> s, std::vector<uint8_t> v) { return tensor(ElemType::kU8, s, v); }
auto i32(std::vector<int64_t> s, std::vector<int32_t> v) { return tensor(ElemType::kI32, s, v); }

template <class T>
std::vector<T> values(const Value& v) {
  const T* p = v->data<T>();
  return std::vector<T>(p, p + v->elements());
}

Node node(const char* op, size_t inputs, size_t outputs = 1) {
  Node n;
  n.name = "q";
  n.op = op;
  for (size_t i = 0; i < inputs; ++i) n.inputs.push_back("in" + std::to_string(i));
  for (size_t i = 0; i < outputs; ++i) n.outputs.push_back("out" + std::to_string(i));
  return n;
}
Node with_axis(Node n, int64_t axis) {
  Attribute a;
  a.kind = Attribute::Kind::kInt;
  a.i = axis;
  n.attrs["axis"] = a;
  return n;
}

// Every output of `n` on `ins`, after checking that the shape rule predicts each one.
std::vector<Value> run(const Node& n, const std::vector<Value>& ins, int64_t opset = 13) {
  Graph g;
  g.opset = opset;
  std::vector<Value> out = interpret_node_outputs(g, n, ins);
  std::vector<ValueMeta> metas(ins.size());
  std::vector<const ValueMeta*> ms;
  for (size_t i = 0; i < ins.size(); ++i) {
    if (ins[i]) metas[i] = {ins[i]->shape, ins[i]->type, nullptr};
    ms.push_back(ins[i] ? &metas[i] : nullptr);
  }
  const std::vector<ValueMeta> want = infer_node(n, opset, ms, nullptr);
  EXPECT_EQ(want.size(), out.size());
  for (size_t k = 0; k < out.size() && k < want.size(); ++k) {
    EXPECT_EQ(want[k].shape, out[k]->shape) << n.op << " output " << k;
    EXPECT_EQ(want[k].type, out[k]->type) << n.op << " output " << k;
  }
  return out;
}

// The interpreter's error on `ins` (kOk when none), and the shape rule's, which must agree.
std::pair<Status, std::string> error_of(const Node& n, const std::vector<Value>& ins,
                                        int64_t opset = 13) {
  Graph g;
  g.opset = opset;
  std::pair<Status, std::string> r{Status::kOk, ""};
  try {
    interpret_node_outputs(g, n, ins);
  } catch (const Error& e) {
    r = {e.status(), e.what()};
  }
  std::vector<ValueMeta> metas(ins.size());
  std::vector<const ValueMeta*> ms;
  for (size_t i = 0; i < ins.size(); ++i) {
    if (ins[i]) metas[i] = {ins[i]->shape, ins[i]->type, nullptr};
    ms.push_back(ins[i] ? &metas[i] : nullptr);
  }
  Status shape_status = Status::kOk;
  try {
    infer_node(n, opset, ms, nullptr);
  } catch (const Error& e) {
    shape_status = e.status();
  }
  // The shape rule sees types and shapes only (an int32 zero point's values it cannot).
  if (r.first == Status::kOk || r.second.find("must be 0") == std::string::npos) {
    EXPECT_EQ(shape_status, r.first) << r.second;
  }
  return r;
}

void expect_error(const Node& n, const std::vector<Value>& ins, const std::string& needle,
                  int64_t opset = 13) {
  const auto e = error_of(n, ins, opset);
  EXPECT_EQ(e.first, Status::kInvalidArgument) << n.op << ": " << e.second;
  EXPECT_NE(e.second.find(needle), std::string::npos) << e.second;
  EXPECT_NE(e.second.find("node 'q'"), std::string::npos) << e.second;
}

TEST(QuantizedOps, QuantizeLinearRoundsHalfToEvenAndSaturates) {
  const Node q = node("QuantizeLinear", 3);
  auto x = f32({9}, {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 300.0f, -300.0f, NAN});
  EXPECT_EQ(values<int8_t>(run(q, {x, f32({}, {1.0f}), s8({}, {0})})[0]),
            (std::vector<int8_t>{0, 2, 2, 0, -2, -2, 127, -128, 0}));
  // uint8 with zero point 10: round(x) + 10, saturated to [0, 255].
  EXPECT_EQ(values<uint8_t>(run(q, {x, f32({}, {1.0f}), u8({}, {10})})[0]),
            (std::vector<uint8_t>{10, 12, 12, 10, 8, 8, 255, 0, 0}));
  // No zero point: uint8 0. Division by the scale, then rounding: 3 / 2 = 1.5 -> 2.
  EXPECT_EQ(values<uint8_t>(run(node("QuantizeLinear", 2),
                                {f32({3}, {3.0f, 5.0f, -4.0f}), f32({}, {2.0f})})[0]),
            (std::vector<uint8_t>{2, 2, 0}));
  // int32 x.
  EXPECT_EQ(values<int8_t>(run(q, {i32({3}, {7, -7, 1000}), f32({1}, {2.0f}), s8({1}, {1})})[0]),
            (std::vector<int8_t>{5, -3, 127}));
}

TEST(QuantizedOps, PerAxisScalesAndNegativeAxes) {
  // x [2, 3, 2], per axis 1 (also spelled -2), and per axis -1 (2 values).
  std::vector<float> xv;
  for (int i = 0; i < 12; ++i) xv.push_back(static_cast<float>(i * 10 - 40));
  auto x = f32({2, 3, 2}, xv);
  auto sc = f32({3}, {1.0f, 2.0f, 4.0f});
  auto zp = s8({3}, {0, 1, -1});
  std::vector<int8_t> want;
  for (int i = 0; i < 12; ++i) {
    const int c = (i / 2) % 3;
    const double v =
        std::nearbyint(xv[static_cast<size_t>(i)] / sc->data<float>()[c]) + zp->data<int8_t>()[c];
    want.push_back(static_cast<int8_t>(std::min(127.0, std::max(-128.0, v))));
  }
  const Node q = node("QuantizeLinear", 3);
  EXPECT_EQ(values<int8_t>(run(q, {x, sc, zp})[0]), want);
  EXPECT_EQ(values<int8_t>(run(with_axis(q, -2), {x, sc, zp})[0]), want);
  // Dequantized back: (q - zp) * scale, per the same axis.
  const Node dq = node("DequantizeLinear", 3);
  const std::vector<float> back = values<float>(run(dq, {run(q, {x, sc, zp})[0], sc, zp})[0]);
  for (int i = 0; i < 12; ++i) {
    const int c = (i / 2) % 3;
    EXPECT_EQ(back[static_cast<size_t>(i)],
              static_cast<float>(want[static_cast<size_t>(i)] - zp->data<int8_t>()[c]) *
                  sc->data<float>()[c]);
  }
  auto last = run(with_axis(q, -1), {x, f32({2}, {10.0f, 20.0f}), u8({2}, {100, 200})})[0];
  EXPECT_EQ(last->type, ElemType::kU8);
  EXPECT_EQ(values<uint8_t>(last)[1], 198);  // -30 / 20 = -1.5 -> -2, + 200
}

TEST(QuantizedOps, DequantizeLinearTypes) {
  const Node dq = node("DequantizeLinear", 3);
  EXPECT_EQ(values<float>(run(dq, {s8({3}, {-128, 0, 127}), f32({}, {0.5f}), s8({}, {-1})})[0]),
            (std::vector<float>{-63.5f, 0.5f, 64.0f}));
  const Node dq2 = node("DequantizeLinear", 2);
  EXPECT_EQ(values<float>(run(dq2, {i32({2}, {1 << 20, -3}), f32({}, {0.25f})})[0]),
            (std::vector<float>{262144.0f, -0.75f}));
  EXPECT_EQ(values<float>(run(dq, {i32({1}, {8}), f32({}, {0.5f}), i32({}, {0})})[0]),
            (std::vector<float>{4.0f}));
  expect_error(dq, {i32({1}, {8}), f32({}, {0.5f}), i32({}, {3})}, "must be 0");
}

TEST(QuantizedOps, QuantizeInputErrorsAreClear) {
  const Node q = node("QuantizeLinear", 3), dq = node("DequantizeLinear", 3);
  auto x = f32({2, 3}, {1, 2, 3, 4, 5, 6});
  auto x8 = u8({2, 3}, {1, 2, 3, 4, 5, 6});
  expect_error(dq, {x8, f32({}, {1.0f}), s8({}, {0})}, "must have x's type (uint8)");
  expect_error(q, {x, f32({}, {1.0f}), i32({}, {0})}, "must be int8 or uint8");
  expect_error(q, {x, f32({2}, {1.0f, 2.0f}), u8({2}, {0, 0})}, "x's axis 1 has 3");
  expect_error(with_axis(q, 2), {x, f32({3}, {1, 2, 3}), u8({3}, {0, 0, 0})},
               "axis 2 out of range");
  expect_error(with_axis(q, -3), {x, f32({3}, {1, 2, 3}), u8({3}, {0, 0, 0})}, "out of range");
  expect_error(q, {x, f32({3}, {1, 2, 3}), u8({}, {0})}, "they must match");
  expect_error(q, {x, tensor<double>(ElemType::kF64, {}, {1.0}), u8({}, {0})},
               "y_scale must be float32");
  expect_error(q, {x8, f32({}, {1.0f}), u8({}, {0})}, "x must be float32 or int32");
  expect_error(dq, {x, f32({}, {1.0f}), u8({}, {0})}, "x must be int8, uint8 or int32");
  expect_error(q, {x, f32({1, 3}, {1, 2, 3}), u8({1, 3}, {0, 0, 0})}, "one value or 1-D");
  // Before opset 13: per tensor only; the axis attribute is refused at validation.
  expect_error(q, {x, f32({3}, {1, 2, 3}), u8({3}, {0, 0, 0})}, "before opset 13", 10);
  try {
    validate_node(with_axis(q, 1), 10, false, "m.onnx");
    ADD_FAILURE() << "axis at opset 10 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kFormatError);
    EXPECT_NE(std::string(e.what()).find("from opset 13"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(validate_node(q, 10, false, "m.onnx"));
  EXPECT_THROW(validate_node(node("DynamicQuantizeLinear", 1, 3), 10, false, "m.onnx"), Error);
  EXPECT_NO_THROW(validate_node(node("DynamicQuantizeLinear", 1, 3), 11, false, "m.onnx"));
}

TEST(QuantizedOps, DynamicQuantizeLinear) {
  const Node d = node("DynamicQuantizeLinear", 1, 3);
  auto out = run(d, {f32({2, 2}, {-1.0f, 0.0f, 2.0f, 3.0f})}, 11);
  ASSERT_EQ(out.size(), 3u);
  const float scale = 4.0f / 255.0f;
  EXPECT_EQ(values<float>(out[1]), std::vector<float>{scale});
  EXPECT_TRUE(out[1]->shape.empty());
  const uint8_t zp = static_cast<uint8_t>(std::nearbyint(1.0f / scale));  // 63.75 -> 64
  EXPECT_EQ(values<uint8_t>(out[2]), std::vector<uint8_t>{zp});
  std::vector<uint8_t> want;
  for (float v : {-1.0f, 0.0f, 2.0f, 3.0f})
    want.push_back(static_cast<uint8_t>(std::min(255.0f, std::nearbyint(v / scale) + zp)));
  EXPECT_EQ(values<uint8_t>(out[0]), want);
  // All positive: the range still starts at 0 (zero point 0); all zeros: ONNX's
  // reference scale 1/255, zero point 0.
  EXPECT_EQ(values<uint8_t>(run(d, {f32({2}, {1.0f, 2.0f})}, 11)[2]), std::vector<uint8_t>{0});
  auto zeros = run(d, {f32({3}, {0.0f, 0.0f, 0.0f})}, 11);
  EXPECT_EQ(values<float>(zeros[1]), std::vector<float>{1.0f / 255.0f});
  EXPECT_EQ(values<uint8_t>(zeros[0]), (std::vector<uint8_t>{0, 0, 0}));
  expect_error(d, {s8({1}, {1})}, "x must be float32", 11);
}

// (A - a_zp) @ (B - b_zp) in int64, broadcasting batches: the reference of both matmuls.
// a_zp per row (index b * M + i when per batch), b_zp per column.
struct IntRef {
  std::vector<int64_t> out;
  std::vector<int64_t> row_param, col_param;  // per output element
};
IntRef int_ref(const std::vector<int>& a, int64_t ab, const std::vector<int>& b, int64_t bb,
               int64_t M, int64_t K, int64_t N, const std::vector<int>& azp,
               const std::vector<int>& bzp, bool a_batched, bool b_batched) {
  IntRef r;
  const int64_t batches = std::max(ab, bb);
  for (int64_t t = 0; t < batches; ++t) {
    const int64_t ta = ab == 1 ? 0 : t, tb = bb == 1 ? 0 : t;
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        const int64_t pa = azp.size() == 1 ? 0 : a_batched ? ta * M + i : i;
        const int64_t pb = bzp.size() == 1 ? 0 : b_batched ? tb * N + j : j;
        int64_t s = 0;
        for (int64_t k = 0; k < K; ++k) {
          s += (a[static_cast<size_t>((ta * M + i) * K + k)] - azp[static_cast<size_t>(pa)]) *
               (b[static_cast<size_t>((tb * K + k) * N + j)] - bzp[static_cast<size_t>(pb)]);
        }
        r.out.push_back(s);
        r.row_param.push_back(pa);
        r.col_param.push_back(pb);
      }
    }
  }
  return r;
}

TEST(QuantizedOps, MatMulIntegerZeroPointForms) {
  std::mt19937 rng(12);
  const int64_t M = 3, K = 5, N = 4;
  std::vector<int> a(2 * M * K), b(K * N);
  for (int& v : a) v = static_cast<int>(rng() % 256);        // uint8
  for (int& v : b) v = static_cast<int>(rng() % 256) - 128;  // int8
  std::vector<uint8_t> a8(a.begin(), a.end());
  std::vector<int8_t> b8(b.begin(), b.end());
  auto A = u8({2, M, K}, a8);
  auto B = s8({K, N}, b8);
  const Node mm = node("MatMulInteger", 4);
  struct Form {
    std::vector<int> azp, bzp;
    std::vector<int64_t> azp_shape, bzp_shape;
    bool a_batched;
  };
  const Form forms[] = {
      {{7}, {-3}, {}, {1}, false},                         // per tensor
      {{1, 2, 3}, {4, -5, 6, -7}, {M}, {N}, false},        // per row, per column
      {{1, 2, 3, 200, 100, 0}, {0}, {2, M, 1}, {}, true},  // per batch and row
  };
  for (const Form& f : forms) {
    const IntRef want = int_ref(a, 2, b, 1, M, K, N, f.azp, f.bzp, f.a_batched, false);
    auto out = run(mm,
                   {A, B, u8(f.azp_shape, std::vector<uint8_t>(f.azp.begin(), f.azp.end())),
                    s8(f.bzp_shape, std::vector<int8_t>(f.bzp.begin(), f.bzp.end()))},
                   10)[0];
    EXPECT_EQ(out->type, ElemType::kI32);
    EXPECT_EQ(out->shape, (std::vector<int64_t>{2, M, N}));
    const std::vector<int32_t> got = values<int32_t>(out);
    ASSERT_EQ(got.size(), want.out.size());
    for (size_t e = 0; e < got.size(); ++e) EXPECT_EQ(got[e], want.out[e]) << e;
  }
  // No zero points; a 1-D A.
  auto v = run(node("MatMulInteger", 2), {u8({K}, {1, 2, 3, 4, 5}), B}, 10)[0];
  EXPECT_EQ(v->shape, std::vector<int64_t>{N});
  for (int64_t j = 0; j < N; ++j) {
    int64_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += (k + 1) * b[static_cast<size_t>(k * N + j)];
    EXPECT_EQ(values<int32_t>(v)[static_cast<size_t>(j)], s);
  }
  expect_error(mm, {A, B, s8({}, {0}), s8({}, {0})}, "a_zero_point must have A's type (uint8)");
  expect_error(mm, {A, B, u8({}, {0}), s8({2}, {0, 0})}, "b_zero_point: shape [2]");
  expect_error(mm, {A, B, u8({4}, {0, 0, 0, 0}), s8({}, {0})}, "per row");
  expect_error(mm, {f32({M, K}, std::vector<float>(M * K)), B, u8({}, {0}), s8({}, {0})},
               "A must be int8 or uint8");
  expect_error(mm, {A, s8({4, N}, std::vector<int8_t>(4 * N)), u8({}, {0}), s8({}, {0})},
               "inner dimensions differ");
}

TEST(QuantizedOps, QLinearMatMulRequantizes) {
  std::mt19937 rng(3);
  const int64_t M = 2, K = 6, N = 3;
  std::vector<int> a(M * K), b(2 * K * N);
  for (int& v : a) v = static_cast<int>(rng() % 256) - 128;  // int8
  for (int& v : b) v = static_cast<int>(rng() % 256);        // uint8
  auto A = s8({M, K}, std::vector<int8_t>(a.begin(), a.end()));
  auto B = u8({2, K, N}, std::vector<uint8_t>(b.begin(), b.end()));
  const std::vector<float> as = {0.02f, 0.03f}, bs = {0.01f, 0.015f, 0.005f};
  const std::vector<int> azp = {-3, 5}, bzp = {120, 128, 131};
  const float ys = 0.05f;
  const int yzp = -10;
  const IntRef ref = int_ref(a, 1, b, 2, M, K, N, azp, bzp, false, false);
  const Node q = node("QLinearMatMul", 8);
  auto out = run(q,
                 {A, f32({M}, as), s8({M}, {-3, 5}), B, f32({N}, bs), u8({N}, {120, 128, 131}),
                  f32({}, {ys}), s8({}, {static_cast<int8_t>(yzp)})},
                 10)[0];
  EXPECT_EQ(out->type, ElemType::kS8);
  EXPECT_EQ(out->shape, (std::vector<int64_t>{2, M, N}));
  const std::vector<int8_t> got = values<int8_t>(out);
  for (size_t e = 0; e < got.size(); ++e) {
    const float mult =
        as[static_cast<size_t>(ref.row_param[e])] * bs[static_cast<size_t>(ref.col_param[e])] / ys;
    const double v = std::nearbyint(static_cast<double>(ref.out[e]) * mult) + yzp;
    EXPECT_EQ(got[e], static_cast<int8_t>(std::min(127.0, std::max(-128.0, v)))) << e;
  }
  auto bad = [&](size_t i, Value v, Value zp = nullptr) {
    std::vector<Value> ins = {A,           f32({}, {0.1f}), s8({}, {0}), B, f32({}, {0.1f}),
                              u8({}, {0}), f32({}, {0.1f}), u8({}, {0})};
    ins[i] = v;
    if (zp) ins[i + 1] = zp;
    return ins;
  };
  EXPECT_NO_THROW(run(q, bad(0, A), 10));
  expect_error(q, bad(2, u8({}, {0})), "a_zero_point must have a's type (int8)");
  expect_error(q, bad(4, f32({2}, {0.1f, 0.2f}), u8({2}, {0, 0})), "b_scale: shape [2]");
  expect_error(q, bad(5, u8({N}, {0, 0, 0})), "they must match");
  expect_error(q, bad(6, f32({N}, {0.1f, 0.1f, 0.1f}), u8({N}, {0, 0, 0})),
               "one value (per tensor)");
  expect_error(q, bad(7, i32({}, {0})), "y_zero_point must be int8 or uint8");
  expect_error(q, bad(1, i32({}, {1})), "a_scale must be float32");
}

}  // namespace
}  // namespace sparq
