#include "engine/passes.h"

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace sparq {
namespace {

class Matcher {
 public:
  explicit Matcher(Graph& g) : g_(g) { index(); }

  void index() {
    producer_.clear();
    consumers_.clear();
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      if (dead_.count(i)) continue;
      for (const std::string& o : g_.nodes[i].outputs) producer_[o] = i;
      for (const std::string& in : g_.nodes[i].inputs) consumers_[in].push_back(i);
    }
    outputs_.clear();
    for (const ValueInfo& v : g_.outputs) outputs_.insert(v.name);
  }

  // The single node consuming `v`, if `v` has exactly one consumer and is not a graph
  // output.
  Node* sole_consumer(const std::string& v, size_t* idx = nullptr) {
    auto it = consumers_.find(v);
    if (it == consumers_.end() || it->second.size() != 1 || outputs_.count(v)) return nullptr;
    if (idx) *idx = it->second[0];
    return &g_.nodes[it->second[0]];
  }
  Node* producer(const std::string& v, size_t* idx = nullptr) {
    auto it = producer_.find(v);
    if (it == producer_.end() || dead_.count(it->second)) return nullptr;
    if (idx) *idx = it->second;
    return &g_.nodes[it->second];
  }
  const std::vector<size_t>& consumers(const std::string& v) {
    static const std::vector<size_t> none;
    auto it = consumers_.find(v);
    return it == consumers_.end() ? none : it->second;
  }
  bool is_output(const std::string& v) const { return outputs_.count(v) != 0; }
  size_t consumer_count(const std::string& v) const {
    auto it = consumers_.find(v);
    return it == consumers_.end() ? 0 : it->second.size();
  }

  // A constant value: an initializer or the output of a Constant node.
  const Constant* constant(const std::string& v) const {
    if (const Constant* c = g_.initializer(v)) return c;
    auto it = producer_.find(v);
    if (it == producer_.end()) return nullptr;
    const Node& n = g_.nodes[it->second];
    if (n.op != "Constant") return nullptr;
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
  std::map<std::string, size_t> producer_;
  std::map<std::string, std::vector<size_t>> consumers_;
  std::set<std::string> outputs_;
  std::set<size_t> dead_;
};

bool last_axis(const Node& n, const Matcher& m) {
  if (const Attribute* a = n.attr("axes")) return a->ints.size() == 1 && a->ints[0] == -1;
  if (n.inputs.size() > 1) {
    const Constant* c = m.constant(n.inputs[1]);
    return c && c->elements() == 1 && c->type == ElemType::kI64 && c->data<int64_t>()[0] == -1;
  }
  return false;
}

// x -> ReduceMean(-1) -> m; Sub(x, m) -> d; Pow(d, 2) -> p; ReduceMean(p, -1) -> v;
// Add(v, eps) -> e; Sqrt(e) -> s; Div(d, s) -> q; Mul(q, gamma) -> y; Add(y, beta) -> z.
int fuse_layernorm(Matcher& m) {
  Graph& g = m.graph();
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (m.is_dead(i)) continue;
    Node& rm1 = g.nodes[i];
    if (rm1.op != "ReduceMean" || !last_axis(rm1, m)) continue;
    const std::string x = rm1.inputs[0];
    size_t i_sub = 0, i_pow = 0, i_rm2 = 0, i_add = 0, i_sqrt = 0, i_div = 0, i_mul = 0, i_add2 = 0;
    Node* sub = m.sole_consumer(rm1.outputs[0], &i_sub);
    if (!sub || sub->op != "Sub" || sub->inputs[0] != x || sub->inputs[1] != rm1.outputs[0])
      continue;
    const std::string d = sub->outputs[0];
    if (m.consumer_count(d) != 2) continue;
    // d feeds Pow and Div.
    Node* pw = nullptr;
    Node* dv = nullptr;
    for (size_t j = 0; j < g.nodes.size(); ++j) {
      if (m.is_dead(j)) continue;
      for (const std::string& in : g.nodes[j].inputs) {
        if (in != d) continue;
        if (g.nodes[j].op == "Pow") {
          pw = &g.nodes[j];
          i_pow = j;
        }
        if (g.nodes[j].op == "Div") {
          dv = &g.nodes[j];
          i_div = j;
        }
      }
    }
    double two = 0, eps = 0;
    if (!pw || !dv || pw->inputs[0] != d || !m.scalar(pw->inputs[1], &two) || two != 2.0) continue;
    Node* rm2 = m.sole_consumer(pw->outputs[0], &i_rm2);
    if (!rm2 || rm2->op != "ReduceMean" || !last_axis(*rm2, m)) continue;
    Node* add = m.sole_consumer(rm2->outputs[0], &i_add);
    if (!add || add->op != "Add") continue;
    const std::string* e = Matcher::other(*add, rm2->outputs[0]);
    if (!e || !m.scalar(*e, &eps)) continue;
    Node* sq = m.sole_consumer(add->outputs[0], &i_sqrt);
    if (!sq || sq->op != "Sqrt") continue;
    Node* dv2 = m.sole_consumer(sq->outputs[0], &i_div);
    if (dv2 != dv || dv->inputs[0] != d || dv->inputs[1] != sq->outputs[0]) continue;
    Node* mul = m.sole_consumer(dv->outputs[0], &i_mul);
    if (!mul || mul->op != "Mul") continue;
    const std::string* gamma = Matcher::other(*mul, dv->outputs[0]);
    if (!gamma || !g.initializer(*gamma)) continue;
    Node* add2 = m.sole_consumer(mul->outputs[0], &i_add2);
    if (!add2 || add2->op != "Add") continue;
    const std::string* beta = Matcher::other(*add2, mul->outputs[0]);
    if (!beta || !g.initializer(*beta)) continue;
    Node ln;
    ln.name = add2->name + "/fused_layernorm";
    ln.op = "LayerNormalization";
    ln.inputs = {x, *gamma, *beta};
    ln.outputs = {add2->outputs[0]};
    Attribute ax, ep;
    ax.kind = Attribute::Kind::kInt;
    ax.i = -1;
    ep.kind = Attribute::Kind::kFloat;
    ep.f = static_cast<float>(eps);
    ln.attrs = {{"axis", ax}, {"epsilon", ep}};
    for (size_t k : {i_sub, i_pow, i_rm2, i_add, i_sqrt, i_div, i_mul}) m.kill(k);
    m.kill(i);
    g.nodes[i_add2] = std::move(ln);  // the fused op takes the last node's place
    m.index();
    ++fused;
  }
  return fused;
}

// SparqMatMul -> Add(bias [N]) [-> Div(sqrt2) -> Erf -> Add(1) -> Mul(h) -> Mul(0.5)]
void fuse_epilogues(Matcher& m, PassStats& st) {
  Graph& g = m.graph();
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (m.is_dead(i) || g.nodes[i].op != "SparqMatMul" || g.nodes[i].inputs.size() != 1) continue;
    size_t i_add = 0;
    Node* add = m.sole_consumer(g.nodes[i].outputs[0], &i_add);
    if (!add || add->op != "Add") continue;
    const std::string* b = Matcher::other(*add, g.nodes[i].outputs[0]);
    const Constant* bias = b ? g.initializer(*b) : nullptr;
    if (!bias || bias->type != ElemType::kF32 || bias->shape.size() != 1) continue;
    Node& mm = g.nodes[i];
    mm.inputs.push_back(*b);
    const std::string h = add->outputs[0];
    mm.outputs = {h};
    m.kill(i_add);
    m.index();
    ++st.bias;
    // GELU (erf form) on h.
    if (m.consumer_count(h) != 2) continue;
    Node* div = nullptr;
    Node* mulh = nullptr;
    size_t i_div = 0, i_mulh = 0;
    for (size_t j = 0; j < g.nodes.size(); ++j) {
      if (m.is_dead(j)) continue;
      const Node& n = g.nodes[j];
      if (n.op == "Div" && n.inputs.size() == 2 && n.inputs[0] == h) {
        div = &g.nodes[j];
        i_div = j;
      }
      if (n.op == "Mul" && Matcher::other(n, h)) {
        mulh = &g.nodes[j];
        i_mulh = j;
      }
    }
    double s2 = 0, one = 0, half = 0;
    if (!div || !mulh || !m.scalar(div->inputs[1], &s2) || std::fabs(s2 - std::sqrt(2.0)) > 1e-4)
      continue;
    size_t i_erf = 0, i_add1 = 0, i_half = 0;
    Node* erf = m.sole_consumer(div->outputs[0], &i_erf);
    if (!erf || erf->op != "Erf") continue;
    Node* add1 = m.sole_consumer(erf->outputs[0], &i_add1);
    if (!add1 || add1->op != "Add") continue;
    const std::string* c1 = Matcher::other(*add1, erf->outputs[0]);
    if (!c1 || !m.scalar(*c1, &one) || one != 1.0) continue;
    if (m.sole_consumer(add1->outputs[0]) != mulh) continue;
    Node* mhalf = m.sole_consumer(mulh->outputs[0], &i_half);
    if (!mhalf || mhalf->op != "Mul") continue;
    const std::string* c5 = Matcher::other(*mhalf, mulh->outputs[0]);
    if (!c5 || !m.scalar(*c5, &half) || half != 0.5) continue;
    Attribute act;
    act.kind = Attribute::Kind::kString;
    act.s = "gelu_erf";
    g.nodes[i].attrs["activation"] = act;
    g.nodes[i].outputs = {mhalf->outputs[0]};
    for (size_t k : {i_div, i_erf, i_add1, i_mulh, i_half}) m.kill(k);
    m.index();
    ++st.gelu;
  }
}

// Scaled dot-product attention per head, as BERT/RoBERTa and DistilBERT export it:
//   BERT:   MatMul(Q, K^T) -> Div(c) -> Add(mask) -> Softmax(-1) -> MatMul(., V)
//   Distil: Div(Q, c) -> MatMul(., K^T) -> Where(cond, fill, .) -> Softmax(-1) -> MatMul(., V)
//           with cond = Cast(Expand(m, Shape(scores))): m is used directly (it broadcasts).
// -> SparqAttention(Q, K^T, V[, mask]) with scale = 1/c, which never materializes the
// [B, H, S, S] scores.
int fuse_attention(Matcher& m) {
  Graph& g = m.graph();
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (m.is_dead(i) || g.nodes[i].op != "Softmax") continue;
    const Node& sm = g.nodes[i];
    const Attribute* ax = sm.attr("axis");
    if (g.opset < 13 || (ax != nullptr && ax->i != -1 && ax->i != 3)) continue;
    size_t i_mm2 = 0;
    Node* mm2 = m.sole_consumer(sm.outputs[0], &i_mm2);
    if (!mm2 || mm2->op != "MatMul" || mm2->inputs[0] != sm.outputs[0]) continue;
    size_t i_pre = 0;
    Node* pre = m.producer(sm.inputs[0], &i_pre);
    if (!pre || m.consumer_count(sm.inputs[0]) != 1 || m.is_output(sm.inputs[0])) continue;
    std::vector<size_t> kill = {i, i_pre};  // i_mm2 is replaced by the fused node
    std::string q, kt, mask, kind = "none";
    double c = 0, fill = 0;
    if (pre->op == "Add") {
      // One side is Div(MatMul(Q, KT), c), the other the additive mask.
      for (int side = 0; side < 2 && q.empty(); ++side) {
        size_t i_div = 0, i_mm1 = 0;
        Node* dv = m.producer(pre->inputs[side], &i_div);
        if (!dv || dv->op != "Div" || m.consumer_count(dv->outputs[0]) != 1 ||
            !m.scalar(dv->inputs[1], &c))
          continue;
        Node* mm1 = m.producer(dv->inputs[0], &i_mm1);
        if (!mm1 || mm1->op != "MatMul" || m.consumer_count(mm1->outputs[0]) != 1) continue;
        q = mm1->inputs[0];
        kt = mm1->inputs[1];
        mask = pre->inputs[1 - side];
        kind = "add";
        kill.push_back(i_div);
        kill.push_back(i_mm1);
      }
    } else if (pre->op == "Where" && pre->inputs.size() == 3 && m.scalar(pre->inputs[1], &fill)) {
      size_t i_mm1 = 0, i_div = 0, i_cast = 0, i_exp = 0, i_shape = 0;
      Node* mm1 = m.producer(pre->inputs[2], &i_mm1);
      if (!mm1 || mm1->op != "MatMul") continue;
      Node* cast = m.producer(pre->inputs[0], &i_cast);
      Node* exp = cast && cast->op == "Cast" ? m.producer(cast->inputs[0], &i_exp) : nullptr;
      Node* shp = exp && exp->op == "Expand" ? m.producer(exp->inputs[1], &i_shape) : nullptr;
      if (!shp || shp->op != "Shape" || shp->inputs[0] != mm1->outputs[0] ||
          cast->attr("to") == nullptr || cast->attr("to")->i != 9)
        continue;
      // The scores feed exactly the Where and this Shape; the mask chain only the Where.
      if (m.consumer_count(mm1->outputs[0]) != 2 || m.consumer_count(cast->outputs[0]) != 1 ||
          m.consumer_count(exp->outputs[0]) != 1 || m.consumer_count(shp->outputs[0]) != 1)
        continue;
      Node* dv = m.producer(mm1->inputs[0], &i_div);
      if (!dv || dv->op != "Div" || m.consumer_count(dv->outputs[0]) != 1 ||
          !m.scalar(dv->inputs[1], &c))
        continue;
      q = dv->inputs[0];
      kt = mm1->inputs[1];
      mask = exp->inputs[0];
      kind = "where";
      for (size_t k : {i_mm1, i_div, i_cast, i_exp, i_shape}) kill.push_back(k);
    }
    if (q.empty() || c == 0) continue;
    Node att;
    att.name = mm2->name + "/fused_attention";
    att.op = "SparqAttention";
    att.inputs = {q, kt, mm2->inputs[1], mask};
    att.outputs = mm2->outputs;
    Attribute sc, mk, fl;
    sc.kind = fl.kind = Attribute::Kind::kFloat;
    sc.f = static_cast<float>(1.0 / c);
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
}  // namespace

PassStats optimize_graph(Graph& g) {
  PassStats st;
  {
    Matcher m(g);
    st.layernorm = fuse_layernorm(m);
    st.attention = fuse_attention(m);
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
