#include "engine/passes.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/graph_index.h"
#include "engine/ops/registry.h"
#include "engine/shapes.h"
#include "kernels/spmm/spmm.h"

namespace sparq {
namespace {

class Matcher {
 public:
  explicit Matcher(Graph& g) : g_(g) { index(); }

  // Rebuilds the wiring without the nodes killed so far (engine/graph_index.h).
  void index() {
    ix_ = std::make_unique<GraphIndex>(g_, [this](size_t i) { return dead_.count(i) != 0; });
  }

  // The single node consuming `v`, if `v` has exactly one consumer and is not a graph
  // output.
  Node* sole_consumer(const std::string& v, size_t* idx = nullptr) {
    GraphIndex::Use u;
    if (!ix_->only_use(v, &u)) return nullptr;
    if (idx) *idx = u.first;
    return &g_.nodes[u.first];
  }
  Node* producer(const std::string& v, size_t* idx = nullptr) {
    size_t i = 0;
    if (!ix_->producer(v, &i) || dead_.count(i)) return nullptr;
    if (idx) *idx = i;
    return &g_.nodes[i];
  }
  // The nodes reading `v` (one entry per read).
  std::vector<size_t> consumers(const std::string& v) const {
    std::vector<size_t> r;
    for (const GraphIndex::Use& u : ix_->uses(v)) r.push_back(u.first);
    return r;
  }
  bool is_output(const std::string& v) const { return ix_->is_output(v); }
  size_t consumer_count(const std::string& v) const { return ix_->use_count(v); }

  // A constant value: an initializer or the output of a Constant node.
  const Constant* constant(const std::string& v) const {
    if (const Constant* c = g_.initializer(v)) return c;
    size_t i = 0;
    if (!ix_->producer(v, &i)) return nullptr;
    const Node& n = g_.nodes[i];
    if (op_of(n) != OpId::kConstant) return nullptr;
    const Attribute* a = n.attr("value");
    return a && a->t ? a->t.get() : nullptr;
  }
  bool scalar(const std::string& v, double* out) const {
    const Constant* c = constant(v);
    if (c == nullptr || c->elements() != 1) return false;
    if (c->type == ElemType::kF32) *out = c->data<float>()[0];
    else if (c->type == ElemType::kF64) *out = c->data<double>()[0];
    else return false;
    return true;
  }
  // The other input of a binary node, given one of them.
  static const std::string* other(const Node& n, const std::string& v) {
    if (n.inputs.size() != 2) return nullptr;
    if (n.inputs[0] == v) return &n.inputs[1];
    if (n.inputs[1] == v) return &n.inputs[0];
    return nullptr;
  }
  void kill(size_t i) { dead_.insert(i); }
  bool is_dead(size_t i) const { return dead_.count(i) != 0; }
  const std::set<size_t>& dead() const { return dead_; }
  Graph& graph() { return g_; }

 private:
  Graph& g_;
  std::set<size_t> dead_;
  std::unique_ptr<GraphIndex> ix_;
};

bool last_axis(const Node& n, const Matcher& m) {
  if (const Attribute* a = n.attr("axes")) return a->ints.size() == 1 && a->ints[0] == -1;
  if (n.inputs.size() > 1) {
    const Constant* c = m.constant(n.inputs[1]);
    return c && c->elements() == 1 && c->type == ElemType::kI64 && c->data<int64_t>()[0] == -1;
  }
  return false;
}

// LayerNorm over the last axis, in the forms exporters write:
//   m = ReduceMean(x, -1); d = Sub(x, m); p = Pow(d, 2) | Mul(d, d);
//   v = ReduceMean(p, -1); s = Sqrt(Add(v, eps));
//   q = Div(d, s) | Mul(d, Reciprocal(s)); y = Mul(q, gamma); z = Add(y, beta) (optional)
// -> LayerNormalization(x, gamma[, beta], axis -1, epsilon). Both reductions keep their
// dimension; epsilon must sit inside the square root (Sqrt(v) + eps is another formula and
// stays op by op), and gamma (and beta) are constants.
int fuse_layernorm(Matcher& m) {
  Graph& g = m.graph();
  int fused = 0;
  auto keeps_dims = [](const Node& n) {
    const Attribute* k = n.attr("keepdims");
    return k == nullptr || k->i != 0;
  };
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (m.is_dead(i)) continue;
    Node& rm1 = g.nodes[i];
    if (op_of(rm1) != OpId::kReduceMean || !last_axis(rm1, m) || !keeps_dims(rm1)) continue;
    const std::string x = rm1.inputs[0];
    size_t i_sub = 0, i_sq = 0, i_rm2 = 0, i_add = 0, i_sqrt = 0, i_norm = 0, i_mul = 0;
    Node* sub = m.sole_consumer(rm1.outputs[0], &i_sub);
    if (!sub || op_of(*sub) != OpId::kSub || sub->inputs[0] != x ||
        sub->inputs[1] != rm1.outputs[0])
      continue;
    const std::string d = sub->outputs[0];
    if (m.is_output(d)) continue;
    // d feeds exactly the square and the normalization.
    Node* sq = nullptr;
    Node* norm = nullptr;
    double two = 0, eps = 0;
    bool others = false;
    for (size_t k : m.consumers(d)) {
      Node& n = g.nodes[k];
      const bool pow2 = op_of(n) == OpId::kPow && n.inputs[0] == d && n.inputs[1] != d &&
                        m.scalar(n.inputs[1], &two) && two == 2.0;
      const bool dd = op_of(n) == OpId::kMul && n.inputs[0] == d && n.inputs[1] == d;
      if (pow2 || dd) {
        others |= sq != nullptr && sq != &n;
        sq = &n;
        i_sq = k;
      } else if ((op_of(n) == OpId::kDiv && n.inputs[0] == d && n.inputs[1] != d) ||
                 (op_of(n) == OpId::kMul && (n.inputs[0] == d) != (n.inputs[1] == d))) {
        others |= norm != nullptr;
        norm = &n;
        i_norm = k;
      } else {
        others = true;
      }
    }
    if (others || !sq || !norm) continue;
    Node* rm2 = m.sole_consumer(sq->outputs[0], &i_rm2);
    if (!rm2 || op_of(*rm2) != OpId::kReduceMean || !last_axis(*rm2, m) || !keeps_dims(*rm2))
      continue;
    Node* add = m.sole_consumer(rm2->outputs[0], &i_add);
    if (!add || op_of(*add) != OpId::kAdd) continue;
    const std::string* e = Matcher::other(*add, rm2->outputs[0]);
    if (!e || !m.scalar(*e, &eps)) continue;
    Node* sqr = m.sole_consumer(add->outputs[0], &i_sqrt);
    if (!sqr || op_of(*sqr) != OpId::kSqrt) continue;
    std::vector<size_t> kill = {i, i_sub, i_sq, i_rm2, i_add, i_sqrt, i_norm};
    if (op_of(*norm) == OpId::kDiv) {
      if (norm->inputs[1] != sqr->outputs[0] || m.consumer_count(sqr->outputs[0]) != 1) continue;
    } else {  // Mul(d, Reciprocal(s))
      size_t i_rcp = 0;
      Node* rcp = m.sole_consumer(sqr->outputs[0], &i_rcp);
      const std::string* r = Matcher::other(*norm, d);
      if (!rcp || op_of(*rcp) != OpId::kReciprocal || !r || *r != rcp->outputs[0] ||
          m.consumer_count(rcp->outputs[0]) != 1)
        continue;
      kill.push_back(i_rcp);
    }
    Node* mul = m.sole_consumer(norm->outputs[0], &i_mul);
    if (!mul || op_of(*mul) != OpId::kMul) continue;
    const std::string* gamma = Matcher::other(*mul, norm->outputs[0]);
    if (!gamma || !g.initializer(*gamma)) continue;
    kill.push_back(i_mul);
    // beta: an Add of a constant, when there is one.
    std::string out = mul->outputs[0], beta;
    size_t i_last = i_mul, i_add2 = 0;
    Node* add2 = m.sole_consumer(mul->outputs[0], &i_add2);
    if (add2 && op_of(*add2) == OpId::kAdd) {
      const std::string* b = Matcher::other(*add2, mul->outputs[0]);
      if (b && g.initializer(*b)) {
        beta = *b;
        out = add2->outputs[0];
        i_last = i_add2;
        kill.push_back(i_add2);
      }
    }
    Node ln;
    ln.name = g.nodes[i_last].name + "/fused_layernorm";
    set_op(ln, OpId::kLayerNormalization);
    ln.inputs = {x, *gamma};
    if (!beta.empty()) ln.inputs.push_back(beta);
    ln.outputs = {out};
    Attribute ax, ep;
    ax.kind = Attribute::Kind::kInt;
    ax.i = -1;
    ep.kind = Attribute::Kind::kFloat;
    ep.f = static_cast<float>(eps);
    ln.attrs = {{"axis", ax}, {"epsilon", ep}};
    for (size_t k : kill) {
      if (k != i_last) m.kill(k);
    }
    g.nodes[i_last] = std::move(ln);  // the fused op takes the last node's place
    m.index();
    ++fused;
  }
  return fused;
}

// A polynomial in h (a matmul's output) and t (the output of the one transcendental op
// of an activation): coefficient of h^i t^j. The activation patterns below read an
// elementwise subgraph into this form, so every spelling of the same formula (operand
// order, association, Div by c or Mul by 1/c, x*x*x or Pow(x, 3), constants folded or
// not) compares equal, and a formula that differs in any coefficient does not.
struct Poly {
  static constexpr int kMaxDegree = 8;
  std::map<std::pair<int, int>, double> c;

  static Poly constant(double v) {
    Poly p;
    if (v != 0) p.c[{0, 0}] = v;
    return p;
  }
  static Poly var(int i, int j) {
    Poly p;
    p.c[{i, j}] = 1;
    return p;
  }
  Poly plus(const Poly& o, double sign) const {
    Poly r = *this;
    for (const auto& kv : o.c) {
      double& v = r.c[kv.first];
      v += sign * kv.second;
      if (v == 0) r.c.erase(kv.first);
    }
    return r;
  }
  bool times(const Poly& o, Poly* out) const {
    Poly r;
    for (const auto& a : c) {
      for (const auto& b : o.c) {
        const int i = a.first.first + b.first.first, j = a.first.second + b.first.second;
        if (i > kMaxDegree || j > kMaxDegree) return false;
        double& v = r.c[{i, j}];
        v += a.second * b.second;
        if (v == 0) r.c.erase({i, j});
      }
    }
    *out = std::move(r);
    return true;
  }
  // The same monomials, each coefficient within `rel` of the other's (float32 constants
  // in the model against float64 ones here).
  bool near(const Poly& o, double rel = 1e-5) const {
    if (c.size() != o.c.size()) return false;
    for (const auto& kv : c) {
      auto it = o.c.find(kv.first);
      if (it == o.c.end()) return false;
      const double a = kv.second, b = it->second;
      if (std::fabs(a - b) > rel * std::max(std::fabs(a), std::fabs(b))) return false;
    }
    return true;
  }
};

// Reads the value `v` as a polynomial in `h` and `t` (t may be empty): Add, Sub, Mul,
// Neg, Div by a scalar constant and Pow by a small integer constant, over h, t and scalar
// constants. Every value read below the root must have exactly one consumer and not be a
// graph output; the nodes read are appended to `nodes`.
class PolyReader {
 public:
  PolyReader(Matcher& m, std::string h, std::string t)
      : m_(m), h_(std::move(h)), t_(std::move(t)) {}

  bool read(const std::string& v, Poly* out) { return read(v, out, 0); }
  std::vector<size_t> nodes;

 private:
  bool read(const std::string& v, Poly* out, int depth) {
    if (v == h_) return *out = Poly::var(1, 0), true;
    if (!t_.empty() && v == t_) return *out = Poly::var(0, 1), true;
    double c = 0;
    if (m_.scalar(v, &c)) return std::isfinite(c) && (*out = Poly::constant(c), true);
    size_t i = 0;
    Node* n = m_.producer(v, &i);
    if (n == nullptr || depth > 24) return false;
    if (depth > 0 && (m_.consumer_count(v) != 1 || m_.is_output(v))) return false;
    Poly a, b;
    const OpId op = op_of(*n);
    if ((op == OpId::kAdd || op == OpId::kSub || op == OpId::kMul) && n->inputs.size() == 2) {
      if (!read(n->inputs[0], &a, depth + 1) || !read(n->inputs[1], &b, depth + 1)) return false;
      if (op == OpId::kMul) {
        if (!a.times(b, out)) return false;
      } else {
        *out = a.plus(b, op == OpId::kAdd ? 1.0 : -1.0);
      }
    } else if (op == OpId::kDiv && n->inputs.size() == 2) {
      if (!m_.scalar(n->inputs[1], &c) || c == 0 || !std::isfinite(c)) return false;
      if (!read(n->inputs[0], &a, depth + 1)) return false;
      a.times(Poly::constant(1.0 / c), out);
    } else if (op == OpId::kNeg && n->inputs.size() == 1) {
      if (!read(n->inputs[0], &a, depth + 1)) return false;
      *out = Poly().plus(a, -1.0);
    } else if (op == OpId::kPow && n->inputs.size() == 2) {
      if (!m_.scalar(n->inputs[1], &c) || c != std::floor(c) || c < 1 || c > 4) return false;
      if (!read(n->inputs[0], &a, depth + 1)) return false;
      Poly r = a;
      for (int k = 1; k < static_cast<int>(c); ++k) {
        if (!r.times(a, &r)) return false;
      }
      *out = std::move(r);
    } else {
      return false;
    }
    nodes.push_back(i);
    return true;
  }

  Matcher& m_;
  std::string h_, t_;
};

// One GELU form: activation = outer(h, t) with t = op(inner(h)).
struct GeluForm {
  OpId op;  // the transcendental
  Activation act;
  Poly inner, outer;
};

const std::vector<GeluForm>& gelu_forms() {
  static const std::vector<GeluForm> forms = [] {
    auto poly = [](std::initializer_list<std::pair<std::pair<int, int>, double>> terms) {
      Poly p;
      for (const auto& t : terms) p.c[t.first] = t.second;
      return p;
    };
    const double s2pi = std::sqrt(2.0 / M_PI);
    const Poly half_h_1_plus_t = poly({{{1, 0}, 0.5}, {{1, 1}, 0.5}});  // h/2 (1 + t)
    return std::vector<GeluForm>{
        // erf: h/2 (1 + erf(h / sqrt 2))
        {OpId::kErf, Activation::kGeluErf, poly({{{1, 0}, std::sqrt(0.5)}}), half_h_1_plus_t},
        // tanh: h/2 (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))
        {OpId::kTanh, Activation::kGeluTanh, poly({{{1, 0}, s2pi}, {{3, 0}, s2pi * 0.044715}}),
         half_h_1_plus_t},
        // sigmoid (QuickGELU): h sigmoid(1.702 h)
        {OpId::kSigmoid, Activation::kGeluSigmoid, poly({{{1, 0}, 1.702}}), poly({{{1, 1}, 1.0}})},
    };
  }();
  return forms;
}

bool is_elementwise_arith(const Node& n) {
  switch (op_of(n)) {
    case OpId::kAdd:
    case OpId::kSub:
    case OpId::kMul:
    case OpId::kDiv:
    case OpId::kNeg:
    case OpId::kPow: return true;
    default: return false;
  }
}

// The GELU subgraph computing an activation of `h`, in any of its forms: sets the
// activation, the activation's output value and the nodes it is made of. Every consumer
// of h and of each value inside must be inside (h itself is then no longer needed).
bool match_gelu(Matcher& m, const std::string& h, Activation* act, std::string* out,
                std::vector<size_t>* nodes) {
  Graph& g = m.graph();
  // Transcendental candidates: reached from h through a few arithmetic nodes.
  std::vector<size_t> frontier, candidates;
  std::set<size_t> seen;
  for (size_t c : m.consumers(h)) frontier.push_back(c);
  for (int depth = 0; depth < 6 && !frontier.empty(); ++depth) {
    std::vector<size_t> next;
    for (size_t c : frontier) {
      if (!seen.insert(c).second || m.is_dead(c)) continue;
      const Node& n = g.nodes[c];
      if (op_of(n) == OpId::kErf || op_of(n) == OpId::kTanh || op_of(n) == OpId::kSigmoid)
        candidates.push_back(c);
      else if (is_elementwise_arith(n) && n.outputs.size() == 1)
        for (size_t d : m.consumers(n.outputs[0])) next.push_back(d);
    }
    frontier = std::move(next);
  }
  for (size_t ti : candidates) {
    const Node& tn = g.nodes[ti];
    if (tn.inputs.size() != 1 || tn.outputs.size() != 1) continue;
    for (const GeluForm& f : gelu_forms()) {
      if (op_of(tn) != f.op) continue;
      PolyReader inner(m, h, "");
      Poly p;
      if (!inner.read(tn.inputs[0], &p) || !p.near(f.inner)) continue;
      if (m.consumer_count(tn.inputs[0]) != 1 && tn.inputs[0] != h) continue;
      // The outer formula ends somewhere up the chain of sole arithmetic consumers of t.
      std::string y = tn.outputs[0];
      for (int step = 0; step < 8; ++step) {
        size_t ci = 0;
        Node* c = m.sole_consumer(y, &ci);
        if (c == nullptr || !is_elementwise_arith(*c) || c->outputs.size() != 1) break;
        y = c->outputs[0];
        PolyReader outer(m, h, tn.outputs[0]);
        Poly q;
        if (!outer.read(y, &q) || !q.near(f.outer)) continue;
        // Closed: every consumer of h, t and each inner value is one of these nodes.
        std::set<size_t> all(inner.nodes.begin(), inner.nodes.end());
        all.insert(outer.nodes.begin(), outer.nodes.end());
        all.insert(ti);
        bool closed = !m.is_output(h);
        for (size_t k : m.consumers(h)) closed &= all.count(k) != 0;
        for (size_t k : m.consumers(tn.outputs[0])) closed &= all.count(k) != 0;
        for (size_t k : all) {
          for (const std::string& o : g.nodes[k].outputs) {
            if (o == y) continue;
            closed &= !m.is_output(o);
            for (size_t u : m.consumers(o)) closed &= all.count(u) != 0;
          }
        }
        if (!closed) continue;
        *act = f.act;
        *out = y;
        nodes->assign(all.begin(), all.end());
        return true;
      }
    }
  }
  return false;
}

// An elementwise activation (as match_gelu reads it) applied after a Reshape that only
// regroups the leading dimensions of a matmul's output (Linear on flattened 2D
// activations, then viewed back): the activation is moved above the Reshape, which is
// exact for elementwise math with scalar constants, so it can join the matmul's epilogue.
//   h -> Reshape(., s) -> r -> GELU -> y   becomes   h -> GELU -> y' -> Reshape(., s) -> y
int sink_reshapes_below_activations(Graph& g) {
  int moved = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (op_of(g.nodes[i]) != OpId::kSparqMatMul) continue;
    Matcher m(g);  // indices change below: a fresh index per match
    size_t ri = 0;
    Node* rs = m.sole_consumer(g.nodes[i].outputs[0], &ri);
    if (rs == nullptr || op_of(*rs) != OpId::kReshape || rs->inputs[0] != g.nodes[i].outputs[0])
      continue;
    const std::string r = rs->outputs[0];
    Activation act;
    std::string y;
    std::vector<size_t> nodes;
    if (!match_gelu(m, r, &act, &y, &nodes)) continue;
    // Rewire: the activation reads h, its result y' feeds the Reshape, which writes y.
    const std::string h = g.nodes[i].outputs[0];
    const std::string y2 = y + "/before_reshape";
    size_t last = 0;  // the node that wrote y
    for (size_t k : nodes) {
      for (std::string& in : g.nodes[k].inputs) {
        if (in == r) in = h;
      }
      for (std::string& o : g.nodes[k].outputs) {
        if (o == y) {
          o = y2;
          last = k;
        }
      }
    }
    Node reshape = g.nodes[ri];
    reshape.inputs[0] = y2;
    reshape.outputs = {y};
    // The Reshape now runs right after the activation (its target was computed before
    // the old position ri < last, so the order stays topological); the old one goes.
    g.nodes.insert(g.nodes.begin() + static_cast<std::ptrdiff_t>(last) + 1, std::move(reshape));
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(ri));
    ++moved;
  }
  return moved;
}

// SparqMatMul -> Add(bias [N]) -> bias input; then a GELU of its output (any form
// match_gelu reads) -> the matmul's "activation".
void fuse_epilogues(Matcher& m, PassStats& st) {
  Graph& g = m.graph();
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (m.is_dead(i) || op_of(g.nodes[i]) != OpId::kSparqMatMul) continue;
    if (g.nodes[i].inputs.size() == 1) {
      size_t i_add = 0;
      Node* add = m.sole_consumer(g.nodes[i].outputs[0], &i_add);
      const std::string* b =
          add && op_of(*add) == OpId::kAdd ? Matcher::other(*add, g.nodes[i].outputs[0]) : nullptr;
      const Constant* bias = b ? g.initializer(*b) : nullptr;
      if (bias && bias->type == ElemType::kF32 && bias->shape.size() == 1) {
        Node& mm = g.nodes[i];
        mm.inputs.push_back(*b);
        mm.outputs = {add->outputs[0]};
        m.kill(i_add);
        m.index();
        ++st.bias;
      }
    }
    if (g.nodes[i].attr("activation") != nullptr) continue;
    Activation act;
    std::string y;
    std::vector<size_t> nodes;
    if (!match_gelu(m, g.nodes[i].outputs[0], &act, &y, &nodes)) continue;
    Attribute a;
    a.kind = Attribute::Kind::kString;
    a.s = activation_name(act);
    g.nodes[i].attrs["activation"] = a;
    g.nodes[i].outputs = {y};
    for (size_t k : nodes) m.kill(k);
    m.index();
    ++st.gelu;
  }
}

// Peels a chain of scalar Div / Mul nodes off `*v`: afterwards the original value is
// (*v) * (*scale) and `kill` holds the peeled nodes. A value on the chain is peeled only
// while `ok(value)` (its consumers are exactly the chain's), so a scaled value that
// something else reads stays.
template <class Ok>
void peel_scale(Matcher& m, std::string* v, double* scale, std::vector<size_t>* kill, Ok ok) {
  for (int depth = 0; depth < 4; ++depth) {
    size_t i = 0;
    Node* n = m.producer(*v, &i);
    if (n == nullptr || (op_of(*n) != OpId::kDiv && op_of(*n) != OpId::kMul) ||
        n->inputs.size() != 2)
      return;
    double c = 0;
    std::string rest;
    if (m.scalar(n->inputs[1], &c)) {
      rest = n->inputs[0];
    } else if (op_of(*n) == OpId::kMul && m.scalar(n->inputs[0], &c)) {
      rest = n->inputs[1];
    } else {
      return;
    }
    if (c == 0 || !std::isfinite(c) || !ok(rest)) return;
    *scale *= op_of(*n) == OpId::kDiv ? 1.0 / c : c;
    kill->push_back(i);
    *v = rest;
  }
}

// Scaled dot-product attention per head, in the forms exporters write:
//   scores = MatMul(Q', K') with 1/sqrt(d) applied as Div or Mul on the scores, on Q, on
//   K^T, or split between Q and K^T (torch's scaled_dot_product_attention);
//   masked = Add(scores, mask) | Where(cond, fill, scores) | scores,
//     cond = [Cast(to bool)](Expand(m, Shape(scores))): m is used directly (it broadcasts);
//   out = MatMul(Softmax(masked, last axis), V).
// -> SparqAttention(Q, K^T, V[, mask]) with the product of the scale factors, which never
// materializes the [B, H, S, S] scores. Softmax's axis must be the last: from opset 13
// the default -1 or an explicit -1 / 3; before opset 13 (where the default is 1 and the
// input is coerced to 2D) only an explicit -1 or 3, the same for 4D scores.
// `matched`, when given, receives the outputs of each fused attention's two MatMuls.
int fuse_attention(Matcher& m, std::set<std::string>* matched = nullptr) {
  Graph& g = m.graph();
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (m.is_dead(i) || op_of(g.nodes[i]) != OpId::kSoftmax) continue;
    const Node& sm = g.nodes[i];
    const Attribute* ax = sm.attr("axis");
    const bool last_axis = ax != nullptr ? (ax->i == -1 || ax->i == 3) : g.opset >= 13;
    if (!last_axis) continue;
    size_t i_mm2 = 0;
    Node* mm2 = m.sole_consumer(sm.outputs[0], &i_mm2);
    if (!mm2 || op_of(*mm2) != OpId::kMatMul || mm2->inputs[0] != sm.outputs[0]) continue;
    if (m.consumer_count(sm.inputs[0]) != 1 || m.is_output(sm.inputs[0])) continue;
    std::vector<size_t> kill = {i};  // i_mm2 is replaced by the fused node
    std::string scores = sm.inputs[0], mask, kind = "none";
    double fill = 0;
    size_t i_pre = 0;
    Node* pre = m.producer(scores, &i_pre);
    std::string shape_of;  // the Where form: the value whose Shape the mask's Expand reads
    std::vector<size_t> mask_nodes;
    if (pre != nullptr && op_of(*pre) == OpId::kAdd && pre->inputs.size() == 2) {
      // One side is the scores chain (it ends in a MatMul), the other the additive mask.
      for (int side = 0; side < 2 && kind == "none"; ++side) {
        std::string v = pre->inputs[side];
        double sc = 1;
        std::vector<size_t> k;
        peel_scale(m, &v, &sc, &k, [&](const std::string&) { return true; });
        Node* mm1 = m.producer(v);
        if (mm1 == nullptr || op_of(*mm1) != OpId::kMatMul) continue;
        scores = pre->inputs[side];
        mask = pre->inputs[1 - side];
        kind = "add";
      }
      if (kind == "none") continue;
      kill.push_back(i_pre);
    } else if (pre != nullptr && op_of(*pre) == OpId::kWhere && pre->inputs.size() == 3 &&
               m.scalar(pre->inputs[1], &fill)) {
      size_t i_cast = 0, i_exp = 0, i_shape = 0;
      std::string cond = pre->inputs[0];
      Node* cast = m.producer(cond, &i_cast);
      if (cast != nullptr && op_of(*cast) == OpId::kCast) {
        const Attribute* to = cast->attr("to");
        if (to == nullptr || to->i != 9 || m.consumer_count(cond) != 1) continue;
        mask_nodes.push_back(i_cast);
        cond = cast->inputs[0];
      }
      Node* exp = m.producer(cond, &i_exp);
      Node* shp =
          exp && op_of(*exp) == OpId::kExpand ? m.producer(exp->inputs[1], &i_shape) : nullptr;
      if (!shp || op_of(*shp) != OpId::kShape || shp->attrs.size() != 0 ||
          m.consumer_count(cond) != 1 || m.consumer_count(exp->outputs[0]) != 1 ||
          m.consumer_count(shp->outputs[0]) != 1)
        continue;
      mask_nodes.push_back(i_exp);
      mask_nodes.push_back(i_shape);
      shape_of = shp->inputs[0];
      scores = pre->inputs[2];
      mask = exp->inputs[0];
      kind = "where";
      kill.push_back(i_pre);
    }
    // The scores chain: scale factors, then MatMul(Q', K'), each side's own factors.
    // Every value on it has one consumer, except that the Where form's Shape may read one.
    auto consumers_ok = [&](const std::string& v) {
      const size_t want = v == shape_of ? 2 : 1;
      return m.consumer_count(v) == want && !m.is_output(v);
    };
    if (!consumers_ok(scores)) continue;
    double scale = 1;
    std::string v = scores;
    peel_scale(m, &v, &scale, &kill, consumers_ok);
    size_t i_mm1 = 0;
    Node* mm1 = m.producer(v, &i_mm1);
    if (!mm1 || op_of(*mm1) != OpId::kMatMul || !consumers_ok(v)) continue;
    kill.push_back(i_mm1);
    std::string q = mm1->inputs[0], kt = mm1->inputs[1];
    auto single = [&](const std::string& x) { return m.consumer_count(x) == 1 && !m.is_output(x); };
    peel_scale(m, &q, &scale, &kill, single);
    peel_scale(m, &kt, &scale, &kill, single);
    // The Where form's Shape must read a value of the chain (all are [B, H, S, T]).
    if (!shape_of.empty()) {
      bool on_chain = shape_of == v;
      for (size_t k : kill)
        on_chain |= !g.nodes[k].outputs.empty() && g.nodes[k].outputs[0] == shape_of;
      if (!on_chain) continue;
    }
    if (scale == 0 || !std::isfinite(scale)) continue;
    kill.insert(kill.end(), mask_nodes.begin(), mask_nodes.end());
    if (matched != nullptr) {
      matched->insert(v);  // mm1's output
      matched->insert(mm2->outputs[0]);
    }
    Node att;
    att.name = mm2->name + "/fused_attention";
    set_op(att, OpId::kSparqAttention);
    att.inputs = {q, kt, mm2->inputs[1], mask};
    att.outputs = mm2->outputs;
    Attribute sc, mk, fl;
    sc.kind = fl.kind = Attribute::Kind::kFloat;
    sc.f = static_cast<float>(scale);
    fl.f = static_cast<float>(fill);
    mk.kind = Attribute::Kind::kString;
    mk.s = kind;
    att.attrs = {{"scale", sc}, {"mask_kind", mk}, {"fill", fl}};
    for (size_t k : kill) m.kill(k);
    g.nodes[i_mm2] = std::move(att);  // after every input's producer
    m.index();
    ++fused;
  }
  return fused;
}
// The additive attention mask as BERT and RoBERTa export it:
//   bias = Mul(Sub(1, Cast(Unsqueeze(Unsqueeze(mask, 1), 2), float)), fill)
// (the Unsqueezes, one with both axes, or the Cast first; Mul's constant on either side)
// -> SparqMaskBias(mask) with `fill`: one step instead of five op-by-op ones.
int fuse_mask_bias(Matcher& m) {
  Graph& g = m.graph();
  int fused = 0;
  // The axes an Unsqueeze inserts: its attribute (before opset 13) or constant input.
  auto axes_of = [&](const Node& n, std::vector<int64_t>* axes) {
    if (const Attribute* a = n.attr("axes")) {
      *axes = a->ints;
      return true;
    }
    const Constant* c = n.inputs.size() > 1 ? m.constant(n.inputs[1]) : nullptr;
    if (c == nullptr || c->type != ElemType::kI64) return false;
    axes->assign(c->data<int64_t>(), c->data<int64_t>() + c->elements());
    return true;
  };
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (m.is_dead(i) || op_of(g.nodes[i]) != OpId::kMul) continue;
    const Node& mul = g.nodes[i];
    double fill = 0, one = 0;
    int side = -1;
    for (int k = 0; k < 2 && side < 0; ++k) {
      const Constant* c = m.constant(mul.inputs[1 - k]);
      if (c != nullptr && c->type == ElemType::kF32 && c->elements() == 1 &&
          m.scalar(mul.inputs[1 - k], &fill))
        side = k;
    }
    if (side < 0) continue;
    size_t i_sub = 0;
    Node* sb = m.producer(mul.inputs[side], &i_sub);
    if (sb == nullptr || op_of(*sb) != OpId::kSub || m.consumer_count(mul.inputs[side]) != 1 ||
        m.is_output(mul.inputs[side]))
      continue;
    const Constant* c1 = m.constant(sb->inputs[0]);
    if (c1 == nullptr || c1->type != ElemType::kF32 || !m.scalar(sb->inputs[0], &one) || one != 1.0)
      continue;
    // Back from Sub's other input through single-use Unsqueezes and one Cast to float.
    std::vector<size_t> chain = {i_sub};           // i (the Mul) is replaced by the fused node
    std::vector<std::vector<int64_t>> unsqueezes;  // innermost last
    std::string v = sb->inputs[1];
    int casts = 0;
    bool ok = true;
    for (int depth = 0; depth < 4 && ok; ++depth) {
      size_t k = 0;
      Node* p = m.producer(v, &k);
      if (p == nullptr || m.consumer_count(v) != 1 || m.is_output(v)) break;
      if (op_of(*p) == OpId::kCast) {
        const Attribute* to = p->attr("to");
        ok = to != nullptr && to->i == 1 && ++casts == 1;
      } else if (op_of(*p) == OpId::kUnsqueeze) {
        std::vector<int64_t> axes;
        ok = axes_of(*p, &axes);
        unsqueezes.push_back(axes);
      } else {
        break;
      }
      chain.push_back(k);
      v = p->inputs[0];
    }
    if (!ok || casts != 1 || unsqueezes.empty()) continue;
    // Applied to a [B, S] mask (placeholder sizes 2 and 3), the Unsqueezes must give
    // [B, 1, 1, S].
    std::vector<int64_t> shape = {2, 3};
    std::string why;
    for (auto it = unsqueezes.rbegin(); it != unsqueezes.rend() && ok; ++it)
      ok = unsqueeze_shape(shape, *it, &shape, &why);
    if (!ok || shape != std::vector<int64_t>{2, 1, 1, 3}) continue;
    Node bias;
    bias.name = mul.name + "/fused_mask_bias";
    set_op(bias, OpId::kSparqMaskBias);
    bias.inputs = {v};
    bias.outputs = mul.outputs;
    Attribute f;
    f.kind = Attribute::Kind::kFloat;
    f.f = static_cast<float>(fill);
    bias.attrs = {{"fill", f}};
    for (size_t k : chain) m.kill(k);
    g.nodes[i] = std::move(bias);  // the Mul's place: after the mask's producer
    m.index();
    ++fused;
  }
  return fused;
}

}  // namespace

std::set<std::string> attention_matmul_outputs(Graph g) {
  Matcher m(g);
  std::set<std::string> matched;
  fuse_attention(m, &matched);
  return matched;
}

std::set<std::string> attention_absorbed_outputs(Graph g) {
  Matcher m(g);
  fuse_attention(m);
  std::set<std::string> absorbed;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (m.is_dead(i) || op_of(n) == OpId::kSparqAttention)
      absorbed.insert(n.outputs.begin(), n.outputs.end());
  }
  return absorbed;
}

PassStats optimize_graph(Graph& g) {
  PassStats st;
  st.reshapes_moved = sink_reshapes_below_activations(g);
  {
    Matcher m(g);
    st.layernorm = fuse_layernorm(m);
    st.attention = fuse_attention(m);
    st.mask_bias = fuse_mask_bias(m);
    fuse_epilogues(m, st);
    std::vector<Node> kept;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (!m.is_dead(i)) kept.push_back(std::move(g.nodes[i]));
    }
    st.removed = static_cast<int>(g.nodes.size() - kept.size());
    g.nodes = std::move(kept);
  }
  // Dead code: nodes none of whose outputs are used (repeat until stable), then
  // initializers nothing reads.
  for (bool changed = true; changed;) {
    changed = false;
    std::set<std::string> used;
    for (const ValueInfo& v : g.outputs) used.insert(v.name);
    for (const Node& n : g.nodes)
      for (const std::string& in : n.inputs) used.insert(in);
    std::vector<Node> kept;
    for (Node& n : g.nodes) {
      bool live = false;
      for (const std::string& o : n.outputs) live |= used.count(o) != 0;
      if (live) kept.push_back(std::move(n));
      else ++st.removed, changed = true;
    }
    g.nodes = std::move(kept);
  }
  std::set<std::string> used;
  for (const Node& n : g.nodes)
    for (const std::string& in : n.inputs) used.insert(in);
  for (auto it = g.initializers.begin(); it != g.initializers.end();) {
    if (!used.count(it->first)) it = g.initializers.erase(it);
    else ++it;
  }
  return st;
}

}  // namespace sparq
