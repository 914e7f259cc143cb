#include "engine/interpreter.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <set>

#include "engine/limits.h"
#include "engine/ops/attrs.h"
#include "engine/ops/registry.h"
#include "engine/profile.h"
#include "engine/shapes.h"
#include "formats/error.h"
#include "kernels/attention/attention.h"

namespace sparq {
namespace {

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s) { return shape_elements(s); }

bool is_float(ElemType t) { return t == ElemType::kF32 || t == ElemType::kF64; }

// "a float32 tensor" and the like, for limit errors, without building a string per value.
const char* tensor_what(ElemType t) {
  switch (t) {
    case ElemType::kF32: return "a float32 tensor";
    case ElemType::kF64: return "a float64 tensor";
    case ElemType::kS8: return "an int8 tensor";
    case ElemType::kU8: return "a uint8 tensor";
    case ElemType::kI32: return "an int32 tensor";
    case ElemType::kI64: return "an int64 tensor";
    case ElemType::kBool: return "a bool tensor";
  }
  return "a tensor";
}

// Every value the interpreter computes is allocated here, after its size is checked
// against the limits (a hostile Reshape, Expand or ConstantOfShape target fails before
// it allocates).
std::shared_ptr<Constant> make(ElemType t, Shape shape) {
  const int64_t e = checked_elements(shape, elem_type_size(t), tensor_what(t));
  auto c = std::make_shared<Constant>();
  c->type = t;
  c->shape = std::move(shape);
  c->bytes.assign(static_cast<size_t>(e) * elem_type_size(t), 0);
  return c;
}

double getf(const Constant& c, int64_t i) {
  switch (c.type) {
    case ElemType::kF32: return c.data<float>()[i];
    case ElemType::kF64: return c.data<double>()[i];
    case ElemType::kI64: return static_cast<double>(c.data<int64_t>()[i]);
    case ElemType::kI32: return c.data<int32_t>()[i];
    case ElemType::kS8: return c.data<int8_t>()[i];
    case ElemType::kU8:
    case ElemType::kBool: return c.data<uint8_t>()[i];
  }
  return 0;
}

int64_t geti(const Constant& c, int64_t i) {
  switch (c.type) {
    case ElemType::kF32: return static_cast<int64_t>(c.data<float>()[i]);
    case ElemType::kF64: return static_cast<int64_t>(c.data<double>()[i]);
    case ElemType::kI64: return c.data<int64_t>()[i];
    case ElemType::kI32: return c.data<int32_t>()[i];
    case ElemType::kS8: return c.data<int8_t>()[i];
    case ElemType::kU8:
    case ElemType::kBool: return c.data<uint8_t>()[i];
  }
  return 0;
}

// Float to integer without undefined behaviour: NaN becomes 0, values beyond the type's
// range saturate (ONNX leaves out-of-range Casts undefined; sparq pins them down).
template <class T>
T saturate(double v) {
  if (!(v == v)) return 0;
  if (v <= static_cast<double>(std::numeric_limits<T>::lowest()))
    return std::numeric_limits<T>::lowest();
  if (v >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(v);
}

void setf(Constant& c, int64_t i, double v) {
  uint8_t* b = c.bytes.data();
  switch (c.type) {
    case ElemType::kF32: reinterpret_cast<float*>(b)[i] = static_cast<float>(v); break;
    case ElemType::kF64: reinterpret_cast<double*>(b)[i] = v; break;
    case ElemType::kI64: reinterpret_cast<int64_t*>(b)[i] = saturate<int64_t>(v); break;
    case ElemType::kI32: reinterpret_cast<int32_t*>(b)[i] = saturate<int32_t>(v); break;
    case ElemType::kS8: reinterpret_cast<int8_t*>(b)[i] = saturate<int8_t>(v); break;
    case ElemType::kU8: b[i] = saturate<uint8_t>(v); break;
    case ElemType::kBool: b[i] = v != 0.0; break;
  }
}

void seti(Constant& c, int64_t i, int64_t v) {
  if (is_float(c.type)) {
    setf(c, i, static_cast<double>(v));
    return;
  }
  uint8_t* b = c.bytes.data();
  switch (c.type) {
    case ElemType::kI64: reinterpret_cast<int64_t*>(b)[i] = v; break;
    case ElemType::kI32: reinterpret_cast<int32_t*>(b)[i] = static_cast<int32_t>(v); break;
    case ElemType::kS8: reinterpret_cast<int8_t*>(b)[i] = static_cast<int8_t>(v); break;
    case ElemType::kU8: b[i] = static_cast<uint8_t>(v); break;
    case ElemType::kBool: b[i] = v != 0; break;
    default: break;
  }
}

// Steps a multi-index `ctr` over `out` from dimension `last` down, keeping `off` (the
// element offset for strides `st`) in step: an odometer, carrying into outer dimensions.
inline void odometer_next(std::vector<int64_t>& ctr, const Shape& out,
                          const std::vector<int64_t>& st, int64_t& off, int64_t last) {
  for (int64_t d = last; d >= 0; --d) {
    if (++ctr[static_cast<size_t>(d)] < out[static_cast<size_t>(d)]) {
      off += st[static_cast<size_t>(d)];
      return;
    }
    off -= st[static_cast<size_t>(d)] * (out[static_cast<size_t>(d)] - 1);
    ctr[static_cast<size_t>(d)] = 0;
  }
}

std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int64_t i = static_cast<int64_t>(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

// ---- elementwise functors: one struct per op ----------------------------------------
// f: the float32 loop's function; d: other float types, in double; i: integers with
// two's-complement wrap-around (false = division by zero). kMixedTypes: the operands may
// differ in type (Pow's exponent); kIntegers: a unary op with its own integer form.
inline int64_t wrap(uint64_t v) { return static_cast<int64_t>(v); }
struct AddFn {
  static constexpr bool kMixedTypes = false;
  static float f(float x, float y) { return x + y; }
  static double d(double x, double y) { return x + y; }
  static bool i(int64_t x, int64_t y, double, int64_t* v) {
    *v = wrap(static_cast<uint64_t>(x) + static_cast<uint64_t>(y));
    return true;
  }
};
struct SubFn {
  static constexpr bool kMixedTypes = false;
  static float f(float x, float y) { return x - y; }
  static double d(double x, double y) { return x - y; }
  static bool i(int64_t x, int64_t y, double, int64_t* v) {
    *v = wrap(static_cast<uint64_t>(x) - static_cast<uint64_t>(y));
    return true;
  }
};
struct MulFn {
  static constexpr bool kMixedTypes = false;
  static float f(float x, float y) { return x * y; }
  static double d(double x, double y) { return x * y; }
  static bool i(int64_t x, int64_t y, double, int64_t* v) {
    *v = wrap(static_cast<uint64_t>(x) * static_cast<uint64_t>(y));
    return true;
  }
};
struct DivFn {
  static constexpr bool kMixedTypes = false;
  static float f(float x, float y) { return x / y; }
  static double d(double x, double y) { return x / y; }
  static bool i(int64_t x, int64_t y, double, int64_t* v) {
    if (y == 0) return false;
    *v = y == -1 ? wrap(0 - static_cast<uint64_t>(x)) : x / y;
    return true;
  }
};
struct PowFn {
  static constexpr bool kMixedTypes = true;
  static float f(float x, float y) {
    return y == 2.0f ? x * x
                     : static_cast<float>(std::pow(static_cast<double>(x), static_cast<double>(y)));
  }
  static double d(double x, double y) { return std::pow(x, y); }
  static bool i(int64_t x, int64_t, double y, int64_t* v) {
    *v = saturate<int64_t>(std::pow(static_cast<double>(x), y));
    return true;
  }
};
struct SqrtFn {
  static constexpr bool kIntegers = false;
  static float f(float x) { return std::sqrt(x); }
  static double d(double x) { return std::sqrt(x); }
  static int64_t i(int64_t x) { return x; }
};
struct ErfFn {
  static constexpr bool kIntegers = false;
  static float f(float x) { return std::erf(x); }
  static double d(double x) { return std::erf(x); }
  static int64_t i(int64_t x) { return x; }
};
struct TanhFn {
  static constexpr bool kIntegers = false;
  static float f(float x) { return std::tanh(x); }
  static double d(double x) { return std::tanh(x); }
  static int64_t i(int64_t x) { return x; }
};
struct SigmoidFn {
  static constexpr bool kIntegers = false;
  static float f(float x) { return 1.0f / (1.0f + std::exp(-x)); }
  static double d(double x) { return 1.0 / (1.0 + std::exp(-x)); }
  static int64_t i(int64_t x) { return x; }
};
struct ReciprocalFn {
  static constexpr bool kIntegers = false;
  static float f(float x) { return 1.0f / x; }
  static double d(double x) { return 1.0 / x; }
  static int64_t i(int64_t x) { return x; }
};
struct ExpFn {
  static constexpr bool kIntegers = false;
  static float f(float x) { return std::exp(x); }
  static double d(double x) { return std::exp(x); }
  static int64_t i(int64_t x) { return x; }
};
struct ReluFn {
  static constexpr bool kIntegers = true;
  static float f(float x) { return x > 0.0f ? x : 0.0f; }
  static double d(double x) { return x > 0 ? x : 0; }
  static int64_t i(int64_t x) { return std::max<int64_t>(x, 0); }
};
struct NegFn {
  static constexpr bool kIntegers = true;
  static float f(float x) { return -x; }
  static double d(double x) { return -x; }
  static int64_t i(int64_t x) { return wrap(0 - static_cast<uint64_t>(x)); }
};

class Runner {
 public:
  Runner(const Graph& g, const CustomOp& custom, const ParallelFor& parallel, bool profile = false)
      : g_(g), custom_(custom), parallel_(parallel), profile_(profile) {}

  // f(begin, end) over [0, n) in a few chunks on the pool when the work is big enough
  // (`cost` = rough work per item), else serially.
  template <class F>
  void par(int64_t n, int64_t cost, F&& f) const {
    constexpr int64_t kMinWork = int64_t{1} << 15;
    if (!parallel_ || n < 2 || n * cost < 2 * kMinWork) {
      f(int64_t{0}, n);
      return;
    }
    const int64_t parts =
        std::min<int64_t>(n, std::max<int64_t>(2, std::min<int64_t>(16, n * cost / kMinWork)));
    parallel_(parts, [&](int64_t p) { f(n * p / parts, n * (p + 1) / parts); });
  }

  [[noreturn]] void fail(const Node& n, const std::string& what) const {
    throw Error(Status::kInvalidArgument, "node '" + n.name + "' (" + n.op + "): " + what);
  }
  [[noreturn]] void unsupported(const Node& n, const std::string& what) const {
    throw Error(Status::kUnsupported, "node '" + n.name + "' (" + n.op + "): " + what);
  }

  Value in(const Node& n, size_t i) {
    if (i >= n.inputs.size() || n.inputs[i].empty()) return nullptr;
    auto it = env_.find(n.inputs[i]);
    if (it == env_.end()) fail(n, "input '" + n.inputs[i] + "' has no value");
    return it->second;
  }
  Value need(const Node& n, size_t i) {
    Value v = in(n, i);
    if (!v) fail(n, "missing input " + std::to_string(i));
    return v;
  }
  std::vector<int64_t> ints_of(const Node& n, const Constant& c) {
    if (is_float(c.type)) fail(n, "expected an integer tensor");
    std::vector<int64_t> v(static_cast<size_t>(c.elements()));
    for (size_t i = 0; i < v.size(); ++i) v[i] = geti(c, static_cast<int64_t>(i));
    return v;
  }
  int64_t axis(const Node& n, int64_t a, size_t rank) {
    int64_t r = 0;
    std::string why;
    if (!normalize_axis(a, rank, &r, &why)) fail(n, why);
    return r;
  }

  // The shape rules are engine/shapes.h's (shared with the shape pass).
  Shape broadcast(const Node& n, const std::vector<const Shape*>& shapes) {
    Shape out;
    std::string why;
    if (!broadcast_shapes(shapes, &out, &why)) fail(n, why);
    return out;
  }
  std::vector<int64_t> broadcast_index(const Shape& out, const Shape& s) {
    return broadcast_index_s(out, s);
  }
  // Maps every output element to the element of `s` it broadcasts from.
  static std::vector<int64_t> broadcast_index_s(const Shape& out, const Shape& s) {
    const size_t rank = out.size();
    std::vector<int64_t> st(rank, 0);
    const std::vector<int64_t> sst = strides_of(s);
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != 1) st[rank - s.size() + i] = sst[i];
    }
    // 8 bytes per output element: checked against the limits before the output itself.
    std::vector<int64_t> idx(
        static_cast<size_t>(checked_elements(out, sizeof(int64_t), "a broadcast index")));
    std::vector<int64_t> ctr(rank, 0);
    int64_t off = 0;
    for (size_t e = 0; e < idx.size(); ++e) {
      idx[e] = off;
      odometer_next(ctr, out, st, off, static_cast<int64_t>(rank) - 1);
    }
    return idx;
  }

  // fp32 fast path: the op hoisted out of the loop, and no index vectors for the common
  // broadcasts (equal shapes, a scalar, or an operand repeated over leading dimensions,
  // such as a bias or an attention mask).
  template <class F>
  void f32_loop(const Constant& a, const Constant& b, const Shape& out, float* r, F f) const {
    const int64_t n = numel(out), na = a.elements(), nb = b.elements();
    const float* x = a.data<float>();
    const float* y = b.data<float>();
    auto is_suffix = [&](const Shape& s) {  // s, without leading 1s, ends `out`
      size_t i = 0;
      while (i < s.size() && s[i] == 1) ++i;
      const size_t len = s.size() - i;
      if (len > out.size()) return false;
      return std::equal(s.begin() + static_cast<long>(i), s.end(),
                        out.end() - static_cast<long>(len));
    };
    if (na == n && nb == n) {
      par(n, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t i = b0; i < b1; ++i) r[i] = f(x[i], y[i]);
      });
    } else if (na == n && nb == 1) {
      const float c = y[0];
      par(n, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t i = b0; i < b1; ++i) r[i] = f(x[i], c);
      });
    } else if (nb == n && na == 1) {
      const float c = x[0];
      par(n, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t i = b0; i < b1; ++i) r[i] = f(c, y[i]);
      });
    } else if (na == n && nb > 0 && is_suffix(b.shape)) {
      par(n / nb, nb, [&](int64_t b0, int64_t b1) {
        for (int64_t i = b0 * nb; i < b1 * nb; i += nb)
          for (int64_t j = 0; j < nb; ++j) r[i + j] = f(x[i + j], y[j]);
      });
    } else if (nb == n && na > 0 && is_suffix(a.shape)) {
      par(n / na, na, [&](int64_t b0, int64_t b1) {
        for (int64_t i = b0 * na; i < b1 * na; i += na)
          for (int64_t j = 0; j < na; ++j) r[i + j] = f(x[j], y[i + j]);
      });
    } else {
      const auto ia = broadcast_index_s(out, a.shape), ib = broadcast_index_s(out, b.shape);
      for (int64_t i = 0; i < n; ++i)
        r[i] = f(x[ia[static_cast<size_t>(i)]], y[ib[static_cast<size_t>(i)]]);
    }
  }

  // Elementwise ops: one functor per op (the Fn structs above the class), dispatched
  // once per node. float32 tensors take the vectorizable loop; other floats compute in
  // double; integers wrap around (two's complement).
  template <class Fn>
  Value binary(const Node& n) {
    Value a = need(n, 0), b = need(n, 1);
    const Shape out = broadcast(n, {&a->shape, &b->shape});
    if (a->type == ElemType::kF32 && b->type == ElemType::kF32) {
      auto r = make(ElemType::kF32, out);
      f32_loop(*a, *b, out, reinterpret_cast<float*>(r->bytes.data()),
               [](float x, float y) { return Fn::f(x, y); });
      return r;
    }
    const auto ia = broadcast_index(out, a->shape), ib = broadcast_index(out, b->shape);
    if (a->type != b->type && !Fn::kMixedTypes) fail(n, "inputs have different types");
    auto r = make(a->type, out);
    if (is_float(a->type)) {
      for (size_t i = 0; i < ia.size(); ++i)
        setf(*r, static_cast<int64_t>(i), Fn::d(getf(*a, ia[i]), getf(*b, ib[i])));
    } else {
      for (size_t i = 0; i < ia.size(); ++i) {
        int64_t v = 0;
        if (!Fn::i(geti(*a, ia[i]), geti(*b, ib[i]), getf(*b, ib[i]), &v))
          fail(n, "integer division by zero");
        seti(*r, static_cast<int64_t>(i), v);
      }
    }
    return r;
  }

  Value equal(const Node& n) {
    Value a = need(n, 0), b = need(n, 1);
    const Shape out = broadcast(n, {&a->shape, &b->shape});
    const auto ia = broadcast_index(out, a->shape), ib = broadcast_index(out, b->shape);
    auto r = make(ElemType::kBool, out);
    for (size_t i = 0; i < ia.size(); ++i) {
      const bool eq = is_float(a->type) || is_float(b->type) ? getf(*a, ia[i]) == getf(*b, ib[i])
                                                             : geti(*a, ia[i]) == geti(*b, ib[i]);
      r->bytes[i] = eq;
    }
    return r;
  }

  template <class Fn>
  Value unary(const Node& n) {
    Value a = need(n, 0);
    auto r = make(a->type, a->shape);
    const int64_t cnt = a->elements();
    if (a->type == ElemType::kF32) {
      const float* x = a->data<float>();
      float* o = reinterpret_cast<float*>(r->bytes.data());
      for (int64_t i = 0; i < cnt; ++i) o[i] = Fn::f(x[i]);
      return r;
    }
    for (int64_t i = 0; i < cnt; ++i) {
      if constexpr (Fn::kIntegers) {
        if (!is_float(a->type)) {
          seti(*r, i, Fn::i(geti(*a, i)));
          continue;
        }
      }
      setf(*r, i, Fn::d(getf(*a, i)));
    }
    return r;
  }

  Value logical_not(const Node& n) {
    Value a = need(n, 0);
    auto r = make(a->type, a->shape);
    for (int64_t i = 0; i < a->elements(); ++i)
      r->bytes[static_cast<size_t>(i)] = !a->raw()[static_cast<size_t>(i)];
    return r;
  }

  Value cast(const Node& n) {
    Value a = need(n, 0);
    const int64_t to = attrs_of(n, g_.opset)->to;
    ElemType t;
    switch (to) {
      case 1: t = ElemType::kF32; break;
      case 2: t = ElemType::kU8; break;
      case 3: t = ElemType::kS8; break;
      case 6: t = ElemType::kI32; break;
      case 7: t = ElemType::kI64; break;
      case 9: t = ElemType::kBool; break;
      case 11: t = ElemType::kF64; break;
      default: unsupported(n, "cast to type " + std::to_string(to));
    }
    auto r = make(t, a->shape);
    for (int64_t i = 0; i < a->elements(); ++i) {
      if (is_float(a->type)) setf(*r, i, getf(*a, i));
      else seti(*r, i, geti(*a, i));
    }
    return r;
  }

  Value where(const Node& n) {
    Value c = need(n, 0), x = need(n, 1), y = need(n, 2);
    if (x->type != y->type) fail(n, "X and Y have different types");
    const Shape out = broadcast(n, {&c->shape, &x->shape, &y->shape});
    const auto ic = broadcast_index(out, c->shape), ix = broadcast_index(out, x->shape),
               iy = broadcast_index(out, y->shape);
    auto r = make(x->type, out);
    const size_t es = elem_type_size(x->type);
    for (size_t i = 0; i < ic.size(); ++i) {
      const Constant& src = c->raw()[static_cast<size_t>(ic[i])] ? *x : *y;
      const int64_t at = c->raw()[static_cast<size_t>(ic[i])] ? ix[i] : iy[i];
      std::memcpy(&r->bytes[i * es], &src.raw()[static_cast<size_t>(at) * es], es);
    }
    return r;
  }

  Value matmul(const Node& n, const Constant& a0, const Constant& b0) {
    Shape out;
    std::string why;
    if (!matmul_shape(a0.shape, b0.shape, &out, &why)) fail(n, why);
    Shape as = a0.shape, bs = b0.shape;
    const bool a1 = as.size() == 1, b1 = bs.size() == 1;
    if (a1) as.insert(as.begin(), 1);
    if (b1) bs.push_back(1);
    const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
    const Shape abatch(as.begin(), as.end() - 2), bbatch(bs.begin(), bs.end() - 2);
    const Shape batch = broadcast(n, {&abatch, &bbatch});
    const auto ia = broadcast_index(batch, abatch), ib = broadcast_index(batch, bbatch);
    auto r = make(a0.type, out);
    if (a0.type == ElemType::kF32 && b0.type == ElemType::kF32) {
      // fp32: float accumulation in a loop the compiler vectorizes over j.
      const float* A = a0.data<float>();
      const float* B = b0.data<float>();
      float* R = reinterpret_cast<float*>(r->bytes.data());
      const int64_t rows = static_cast<int64_t>(ia.size()) * M;
      par(rows, K * N, [&](int64_t r0, int64_t r1) {
        for (int64_t rr = r0; rr < r1; ++rr) {
          const size_t bt = static_cast<size_t>(rr / M);
          const int64_t i = rr % M;
          const float* ap = A + ia[bt] * M * K;
          const float* bp = B + ib[bt] * K * N;
          float* row = R + static_cast<int64_t>(bt) * M * N + i * N;
          for (int64_t k = 0; k < K; ++k) {
            const float x = ap[i * K + k];
            const float* brow = bp + k * N;
            for (int64_t j = 0; j < N; ++j) row[j] += x * brow[j];
          }
        }
      });
      return r;
    }
    std::vector<double> acc(static_cast<size_t>(N));
    for (size_t bt = 0; bt < ia.size(); ++bt) {
      const int64_t aoff = ia[bt] * M * K, boff = ib[bt] * K * N;
      const int64_t roff = static_cast<int64_t>(bt) * M * N;
      for (int64_t i = 0; i < M; ++i) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t k = 0; k < K; ++k) {
          const double x = getf(a0, aoff + i * K + k);
          if (x == 0.0) continue;
          for (int64_t j = 0; j < N; ++j)
            acc[static_cast<size_t>(j)] += x * getf(b0, boff + k * N + j);
        }
        for (int64_t j = 0; j < N; ++j) setf(*r, roff + i * N + j, acc[static_cast<size_t>(j)]);
      }
    }
    return r;
  }

  Value transpose_of(const Node& n, const Constant& a, const std::vector<int64_t>& given) {
    const size_t rank = a.shape.size();
    Shape out;
    std::vector<int64_t> perm;
    std::string why;
    if (!transpose_shape(a.shape, given, &out, &perm, &why)) fail(n, why);
    auto r = make(a.type, out);
    const auto ist = strides_of(a.shape);
    std::vector<int64_t> st(rank);
    for (size_t i = 0; i < rank; ++i) st[i] = ist[static_cast<size_t>(perm[i])];
    const size_t es = elem_type_size(a.type);
    std::vector<int64_t> ctr(rank, 0);
    int64_t off = 0;
    if (es == 4 && rank >= 1 && st[rank - 1] == 1) {
      // 4-byte elements whose last axis stays innermost: copy runs of the last axis.
      const int64_t run = out[rank - 1];
      const uint32_t* src = reinterpret_cast<const uint32_t*>(a.raw());
      uint32_t* dst = reinterpret_cast<uint32_t*>(r->bytes.data());
      for (int64_t e = 0; e < r->elements(); e += run) {
        for (int64_t j = 0; j < run; ++j) dst[e + j] = src[off + j];
        odometer_next(ctr, out, st, off, static_cast<int64_t>(rank) - 2);
      }
      return r;
    }
    for (int64_t e = 0; e < r->elements(); ++e) {
      std::memcpy(&r->bytes[static_cast<size_t>(e) * es], &a.raw()[static_cast<size_t>(off) * es],
                  es);
      odometer_next(ctr, out, st, off, static_cast<int64_t>(rank) - 1);
    }
    return r;
  }

  // Fused attention (engine/passes.cpp): per (batch, head, query row) the scores
  // against every key, scaled, masked, softmaxed and applied to V, without materializing
  // the [B, H, S, T] score tensor. Q [B,H,S,dh], KT [B,H,dh,T], V [B,H,T,dv];
  // mask broadcastable to [B,H,S,T]: additive floats ("add") or booleans selecting
  // `fill` ("where").
  Value attention(const Node& n) {
    Value q = need(n, 0), kt = need(n, 1), v = need(n, 2), mask = in(n, 3);
    const auto at = attrs_of(n, g_.opset);
    const MaskKind kind = at->mask;
    const float scale = at->scale, fill = at->fill;
    if (q->shape.size() != 4 || kt->shape.size() != 4 || v->shape.size() != 4 ||
        q->type != ElemType::kF32 || kt->type != ElemType::kF32 || v->type != ElemType::kF32) {
      fail(n, "expects float32 rank-4 Q, K^T and V");
    }
    const int64_t B = q->shape[0], H = q->shape[1], S = q->shape[2], dh = q->shape[3];
    const int64_t T = kt->shape[3], dv = v->shape[3];
    if (kt->shape[0] != B || kt->shape[1] != H || kt->shape[2] != dh || v->shape[0] != B ||
        v->shape[1] != H || v->shape[2] != T) {
      fail(n, "Q, K^T and V shapes do not match");
    }
    // Mask strides over [B, H, S, T], 0 where the mask broadcasts.
    int64_t ms[4] = {0, 0, 0, 0};
    if (mask && kind != MaskKind::kNone) {
      if (kind == MaskKind::kAdd && mask->type != ElemType::kF32)
        fail(n, "additive mask must be float32");
      if (kind == MaskKind::kWhere && mask->type != ElemType::kBool)
        fail(n, "select mask must be bool");
      std::string why;
      if (!attention_mask_strides(mask->shape, {B, H, S, T}, ms, &why)) fail(n, why);
    }
    AttentionArgs args;
    args.q = q->data<float>();
    args.kt = kt->data<float>();
    args.v = v->data<float>();
    args.heads = H;
    args.seq = S;
    args.keys = T;
    args.dh = dh;
    args.dv = dv;
    args.scale = scale;
    args.add_mask = mask && kind == MaskKind::kAdd ? mask->data<float>() : nullptr;
    args.select_mask = mask && kind == MaskKind::kWhere ? mask->raw() : nullptr;
    args.fill = fill;
    for (int d = 0; d < 4; ++d) args.mask_stride[d] = ms[d];
    auto r = make(ElemType::kF32, {B, H, S, dv});
    args.out = reinterpret_cast<float*>(r->bytes.data());
    const F32AttentionFn kernel = attention_kernels().f32;
    par(B * H * S, T * (dh + dv), [&](int64_t r0, int64_t r1) {
      std::vector<float> scratch(static_cast<size_t>(T));
      kernel(args, r0, r1, scratch.data());
    });
    return r;
  }

  // ---- quantized ops: ONNX's formulas, rounding half to even (std::nearbyint in the
  // default rounding mode) and saturating to the type's range (setf; NaN becomes 0,
  // which ONNX leaves undefined). The input rules are engine/shapes.h's.
  static TensorDesc desc(const Value& v) {
    return v ? TensorDesc{&v->shape, v->type} : TensorDesc{};
  }

  // QuantizeLinear: y = saturate(round(x / scale) + zero_point), x / scale in float32
  // for float32 x (as ONNX's numpy reference computes it) and in double for int32 x.
  // DequantizeLinear: y = float32(x - zero_point) * scale.
  Value quantize_linear(const Node& n, bool quantize) {
    Value x = need(n, 0), s = need(n, 1), z = in(n, 2);
    ElemType out_type = ElemType::kF32;
    int64_t ax = -1;
    std::string why;
    if (!quantize_linear_rule(quantize, g_.opset, attrs_of(n, g_.opset)->axis, desc(x), desc(s),
                              desc(z), &out_type, &ax, &why)) {
      fail(n, why);
    }
    // Element e uses parameter (e / inner) % dim: 0 throughout when per tensor.
    int64_t inner = 1, dim = 1;
    if (ax >= 0) {
      dim = x->shape[static_cast<size_t>(ax)];
      for (size_t d = static_cast<size_t>(ax) + 1; d < x->shape.size(); ++d) inner *= x->shape[d];
    }
    const float* sc = s->data<float>();
    auto r = make(out_type, x->shape);
    const int64_t cnt = x->elements();
    if (!quantize) {
      if (x->type == ElemType::kI32 && z) {
        for (int64_t p = 0; p < z->elements(); ++p) {
          if (geti(*z, p) != 0)
            fail(n, "an int32 x's zero point must be 0 (ONNX: int32 has no zero point)");
        }
      }
      float* y = reinterpret_cast<float*>(r->bytes.data());
      for (int64_t e = 0; e < cnt; ++e) {
        const int64_t p = (e / inner) % dim;
        y[e] = static_cast<float>(geti(*x, e) - (z ? geti(*z, p) : 0)) * sc[p];
      }
      return r;
    }
    for (int64_t e = 0; e < cnt; ++e) {
      const int64_t p = (e / inner) % dim;
      const double q = x->type == ElemType::kF32
                           ? static_cast<double>(std::nearbyint(x->data<float>()[e] / sc[p]))
                           : std::nearbyint(static_cast<double>(x->data<int32_t>()[e]) / sc[p]);
      setf(*r, e, q + static_cast<double>(z ? geti(*z, p) : 0));
    }
    return r;
  }

  // DynamicQuantizeLinear (uint8): over the range of x widened to include 0,
  // scale = (max - min) / 255 and zero point = round(saturate(0 - min / scale)), in
  // float32; y = saturate(round(x / scale) + zero point). An all-zero (or empty) x makes
  // ONNX's formula 0 / 0; ONNX's reference implementation then divides 1 by 255 instead,
  // and so does sparq (y and the zero point are 0 either way). NaNs do not widen the range.
  Value dynamic_quantize_linear(const Node& n) {
    Value x = need(n, 0);
    if (x->type != ElemType::kF32)
      fail(n, std::string("x must be float32, not ") + elem_type_name(x->type));
    const float* xs = x->data<float>();
    const int64_t cnt = x->elements();
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < cnt; ++i) {
      lo = std::min(lo, xs[i]);
      hi = std::max(hi, xs[i]);
    }
    const float scale = (hi == lo ? 1.0f : hi - lo) / 255.0f;
    const uint8_t zp =
        saturate<uint8_t>(std::nearbyint(std::clamp(0.0f - lo / scale, 0.0f, 255.0f)));
    auto y = make(ElemType::kU8, x->shape);
    for (int64_t i = 0; i < cnt; ++i) {
      y->bytes[static_cast<size_t>(i)] =
          saturate<uint8_t>(static_cast<double>(std::nearbyint(xs[i] / scale)) + zp);
    }
    auto ys = make(ElemType::kF32, {});
    reinterpret_cast<float*>(ys->bytes.data())[0] = scale;
    auto yz = make(ElemType::kU8, {});
    yz->bytes[0] = zp;
    more_ = {ys, yz};
    return y;
  }

  // The int32 products of MatMulInteger and QLinearMatMul: numpy matmul (1-D operands
  // promoted, batch dimensions broadcast) of (A - a_zero_point) and (B - b_zero_point),
  // accumulated with int32 wrap-around (ONNX: the accumulation may overflow only in 32
  // bits; an int64 sum truncated to 32 bits is the same). emit(index, a_param, b_param,
  // sum) for each output element, with the index of the row's and the column's scale
  // and zero point (their forms from engine/shapes.h).
  template <class Emit>
  void integer_matmul(const Node& n, const Constant& a0, const Constant& b0, const Constant* azp,
                      const Constant* bzp, const QuantParamForm form[2], Emit&& emit) {
    Shape as = a0.shape, bs = b0.shape;
    if (as.size() == 1) as.insert(as.begin(), 1);
    if (bs.size() == 1) bs.push_back(1);
    const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
    const Shape abatch(as.begin(), as.end() - 2), bbatch(bs.begin(), bs.end() - 2);
    const Shape batch = broadcast(n, {&abatch, &bbatch});
    const auto ia = broadcast_index(batch, abatch), ib = broadcast_index(batch, bbatch);
    // Row r of A (over all its batches) uses zero point a_param(r / M, r % M).
    auto a_param = [&](int64_t b, int64_t i) {
      return form[0] == QuantParamForm::kTensor   ? 0
             : form[0] == QuantParamForm::kVector ? i
                                                  : b * M + i;
    };
    auto b_param = [&](int64_t b, int64_t j) {
      return form[1] == QuantParamForm::kTensor   ? 0
             : form[1] == QuantParamForm::kVector ? j
                                                  : b * N + j;
    };
    std::vector<int32_t> av(static_cast<size_t>(a0.elements())),
        bv(static_cast<size_t>(b0.elements()));
    for (int64_t e = 0; e < a0.elements(); ++e) {
      const int64_t row = e / K;
      av[static_cast<size_t>(e)] =
          static_cast<int32_t>(geti(a0, e) - (azp ? geti(*azp, a_param(row / M, row % M)) : 0));
    }
    for (int64_t e = 0; e < b0.elements(); ++e) {
      const int64_t j = e % N;
      bv[static_cast<size_t>(e)] =
          static_cast<int32_t>(geti(b0, e) - (bzp ? geti(*bzp, b_param(e / (K * N), j)) : 0));
    }
    std::vector<int64_t> acc(static_cast<size_t>(N));
    for (size_t bt = 0; bt < ia.size(); ++bt) {
      const int32_t* ap = av.data() + ia[bt] * M * K;
      const int32_t* bp = bv.data() + ib[bt] * K * N;
      const int64_t roff = static_cast<int64_t>(bt) * M * N;
      for (int64_t i = 0; i < M; ++i) {
        std::fill(acc.begin(), acc.end(), 0);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t x = ap[i * K + k];
          if (x == 0) continue;
          const int32_t* brow = bp + k * N;
          for (int64_t j = 0; j < N; ++j) acc[static_cast<size_t>(j)] += x * brow[j];
        }
        const int64_t pa = a_param(ia[bt], i);
        for (int64_t j = 0; j < N; ++j) {
          const auto sum = static_cast<int32_t>(static_cast<uint32_t>(acc[static_cast<size_t>(j)]));
          emit(roff + i * N + j, pa, b_param(ib[bt], j), sum);
        }
      }
    }
  }

  Value matmul_integer(const Node& n) {
    Value a = need(n, 0), b = need(n, 1), az = in(n, 2), bz = in(n, 3);
    Shape out;
    QuantParamForm form[2];
    std::string why;
    if (!matmul_integer_rule(desc(a), desc(b), desc(az), desc(bz), &out, form, &why)) fail(n, why);
    auto r = make(ElemType::kI32, out);
    int32_t* y = reinterpret_cast<int32_t*>(r->bytes.data());
    integer_matmul(n, *a, *b, az.get(), bz.get(), form,
                   [&](int64_t e, int64_t, int64_t, int32_t sum) { y[e] = sum; });
    return r;
  }

  // QLinearMatMul: y = saturate(round(sum * (a_scale * b_scale / y_scale)) + y_zero_point),
  // the multiplier in float32 and the product in double (as ONNX's numpy reference
  // promotes an int32 array times a float32 one).
  Value qlinear_matmul(const Node& n) {
    Value v[8];
    TensorDesc d[8];
    for (size_t i = 0; i < 8; ++i) {
      v[i] = need(n, i);
      d[i] = desc(v[i]);
    }
    Shape out;
    ElemType out_type = ElemType::kU8;
    QuantParamForm form[2];
    std::string why;
    if (!qlinear_matmul_rule(d, &out, &out_type, form, &why)) fail(n, why);
    const float* as = v[1]->data<float>();
    const float* bs = v[4]->data<float>();
    const float ys = v[6]->data<float>()[0];
    const double yz = static_cast<double>(geti(*v[7], 0));
    auto r = make(out_type, out);
    integer_matmul(n, *v[0], *v[3], v[2].get(), v[5].get(), form,
                   [&](int64_t e, int64_t pa, int64_t pb, int32_t sum) {
                     const float mult = as[pa] * bs[pb] / ys;
                     setf(*r, e, std::nearbyint(static_cast<double>(sum) * mult) + yz);
                   });
    return r;
  }

  Value reshaped(const Constant& a, Shape s) {
    auto r = std::make_shared<Constant>(a);
    r->shape = std::move(s);
    return r;
  }

  Value run_node(const Node& n) {
    // One case per registry row (-Wswitch: a row without a case is a build warning).
    const std::shared_ptr<const NodeAttrs> attr = attrs_of(n, g_.opset);
    more_.clear();
    switch (op_of(n)) {
      case OpId::kAdd: return binary<AddFn>(n);
      case OpId::kSub: return binary<SubFn>(n);
      case OpId::kMul: return binary<MulFn>(n);
      case OpId::kDiv: return binary<DivFn>(n);
      case OpId::kPow: return binary<PowFn>(n);
      case OpId::kEqual: return equal(n);
      case OpId::kSqrt: return unary<SqrtFn>(n);
      case OpId::kErf: return unary<ErfFn>(n);
      case OpId::kTanh: return unary<TanhFn>(n);
      case OpId::kRelu: return unary<ReluFn>(n);
      case OpId::kNeg: return unary<NegFn>(n);
      case OpId::kSigmoid: return unary<SigmoidFn>(n);
      case OpId::kReciprocal: return unary<ReciprocalFn>(n);
      case OpId::kExp: return unary<ExpFn>(n);
      case OpId::kNot: return logical_not(n);
      case OpId::kIdentity: return need(n, 0);
      case OpId::kDropout: {
        Value v = need(n, 0);
        // The optional mask, if requested, is all ones in inference.
        if (n.outputs.size() > 1 && !n.outputs[1].empty()) {
          auto mask = make(ElemType::kBool, v->shape);
          std::fill(mask->bytes.begin(), mask->bytes.end(), 1);
          more_ = {mask};
        }
        return v;
      }
      case OpId::kCast: return cast(n);
      case OpId::kWhere: return where(n);
      case OpId::kConstant: {
        if (attr->value) return attr->value;
        unsupported(n, "Constant without a supported value attribute");
      }
      case OpId::kShape: {
        Value a = need(n, 0);
        const int64_t rank = static_cast<int64_t>(a->shape.size());
        int64_t start = attr->start, end = attr->end;
        if (start < 0) start += rank;
        if (end < 0) end += rank;
        start = std::clamp<int64_t>(start, 0, rank);
        end = std::clamp<int64_t>(end, start, rank);
        auto r = make(ElemType::kI64, {end - start});
        for (int64_t i = start; i < end; ++i) seti(*r, i - start, a->shape[static_cast<size_t>(i)]);
        return r;
      }
      case OpId::kConstantOfShape: {
        const std::vector<int64_t> s = ints_of(n, *need(n, 0));
        for (int64_t d : s)
          if (d < 0) fail(n, "negative dimension");
        const Constant* v = attr->value.get();
        auto r = make(v ? v->type : ElemType::kF32, s);
        if (v) {
          const size_t es = elem_type_size(r->type);
          for (int64_t i = 0; i < r->elements(); ++i)
            std::memcpy(&r->bytes[static_cast<size_t>(i) * es], v->raw(), es);
        }
        return r;
      }
      case OpId::kRange: {
        Value s = need(n, 0), l = need(n, 1), d = need(n, 2);
        const double start = getf(*s, 0), limit = getf(*l, 0), delta = getf(*d, 0);
        int64_t count = 0;
        std::string why;
        if (!range_count(start, limit, delta, &count, &why)) fail(n, why);
        auto r = make(s->type, {count});
        for (int64_t i = 0; i < count; ++i) {
          if (is_float(s->type)) setf(*r, i, start + static_cast<double>(i) * delta);
          else seti(*r, i, geti(*s, 0) + i * geti(*d, 0));
        }
        return r;
      }
      case OpId::kReshape: {
        Value a = need(n, 0);
        std::vector<int64_t> s = ints_of(n, *need(n, 1));
        std::string why;
        if (!reshape_target(a->shape, &s, attr->allowzero, &why)) fail(n, why);
        return reshaped(*a, s);
      }
      case OpId::kUnsqueeze:
      case OpId::kSqueeze: {
        Value a = need(n, 0);
        std::vector<int64_t> axes;
        if (Value ax = in(n, 1)) axes = ints_of(n, *ax);
        else if (attr->has_axes) axes = attr->axes;
        Shape s;
        std::string why;
        const bool ok = op_of(n) == OpId::kUnsqueeze ? unsqueeze_shape(a->shape, axes, &s, &why)
                                                     : squeeze_shape(a->shape, axes, &s, &why);
        if (!ok) fail(n, why);
        return reshaped(*a, s);
      }
      case OpId::kTranspose: {
        Value a = need(n, 0);
        return transpose_of(n, *a, attr->perm);
      }
      case OpId::kConcat: {
        Value first = need(n, 0);
        std::vector<Value> parts;
        for (size_t i = 0; i < n.inputs.size(); ++i) {
          Value v = need(n, i);
          if (v->type != first->type) fail(n, "inputs differ in rank or type");
          parts.push_back(v);
        }
        std::vector<const Shape*> shapes;
        for (const Value& v : parts) shapes.push_back(&v->shape);
        Shape out;
        int64_t ax = 0;
        std::string why;
        if (!concat_shape(shapes, attr->axis, &out, &ax, &why)) fail(n, why);
        auto r = make(first->type, out);
        const size_t es = elem_type_size(first->type);
        int64_t outer = 1, inner = 1;
        for (int64_t d = 0; d < ax; ++d) outer *= out[static_cast<size_t>(d)];
        for (size_t d = static_cast<size_t>(ax) + 1; d < out.size(); ++d) inner *= out[d];
        size_t at = 0;
        for (int64_t o = 0; o < outer; ++o) {
          for (const Value& v : parts) {
            const size_t chunk =
                static_cast<size_t>(v->shape[static_cast<size_t>(ax)] * inner) * es;
            if (chunk == 0) continue;  // an empty part (its data may be null)
            std::memcpy(&r->bytes[at], &v->raw()[static_cast<size_t>(o) * chunk], chunk);
            at += chunk;
          }
        }
        return r;
      }
      case OpId::kSlice: {
        Value a = need(n, 0);
        const std::vector<int64_t> starts = ints_of(n, *need(n, 1)), ends = ints_of(n, *need(n, 2));
        std::vector<int64_t> axes, steps;
        if (Value v = in(n, 3)) axes = ints_of(n, *v);
        if (Value v = in(n, 4)) steps = ints_of(n, *v);
        const size_t rank = a->shape.size();
        SliceDims sd;
        std::string why;
        if (!slice_dims(a->shape, starts, ends, axes, steps, &sd, &why)) fail(n, why);
        const Shape& out = sd.out;
        const std::vector<int64_t>& st = sd.start;
        const std::vector<int64_t>& sp = sd.step;
        auto r = make(a->type, out);
        const auto ist = strides_of(a->shape);
        const size_t es = elem_type_size(a->type);
        std::vector<int64_t> ctr(rank, 0);
        for (int64_t e = 0; e < r->elements(); ++e) {
          int64_t off = 0;
          for (size_t d = 0; d < rank; ++d) off += (st[d] + ctr[d] * sp[d]) * ist[d];
          std::memcpy(&r->bytes[static_cast<size_t>(e) * es],
                      &a->raw()[static_cast<size_t>(off) * es], es);
          for (int64_t d = static_cast<int64_t>(rank) - 1; d >= 0; --d) {
            if (++ctr[static_cast<size_t>(d)] < out[static_cast<size_t>(d)]) break;
            ctr[static_cast<size_t>(d)] = 0;
          }
        }
        return r;
      }
      case OpId::kExpand: {
        Value a = need(n, 0);
        const Shape target = ints_of(n, *need(n, 1));
        const Shape out = broadcast(n, {&a->shape, &target});
        const auto ia = broadcast_index(out, a->shape);
        auto r = make(a->type, out);
        const size_t es = elem_type_size(a->type);
        for (size_t i = 0; i < ia.size(); ++i)
          std::memcpy(&r->bytes[i * es], &a->raw()[static_cast<size_t>(ia[i]) * es], es);
        return r;
      }
      case OpId::kGather: {
        Value data = need(n, 0), idx = need(n, 1);
        const size_t rank = data->shape.size();
        Shape out;
        int64_t ax = 0;
        std::string why;
        if (!gather_shape(data->shape, idx->shape, attr->axis, &out, &ax, &why)) fail(n, why);
        const int64_t dim = data->shape[static_cast<size_t>(ax)];
        int64_t outer = 1, inner = 1;
        for (int64_t d = 0; d < ax; ++d) outer *= data->shape[static_cast<size_t>(d)];
        for (size_t d = static_cast<size_t>(ax) + 1; d < rank; ++d) inner *= data->shape[d];
        auto r = make(data->type, out);
        const size_t es = elem_type_size(data->type), chunk = static_cast<size_t>(inner) * es;
        const int64_t ni = idx->elements();
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t j = 0; j < ni; ++j) {
            int64_t k = 0;
            if (!gather_index(geti(*idx, j), dim, &k)) {
              fail(n, "index " + std::to_string(geti(*idx, j)) + " out of range [0, " +
                          std::to_string(dim) + ")");
            }
            std::memcpy(&r->bytes[static_cast<size_t>(o * ni + j) * chunk],
                        &data->raw()[static_cast<size_t>(o * dim + k) * chunk], chunk);
          }
        }
        return r;
      }
      case OpId::kSparqAttention: return attention(n);
      case OpId::kSparqMaskBias: return mask_bias(*need(n, 0), attr->fill);
      case OpId::kMatMul: return matmul(n, *need(n, 0), *need(n, 1));
      case OpId::kMatMulInteger: return matmul_integer(n);
      case OpId::kQLinearMatMul: return qlinear_matmul(n);
      case OpId::kQuantizeLinear: return quantize_linear(n, true);
      case OpId::kDequantizeLinear: return quantize_linear(n, false);
      case OpId::kDynamicQuantizeLinear: return dynamic_quantize_linear(n);
      case OpId::kGemm: {
        Value a = need(n, 0), b = need(n, 1), c = in(n, 2);
        if (a->shape.size() != 2 || b->shape.size() != 2) fail(n, "Gemm needs 2-D A and B");
        if (attr->trans_a) a = transpose_of(n, *a, {});
        if (attr->trans_b) b = transpose_of(n, *b, {});
        auto ab = std::const_pointer_cast<Constant>(matmul(n, *a, *b));
        const double alpha = attr->alpha, beta = attr->beta;
        const auto ic = c ? broadcast_index(ab->shape, c->shape) : std::vector<int64_t>{};
        if (c && broadcast(n, {&ab->shape, &c->shape}) != ab->shape)
          fail(n, "C does not broadcast to A.B");
        for (int64_t i = 0; i < ab->elements(); ++i) {
          setf(*ab, i,
               alpha * getf(*ab, i) + (c ? beta * getf(*c, ic[static_cast<size_t>(i)]) : 0.0));
        }
        return ab;
      }
      case OpId::kSoftmax: {
        Value a = need(n, 0);
        const size_t rank = a->shape.size();
        const int64_t ax = axis(n, attr->axis, rank);
        // opset >= 13: along one axis. Older: over the flattened trailing dimensions.
        int64_t outer = 1, len = 1, inner = 1;
        for (int64_t d = 0; d < ax; ++d) outer *= a->shape[static_cast<size_t>(d)];
        if (g_.opset >= 13) {
          len = a->shape[static_cast<size_t>(ax)];
          for (size_t d = static_cast<size_t>(ax) + 1; d < rank; ++d) inner *= a->shape[d];
        } else {
          for (size_t d = static_cast<size_t>(ax); d < rank; ++d) len *= a->shape[d];
        }
        auto r = make(a->type, a->shape);
        if (a->type == ElemType::kF32 && inner == 1) {
          const float* x = a->data<float>();
          float* y = reinterpret_cast<float*>(r->bytes.data());
          par(outer, len * 4, [&](int64_t o0, int64_t o1) {
            for (int64_t o = o0; o < o1; ++o) {
              const float* xr = x + o * len;
              float* yr = y + o * len;
              float mx = -INFINITY;
              for (int64_t j = 0; j < len; ++j) mx = std::max(mx, xr[j]);
              double sum = 0;
              for (int64_t j = 0; j < len; ++j) {
                yr[j] = std::exp(xr[j] - mx);
                sum += yr[j];
              }
              const float inv = static_cast<float>(1.0 / sum);
              for (int64_t j = 0; j < len; ++j) yr[j] *= inv;
            }
          });
          return r;
        }
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t in_ = 0; in_ < inner; ++in_) {
            auto at = [&](int64_t j) { return (o * len + j) * inner + in_; };
            double mx = -INFINITY;
            for (int64_t j = 0; j < len; ++j) mx = std::max(mx, getf(*a, at(j)));
            double sum = 0;
            for (int64_t j = 0; j < len; ++j) sum += std::exp(getf(*a, at(j)) - mx);
            for (int64_t j = 0; j < len; ++j) setf(*r, at(j), std::exp(getf(*a, at(j)) - mx) / sum);
          }
        }
        return r;
      }
      case OpId::kReduceMean: {
        Value a = need(n, 0);
        const size_t rank = a->shape.size();
        std::vector<int64_t> axes;
        if (attr->has_axes) axes = attr->axes;
        else if (Value v = in(n, 1)) axes = ints_of(n, *v);
        std::vector<bool> red;
        Shape out;
        std::string why;
        if (!reduce_shape(a->shape, axes, attr->keepdims, &out, &red, &why)) fail(n, why);
        Shape kept = a->shape;
        for (size_t d = 0; d < rank; ++d)
          if (red[d]) kept[d] = 1;
        std::vector<double> sum(static_cast<size_t>(numel(kept)), 0.0);
        const auto idx = broadcast_index(a->shape, kept);  // maps input elements to kept slots
        int64_t count = 1;
        for (size_t d = 0; d < rank; ++d)
          if (red[d]) count *= a->shape[d];
        for (int64_t i = 0; i < a->elements(); ++i)
          sum[static_cast<size_t>(idx[static_cast<size_t>(i)])] += getf(*a, i);
        auto r = make(a->type, out);
        for (size_t i = 0; i < sum.size(); ++i)
          setf(*r, static_cast<int64_t>(i), sum[i] / static_cast<double>(count));
        return r;
      }
      case OpId::kCumSum: {
        Value a = need(n, 0);
        const int64_t ax = axis(n, geti(*need(n, 1), 0), a->shape.size());
        const bool exclusive = attr->exclusive, reverse = attr->reverse;
        int64_t outer = 1, len = a->shape[static_cast<size_t>(ax)], inner = 1;
        for (int64_t d = 0; d < ax; ++d) outer *= a->shape[static_cast<size_t>(d)];
        for (size_t d = static_cast<size_t>(ax) + 1; d < a->shape.size(); ++d) inner *= a->shape[d];
        auto r = make(a->type, a->shape);
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t in_ = 0; in_ < inner; ++in_) {
            double accf = 0;
            int64_t acci = 0;
            for (int64_t jj = 0; jj < len; ++jj) {
              const int64_t j = reverse ? len - 1 - jj : jj;
              const int64_t at = (o * len + j) * inner + in_;
              if (is_float(a->type)) {
                if (!exclusive) accf += getf(*a, at);
                setf(*r, at, accf);
                if (exclusive) accf += getf(*a, at);
              } else {
                if (!exclusive) acci += geti(*a, at);
                seti(*r, at, acci);
                if (exclusive) acci += geti(*a, at);
              }
            }
          }
        }
        return r;
      }
      case OpId::kLayerNormalization: {
        Value x = need(n, 0), scale = need(n, 1), bias = in(n, 2);
        const size_t rank = x->shape.size();
        const int64_t ax = axis(n, attr->axis, rank);
        const double eps = attr->epsilon;
        int64_t outer = 1, len = 1;
        for (int64_t d = 0; d < ax; ++d) outer *= x->shape[static_cast<size_t>(d)];
        for (size_t d = static_cast<size_t>(ax); d < rank; ++d) len *= x->shape[d];
        if (scale->elements() != len || (bias && bias->elements() != len))
          fail(n, "scale or bias has the wrong size");
        auto r = make(x->type, x->shape);
        if (x->type == ElemType::kF32 && scale->type == ElemType::kF32 &&
            (!bias || bias->type == ElemType::kF32)) {
          const float* xs = x->data<float>();
          const float* gs = scale->data<float>();
          const float* bs = bias ? bias->data<float>() : nullptr;
          float* ys = reinterpret_cast<float*>(r->bytes.data());
          par(outer, len * 3, [&](int64_t o0, int64_t o1) {
            for (int64_t o = o0; o < o1; ++o) {
              const float* xr = xs + o * len;
              float* yr = ys + o * len;
              double mean = 0, var = 0;  // double sums: len is up to a few thousand
              for (int64_t j = 0; j < len; ++j) mean += xr[j];
              mean /= static_cast<double>(len);
              for (int64_t j = 0; j < len; ++j) {
                const double d = xr[j] - mean;
                var += d * d;
              }
              var /= static_cast<double>(len);
              const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
              const float mf = static_cast<float>(mean);
              for (int64_t j = 0; j < len; ++j)
                yr[j] = (xr[j] - mf) * inv * gs[j] + (bs ? bs[j] : 0.0f);
            }
          });
          return r;
        }
        for (int64_t o = 0; o < outer; ++o) {
          double mean = 0, var = 0;
          for (int64_t j = 0; j < len; ++j) mean += getf(*x, o * len + j);
          mean /= static_cast<double>(len);
          for (int64_t j = 0; j < len; ++j) {
            const double d = getf(*x, o * len + j) - mean;
            var += d * d;
          }
          var /= static_cast<double>(len);
          const double inv = 1.0 / std::sqrt(var + eps);
          for (int64_t j = 0; j < len; ++j) {
            double v = (getf(*x, o * len + j) - mean) * inv * getf(*scale, j);
            if (bias) v += getf(*bias, j);
            setf(*r, o * len + j, v);
          }
        }
        return r;
      }
      case OpId::kSparqMatMul:  // a session's kernel: the custom op below
      case OpId::kCount: break;
    }

    if (custom_) {
      std::vector<Value> ins;
      for (size_t i = 0; i < n.inputs.size(); ++i) ins.push_back(in(n, i));
      if (Value v = custom_(n, ins)) return v;
    }
    unsupported(n, "op is not implemented in the interpreter");
  }

  size_t peak_bytes() const { return peak_; }

  // run_node, with the node named in any error that does not name it yet.
  Value run_node_named(const Node& n) {
    try {
      return run_node(n);
    } catch (const Error& e) {
      if (std::strncmp(e.what(), "node '", 6) == 0) throw;
      throw Error(e.status(), "node '" + n.name + "' (" + n.op + "): " + e.what());
    }
  }

  // One node on the given input values (by position; null = omitted): every output,
  // one per node output (null where the node does not compute it).
  std::vector<Value> eval(const Node& n, const std::vector<Value>& ins) {
    env_.clear();
    for (size_t i = 0; i < n.inputs.size() && i < ins.size(); ++i) {
      if (!n.inputs[i].empty() && ins[i]) env_[n.inputs[i]] = ins[i];
    }
    std::vector<Value> out(std::max<size_t>(n.outputs.size(), 1));
    out[0] = run_node(n);
    for (size_t k = 1; k < out.size() && k - 1 < more_.size(); ++k) out[k] = more_[k - 1];
    env_.clear();
    return out;
  }

  std::map<std::string, Value> run(const std::map<std::string, Value>& inputs) {
    // Last use of every value, so intermediates are released as soon as they are dead.
    std::map<std::string, size_t> last_use;
    for (size_t i = 0; i < g_.nodes.size(); ++i)
      for (const std::string& s : g_.nodes[i].inputs) last_use[s] = i;
    std::set<std::string> keep;
    for (const ValueInfo& vi : g_.outputs) keep.insert(vi.name);
    size_t live = 0;
    std::map<std::string, size_t> owned;  // intermediate value -> bytes
    for (const auto& kv : g_.initializers) env_[kv.first] = kv.second;
    for (const ValueInfo& vi : g_.inputs) {
      auto it = inputs.find(vi.name);
      if (it == inputs.end() || !it->second) {
        throw Error(Status::kInvalidArgument, "missing input '" + vi.name + "'");
      }
      env_[vi.name] = it->second;
    }
    Profile times;
    for (size_t ni = 0; ni < g_.nodes.size(); ++ni) {
      const Node& n = g_.nodes[ni];
      const auto t0 = Profile::Clock::now();
      Value v = run_node_named(n);
      if (profile_) times.add(n.op, t0);
      if (n.outputs.empty()) continue;
      for (size_t k = 0; k < n.outputs.size(); ++k) {
        Value o = k == 0 ? v : k - 1 < more_.size() ? more_[k - 1] : nullptr;
        if (n.outputs[k].empty() || !o) continue;
        env_[n.outputs[k]] = o;
        if (o->view == nullptr) {
          owned[n.outputs[k]] = o->bytes.size();
          live += o->bytes.size();
          peak_ = std::max(peak_, live);
        }
      }
      for (const std::string& s : n.inputs) {
        auto lu = last_use.find(s);
        auto ow = owned.find(s);
        if (lu != last_use.end() && lu->second == ni && ow != owned.end() && !keep.count(s)) {
          live -= ow->second;
          owned.erase(ow);
          env_.erase(s);
        }
      }
    }
    if (profile_) times.print();
    std::map<std::string, Value> out;
    for (const ValueInfo& vi : g_.outputs) out[vi.name] = env_.at(vi.name);
    return out;
  }

 private:
  const Graph& g_;
  const CustomOp& custom_;
  const ParallelFor& parallel_;
  bool profile_ = false;
  std::map<std::string, Value> env_;
  // The outputs after the first of the node run last, in order (DynamicQuantizeLinear's
  // scale and zero point, Dropout's mask); empty for a one-output op.
  std::vector<Value> more_;
  size_t peak_ = 0;
};

}  // namespace

Value mask_bias(const Constant& mask, float fill) {
  if (mask.shape.size() != 2)
    throw Error(Status::kInvalidArgument, "the attention mask must be [batch, sequence]");
  auto r = std::make_shared<Constant>();
  r->type = ElemType::kF32;
  r->shape = {mask.shape[0], 1, 1, mask.shape[1]};
  r->bytes.resize(static_cast<size_t>(mask.elements()) * 4);
  float* o = reinterpret_cast<float*>(r->bytes.data());
  for (int64_t i = 0; i < mask.elements(); ++i) {
    const float x = static_cast<float>(getf(mask, i));  // Cast to float
    o[i] = (1.0f - x) * fill;                           // Sub(1, .), Mul(., fill)
  }
  return r;
}

Value interpret_node(const Graph& graph, const Node& node, const std::vector<Value>& inputs,
                     const CustomOp& custom, const ParallelFor& parallel) {
  Runner r(graph, custom, parallel);
  return r.eval(node, inputs)[0];
}

std::vector<Value> interpret_node_outputs(const Graph& graph, const Node& node,
                                          const std::vector<Value>& inputs, const CustomOp& custom,
                                          const ParallelFor& parallel) {
  Runner r(graph, custom, parallel);
  return r.eval(node, inputs);
}

std::map<std::string, Value> interpret(const Graph& graph,
                                       const std::map<std::string, Value>& inputs,
                                       const CustomOp& custom, size_t* peak_bytes,
                                       const ParallelFor& parallel, bool profile) {
  Runner r(graph, custom, parallel, profile);
  auto out = r.run(inputs);
  if (peak_bytes) *peak_bytes = r.peak_bytes();
  return out;
}

}  // namespace sparq
