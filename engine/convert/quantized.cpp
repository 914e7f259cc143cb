#include "engine/convert/quantized.h"

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/graph_index.h"
#include "engine/ops/attrs.h"
#include "engine/ops/registry.h"
#include "engine/passes.h"
#include "formats/error.h"

namespace sparq {
namespace {

[[noreturn]] void bad(const Node& n, const std::string& what) {
  throw Error(Status::kInvalidArgument, "node '" + n.name + "' (" + n.op + "): " + what +
                                            ": a malformed quantized model (nothing written)");
}

bool is_int8_type(ElemType t) { return t == ElemType::kS8 || t == ElemType::kU8; }

// Every element as a double (false for a type a scale or zero point cannot have).
bool values_of(const Constant& c, std::vector<double>* out) {
  const int64_t n = c.elements();
  out->resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double v = 0;
    switch (c.type) {
      case ElemType::kF32: v = c.data<float>()[i]; break;
      case ElemType::kF64: v = c.data<double>()[i]; break;
      case ElemType::kS8: v = c.data<int8_t>()[i]; break;
      case ElemType::kU8: v = c.data<uint8_t>()[i]; break;
      case ElemType::kI32: v = c.data<int32_t>()[i]; break;
      default: return false;
    }
    (*out)[static_cast<size_t>(i)] = v;
  }
  return true;
}

std::vector<double> values(const Constant& c) {
  std::vector<double> v;
  values_of(c, &v);
  return v;
}

// Constants by name: initializers, and Constant nodes (before canonicalize hoists them).
class Constants {
 public:
  Constants(const Graph& g, const GraphIndex& ix) : g_(g), ix_(ix) {}
  const Constant* get(const std::string& v) const {
    if (v.empty()) return nullptr;
    if (const Constant* c = g_.initializer(v)) return c;
    size_t i = 0;
    if (!ix_.producer(v, &i) || op_of(g_.nodes[i]) != OpId::kConstant) return nullptr;
    return attrs_of(g_.nodes[i], g_.opset)->value.get();
  }

 private:
  const Graph& g_;
  const GraphIndex& ix_;
};

void check_scale(const Node& n, const Constant& s, const char* what) {
  if (s.type != ElemType::kF32) bad(n, std::string(what) + " is not float32");
  for (double v : values(s)) {
    if (!std::isfinite(v)) bad(n, std::string(what) + " " + std::to_string(v) + " is not finite");
    if (v <= 0) bad(n, std::string(what) + " " + std::to_string(v) + " is not positive");
  }
}

// A zero point of type `want` (kS8 / kU8, or either when `want` is kF32), as many
// elements as its scale has (when the scale is known).
void check_zero_point(const Node& n, const Constant& zp, ElemType want, const Constant* scale,
                      const char* what) {
  if (!is_int8_type(zp.type) || (want != ElemType::kF32 && zp.type != want)) {
    bad(n, std::string(what) + " is " + elem_type_name(zp.type) + ", not " +
               (want == ElemType::kF32 ? std::string("int8 or uint8")
                                       : std::string(elem_type_name(want))) +
               " like the tensor it belongs to");
  }
  if (scale != nullptr && scale->elements() != zp.elements()) {
    bad(n, std::string(what) + " has " + std::to_string(zp.elements()) +
               " elements and its scale " + std::to_string(scale->elements()));
  }
}

// A per-axis parameter's length against axis `axis` of a constant x.
void check_axis_length(const Node& n, const Constant& x, int64_t axis, const Constant& p,
                       const char* what) {
  if (p.elements() == 1) return;
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const int64_t a = axis < 0 ? axis + rank : axis;
  if (p.shape.size() != 1 || a < 0 || a >= rank ||
      p.elements() != x.shape[static_cast<size_t>(a)]) {
    bad(n, std::string(what) + " has " + std::to_string(p.elements()) +
               " elements, not 1 or the length of axis " + std::to_string(axis) + " (" +
               (a >= 0 && a < rank ? std::to_string(x.shape[static_cast<size_t>(a)])
                                   : std::string("out of range")) +
               ")");
  }
}

// One matmul operand's per-column (N) parameter: 1 or n elements.
void check_columns(const Node& n, const Constant& p, int64_t cols, const char* what) {
  if (p.elements() != 1 && p.elements() != cols) {
    bad(n, std::string(what) + " has " + std::to_string(p.elements()) +
               " elements, not 1 or N = " + std::to_string(cols));
  }
}

std::string fresh(const Graph& g, const std::string& base) {
  std::string s = base;
  for (int i = 1; g.initializers.count(s); ++i) s = base + "/" + std::to_string(i);
  return s;
}

class Fuser {
 public:
  explicit Fuser(Graph& g) : g_(g) {}

  void reindex() {
    ix_ = std::make_unique<GraphIndex>(g_, [this](size_t i) { return dead_[i]; });
  }

  QuantizedMatMuls run() {
    dead_.assign(g_.nodes.size(), false);
    before_.assign(g_.nodes.size(), {});
    after_.assign(g_.nodes.size(), {});
    reindex();
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      if (dead_[i]) continue;
      const OpId op = op_of(g_.nodes[i]);
      bool done = false;
      if (op == OpId::kMatMulInteger) done = matmul_integer(i);
      else if (op == OpId::kQLinearMatMul) done = qlinear_matmul(i);
      else if (op == OpId::kMatMul || op == OpId::kGemm) done = qdq_matmul(i);
      if (done) reindex();
    }
    std::vector<Node> out;
    out.reserve(g_.nodes.size());
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      for (Node& n : before_[i]) out.push_back(std::move(n));
      if (!dead_[i]) out.push_back(std::move(g_.nodes[i]));
      for (Node& n : after_[i]) out.push_back(std::move(n));
    }
    g_.nodes = std::move(out);
    return std::move(r_);
  }

 private:
  const Constant* constant(const std::string& v) const { return g_.initializer(v); }
  Node* producer(const std::string& v, size_t* idx = nullptr) {
    size_t i = 0;
    if (v.empty() || !ix_->producer(v, &i) || dead_[i]) return nullptr;
    if (idx) *idx = i;
    return &g_.nodes[i];
  }
  Node* sole_consumer(const std::string& v, size_t* idx = nullptr) {
    GraphIndex::Use u;
    if (!ix_->only_use(v, &u)) return nullptr;
    if (idx) *idx = u.first;
    return &g_.nodes[u.first];
  }
  static bool same_values(const Constant* a, const Constant* b) {
    if (a == nullptr || b == nullptr) return false;
    return a->elements() == b->elements() && values(*a) == values(*b);
  }
  // A per-tensor zero point's value (0 when absent), or false if not a constant.
  bool scalar_zp(const std::string& v, double* out) const {
    if (v.empty()) {
      *out = 0;
      return true;
    }
    const Constant* c = constant(v);
    if (c == nullptr || c->elements() != 1 || !is_int8_type(c->type)) return false;
    *out = values(*c)[0];
    return true;
  }
  bool scalar_scale(const std::string& v, double* out) const {
    const Constant* c = constant(v);
    if (c == nullptr || c->elements() != 1 || c->type != ElemType::kF32) return false;
    *out = c->data<float>()[0];
    return true;
  }

  // The float tensor a quantized activation `a` was made from by QuantizeLinear with this
  // per-tensor scale and zero point (or by a requantization this pass inserted); empty
  // when there is none.
  std::string float_source(const std::string& a, double scale, double zp) {
    auto rq = requantized_.find(a);
    if (rq != requantized_.end()) {
      return rq->second.scale == scale && rq->second.zp == zp ? rq->second.source : "";
    }
    Node* q = producer(a);
    double s = 0, z = 0;
    if (q == nullptr || op_of(*q) != OpId::kQuantizeLinear || !scalar_scale(q->inputs[1], &s) ||
        !scalar_zp(q->inputs.size() > 2 ? q->inputs[2] : "", &z) || s != scale || z != zp) {
      return "";
    }
    return q->inputs[0];
  }

  // Adds the weight W[K, N] of the matmul `root` from the 2-D quantized constant q,
  // whose axis `n_axis` is N, with scales per tensor or along `scale_axis`, and zero
  // points per tensor or along `zp_axis`. Returns the new initializer's name.
  std::string add_weight(const Node& root, const Constant& q, int n_axis,
                         const std::vector<double>& scale, int scale_axis,
                         const std::vector<double>& zp, int zp_axis) {
    const int64_t d0 = q.shape[0], d1 = q.shape[1];
    const int64_t nn = n_axis == 1 ? d1 : d0, k = n_axis == 1 ? d0 : d1;
    for (double s : scale) {
      if (!std::isfinite(s)) bad(root, "weight scale " + std::to_string(s) + " is not finite");
      if (s <= 0) bad(root, "weight scale " + std::to_string(s) + " is not positive");
    }
    auto at = [](const std::vector<double>& v, int axis, int64_t i0, int64_t i1) {
      return v.size() == 1 ? v[0] : v[static_cast<size_t>(axis == 0 ? i0 : i1)];
    };
    // Per output channel or per tensor: the scale factors out of the sum over K.
    const bool per_channel = scale.size() == 1 || scale_axis == n_axis;
    bool fits = per_channel;
    for (int64_t i0 = 0; i0 < d0 && fits; ++i0) {
      for (int64_t i1 = 0; i1 < d1; ++i1) {
        const double qv = q.type == ElemType::kS8 ? q.data<int8_t>()[i0 * d1 + i1]
                                                  : q.data<uint8_t>()[i0 * d1 + i1];
        const double v = qv - at(zp, zp_axis, i0, i1);
        if (v < -128 || v > 127) {
          fits = false;
          break;
        }
      }
    }
    QuantizedWeight w;
    w.node = root.name;
    auto c = std::make_shared<Constant>();
    c->type = fits ? ElemType::kS8 : ElemType::kF32;
    c->shape = {k, nn};
    c->bytes.resize(static_cast<size_t>(k * nn) * (fits ? 1 : 4));
    for (int64_t i0 = 0; i0 < d0; ++i0) {
      for (int64_t i1 = 0; i1 < d1; ++i1) {
        const double qv = q.type == ElemType::kS8 ? q.data<int8_t>()[i0 * d1 + i1]
                                                  : q.data<uint8_t>()[i0 * d1 + i1];
        const double v = qv - at(zp, zp_axis, i0, i1);
        const int64_t kk = n_axis == 1 ? i0 : i1, n = n_axis == 1 ? i1 : i0;
        if (fits) {
          reinterpret_cast<int8_t*>(c->bytes.data())[kk * nn + n] = static_cast<int8_t>(v);
        } else {
          reinterpret_cast<float*>(c->bytes.data())[kk * nn + n] =
              static_cast<float>(v * at(scale, scale_axis, i0, i1));
        }
      }
    }
    if (fits) {
      w.scales.resize(static_cast<size_t>(nn));
      for (int64_t n = 0; n < nn; ++n) {
        w.scales[static_cast<size_t>(n)] =
            static_cast<float>(scale.size() == 1 ? scale[0] : scale[static_cast<size_t>(n)]);
      }
    } else {
      w.exact = false;
      w.note = per_channel ? "the weight minus its zero point does not fit int8 (asymmetric "
                             "uint8 weights)"
                           : "the weight scales vary along K, not per output channel";
    }
    const std::string name = fresh(g_, root.name + "/weight");
    g_.initializers[name] = c;
    r_.weights[name] = std::move(w);
    return name;
  }

  // Reads the scale chain after MatMulInteger: from the Cast output `v`, the Muls while
  // the value has one consumer that is a Mul by a factor: `dyn` (the dynamic scale
  // value), a float32 constant (one element, or N along the last axis), or a Mul of such
  // factors read by nothing else. c: the constants' product per channel (size 1 or n).
  bool scale_chain(std::string* v, const std::string& dyn, int64_t nn, std::vector<double>* c,
                   int* dyn_count, std::vector<size_t>* kill) {
    *c = {1.0};
    *dyn_count = 0;
    auto times = [&](const Constant& k) {
      if (k.type != ElemType::kF32) return false;
      if (k.elements() != 1) {
        if (k.elements() != nn || k.shape.empty() || k.shape.back() != nn) return false;
        if (c->size() == 1) c->assign(static_cast<size_t>(nn), (*c)[0]);
      }
      const std::vector<double> kv = values(k);
      for (size_t i = 0; i < c->size(); ++i) (*c)[i] *= kv.size() == 1 ? kv[0] : kv[i];
      return true;
    };
    auto leaf = [&](const std::string& f) {
      if (!dyn.empty() && f == dyn) {
        ++*dyn_count;
        return true;
      }
      const Constant* k = constant(f);
      return k != nullptr && times(*k);
    };
    int muls = 0;
    for (int depth = 0; depth < 3; ++depth) {
      size_t im = 0;
      Node* m = sole_consumer(*v, &im);
      if (m == nullptr || op_of(*m) != OpId::kMul || m->inputs.size() != 2 ||
          m->inputs[0] == m->inputs[1]) {
        break;
      }
      const std::string f = m->inputs[0] == *v ? m->inputs[1] : m->inputs[0];
      // Try the factor on copies, so a factor that does not read leaves nothing behind.
      const std::vector<double> c0 = *c;
      const int d0 = *dyn_count;
      bool ok = leaf(f);
      size_t ip = 0;
      if (!ok) {
        *c = c0;
        *dyn_count = d0;
        Node* p = producer(f, &ip);
        GraphIndex::Use u;
        ok = p != nullptr && op_of(*p) == OpId::kMul && p->inputs.size() == 2 &&
             ix_->only_use(f, &u) && u.first == im && leaf(p->inputs[0]) && leaf(p->inputs[1]);
        if (ok) kill->push_back(ip);
      }
      if (!ok) {
        *c = c0;
        *dyn_count = d0;
        break;
      }
      kill->push_back(im);
      *v = m->outputs[0];
      ++muls;
    }
    return muls > 0;
  }

  // MatMulInteger(a, B const, a_zp, b_zp const) -> Cast(float) -> Mul chain, with a from
  // DynamicQuantizeLinear (ONNX Runtime's dynamic quantization) or from QuantizeLinear
  // with a static scale (QOperator).
  bool matmul_integer(size_t i) {
    Node& n = g_.nodes[i];
    const Constant* b = constant(n.inputs[1]);
    if (b == nullptr || b->shape.size() != 2 || !is_int8_type(b->type) ||
        constant(n.inputs[0]) != nullptr) {
      return false;
    }
    const int64_t nn = b->shape[1];
    const std::string bzp_name = n.inputs.size() > 3 ? n.inputs[3] : "";
    std::vector<double> bzp = {0.0};
    if (!bzp_name.empty()) {
      const Constant* z = constant(bzp_name);
      if (z == nullptr) return false;
      check_zero_point(n, *z, b->type, nullptr, "b_zero_point");
      check_columns(n, *z, nn, "b_zero_point");
      bzp = values(*z);
    }
    const std::string a = n.inputs[0];
    const std::string azp = n.inputs.size() > 2 ? n.inputs[2] : "";
    Node* src = producer(a);
    if (src == nullptr) return false;
    std::string x, dyn;
    double static_scale = 0;
    if (op_of(*src) == OpId::kDynamicQuantizeLinear) {
      // The zero point must be the one DynamicQuantizeLinear computed with a.
      if (src->outputs.size() < 3 || src->outputs[0] != a || azp.empty() ||
          azp != src->outputs[2]) {
        return false;
      }
      x = src->inputs[0];
      dyn = src->outputs[1];
    } else if (op_of(*src) == OpId::kQuantizeLinear) {
      double z = 0, z_mm = 0;
      if (!scalar_scale(src->inputs[1], &static_scale) ||
          !scalar_zp(src->inputs.size() > 2 ? src->inputs[2] : "", &z) || !scalar_zp(azp, &z_mm) ||
          z != z_mm) {
        return false;
      }
      x = src->inputs[0];
    } else {
      return false;
    }
    size_t ic = 0;
    Node* cast = sole_consumer(n.outputs[0], &ic);
    if (cast == nullptr || op_of(*cast) != OpId::kCast ||
        attrs_of(*cast, g_.opset)->to != 1 /* FLOAT */) {
      return false;
    }
    std::string y = cast->outputs[0];
    std::vector<double> c;
    int dyn_count = 0;
    std::vector<size_t> kill = {ic};
    if (!scale_chain(&y, dyn, nn, &c, &dyn_count, &kill)) return false;
    if (dyn.empty() ? dyn_count != 0 : dyn_count != 1) return false;
    if (dyn.empty()) {
      for (double& v : c) v /= static_scale;
    }
    const std::string w = add_weight(n, *b, 1, c, 1, bzp, 1);
    for (size_t k : kill) dead_[k] = true;
    ++(dyn.empty() ? r_.integer : r_.dynamic);
    rewrite(n, x, w, y);
    return true;
  }

  // QLinearMatMul(a, a_s, a_zp, B const, b_s, b_zp, y_s, y_zp), every parameter constant.
  bool qlinear_matmul(size_t i) {
    Node& n = g_.nodes[i];
    if (n.inputs.size() != 8) return false;
    const Constant* b = constant(n.inputs[3]);
    const Constant* bs = constant(n.inputs[4]);
    const Constant* bz = constant(n.inputs[5]);
    double as = 0, az = 0, ys = 0, yz = 0;
    if (b == nullptr || bs == nullptr || bz == nullptr || b->shape.size() != 2 ||
        !is_int8_type(b->type) || !scalar_scale(n.inputs[1], &as) || !scalar_zp(n.inputs[2], &az) ||
        !scalar_scale(n.inputs[6], &ys) || !scalar_zp(n.inputs[7], &yz)) {
      return false;
    }
    const int64_t nn = b->shape[1];
    check_scale(n, *bs, "b_scale");
    check_columns(n, *bs, nn, "b_scale");
    check_zero_point(n, *bz, b->type, bs, "b_zero_point");
    const std::string w = add_weight(n, *b, 1, values(*bs), 1, values(*bz), 1);
    std::string x = float_source(n.inputs[0], as, az);
    if (x.empty()) {  // dequantized exactly as the graph reads it
      Node dq;
      dq.name = n.name + "/dequantize_a";
      set_op(dq, OpId::kDequantizeLinear);
      dq.inputs = {n.inputs[0], n.inputs[1], n.inputs[2]};
      x = n.name + "/a_float";
      dq.outputs = {x};
      before_[i].push_back(std::move(dq));
    }
    const std::string yq = n.outputs[0];
    size_t id = 0;
    Node* dq = sole_consumer(yq, &id);
    double s2 = 0, z2 = 0;
    std::string y;
    if (dq != nullptr && op_of(*dq) == OpId::kDequantizeLinear &&
        scalar_scale(dq->inputs[1], &s2) &&
        scalar_zp(dq->inputs.size() > 2 ? dq->inputs[2] : "", &z2) && s2 == ys && z2 == yz) {
      y = dq->outputs[0];  // y's quantization and dequantization cancel
      dead_[id] = true;
    } else {
      y = n.name + "/y_float";
      Node q;
      q.name = n.name + "/quantize_y";
      set_op(q, OpId::kQuantizeLinear);
      q.inputs = {y, n.inputs[6], n.inputs[7]};
      q.outputs = {yq};
      after_[i].push_back(std::move(q));
      requantized_[yq] = {y, ys, yz};
    }
    ++r_.qlinear;
    rewrite(n, x, w, y);
    return true;
  }

  // MatMul(a, DequantizeLinear(Wq)[ -> Transpose]) and Gemm(a, the same[, C]) as the
  // converter packs Gemms (alpha = beta = 1, no transA); a fake-quantized activation
  // DequantizeLinear(QuantizeLinear(x)) (per tensor, matching) is read as x.
  bool qdq_matmul(size_t i) {
    Node& n = g_.nodes[i];
    if (n.inputs.size() < 2 || constant(n.inputs[0]) != nullptr) return false;
    bool trans_b = false;
    if (op_of(n) == OpId::kGemm) {
      const auto at = attrs_of(n, g_.opset);
      if (at->trans_a || at->alpha != 1.0f || at->beta != 1.0f) return false;
      trans_b = at->trans_b;
      if (n.inputs.size() > 2 && !n.inputs[2].empty() && constant(n.inputs[2]) == nullptr) {
        return false;
      }
    } else if (n.inputs.size() != 2) {
      return false;
    }
    Node* p = producer(n.inputs[1]);
    bool transpose = false;
    if (p != nullptr && op_of(*p) == OpId::kTranspose) {
      const auto& perm = attrs_of(*p, g_.opset)->perm;
      if (!(perm.empty() || (perm.size() == 2 && perm[0] == 1 && perm[1] == 0))) return false;
      transpose = true;
      p = producer(p->inputs[0]);
    }
    if (p == nullptr || op_of(*p) != OpId::kDequantizeLinear) return false;
    const Constant* q = constant(p->inputs[0]);
    const Constant* s = constant(p->inputs[1]);
    const std::string zname = p->inputs.size() > 2 ? p->inputs[2] : "";
    const Constant* z = constant(zname);
    if (q == nullptr || s == nullptr || (!zname.empty() && z == nullptr) || q->shape.size() != 2 ||
        !is_int8_type(q->type)) {
      return false;
    }
    int64_t axis = attrs_of(*p, g_.opset)->axis;
    if (axis < 0) axis += 2;
    check_scale(*p, *s, "x_scale");
    check_axis_length(*p, *q, axis, *s, "x_scale");
    if (z != nullptr) check_zero_point(*p, *z, q->type, s, "x_zero_point");
    const std::vector<double> zp = z != nullptr ? values(*z) : std::vector<double>{0.0};
    // The effective weight is [K, N]; q is [K, N] when exactly one of (transpose, trans_b)
    // transposes it twice or not at all.
    const int n_axis = transpose == trans_b ? 1 : 0;
    const std::string w =
        add_weight(n, *q, n_axis, values(*s), static_cast<int>(axis), zp, static_cast<int>(axis));
    // The activation: a fake-quantized x is read before its QuantizeLinear.
    std::string x = n.inputs[0];
    Node* dqa = producer(x);
    double sa = 0, za = 0;
    if (dqa != nullptr && op_of(*dqa) == OpId::kDequantizeLinear &&
        scalar_scale(dqa->inputs[1], &sa) &&
        scalar_zp(dqa->inputs.size() > 2 ? dqa->inputs[2] : "", &za)) {
      const std::string src = float_source(dqa->inputs[0], sa, za);
      if (!src.empty()) x = src;
    }
    if (op_of(n) == OpId::kGemm) {
      Attribute t;
      t.kind = Attribute::Kind::kInt;
      t.i = 0;
      n.attrs["transB"] = t;
      n.parsed = nullptr;
    }
    ++r_.qdq;
    n.inputs[0] = x;
    n.inputs[1] = w;
    if (op_of(n) == OpId::kGemm) set_op(n, OpId::kGemm);  // re-parses the attributes
    return true;
  }

  void rewrite(Node& n, const std::string& x, const std::string& w, const std::string& y) {
    set_op(n, OpId::kMatMul);
    n.op = "MatMul";
    n.attrs.clear();
    n.inputs = {x, w};
    n.outputs = {y};
  }

  struct Requantized {
    std::string source;
    double scale = 0, zp = 0;
  };
  Graph& g_;
  std::unique_ptr<GraphIndex> ix_;
  std::vector<bool> dead_;
  std::vector<std::vector<Node>> before_, after_;
  std::map<std::string, Requantized> requantized_;
  QuantizedMatMuls r_;
};

// An activation x activation quantized matmul of attention, read in float: the MatMul(a,
// b) -> y that replaces node `node`, and the QuantizeLinear / DequantizeLinear nodes it
// bypasses (each read by nothing else).
struct ActivationMatMul {
  size_t node = 0;
  std::string a, b, y;
  std::vector<size_t> bypassed;
};

// A fake quantization of an activation: QuantizeLinear(x) read only by DequantizeLinears
// with the same per-tensor parameters (outputs ys); the readers of the ys read x instead.
struct FakeQuantPair {
  size_t q = 0;
  std::vector<size_t> dqs;
  std::string x;
  std::vector<std::string> ys;
};

class ActivationMatMuls {
 public:
  explicit ActivationMatMuls(const Graph& g) : g_(g), ix_(g) {}

  // Every MatMul of two activations with at least one fake-quantized input, and every
  // QLinearMatMul of two activations quantized by QuantizeLinear and dequantized by
  // DequantizeLinear, all with the same constant per-tensor scales and zero points.
  std::vector<ActivationMatMul> candidates() const {
    std::vector<ActivationMatMul> out;
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const Node& n = g_.nodes[i];
      ActivationMatMul c;
      c.node = i;
      if (op_of(n) == OpId::kMatMul && n.inputs.size() == 2 && n.outputs.size() == 1 &&
          activation(n.inputs[0]) && activation(n.inputs[1])) {
        c.a = n.inputs[0];
        c.b = n.inputs[1];
        const bool qa = fake_quantized(&c.a, &c.bypassed);
        const bool qb = fake_quantized(&c.b, &c.bypassed);
        if (!qa && !qb) continue;
        c.y = n.outputs[0];
      } else if (op_of(n) == OpId::kQLinearMatMul && n.inputs.size() == 8 &&
                 n.outputs.size() == 1 && activation(n.inputs[0]) && activation(n.inputs[3])) {
        Param pa, pb, py;
        if (!param(n.inputs[1], n.inputs[2], &pa) || !param(n.inputs[4], n.inputs[5], &pb) ||
            !param(n.inputs[6], n.inputs[7], &py)) {
          continue;
        }
        c.a = n.inputs[0];
        c.b = n.inputs[3];
        if (!quantized_from(&c.a, pa, &c.bypassed) || !quantized_from(&c.b, pb, &c.bypassed) ||
            !dequantized_to(n.outputs[0], py, &c.y, &c.bypassed)) {
          continue;
        }
      } else {
        continue;
      }
      out.push_back(std::move(c));
    }
    return out;
  }

  // Every fake-quantized activation whose nodes no candidate above bypasses (its
  // QuantizeLinear read only by DequantizeLinears with the same parameters): ONNX
  // Runtime's quantize_static writes them around Reshape, Transpose and Softmax too
  // (QDQDirect8BitOp, QDQSoftmax), inside attention's head splits, its scores and its
  // merge.
  std::vector<FakeQuantPair> pairs(const std::vector<ActivationMatMul>& taken) const {
    std::set<size_t> used;
    for (const ActivationMatMul& c : taken) used.insert(c.bypassed.begin(), c.bypassed.end());
    std::vector<FakeQuantPair> out;
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const Node& q = g_.nodes[i];
      Param pq;
      if (op_of(q) != OpId::kQuantizeLinear || used.count(i) || q.outputs.size() != 1 ||
          q.inputs.empty() || !activation(q.inputs[0]) || !param_of(q, &pq) ||
          ix_.is_output(q.outputs[0])) {
        continue;
      }
      // Every reader of the quantized tensor: a DequantizeLinear with the same parameters
      // (one, or one per consumer as some exporters write them).
      FakeQuantPair p;
      p.q = i;
      p.x = q.inputs[0];
      bool ok = !ix_.uses(q.outputs[0]).empty();
      for (const GraphIndex::Use& u : ix_.uses(q.outputs[0])) {
        const Node& d = g_.nodes[u.first];
        Param pd;
        ok = ok && u.second == 0 && op_of(d) == OpId::kDequantizeLinear && !used.count(u.first) &&
             d.outputs.size() == 1 && param_of(d, &pd) && pd == pq && !ix_.is_output(d.outputs[0]);
        if (!ok) break;
        p.dqs.push_back(u.first);
        p.ys.push_back(d.outputs[0]);
      }
      if (ok) out.push_back(std::move(p));
    }
    return out;
  }

 private:
  // A constant per-tensor scale and zero point (absent: 0 of uint8, as ONNX defaults).
  struct Param {
    double scale = 0, zp = 0;
    ElemType type = ElemType::kU8;
    bool operator==(const Param& o) const {
      return scale == o.scale && zp == o.zp && type == o.type;
    }
  };
  bool param(const std::string& s, const std::string& z, Param* p) const {
    const Constant* sc = g_.initializer(s);
    if (sc == nullptr || sc->elements() != 1 || sc->type != ElemType::kF32) return false;
    p->scale = sc->data<float>()[0];
    if (z.empty()) return true;
    const Constant* zc = g_.initializer(z);
    if (zc == nullptr || zc->elements() != 1 || !is_int8_type(zc->type)) return false;
    p->zp = values(*zc)[0];
    p->type = zc->type;
    return true;
  }
  bool param_of(const Node& n, Param* p) const {
    return n.inputs.size() >= 2 && param(n.inputs[1], n.inputs.size() > 2 ? n.inputs[2] : "", p);
  }
  bool activation(const std::string& v) const { return !v.empty() && !g_.initializer(v); }
  // The one node reading v (v no graph output), of op `op`.
  bool sole(const std::string& v, OpId op, size_t* i) const {
    GraphIndex::Use u;
    if (!ix_.only_use(v, &u) || op_of(g_.nodes[u.first]) != op) return false;
    *i = u.first;
    return true;
  }
  // *v = QuantizeLinear(x) with parameters p, read only by *v's one consumer: *v = x.
  bool quantized_from(std::string* v, const Param& p, std::vector<size_t>* bypassed) const {
    size_t iq = 0;
    Param pq;
    if (!ix_.producer(*v, &iq) || op_of(g_.nodes[iq]) != OpId::kQuantizeLinear ||
        !param_of(g_.nodes[iq], &pq) || !(pq == p) || ix_.use_count(*v) != 1 || ix_.is_output(*v)) {
      return false;
    }
    *v = g_.nodes[iq].inputs[0];
    bypassed->push_back(iq);
    return true;
  }
  // y's one reader is DequantizeLinear with parameters p: *out = its output.
  bool dequantized_to(const std::string& y, const Param& p, std::string* out,
                      std::vector<size_t>* bypassed) const {
    size_t id = 0;
    Param pd;
    if (!sole(y, OpId::kDequantizeLinear, &id) || !param_of(g_.nodes[id], &pd) || !(pd == p) ||
        g_.nodes[id].outputs.size() != 1) {
      return false;
    }
    *out = g_.nodes[id].outputs[0];
    bypassed->push_back(id);
    return true;
  }
  // *v = DequantizeLinear(QuantizeLinear(x)), the same per-tensor parameters, each read
  // only by the next: *v = x.
  bool fake_quantized(std::string* v, std::vector<size_t>* bypassed) const {
    size_t id = 0;
    Param pd;
    if (!ix_.producer(*v, &id) || op_of(g_.nodes[id]) != OpId::kDequantizeLinear ||
        !param_of(g_.nodes[id], &pd) || ix_.use_count(*v) != 1 || ix_.is_output(*v)) {
      return false;
    }
    std::string x = g_.nodes[id].inputs[0];
    std::vector<size_t> b;
    if (!quantized_from(&x, pd, &b)) return false;
    *v = x;
    bypassed->push_back(id);
    bypassed->push_back(b[0]);
    return true;
  }

  const Graph& g_;
  const GraphIndex ix_;
};

void read_in_float(Graph& g, const std::vector<ActivationMatMul>& cs,
                   const std::vector<FakeQuantPair>& ps) {
  std::vector<bool> dead(g.nodes.size(), false);
  std::map<std::string, std::string> rename;  // a pair's output -> its float input
  for (const FakeQuantPair& p : ps) {
    for (const std::string& y : p.ys) rename[y] = p.x;
    dead[p.q] = true;
    for (size_t d : p.dqs) dead[d] = true;
  }
  // The matmuls first: a matmul's input may be a pair's output too.
  for (const ActivationMatMul& c : cs) {
    Node& n = g.nodes[c.node];
    set_op(n, OpId::kMatMul);
    n.op = "MatMul";
    n.attrs.clear();
    n.inputs = {c.a, c.b};
    n.outputs = {c.y};
    for (size_t k : c.bypassed) dead[k] = true;
  }
  for (Node& n : g.nodes) {
    for (std::string& in : n.inputs) {
      // Through chains of pairs (a pair's input may be another pair's output).
      for (int hops = 0; hops < 64; ++hops) {
        auto r = rename.find(in);
        if (r == rename.end()) break;
        in = r->second;
      }
    }
  }
  std::vector<Node> kept;
  kept.reserve(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!dead[i]) kept.push_back(std::move(g.nodes[i]));
  }
  g.nodes = std::move(kept);
}

}  // namespace

// Whether a fused attention of `trial` takes in or gives out value v through data
// movement only: every reader of v is in a fused attention (absorbed) or moves data
// into one (forward), or v's producer is in one or moves data out of one (backward).
// Data movement: what the planner turns into views of the attention's panels (the head
// splits and the merge).
class AttentionFlow {
 public:
  AttentionFlow(const Graph& trial, std::set<std::string> absorbed)
      : g_(trial), ix_(trial), absorbed_(std::move(absorbed)) {}

  bool touches(const std::string& v) { return into(v, 0) || out_of(v, 0); }

 private:
  static bool moves_data(const Node& n) {
    switch (op_of(n)) {
      case OpId::kReshape:
      case OpId::kTranspose:
      case OpId::kSqueeze:
      case OpId::kUnsqueeze:
      case OpId::kIdentity: return n.outputs.size() == 1;
      default: return false;
    }
  }
  bool into(const std::string& v, int depth) {
    if (depth > 8 || ix_.is_output(v)) return false;
    const auto& uses = ix_.uses(v);
    if (uses.empty()) return false;
    for (const GraphIndex::Use& u : uses) {
      const Node& r = g_.nodes[u.first];
      if (!r.outputs.empty() && absorbed_.count(r.outputs[0])) continue;
      if (op_of(r) == OpId::kShape) continue;  // reads the shape only (exporters' head splits)
      if (u.second == 0 && moves_data(r) && into(r.outputs[0], depth + 1)) continue;
      return false;
    }
    return true;
  }
  bool out_of(const std::string& v, int depth) {
    size_t i = 0;
    if (depth > 8 || !ix_.producer(v, &i)) return false;
    const Node& p = g_.nodes[i];
    if (absorbed_.count(v)) return true;
    return moves_data(p) && !p.inputs.empty() && out_of(p.inputs[0], depth + 1);
  }

  const Graph& g_;
  const GraphIndex ix_;
  const std::set<std::string> absorbed_;
};

int read_attention_activations_in_float(Graph& g) {
  // Rewrite on a copy and keep the matmuls the attention pattern then fuses, and the fake
  // quantizations a fused attention takes in or gives out through data movement
  // (AttentionFlow); again with those only, until every rewrite is kept (a rewrite left
  // out could have changed what the pattern sees).
  const ActivationMatMuls found(g);
  std::vector<ActivationMatMul> keep = found.candidates();
  std::vector<FakeQuantPair> keep_pairs = found.pairs(keep);
  for (int round = 0; round < 6 && (!keep.empty() || !keep_pairs.empty()); ++round) {
    Graph trial = g;
    read_in_float(trial, keep, keep_pairs);
    const std::set<std::string> matched = attention_matmul_outputs(trial);
    AttentionFlow flow(trial, attention_absorbed_outputs(trial));
    std::vector<ActivationMatMul> fused;
    for (const ActivationMatMul& c : keep) {
      if (matched.count(c.y)) fused.push_back(c);
    }
    std::vector<FakeQuantPair> inside;
    for (const FakeQuantPair& p : keep_pairs) {
      if (flow.touches(p.x)) inside.push_back(p);
    }
    if (fused.size() == keep.size() && inside.size() == keep_pairs.size()) {
      g = std::move(trial);
      return static_cast<int>(keep.size());
    }
    keep = std::move(fused);
    keep_pairs = std::move(inside);
  }
  return 0;
}

void check_quantized_params(const Graph& g) {
  const GraphIndex ix(g);
  const Constants cs(g, ix);
  for (const Node& n : g.nodes) {
    const OpId op = op_of(n);
    auto in = [&](size_t k) { return k < n.inputs.size() ? cs.get(n.inputs[k]) : nullptr; };
    if (op == OpId::kQuantizeLinear || op == OpId::kDequantizeLinear) {
      const Constant* x = in(0);
      const Constant* s = in(1);
      const Constant* z = in(2);
      const int64_t axis = attrs_of(n, g.opset)->axis;
      if (s != nullptr) {
        check_scale(n, *s, op == OpId::kQuantizeLinear ? "y_scale" : "x_scale");
        if (x != nullptr) {
          check_axis_length(n, *x, axis, *s, op == OpId::kQuantizeLinear ? "y_scale" : "x_scale");
        }
      }
      if (z != nullptr) {
        const bool dq = op == OpId::kDequantizeLinear;
        const ElemType want =
            dq && x != nullptr && is_int8_type(x->type) ? x->type : ElemType::kF32;
        if (!(dq && x != nullptr && x->type == ElemType::kI32)) {
          check_zero_point(n, *z, want, s, dq ? "x_zero_point" : "y_zero_point");
        }
      }
    } else if (op == OpId::kMatMulInteger || op == OpId::kQLinearMatMul) {
      const bool ql = op == OpId::kQLinearMatMul;
      const size_t ia = 0, iaz = ql ? 2 : 2, ib = ql ? 3 : 1, ibz = ql ? 5 : 3;
      const Constant* a = in(ia);
      const Constant* b = in(ib);
      const Constant* az = in(iaz);
      const Constant* bz = in(ibz);
      if (ql) {
        for (size_t k : {size_t{1}, size_t{4}, size_t{6}}) {
          if (const Constant* s = in(k)) {
            check_scale(n, *s, k == 1 ? "a_scale" : k == 4 ? "b_scale" : "y_scale");
          }
        }
        if (const Constant* yz = in(7))
          check_zero_point(n, *yz, ElemType::kF32, in(6), "y_zero_point");
      }
      if (az != nullptr) {
        check_zero_point(n, *az, a != nullptr && is_int8_type(a->type) ? a->type : ElemType::kF32,
                         ql ? in(1) : nullptr, "a_zero_point");
      }
      if (bz != nullptr) {
        check_zero_point(n, *bz, b != nullptr && is_int8_type(b->type) ? b->type : ElemType::kF32,
                         ql ? in(4) : nullptr, "b_zero_point");
        if (b != nullptr && b->shape.size() == 2)
          check_columns(n, *bz, b->shape[1], "b_zero_point");
      }
      if (ql && b != nullptr && b->shape.size() == 2 && in(4) != nullptr) {
        check_columns(n, *in(4), b->shape[1], "b_scale");
      }
    }
  }
}

QuantizedMatMuls fuse_quantized_matmuls(Graph& g) {
  QuantizedMatMuls r = Fuser(g).run();
  r.attention = read_attention_activations_in_float(g);
  return r;
}

std::set<size_t> quantized_weight_dequantizes(const Graph& g) {
  const GraphIndex ix(g);
  // A weight input the fuser takes (qdq_matmul's conditions on the matmul itself), so a
  // DequantizeLinear kept unfolded is always fused.
  auto weight_use = [&](const GraphIndex::Use& u) {
    const Node& m = g.nodes[u.first];
    if (u.second != 1 || g.initializer(m.inputs[0]) != nullptr) return false;
    if (op_of(m) == OpId::kMatMul) return m.inputs.size() == 2;
    if (op_of(m) != OpId::kGemm) return false;
    const auto at = attrs_of(m, g.opset);
    return !at->trans_a && at->alpha == 1.0f && at->beta == 1.0f &&
           (m.inputs.size() < 3 || m.inputs[2].empty() || g.initializer(m.inputs[2]) != nullptr);
  };
  // The weight: a 2-D int8 / uint8 constant, or QuantizeLinear of a 2-D float constant with
  // constant parameters, which canonicalize folds into one before it reaches the
  // DequantizeLinear (torch's QAT export writes a fake-quantized weight that way, its
  // scale and zero point as Constant nodes).
  const Constants constants(g, ix);
  auto integer_weight = [&](const std::string& v) {
    if (const Constant* q = constants.get(v)) return q->shape.size() == 2 && is_int8_type(q->type);
    size_t p = 0;
    if (!ix.producer(v, &p) || op_of(g.nodes[p]) != OpId::kQuantizeLinear) return false;
    const Node& qn = g.nodes[p];
    const Constant* w = constants.get(qn.inputs[0]);
    bool all = w != nullptr && w->shape.size() == 2 && w->type == ElemType::kF32;
    for (size_t k = 1; k < qn.inputs.size(); ++k)
      all &= qn.inputs[k].empty() || constants.get(qn.inputs[k]);
    return all;
  };
  std::set<size_t> keep;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (op_of(n) != OpId::kDequantizeLinear || n.outputs.size() != 1) continue;
    if (n.inputs.empty() || !integer_weight(n.inputs[0])) continue;
    const auto& uses = ix.uses(n.outputs[0]);
    bool all = !uses.empty() && !ix.is_output(n.outputs[0]);
    for (const GraphIndex::Use& u : uses) {
      const Node& c = g.nodes[u.first];
      if (weight_use(u)) continue;
      if (op_of(c) == OpId::kTranspose && c.outputs.size() == 1 && !ix.is_output(c.outputs[0]) &&
          !ix.uses(c.outputs[0]).empty()) {
        for (const GraphIndex::Use& v : ix.uses(c.outputs[0])) all &= weight_use(v);
        continue;
      }
      all = false;
    }
    if (all) keep.insert(i);
  }
  return keep;
}

}  // namespace sparq
