#include "engine/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>
#include <variant>

#include "engine/graph_index.h"
#include "engine/layout.h"
#include "engine/limits.h"
#include "engine/model.h"
#include "engine/ops/attrs.h"
#include "engine/ops/registry.h"
#include "engine/ops/shape.h"
#include "engine/plan/memory_plan.h"
#include "engine/profile.h"
#include "engine/shapes.h"
#include "formats/aligned_buffer.h"
#include "formats/error.h"
#include "kernels/common/isa.h"
#include "kernels/fm/fm.h"

namespace sparq {
namespace {

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s) { return shape_elements(s); }

// Feature-major buffers are stored in panels of kPanel tokens: element (f, m) of an
// [F][M] value lives at (m / kPanel) * F * kPanel + f * kPanel + m % kPanel, so every
// thread's tokens are one contiguous block. (Plain [F][M] rows split between two cores
// by token halves ran LayerNorm 10x slower than one core: each core's stream of rows
// kept pulling in the other core's half of the same rows; docs/performance.md.)
constexpr int64_t kPanel = 64;

inline int64_t panels_of(int64_t tokens) { return (tokens + kPanel - 1) / kPanel; }

// Inside a panel segment (Machine::exec_segment), the one panel this thread runs the
// segment's steps for; -1 outside.
thread_local int64_t t_segment_panel = -1;
// Inside a panel segment, which of its parts this thread runs (0 .. parts - 1): the slot
// of the segment's own buffers (Executor::Plan::panel_local) that its panels use in turn.
thread_local int64_t t_segment_part = 0;
inline size_t fm_bytes(int64_t features, int64_t tokens, size_t elem) {
  return static_cast<size_t>(panels_of(tokens) * kPanel * features) * elem;
}

// One addend of a fused embeddings sum: rows of a constant table gathered by int ids
// (`ids` slot), or a folded constant broadcast over batch (and over tokens when it has
// no sequence dimension).
struct EmbedTerm {
  const float* table = nullptr;
  int64_t rows = 0;          // table rows (gathers), 0 for a constant
  int ids = -1;              // slot of the ids (gathers)
  int64_t seq_stride = 0;    // constants: floats per sequence position (0: one row for all)
  int64_t batch_stride = 0;  // constants: floats per batch row (0: broadcast over batch)
};

struct Buffer {
  size_t bytes = 0;
  int first = -1, last = -1;  // steps that write it first and read it last
  size_t offset = 0;
};

// One graph value as the plan sees it.
struct Slot {
  Shape shape;
  ElemType type = ElemType::kF32;
  Value fixed;        // folded at plan time
  bool heap = false;  // its token-major form lives in the run's env (inputs, interpreter outputs)
  int fm = -1;        // buffer with the feature-major f32 form
  int tm = -1;        // buffer with a token-major copy of a feature-major value
  int q8 = -1, q8s = -1;  // per-token quantized u8 form and its scales
  int q8q = -1;           // the same u8 in quad order (QuantizeStep::quads)
  int q8_step = -1;       // the step that quantizes it
  bool output = false;    // a graph output
  int view_of = -1;       // a Reshape sharing this slot's buffers (which that slot releases)
  int64_t features() const { return shape.empty() ? 1 : shape.back(); }
  int64_t tokens() const { return features() == 0 ? 0 : numel(shape) / features(); }
};

// ---- typed steps ---------------------------------------------------------------------
// One struct per step type with named buffers (indices into the plan's buffers) and
// slots (indices into its values). Each lists what it reads and writes: buffers(f) calls
// f(buffer, writes) for each, slots(f) calls f(slot) for each value it reads from the
// run's environment (token-major or heap values).

// A node run through the reference interpreter.
struct GenericStep {
  const Node* node = nullptr;
  std::vector<int> ins;   // slots, -1 = omitted
  int out = -1;           // slot (heap)
  std::vector<int> more;  // slots (heap) of outputs 1.. (DynamicQuantizeLinear), -1 = omitted
  static constexpr const char* kName = "generic";
  template <class F>
  void buffers(F&&) const {}
  template <class F>
  void slots(F&& f) const {
    for (int i : ins) f(i);
  }
};
// The additive attention mask from the [B, S] mask input (SparqMaskBias): a new heap
// value [B, 1, 1, S], as the interpreter computes it (mask_bias).
struct MaskBiasStep {
  int src = -1;  // slot of the mask
  int out = -1;  // slot (heap)
  float fill = 0.0f;
  static constexpr const char* kName = "mask_bias";
  template <class F>
  void buffers(F&&) const {}
  template <class F>
  void slots(F&& f) const {
    f(src);
  }
};
// Token-major value (slot `src`) -> feature-major panels.
struct ToFmStep {
  int src = -1;  // slot
  int out = -1;  // buffer
  static constexpr const char* kName = "to_feature_major";
  template <class F>
  void buffers(F&& f) const {
    f(out, true);
  }
  template <class F>
  void slots(F&& f) const {
    f(src);
  }
};
// Feature-major panels -> a token-major buffer, or a fresh heap value (a graph output).
struct ToTmStep {
  int src = -1;       // buffer
  int out = -1;       // buffer, or -1 with out_slot
  int out_slot = -1;  // slot given a new heap value
  static constexpr const char* kName = "to_token_major";
  template <class F>
  void buffers(F&& f) const {
    f(src, false);
    f(out, true);
  }
  template <class F>
  void slots(F&&) const {}
};
// Per-token quantization of a step's f32 output into u8 panels [F][64] (`out`, -1 = none)
// and their scales, and, for the 1x4 kernel's consumers, the same bytes in quad order per
// panel [ceil(F/4)][64][4] (`quads`, zero past F and past the last token; -1 = not needed).
// One pass writes every form its consumers read.
struct QuantOut {
  int out = -1, scales = -1, quads = -1;  // buffers
  U8PackQuadsFn pack_quads = nullptr;     // this CPU's packer (with quads)
  template <class F>
  void buffers(F&& f) const {
    f(out, true);
    f(scales, true);
    f(quads, true);
  }
};
// Per-token u8 quantization of feature-major panels (a value whose producer does not
// quantize it itself).
struct QuantizeStep {
  int src = -1;  // buffer
  QuantOut q;
  static constexpr const char* kName = "quantize";
  template <class F>
  void buffers(F&& f) const {
    f(src, false);
    q.buffers(f);
  }
  template <class F>
  void slots(F&&) const {}
};
// LayerNorm over features, optionally of x + residual, and with `q` its quantization,
// from the maxima the LayerNorm takes while it writes (FmLayerNormFn): one pass over the
// output fewer than a QuantizeStep after it, the same bytes.
struct LayerNormStep {
  int src = -1, residual = -1, out = -1;  // buffers
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float eps = 1e-5f;
  QuantOut q;
  static constexpr const char* kName = "layernorm";
  template <class F>
  void buffers(F&& f) const {
    f(src, false);
    f(residual, false);
    f(out, true);
    q.buffers(f);
  }
  template <class F>
  void slots(F&&) const {}
};
struct AddStep {
  int x = -1, y = -1, out = -1;  // buffers
  static constexpr const char* kName = "add";
  template <class F>
  void buffers(F&& f) const {
    f(x, false);
    f(y, false);
    f(out, true);
  }
  template <class F>
  void slots(F&&) const {}
};
// A packed sparse or dense matmul with its epilogue.
struct MatMulStep {
  const PackedWeights* w = nullptr;
  int src = -1;          // buffer: u8 quantized (int8 weights) or f32 feature-major
  int token_scale = -1;  // buffer: per-token scales (int8)
  int residual = -1;     // buffer added in the epilogue
  int out = -1;          // buffer
  const float* bias = nullptr;
  Activation act = Activation::kNone;
  // Chosen when the plan is made: the kernels (this CPU's table) and the work split (whole
  // 64-token panels per thread when there are at least as many panels as threads, else
  // each panel's block-rows over the threads).
  const SpmmKernels* kernels = nullptr;
  bool split_rows = false;
  bool quads = false;  // src is in quad order: the 1x4 kernel (spmm_u8s8_quads)
  static constexpr const char* kName = "matmul";
  template <class F>
  void buffers(F&& f) const {
    f(src, false);
    f(token_scale, false);
    f(residual, false);
    f(out, true);
  }
  template <class F>
  void slots(F&&) const {}
};
struct AttentionStep {
  int q = -1, k = -1, v = -1, out = -1;  // buffers
  int mask = -1;                         // slot of the mask (token-major), -1 = none
  FmAttentionArgs att;                   // shape and mask fields; pointers filled per run
  bool bf16 = false;                     // low-precision attention (int8 models)
  // Chosen when the plan is made (Machine::choose_attention): the kernel, whether K and V
  // are packed first (int8), and the work items and parts.
  FmAttentionFn kernel = nullptr;
  bool prep = false;
  int64_t items = 0, parts = 0, scratch_floats = 0, packed_floats = 0;
  static constexpr const char* kName = "attention";
  template <class F>
  void buffers(F&& f) const {
    f(q, false);
    f(k, false);
    f(v, false);
    f(out, true);
  }
  template <class F>
  void slots(F&& fn) const {
    fn(mask);
  }
};
// Gathers + constants summed per token, then LayerNorm, into feature-major panels.
struct EmbedStep {
  std::vector<EmbedTerm> terms;
  std::vector<int> ids;  // slots of the gathered ids (kept alive to here)
  int out = -1;          // buffer
  const float* gamma = nullptr;
  const float* beta = nullptr;
  float eps = 1e-5f;
  int64_t seq = 0;  // tokens per sequence
  QuantOut q;       // as LayerNormStep's
  static constexpr const char* kName = "embeddings";
  template <class F>
  void buffers(F&& f) const {
    f(out, true);
    q.buffers(f);
  }
  template <class F>
  void slots(F&& f) const {
    for (int i : ids) f(i);
  }
};

struct Step {
  std::variant<GenericStep, MaskBiasStep, ToFmStep, ToTmStep, QuantizeStep, LayerNormStep, AddStep,
               MatMulStep, AttentionStep, EmbedStep>
      op;
  int64_t rows = 0, cols = 0;  // features x tokens
  std::vector<int> release;    // heap slots dropped after this step

  template <class T>
  Step(T s, int64_t r, int64_t c) : op(std::move(s)), rows(r), cols(c) {}
  const char* name() const {
    return std::visit([](const auto& s) { return std::decay_t<decltype(s)>::kName; }, op);
  }
  template <class F>
  void buffers(F&& f) const {
    std::visit([&](const auto& s) { s.buffers(f); }, op);
  }
  template <class F>
  void slots(F&& f) const {
    std::visit([&](const auto& s) { s.slots(f); }, op);
  }
};

}  // namespace

struct Executor::Plan {
  std::vector<Slot> slots;
  std::vector<Buffer> buffers;
  std::vector<Step> steps;
  std::vector<int> seg_end;  // per step: the end of its panel segment (i + 1: none)
  // Per buffer: its bytes per panel when it lives and dies inside one panel segment, so
  // that it holds only the panels being run, one slot per part of the segment (each
  // thread's panels take its slot in turn and it stays in that core's cache); 0 for a
  // buffer of every panel.
  std::vector<int64_t> panel_local;
  std::vector<std::pair<std::string, int>> outputs;
  std::vector<std::pair<std::string, int>> inputs;
  size_t arena_bytes = 0;
  AlignedBuffer arena;
  PlanSummary summary;
  std::string unplannable;  // why these shapes cannot be planned ("" when planned)
};

namespace {

// Runtime state of one run: where every buffer is and the heap values alive.
struct RunState {
  std::vector<uint8_t*> buf;
  const std::vector<int64_t>* panel_local = nullptr;  // the plan's
  std::vector<Value> env;
  size_t live = 0, peak = 0;
};

class Machine {
 public:
  Machine(const Model& model, ThreadPool* pool, AlignedBuffer* scratch, const RuntimeOptions& opts)
      : model_(model), pool_(pool), fm_(fm_kernels()), scratch_(*scratch), opts_(opts) {}

  // Token-major view of a slot's value for the interpreter.
  Value tm_value(const Slot& s, int slot, const RunState& st) const {
    if (s.fixed) return s.fixed;
    if (s.heap) return st.env[static_cast<size_t>(slot)];
    auto v = std::make_shared<Constant>();
    v->type = s.type;
    v->shape = s.shape;
    v->view = st.buf[static_cast<size_t>(s.tm)];
    return v;
  }

  // Panel pn of buffer b (panel_bytes apart): in a segment's own buffer, this thread's slot.
  static uint8_t* at(const RunState& st, int b, int64_t pn, int64_t panel_bytes) {
    const size_t i = static_cast<size_t>(b);
    if ((*st.panel_local)[i] > 0 && t_segment_panel >= 0) pn = t_segment_part;
    return st.buf[i] + pn * panel_bytes;
  }
  static float* f32at(const RunState& st, int b, int64_t pn, int64_t panel_floats) {
    return reinterpret_cast<float*>(at(st, b, pn, panel_floats * 4));
  }

  void exec(const Executor::Plan& p, const Step& s, RunState& st) {
    if (opts_.profile) {
      const auto t0 = Profile::Clock::now();
      exec_step(p, s, st);
      profile_.add(profile_key(s), t0);
      return;
    }
    exec_step(p, s, st);
  }

  void print_profile() {
    if (opts_.profile) profile_.print();
  }

  // Runs one step of a plan (every run replays the plan's steps).
  void exec_step(const Executor::Plan& p, const Step& step, RunState& st) {
    std::visit([&](const auto& s) { run(p, step, s, st); }, step.op);
    if (t_segment_panel < 0) release(step, st);
  }

  void run(const Executor::Plan& p, const Step&, const GenericStep& s, RunState& st) {
    std::vector<Value> ins;
    for (int i : s.ins)
      ins.push_back(i < 0 ? nullptr : tm_value(p.slots[static_cast<size_t>(i)], i, st));
    std::vector<Value> outs =
        interpret_node_outputs(model_.graph(), *s.node, ins, nullptr,
                               [this](int64_t parts, const std::function<void(int64_t)>& body) {
                                 pool_->parallel_for(parts, body);
                               });
    for (size_t k = 0; k <= s.more.size(); ++k) {
      const int slot = k == 0 ? s.out : s.more[k - 1];
      if (slot < 0) continue;
      Value v = k < outs.size() ? outs[k] : nullptr;
      if (!v) throw Error(Status::kInternal, "node '" + s.node->name + "' produced no value");
      if (v->view != nullptr && !v->owner) {
        // A view of an input (Identity, Reshape) that may be a token-major arena
        // buffer: copied, since the buffer is reused after this step.
        auto c = std::make_shared<Constant>();
        c->type = v->type;
        c->shape = v->shape;
        c->bytes.assign(v->view,
                        v->view + static_cast<size_t>(v->elements()) * elem_type_size(v->type));
        v = c;
      }
      const Slot& o = p.slots[static_cast<size_t>(slot)];
      if (v->shape != o.shape || v->type != o.type) {  // the shape pass predicted otherwise
        throw Error(Status::kInternal, "node '" + s.node->name + "' (" + s.node->op +
                                           "): the plan expected another shape or type");
      }
      st.live += v->bytes.size();
      st.peak = std::max(st.peak, st.live);
      st.env[static_cast<size_t>(slot)] = std::move(v);
    }
  }

  void run(const Executor::Plan& p, const Step&, const MaskBiasStep& s, RunState& st) {
    Value v = mask_bias(*tm_value(p.slots[static_cast<size_t>(s.src)], s.src, st), s.fill);
    st.live += v->bytes.size();
    st.peak = std::max(st.peak, st.live);
    st.env[static_cast<size_t>(s.out)] = std::move(v);
  }

  void run(const Executor::Plan& p, const Step& step, const ToFmStep& s, RunState& st) {
    auto f32 = [&](int b) { return reinterpret_cast<float*>(st.buf[static_cast<size_t>(b)]); };
    const int64_t F = step.rows, M = step.cols;
    const Value v = tm_value(p.slots[static_cast<size_t>(s.src)], s.src, st);
    float* dst = f32(s.out);
    const float* src = v->data<float>();
    by_panels(M, F, [&](int64_t pn, int64_t n) {
      transpose_tiled(src + pn * kPanel * F, n, F, F, dst + pn * F * kPanel, kPanel);
    });
  }

  void run(const Executor::Plan& p, const Step& step, const ToTmStep& s, RunState& st) {
    auto f32 = [&](int b) { return reinterpret_cast<float*>(st.buf[static_cast<size_t>(b)]); };
    const int64_t F = step.rows, M = step.cols;
    float* dst;
    if (s.out_slot >= 0) {
      const Slot& o = p.slots[static_cast<size_t>(s.out_slot)];
      auto v = std::make_shared<Constant>();
      v->type = ElemType::kF32;
      v->shape = o.shape;
      v->bytes.resize(static_cast<size_t>(F * M) * 4);
      dst = reinterpret_cast<float*>(v->bytes.data());
      st.live += v->bytes.size();
      st.peak = std::max(st.peak, st.live);
      st.env[static_cast<size_t>(s.out_slot)] = v;
    } else {
      dst = f32(s.out);
    }
    const float* src = f32(s.src);
    by_panels(M, F, [&](int64_t pn, int64_t n) {
      transpose_tiled(src + pn * F * kPanel, F, n, kPanel, dst + pn * kPanel * F, F);
    });
  }

  void run(const Executor::Plan& p, const Step& step, const EmbedStep& s, RunState& st) {
    auto f32 = [&](int b) { return reinterpret_cast<float*>(st.buf[static_cast<size_t>(b)]); };
    const int64_t F = step.rows, M = step.cols;
    // Sum of gathered rows and constants per token, written into the panel, then
    // LayerNorm in place.
    std::vector<const int64_t*> ids64(s.terms.size(), nullptr);
    std::vector<const int32_t*> ids32(s.terms.size(), nullptr);
    for (size_t i = 0; i < s.terms.size(); ++i) {
      if (s.terms[i].ids < 0) continue;
      const Value v = tm_value(p.slots[static_cast<size_t>(s.terms[i].ids)], s.terms[i].ids, st);
      if (v->type == ElemType::kI64) ids64[i] = v->data<int64_t>();
      else ids32[i] = v->data<int32_t>();
    }
    // Indices first, on the calling thread: an out-of-range id is an error here, as
    // in the interpreter's Gather (negative ids count from the end, as in ONNX).
    std::vector<const float*> rows(s.terms.size() * static_cast<size_t>(M));
    for (size_t i = 0; i < s.terms.size(); ++i) {
      const EmbedTerm& e = s.terms[i];
      for (int64_t m = 0; m < M; ++m) {
        const float* r;
        if (e.ids >= 0) {
          const int64_t given = ids64[i] != nullptr ? ids64[i][m] : ids32[i][m];
          int64_t id = 0;
          if (!gather_index(given, e.rows, &id)) {
            throw Error(Status::kInvalidArgument,
                        "embeddings: index " + std::to_string(given) + " at token " +
                            std::to_string(m) + " is outside [0, " + std::to_string(e.rows) + ")");
          }
          r = e.table + id * F;
        } else {
          r = e.table + (m % s.seq) * e.seq_stride + (m / s.seq) * e.batch_stride;
        }
        rows[i * static_cast<size_t>(M) + static_cast<size_t>(m)] = r;
      }
    }
    float* y = f32(s.out);
    const size_t nt = s.terms.size();
    by_panels(M, 4 * F, [&](int64_t pn, int64_t n) {
      // Each token's sum along its features (contiguous rows, vector adds), then one
      // tiled transpose into the panel: a token per column written directly was a
      // strided scalar store per element (0.25-0.48 ms per BERT-base run).
      thread_local std::vector<float> sum;
      sum.resize(static_cast<size_t>(n * F));
      for (int64_t j = 0; j < n; ++j) {
        const size_t m = static_cast<size_t>(pn * kPanel + j);
        float* __restrict out = sum.data() + j * F;
        const float* __restrict r0 = rows[m];
        std::copy(r0, r0 + F, out);
        for (size_t i = 1; i < nt; ++i) {
          const float* __restrict ri = rows[i * static_cast<size_t>(M) + m];
          for (int64_t f = 0; f < F; ++f) out[f] += ri[f];
        }
      }
      float* panel = y + pn * F * kPanel;
      transpose_tiled(sum.data(), n, F, F, panel, kPanel);
      layernorm_panel(panel, panel, F, pn, n, s.gamma, s.beta, s.eps, s.q, st);
    });
  }

  // LayerNorm of panel pn (n tokens, F features) from x into y (x may equal y), and with
  // q its quantization from the maxima the LayerNorm takes.
  void layernorm_panel(const float* x, float* y, int64_t F, int64_t pn, int64_t n,
                       const float* gamma, const float* beta, float eps, const QuantOut& q,
                       RunState& st) const {
    alignas(64) float mx[kPanel];
    float* absmax = q.scales >= 0 ? mx : nullptr;
    fm_.layernorm(x, kPanel, F, 0, n, gamma, beta, eps, y, kPanel, absmax);
    if (q.scales >= 0) quantize_panel(q, y, F, pn, n, absmax, st);
  }

  // Quantizes panel pn (n tokens, F features) into q's buffers; absmax: the per-token
  // maxima its producer took, or null. Without a plain u8 buffer (every consumer reads the
  // quad order), the u8 panel goes through this thread's scratch on its way to the quads.
  void quantize_panel(const QuantOut& q, const float* panel, int64_t F, int64_t pn, int64_t n,
                      const float* absmax, RunState& st) const {
    thread_local AlignedBuffer plain;
    uint8_t* qp;
    if (q.out >= 0) {
      qp = at(st, q.out, pn, F * kPanel);
    } else {
      if (plain.size() < static_cast<size_t>(F * kPanel)) plain.resize(F * kPanel);
      qp = plain.as<uint8_t>();
    }
    float* sc = f32at(st, q.scales, pn, kPanel);
    fm_.quantize(panel, kPanel, F, 0, n, absmax, qp, kPanel, sc);
    // The quad order of the panel just written, while it is in this core's L1/L2.
    if (q.quads >= 0) {
      const int64_t quad_panel = (F + 3) / 4 * 4 * kPanel;
      q.pack_quads(qp, kPanel, F, n, at(st, q.quads, pn, quad_panel), kPanel);
    }
  }

  void run(const Executor::Plan&, const Step& step, const QuantizeStep& s, RunState& st) {
    const int64_t F = step.rows, M = step.cols;
    by_panels(M, F, [&](int64_t pn, int64_t n) {
      quantize_panel(s.q, f32at(st, s.src, pn, F * kPanel), F, pn, n, nullptr, st);
    });
  }

  void run(const Executor::Plan&, const Step& step, const LayerNormStep& s, RunState& st) {
    const int64_t F = step.rows, M = step.cols;
    by_panels(M, 3 * F, [&](int64_t pn, int64_t n) {
      const float* xp = f32at(st, s.src, pn, F * kPanel);
      float* yp = f32at(st, s.out, pn, F * kPanel);
      if (s.residual >= 0) {  // residual add + LayerNorm: the sum stays in this core's cache
        const float* rp = f32at(st, s.residual, pn, F * kPanel);
        for (int64_t f = 0; f < F; ++f)
          for (int64_t j = 0; j < n; ++j)
            yp[f * kPanel + j] = xp[f * kPanel + j] + rp[f * kPanel + j];
        xp = yp;
      }
      layernorm_panel(xp, yp, F, pn, n, s.gamma, s.beta, s.eps, s.q, st);
    });
  }

  void run(const Executor::Plan&, const Step& step, const AddStep& s, RunState& st) {
    const int64_t F = step.rows, M = step.cols;
    by_panels(M, F, [&](int64_t pn, int64_t n) {
      const float* x = f32at(st, s.x, pn, F * kPanel);
      const float* y = f32at(st, s.y, pn, F * kPanel);
      float* z = f32at(st, s.out, pn, F * kPanel);
      for (int64_t f = 0; f < F; ++f) {
        const int64_t o = f * kPanel;
        for (int64_t j = 0; j < n; ++j) z[o + j] = x[o + j] + y[o + j];
      }
    });
  }

  void run(const Executor::Plan&, const Step& step, const MatMulStep& s, RunState& st) {
    const int64_t F = step.rows, M = step.cols;
    const int64_t K = s.w->k;
    const bool int8 = s.w->type == WeightType::kS8;
    const SpmmKernels& k = *s.kernels;
    auto one_panel = [&](int64_t pn, int64_t n, ThreadPool* pool) {
      Epilogue ep;
      ep.out_f32 = f32at(st, s.out, pn, F * kPanel);
      ep.ld_out = kPanel;
      ep.bias = s.bias;
      ep.activation = s.act;
      if (s.residual >= 0) {
        ep.residual = f32at(st, s.residual, pn, F * kPanel);
        ep.ld_residual = kPanel;
      }
      if (int8 && s.quads) {
        ep.channel_scale = s.w->scales;
        ep.token_scale = f32at(st, s.token_scale, pn, kPanel);
        const int64_t quad_panel = (K + 3) / 4 * 4 * kPanel;
        spmm_u8s8_quads(k, pool, *s.w, at(st, s.src, pn, quad_panel), kPanel, n, ep);
      } else if (int8) {
        ep.channel_scale = s.w->scales;
        ep.token_scale = f32at(st, s.token_scale, pn, kPanel);
        spmm_u8s8(k, pool, *s.w, at(st, s.src, pn, K * kPanel), kPanel, n, ep);
      } else {
        spmm_f32(k, pool, *s.w, f32at(st, s.src, pn, K * kPanel), kPanel, n, ep);
      }
    };
    const int64_t panels = panels_of(M);
    if (!s.split_rows) {
      // Whole panels per thread: each core keeps its tokens in its own cache.
      by_panels(M, int64_t{1} << 20, [&](int64_t pn, int64_t n) { one_panel(pn, n, nullptr); });
    } else {
      // Fewer panels than threads: split each panel's block-rows instead.
      for (int64_t pn = 0; pn < panels; ++pn)
        one_panel(pn, std::min(kPanel, M - pn * kPanel), pool_);
    }
  }

  void run(const Executor::Plan& p, const Step&, const AttentionStep& s, RunState& st) {
    auto f32 = [&](int b) { return reinterpret_cast<float*>(st.buf[static_cast<size_t>(b)]); };
    FmAttentionArgs a = s.att;
    a.panel = kPanel;
    a.q = f32(s.q);
    a.k = f32(s.k);
    a.v = f32(s.v);
    a.out = f32(s.out);
    if (s.mask >= 0) {
      const Value m = tm_value(p.slots[static_cast<size_t>(s.mask)], s.mask, st);
      if (s.att.add_mask != nullptr) a.add_mask = m->data<float>();
      else a.select_mask = m->data<uint8_t>();
    }
    const FmAttentionFn kernel = s.kernel;
    const bool prep = s.prep;
    const int64_t items = s.items, np = s.parts, scratch = s.scratch_floats;
    const size_t need = static_cast<size_t>(np * scratch + s.packed_floats) * 4;
    if (scratch_.size() < need) scratch_.resize(need);
    float* base = scratch_.as<float>();
    if (prep) {
      a.kv_packed = base + np * scratch;
      const int64_t units = fm_attention_int8_units(a);
      const int64_t nu = std::min<int64_t>(units, np);
      pool_->parallel_for(nu, [&](int64_t part) {
        fm_.attention_int8_prep(a, units * part / nu, units * (part + 1) / nu,
                                base + part * scratch);
      });
    }
    pool_->parallel_for(np, [&](int64_t part) {
      kernel(a, items * part / np, items * (part + 1) / np, base + part * scratch);
    });
  }

  static void release(const Step& s, RunState& st) {
    for (int r : s.release) {
      Value& v = st.env[static_cast<size_t>(r)];
      if (v && v->view == nullptr) st.live -= v->bytes.size();
      v.reset();
    }
  }

  // Whether a step can run inside a panel segment: it reads and writes only its own
  // panels' tokens, through by_panels, and cannot fail.
  bool panel_local(const Step& s) const {
    if (const auto* mm = std::get_if<MatMulStep>(&s.op)) return !mm->split_rows;
    return std::holds_alternative<LayerNormStep>(s.op) ||
           std::holds_alternative<QuantizeStep>(s.op) || std::holds_alternative<AddStep>(s.op);
  }

  int threads() const { return pool_->threads(); }

  // Whether runs of panel-local steps go out as segments (Machine::exec_segment): always
  // but under SPARQ_PROFILE=1, which times steps one by one. At one thread too, where the
  // segment's own buffers (Plan::panel_local) then hold one panel each: BERT-base 90% int8
  // at seq 384, 1 thread, 61-69 -> 52-59 ms (docs/performance.md, session 18).
  bool segments_run() const { return !opts_.profile || opts_.profile_segments; }

  // The attention kernel and its work split for a step's shapes (at planning).
  void choose_attention(AttentionStep* t) const {
    FmAttentionArgs& a = t->att;
    a.panel = kPanel;
    t->kernel = t->bf16 ? fm_low_precision_attention(fm_, opts_.attention, nullptr) : fm_.attention;
    // The int8 kernel's K and V are packed first, each key chunk by the thread whose
    // panel holds it, into one buffer all items read (int8, a quarter of the fp32
    // bytes another core would otherwise fetch, and no head packed twice).
    t->prep = t->kernel == fm_.attention_int8 && fm_.attention_int8_prep != nullptr;
    // The fp32 and bf16 kernels pack K and V per head themselves: with at least one
    // 64-token panel of queries per thread, each thread takes its own panels for every
    // head (queries and outputs stay in its cache). Otherwise, and always for the
    // int8 kernel, items go out in smaller dynamic parts, which keeps a core that
    // falls behind from holding up the step (A/B on BERT-base int8 at 2 threads:
    // attention 1.3-2.0 against 1.4-2.6 ms per run when this machine was noisy,
    // equal when quiet).
    const int64_t threads = pool_->threads(), qb = fm_.query_block;
    const int64_t blocks = (a.seq + qb - 1) / qb;
    if (!t->prep && threads > 1 && kPanel % qb == 0 && a.batch == 1 &&
        blocks >= threads * (kPanel / qb)) {
      a.chunk_blocks = kPanel / qb;
    }
    t->items = fm_attention_items(a, qb);
    t->parts = a.chunk_blocks > 0 ? threads : std::min<int64_t>(t->items, threads * 4);
    t->scratch_floats = fm_attention_scratch_floats(a, qb);
    t->packed_floats = t->prep ? a.batch * a.heads * fm_attention_int8_head_floats(a) : 0;
  }

  // Runs steps [first, last), all panel-local on the same tokens, in one parallel
  // region: each thread takes its panels (the same split as by_panels) through every
  // step, so there is no barrier between the steps (none is needed: a panel's step
  // reads only that panel of earlier steps' outputs).
  void exec_segment(const Executor::Plan& p, const Step* first, const Step* last, RunState& st) {
    const int64_t m = first->cols, panels = panels_of(m);
    const int64_t np = std::min<int64_t>(panels, pool_->threads());
    if (opts_.profile) {
      profile_segment(p, first, last, st, np);
    } else {
      pool_->parallel_for(np, [&](int64_t part) { segment_part(p, first, last, st, part, np); });
    }
    for (const Step* s = first; s != last; ++s) release(*s, st);
  }

 private:
  // Part `part` of np of a segment: its panels through every step. step_ms (profiling):
  // this part's time in each step, added.
  void segment_part(const Executor::Plan& p, const Step* first, const Step* last, RunState& st,
                    int64_t part, int64_t np, double* step_ms = nullptr) {
    const int64_t panels = panels_of(first->cols);
    t_segment_part = part;
    for (int64_t pn = panels * part / np; pn < panels * (part + 1) / np; ++pn) {
      t_segment_panel = pn;
      for (const Step* s = first; s != last; ++s) {
        if (step_ms == nullptr) {
          exec_step(p, *s, st);
          continue;
        }
        const auto t0 = Profile::Clock::now();
        exec_step(p, *s, st);
        step_ms[s - first] +=
            std::chrono::duration<double, std::milli>(Profile::Clock::now() - t0).count();
      }
    }
    t_segment_panel = -1;
  }

  static std::string profile_key(const Step& s) {
    std::string key = s.name();
    if (const auto* g = std::get_if<GenericStep>(&s.op)) key += " " + g->node->op;
    if (const auto* mm = std::get_if<MatMulStep>(&s.op))
      key += mm->w->type == WeightType::kS8 ? " int8" : " fp32";
    return key;
  }

  // SPARQ_PROFILE=segments: a segment runs as one region, as it does unprofiled. Keys:
  // "seg <steps> wall" (the region), "... slowest part" and "... fastest part" (the
  // threads' shares: their difference is time a thread waited), "... last start" (how long
  // after the region began its last part started: a worker's wake-up), and each step's
  // thread time summed over the parts, "<step> (all threads)", to set against its time at
  // one thread. A region in which one thread ran more than one part counts a call of
  // "... shared a thread".
  void profile_segment(const Executor::Plan& p, const Step* first, const Step* last, RunState& st,
                       int64_t np) {
    using Clock = Profile::Clock;
    struct Part {
      Clock::time_point start, end;
      std::thread::id thread;
    };
    const size_t steps = static_cast<size_t>(last - first);
    std::vector<Part> parts(static_cast<size_t>(np));
    std::vector<double> step_ms(static_cast<size_t>(np) * steps, 0.0);
    const Clock::time_point t0 = Clock::now();
    pool_->parallel_for(np, [&](int64_t part) {
      Part& r = parts[static_cast<size_t>(part)];
      r.start = Clock::now();
      r.thread = std::this_thread::get_id();
      segment_part(p, first, last, st, part, np, &step_ms[static_cast<size_t>(part) * steps]);
      r.end = Clock::now();
    });
    auto ms = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration<double, std::milli>(b - a).count();
    };
    const double wall = ms(t0, Clock::now());
    std::string key = "seg";
    for (const Step* s = first; s != last; ++s)
      key += std::string(s == first ? " " : "+") + s->name();
    double slowest = 0, fastest = 1e300, latest = 0;
    std::set<std::thread::id> threads;
    for (const Part& r : parts) {
      slowest = std::max(slowest, ms(r.start, r.end));
      fastest = std::min(fastest, ms(r.start, r.end));
      latest = std::max(latest, ms(t0, r.start));
      threads.insert(r.thread);
    }
    profile_.add_ms(key + " wall", wall);
    profile_.add_ms(key + " slowest part", slowest);
    profile_.add_ms(key + " fastest part", fastest);
    profile_.add_ms(key + " last start", latest);
    if (static_cast<int64_t>(threads.size()) < np) profile_.add_ms(key + " shared a thread", 0);
    for (size_t i = 0; i < steps; ++i) {
      double sum = 0;
      for (int64_t part = 0; part < np; ++part)
        sum += step_ms[static_cast<size_t>(part) * steps + i];
      profile_.add_ms(profile_key(first[i]) + " (all threads)", sum);
    }
  }

  // f(panel, tokens in it) for every kPanel-token panel of [0, m), contiguous ranges of
  // panels per thread (the same split for every step, so a thread's tokens stay in its
  // cache); serial when the work (m x cost per token) is small.
  template <class F>
  void by_panels(int64_t m, int64_t cost_per_token, F&& f) {
    if (t_segment_panel >= 0) {  // inside a segment: this thread's panel only
      f(t_segment_panel, std::min(kPanel, m - t_segment_panel * kPanel));
      return;
    }
    const int64_t panels = panels_of(m);
    auto range = [&](int64_t p0, int64_t p1) {
      for (int64_t pn = p0; pn < p1; ++pn) f(pn, std::min(kPanel, m - pn * kPanel));
    };
    const int64_t np = std::min<int64_t>(panels, pool_->threads());
    if (np <= 1 || m * cost_per_token < (int64_t{1} << 15)) {
      range(0, panels);
      return;
    }
    pool_->parallel_for(np,
                        [&](int64_t part) { range(panels * part / np, panels * (part + 1) / np); });
  }

  const Model& model_;
  ThreadPool* pool_;
  const FmKernels& fm_;
  AlignedBuffer& scratch_;
  const RuntimeOptions& opts_;
  Profile profile_;  // SPARQ_PROFILE: this run's steps
};

// Records a plan while running it (see executor.h).
class Planner {
 public:
  Planner(const Model& model, Executor::Plan& plan, const Machine& machine,
          const PlanOptions& options)
      : model_(model),
        g_(model.graph()),
        ix_(model.graph()),
        p_(plan),
        m_(machine),
        options_(options) {
    // An int8 model (any int8 SparqMatMul) runs attention in int8 or bf16 where the CPU can
    // (fm_low_precision_attention).
    for (const Node& n : g_.nodes) {
      if (op_of(n) == OpId::kSparqMatMul && attrs(n).int8) int8_model_ = true;
    }
  }

  // Plans the graph for inputs of these shapes and types, from shapes alone: nothing
  // runs here (constant subgraphs are folded); the first run is the plan's first replay.
  void run(const std::map<std::string, Value>& inputs) {
    for (const ValueInfo& vi : g_.inputs) {
      const Value& v = inputs.at(vi.name);
      const int s = new_slot(vi.name, v->shape, v->type);
      p_.slots[static_cast<size_t>(s)].heap = true;
      p_.inputs.push_back({vi.name, s});
    }
    shape_pass(inputs);
    done_.assign(g_.nodes.size(), false);
    find_embeddings();
    find_attention();
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      if (!done_[i]) node(i);
    }
    for (const ValueInfo& vi : g_.outputs) {
      const int s = slot_of(vi.name);
      Slot& o = p_.slots[static_cast<size_t>(s)];
      if (!o.fixed && !o.heap) {
        ToTmStep t;
        t.src = o.fm;
        t.out_slot = s;
        o.heap = true;
        emit(Step(t, o.features(), o.tokens()));
      }
      p_.outputs.push_back({vi.name, s});
    }
    finish();
  }

 private:
  int new_slot(const std::string& name, Shape shape, ElemType type) {
    Slot s;
    s.shape = std::move(shape);
    s.type = type;
    s.output = ix_.is_output(name);
    p_.slots.push_back(std::move(s));
    const int id = static_cast<int>(p_.slots.size()) - 1;
    ids_[name] = id;
    return id;
  }
  // The shape pass: every value's shape and type for these inputs, before anything is
  // lowered. A node whose inputs are all static (initializers, folded values; Shape reads
  // only a shape) is evaluated now by the interpreter, exactly as a run would: its value
  // is static too. Any other node gets its outputs' shapes from its op's shape rule
  // (engine/ops/shape.h); a shape known only at run time makes the graph Unplannable.
  void shape_pass(const std::map<std::string, Value>& inputs) {
    for (const auto& kv : g_.initializers)
      meta_[kv.first] = {kv.second->shape, kv.second->type, kv.second};
    for (const ValueInfo& vi : g_.inputs) {
      const Value& v = inputs.at(vi.name);
      meta_[vi.name] = {v->shape, v->type, nullptr};
    }
    auto matmul_n = [&](const Node& mm) {
      return static_cast<int64_t>(model_.packed(attrs(mm).weight).n);
    };
    for (const Node& n : g_.nodes) {
      if (n.outputs.empty()) continue;
      std::vector<const ValueMeta*> ms;
      bool all_static = true;
      for (const std::string& in : n.inputs) {
        if (in.empty()) {
          ms.push_back(nullptr);
          continue;
        }
        auto it = meta_.find(in);
        if (it == meta_.end())
          throw Error(Status::kFormatError, "value '" + in + "' is used before it is produced");
        ms.push_back(&it->second);
        all_static = all_static && it->second.value != nullptr;
      }
      const bool shape_only = op_of(n) == OpId::kShape && !n.inputs.empty();
      if (all_static || shape_only) {  // (a Constant node has no inputs: static)
        std::vector<Value> ins;
        for (const ValueMeta* m : ms) ins.push_back(m ? m->value : nullptr);
        if (shape_only) {  // depends on the shape only
          auto c = std::make_shared<Constant>();
          c->type = ms[0]->type;
          c->shape = ms[0]->shape;
          ins[0] = c;
        }
        const std::vector<Value> vs = interpret_node_outputs(g_, n, ins);
        for (size_t k = 0; k < n.outputs.size() && k < vs.size(); ++k) {
          if (!n.outputs[k].empty() && vs[k])
            meta_[n.outputs[k]] = {vs[k]->shape, vs[k]->type, vs[k]};
        }
        continue;
      }
      std::vector<ValueMeta> out;
      try {
        out = infer_node(n, g_.opset, ms, matmul_n);
      } catch (const Error& e) {
        if (e.status() != Status::kUnsupported) throw;
        throw Unplannable(e.what());
      }
      for (size_t k = 0; k < n.outputs.size() && k < out.size(); ++k) {
        if (n.outputs[k].empty()) continue;
        checked_elements(out[k].shape, elem_type_size(out[k].type), elem_type_name(out[k].type));
        meta_[n.outputs[k]] = std::move(out[k]);
      }
    }
  }
  const ValueMeta& meta(const std::string& name) const { return meta_.at(name); }
  bool is_static(const std::string& name) const {
    auto it = meta_.find(name);
    return it != meta_.end() && it->second.value != nullptr;
  }

  int slot_of(const std::string& name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    if (!is_static(name))
      throw Error(Status::kFormatError, "value '" + name + "' is used before it is produced");
    const ValueMeta& m = meta(name);
    const int s = new_slot(name, m.shape, m.type);
    p_.slots[static_cast<size_t>(s)].fixed = m.value;
    return s;
  }
  // Lowered already, or static (an initializer or a folded value).
  bool known(const std::string& name) const { return ids_.count(name) || is_static(name); }
  Slot& slot(int s) { return p_.slots[static_cast<size_t>(s)]; }

  int new_buffer(size_t bytes) {
    if (bytes > limits().max_tensor_bytes) {
      throw Error(Status::kOutOfMemory, "a plan buffer would need " + human_bytes(bytes) +
                                            ", above the limit of " +
                                            human_bytes(limits().max_tensor_bytes) +
                                            " for one tensor (SPARQ_MAX_TENSOR_BYTES)");
    }
    Buffer b;
    b.bytes = (bytes + 63) / 64 * 64;
    p_.buffers.push_back(b);
    return static_cast<int>(p_.buffers.size()) - 1;
  }
  void reads(int b) {
    if (b >= 0) p_.buffers[static_cast<size_t>(b)].last = static_cast<int>(p_.steps.size());
  }
  void writes(int b) {
    if (b >= 0 && p_.buffers[static_cast<size_t>(b)].first < 0) {
      p_.buffers[static_cast<size_t>(b)].first = static_cast<int>(p_.steps.size());
      p_.buffers[static_cast<size_t>(b)].last = static_cast<int>(p_.steps.size());
    }
  }

  // Appends a step (nothing runs while planning).
  void emit(Step s) {
    // Buffer lifetimes in the order the step lists them (reads extend, writes start).
    s.buffers([&](int b, bool write) {
      if (write) writes(b);
      else reads(b);
    });
    // Values read from the run's environment through token-major copies: keep those
    // buffers alive to here.
    s.slots([&](int i) {
      if (i >= 0 && !slot(i).fixed && !slot(i).heap) reads(slot(i).tm);
    });
    p_.steps.push_back(std::move(s));
  }

  // The feature-major f32 form of a slot, converting once if needed.
  int fm(int s) {
    Slot& o = slot(s);
    if (o.fm >= 0) return o.fm;
    const int b = new_buffer(fm_bytes(o.features(), o.tokens(), 4));
    ToFmStep t;
    t.src = s;
    t.out = b;
    emit(Step(t, o.features(), o.tokens()));
    slot(s).fm = b;
    return b;
  }
  // Buffer b is written by the (earlier) step at, not by a step emitted now.
  void written_at(int b, int at) {
    p_.buffers[static_cast<size_t>(b)].first = at;
    p_.buffers[static_cast<size_t>(b)].last = at;
  }
  // The step that can quantize buffer b as it writes it: the LayerNorm (or embeddings
  // step) that wrote all of b, with no later step writing b (the quantization would then
  // see other values than a QuantizeStep emitted now). -1 when there is none.
  int quantizing_producer(int b) const {
    const int at = p_.buffers[static_cast<size_t>(b)].first;
    if (at < 0) return -1;
    const Step& s = p_.steps[static_cast<size_t>(at)];
    const auto* ln = std::get_if<LayerNormStep>(&s.op);
    const auto* em = std::get_if<EmbedStep>(&s.op);
    if ((ln == nullptr || ln->out != b) && (em == nullptr || em->out != b)) return -1;
    for (size_t i = static_cast<size_t>(at) + 1; i < p_.steps.size(); ++i) {
      bool written = false;
      p_.steps[i].buffers([&](int x, bool w) { written = written || (w && x == b); });
      if (written) return -1;
    }
    return at;
  }
  // The quantization outputs of a step that has them (QuantizeStep, LayerNormStep,
  // EmbedStep).
  static QuantOut* quant_out(Step* s) {
    if (auto* t = std::get_if<QuantizeStep>(&s->op)) return &t->q;
    if (auto* t = std::get_if<LayerNormStep>(&s->op)) return &t->q;
    if (auto* t = std::get_if<EmbedStep>(&s->op)) return &t->q;
    throw Error(Status::kInternal, "plan: step " + std::string(s->name()) + " quantizes nothing");
  }
  // The quantized form (u8 [features][tokens] + per-token scales), or with `quads` the
  // same u8 in quad order. A slot is quantized by one step; a consumer that reads the
  // other order adds it to that step's outputs.
  void q8(int s, int* q, int* scales, bool quads = false) {
    if (slot(s).q8_step < 0 && slot(s).view_of >= 0) {  // one quantization for every view
      q8(slot(s).view_of, q, scales, quads);
      const Slot& base = slot(slot(s).view_of);
      slot(s).q8 = base.q8;
      slot(s).q8s = base.q8s;
      slot(s).q8q = base.q8q;
      slot(s).q8_step = base.q8_step;
    }
    if (slot(s).q8_step < 0) {  // the step that quantizes it, and the scales
      const int src = fm(s);
      const Slot& o = slot(s);
      const int sc = new_buffer(fm_bytes(1, o.tokens(), 4));
      int at = quantizing_producer(src);
      if (at >= 0) {  // the LayerNorm that wrote it quantizes it too
        QuantOut& qo = *quant_out(&p_.steps[static_cast<size_t>(at)]);
        qo.scales = sc;
        written_at(sc, at);
        ++p_.summary.fused_quantize;
      } else {
        QuantizeStep t;
        t.src = src;
        t.q.scales = sc;
        emit(Step(t, o.features(), o.tokens()));
        at = static_cast<int>(p_.steps.size()) - 1;
      }
      slot(s).q8s = sc;
      slot(s).q8_step = at;
    }
    // Each order only when a consumer reads it: the 1x4 kernels read only the quads.
    if (!quads && slot(s).q8 < 0) {
      const int at = slot(s).q8_step;
      QuantOut& t = *quant_out(&p_.steps[static_cast<size_t>(at)]);
      const Slot& o = slot(s);
      t.out = new_buffer(fm_bytes(o.features(), o.tokens(), 1));
      written_at(t.out, at);
      slot(s).q8 = t.out;
      for (Slot& v : p_.slots) {  // views sharing the quantization see it too
        if (v.q8_step == at) v.q8 = t.out;
      }
    }
    if (quads && slot(s).q8q < 0) {
      const int at = slot(s).q8_step;
      QuantOut& t = *quant_out(&p_.steps[static_cast<size_t>(at)]);
      const Slot& o = slot(s);
      t.quads = new_buffer(fm_bytes((o.features() + 3) / 4 * 4, o.tokens(), 1));
      t.pack_quads = spmm_kernels().u8_pack_quads;
      written_at(t.quads, at);
      slot(s).q8q = t.quads;
      for (Slot& v : p_.slots) {  // views sharing the quantization see it too
        if (v.q8_step == at) v.q8q = t.quads;
      }
    }
    *q = quads ? slot(s).q8q : slot(s).q8;
    *scales = slot(s).q8s;
  }
  // Makes a slot's token-major form readable by the interpreter.
  void tm(int s) {
    Slot& o = slot(s);
    if (o.fixed || o.heap || o.tm >= 0) return;
    ToTmStep t;
    t.src = o.fm;
    const int64_t rows = o.features(), cols = o.tokens();
    if (o.output) {  // returned to the caller: a fresh heap value, shared with consumers
      t.out_slot = s;
      o.heap = true;
    } else {
      t.out = new_buffer(static_cast<size_t>(numel(o.shape)) * 4);
      slot(s).tm = t.out;
    }
    emit(Step(t, rows, cols));
  }

  bool is_dynamic(int s) { return !slot(s).fixed; }
  bool fm_able(int s) {
    const Slot& o = slot(s);
    return !o.fixed && o.type == ElemType::kF32 && !o.shape.empty() && o.features() > 0 &&
           o.tokens() > 0;
  }
  const std::vector<GraphIndex::Use>& uses(const std::string& v) { return ix_.uses(v); }
  // The single consumer (node, input index) of v, when v has exactly one and is not a
  // graph output.
  bool only_use(const std::string& v, size_t* node, size_t* input) {
    const auto& u = uses(v);
    if (u.size() != 1 || ix_.is_output(v)) return false;
    *node = u[0].first;
    *input = u[0].second;
    return true;
  }
  // The same, ignoring Shape consumers (they read the shape only, folded at plan time).
  bool only_data_use(const std::string& v, size_t* node, size_t* input) {
    if (ix_.is_output(v)) return false;
    int found = 0;
    for (const auto& u : uses(v)) {
      if (op_of(g_.nodes[u.first]) == OpId::kShape) continue;
      *node = u.first;
      *input = u.second;
      ++found;
    }
    return found == 1;
  }
  // A node's attributes, parsed once (engine/ops/attrs.h); kept alive by the node.
  const NodeAttrs& attrs(const Node& n) {
    if (n.parsed) return *n.parsed;
    auto& keep = parsed_here_[&n];  // a node never resolved (built by hand)
    if (!keep) keep = parse_attrs(n, g_.opset);
    return *keep;
  }
  std::vector<int64_t> perm_of(const Node& n) { return attrs(n).perm; }

  void node(size_t i) {
    const Node& n = g_.nodes[i];
    if (n.outputs.empty()) return;
    if (is_static(n.outputs[0])) {  // folded by the shape pass
      if (!ids_.count(n.outputs[0])) slot_of(n.outputs[0]);
      ++p_.summary.folded;
      return;
    }
    if (op_of(n) == OpId::kSparqMatMul && matmul(n)) return;
    if (op_of(n) == OpId::kLayerNormalization && layernorm(n)) return;
    if (op_of(n) == OpId::kAdd && add(n)) return;
    if (op_of(n) == OpId::kReshape && view_reshape(n)) return;
    if (op_of(n) == OpId::kSparqAttention && attention(i)) return;
    if (op_of(n) == OpId::kSparqMaskBias && mask_bias_step(n)) return;
    generic(n);
  }

  void generic(const Node& n, const char* why = nullptr) {
    std::string reason = why ? why : "";
    if (reason.empty()) {
      auto it = reasons_.find(&n);
      if (it != reasons_.end()) reason = it->second;
    }
    if (reason.empty()) reason = "no fused step for " + n.op;
    p_.summary.op_by_op.push_back({n.name, n.op, reason});
    GenericStep t;
    t.node = &n;
    for (const std::string& in : n.inputs) {
      if (in.empty()) {
        t.ins.push_back(-1);
        continue;
      }
      const int s = slot_of(in);
      tm(s);
      t.ins.push_back(s);
    }
    // Its output's shape and type from the shape pass.
    const ValueMeta& out = meta(n.outputs[0]);
    const int o = new_slot(n.outputs[0], out.shape, out.type);
    slot(o).heap = true;
    t.out = o;
    for (size_t k = 1; k < n.outputs.size(); ++k) {  // DynamicQuantizeLinear's scale, zero point
      int ok = -1;
      if (!n.outputs[k].empty()) {
        const ValueMeta& m = meta(n.outputs[k]);
        ok = new_slot(n.outputs[k], m.shape, m.type);
        slot(ok).heap = true;
      }
      t.more.push_back(ok);
    }
    ++p_.summary.generic_steps;
    emit(Step(t, 0, 0));
  }

  // Records why a fused op's step declined node n (generic() reports it); returns false.
  bool decline(const Node& n, const char* why) {
    reasons_[&n] = why;
    return false;
  }

  bool matmul(const Node& n) {
    if (n.inputs.empty() || !known(n.inputs[0])) return false;
    const PackedWeights& w = model_.packed(attrs(n).weight);
    const int x = slot_of(n.inputs[0]);
    if (!fm_able(x)) return decline(n, "matmul input is not a float32 activation");
    if (slot(x).features() != w.k) return decline(n, "matmul input's last dimension is not K");
    MatMulStep t;
    t.w = &w;
    const int64_t cols = slot(x).tokens();
    t.kernels = &spmm_kernels();
    t.split_rows = panels_of(cols) < m_.threads();
    if (n.inputs.size() > 1 && !n.inputs[1].empty()) {
      const int b = slot_of(n.inputs[1]);
      if (!slot(b).fixed || slot(b).type != ElemType::kF32 || numel(slot(b).shape) != w.n)
        return false;
      t.bias = slot(b).fixed->data<float>();
    }
    t.act = attrs(n).activation;
    Shape out_shape = slot(x).shape;
    out_shape.back() = w.n;
    std::string out_name = n.outputs[0];
    // Residual: the only consumer is an Add whose other operand already exists (read
    // through layout-only Reshapes of the matmul's output, which then need no step).
    size_t ci = 0, cj = 0;
    std::vector<size_t> views;
    Shape add_shape;
    if (options_.residual_epilogue &&
        only_use_through_views(n.outputs[0], out_shape, &ci, &cj, &views, &add_shape) &&
        op_of(g_.nodes[ci]) == OpId::kAdd && g_.nodes[ci].inputs.size() == 2) {
      const std::string& other = g_.nodes[ci].inputs[1 - cj];
      if (ids_.count(other)) {
        const int r = ids_.at(other);
        if (fm_able(r) && slot(r).shape == add_shape) {
          t.residual = fm(r);
          out_name = g_.nodes[ci].outputs[0];
          out_shape = add_shape;
          done_[ci] = true;
          for (size_t k : views) done_[k] = true;
          p_.summary.views += static_cast<int>(views.size());
          ++p_.summary.fused_residual;
        }
      }
    }
    if (w.type == WeightType::kS8) {
      // A 1x4 matrix reads its activations in quad order, made once by the quantize step
      // for every such consumer.
      t.quads = w.quad_index != nullptr && t.kernels->u8s8_quads_r1 != nullptr &&
                t.kernels->u8_pack_quads != nullptr;
      q8(x, &t.src, &t.token_scale, t.quads);
    } else {
      t.src = fm(x);
    }
    const int o = new_slot(out_name, out_shape, ElemType::kF32);
    t.out = new_buffer(fm_bytes(w.n, cols, 4));
    slot(o).fm = t.out;
    ++p_.summary.matmuls;
    emit(Step(t, w.n, cols));
    return true;
  }

  bool layernorm(const Node& n) {
    if (n.inputs.size() < 2) return false;
    LayerNormStep t;
    const char* why = "";
    if (embeds_.count(&n)) {  // claimed by find_embeddings: its sum was never lowered
      const Shape& xs = meta(n.inputs[0]).shape;
      if (!layernorm_params(n, static_cast<int64_t>(xs.size()), xs.back(), &t, &why))
        throw Error(Status::kInternal, "embeddings '" + n.name + "': " + why);
      return embeddings(n, t);
    }
    if (!known(n.inputs[0])) return false;
    const int x = slot_of(n.inputs[0]);
    if (!fm_able(x)) return false;
    const int64_t rank = static_cast<int64_t>(slot(x).shape.size());
    const int64_t F = slot(x).features();
    if (!layernorm_params(n, rank, F, &t, &why)) return decline(n, why);
    const int64_t cols = slot(x).tokens();
    t.src = fm(x);
    const int o = new_slot(n.outputs[0], slot(x).shape, ElemType::kF32);
    t.out = new_buffer(fm_bytes(F, cols, 4));
    slot(o).fm = t.out;
    emit(Step(t, F, cols));
    return true;
  }

  // Embeddings: LayerNorm(sum of Gathers from constant tables and folded constants),
  // the sum built only of Adds whose results nothing else reads, decided on the shaped
  // graph before anything is lowered (find_embeddings): the Gathers and Adds get no
  // steps, and one step gathers, sums and normalizes straight into the feature-major
  // panels. Position ids that are an arange were folded by the shape pass, so their rows
  // are a constant here; computed position ids (RoBERTa's cumulative sum over the mask)
  // stay a gather by their run-time values, so left padding stays exact.
  struct EmbedPlan {
    std::vector<std::string> leaves;  // in the sum's order: static values or Gather outputs
    std::vector<size_t> gathers;      // per leaf: the Gather node, or SIZE_MAX for a constant
  };

  // A folded constant term of an embeddings sum, per token: [F] (the same row for every
  // token), [..., S, F] of S x F values (one row per position) or [B, S, F] (one per
  // token); false when it does not broadcast that way.
  static bool constant_term(const Shape& cs, int64_t B, int64_t S, int64_t F, EmbedTerm* e) {
    if (cs.size() == 1 && cs[0] == F) {
      e->seq_stride = 0;
    } else if (cs.size() >= 2 && cs.back() == F && cs[cs.size() - 2] == S && numel(cs) == S * F) {
      e->seq_stride = F;
    } else if (cs == Shape{B, S, F}) {
      e->seq_stride = F;
      e->batch_stride = S * F;
    } else if (numel(cs) == F) {
      e->seq_stride = 0;
    } else {
      return false;
    }
    return true;
  }

  void find_embeddings() {
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const Node& ln = g_.nodes[i];
      if (op_of(ln) != OpId::kLayerNormalization) continue;
      EmbedPlan plan;
      std::vector<size_t> chain;
      if (match_embeddings(ln, &plan, &chain)) {
        for (size_t k : chain) done_[k] = true;
        embeds_[&ln] = std::move(plan);
      }
    }
  }

  bool match_embeddings(const Node& ln, EmbedPlan* plan, std::vector<size_t>* chain) {
    auto no = [&](const char* why) {
      if (verbose())
        std::fprintf(stderr, "sparq: plan: '%s' is not fused embeddings: %s\n", ln.name.c_str(),
                     why);
      return false;
    };
    if (ln.inputs.size() < 2 || is_static(ln.inputs[0])) return false;
    const ValueMeta& xm = meta(ln.inputs[0]);
    if (xm.shape.size() != 3 || xm.type != ElemType::kF32) return false;
    const int64_t B = xm.shape[0], S = xm.shape[1], F = xm.shape[2];
    // Constant float32 [F] scale and bias over the last axis (as layernorm_params).
    if (attrs(ln).axis != -1 && attrs(ln).axis != 2) return false;
    for (size_t k = 1; k < ln.inputs.size() && k < 3; ++k) {
      if (ln.inputs[k].empty()) continue;
      if (!is_static(ln.inputs[k])) return false;
      const ValueMeta& p = meta(ln.inputs[k]);
      if (p.type != ElemType::kF32 || numel(p.shape) != F) return false;
    }
    std::vector<std::string> stack = {ln.inputs[0]};
    while (!stack.empty()) {
      const std::string v = stack.back();
      stack.pop_back();
      size_t pi = 0, ci = 0, cj = 0;
      if (!is_static(v) && ix_.producer(v, &pi) && op_of(g_.nodes[pi]) == OpId::kAdd &&
          g_.nodes[pi].inputs.size() == 2 && (v == ln.inputs[0] || only_use(v, &ci, &cj))) {
        chain->push_back(pi);
        stack.push_back(g_.nodes[pi].inputs[0]);
        stack.push_back(g_.nodes[pi].inputs[1]);
      } else {
        plan->leaves.push_back(v);
      }
    }
    if (chain->empty() || plan->leaves.size() > 6) return no("input is not a sum of up to 6 terms");
    if (ix_.is_output(ln.inputs[0])) return no("the sum is a graph output");
    size_t ci = 0, cj = 0;
    if (!only_use(ln.inputs[0], &ci, &cj)) return no("the sum has other consumers");
    int gathers = 0;
    for (const std::string& v : plan->leaves) {
      const ValueMeta& m = meta(v);
      if (m.value) {  // a folded constant: [F], [S, F], [1, S, F] or [B, S, F]
        EmbedTerm unused;
        if (m.type != ElemType::kF32) return no("a constant term is not float32");
        if (!constant_term(m.shape, B, S, F, &unused))
          return no("a constant term does not broadcast per token");
        plan->gathers.push_back(SIZE_MAX);
        continue;
      }
      size_t pi = 0;
      if (!ix_.producer(v, &pi)) return no("a term is a graph input");
      const Node& gn = g_.nodes[pi];
      size_t gi = 0, gj = 0;
      if (op_of(gn) != OpId::kGather || gn.inputs.size() != 2 || attrs(gn).axis != 0 ||
          !only_use(v, &gi, &gj)) {
        return no("a term is not a single-use Gather");
      }
      const Constant* table = g_.initializer(gn.inputs[0]);
      if (table == nullptr || table->type != ElemType::kF32 || table->shape.size() != 2 ||
          table->shape[1] != F) {
        return no("a gather's table is not a constant [rows, F] float32");
      }
      const ValueMeta& ids = meta(gn.inputs[1]);
      if (ids.value || (ids.type != ElemType::kI64 && ids.type != ElemType::kI32) ||
          ids.shape != Shape{B, S}) {
        return no("a gather's ids are not run-time int [B, S]");
      }
      plan->gathers.push_back(pi);
      chain->push_back(pi);
      ++gathers;
    }
    if (gathers == 0) return no("no gather");
    return true;
  }

  // Lowers a LayerNormalization find_embeddings claimed.
  bool embeddings(const Node& ln, const LayerNormStep& params) {
    auto it = embeds_.find(&ln);
    if (it == embeds_.end()) return false;
    const EmbedPlan& plan = it->second;
    const Shape xs = meta(ln.inputs[0]).shape;
    const int64_t B = xs[0], S = xs[1], F = xs[2];
    EmbedStep t;
    for (size_t k = 0; k < plan.leaves.size(); ++k) {
      EmbedTerm e;
      if (plan.gathers[k] == SIZE_MAX) {  // a folded constant
        const Slot& o = slot(slot_of(plan.leaves[k]));
        constant_term(o.shape, B, S, F, &e);  // matched in find_embeddings
        e.table = o.fixed->data<float>();
      } else {
        const Node& gn = g_.nodes[plan.gathers[k]];
        const Constant* table = g_.initializer(gn.inputs[0]);
        e.table = table->data<float>();
        e.rows = table->shape[0];
        e.ids = slot_of(gn.inputs[1]);
      }
      t.terms.push_back(e);
    }
    for (const EmbedTerm& e : t.terms) {
      if (e.ids >= 0) t.ids.push_back(e.ids);  // keeps the ids alive to here
    }
    t.gamma = params.gamma;
    t.beta = params.beta;
    t.eps = params.eps;
    t.seq = S;
    const int o = new_slot(ln.outputs[0], xs, ElemType::kF32);
    t.out = new_buffer(fm_bytes(F, B * S, 4));
    slot(o).fm = t.out;
    ++p_.summary.fused_embeddings;
    emit(Step(t, F, B * S));
    return true;
  }

  // gamma, beta and epsilon of a LayerNormalization over the last axis of F features
  // with constant float32 parameters (the one place that reads them); false with the
  // reason in *why otherwise.
  bool layernorm_params(const Node& ln, int64_t rank, int64_t F, LayerNormStep* t,
                        const char** why) {
    auto no = [&](const char* w) {
      *why = w;
      return false;
    };
    if (op_of(ln) != OpId::kLayerNormalization || ln.inputs.size() < 2)
      return no("not a LayerNormalization");
    const int64_t given = attrs(ln).axis;
    const int64_t axis = given < 0 ? given + rank : given;
    if (axis != rank - 1) return no("LayerNorm over an axis other than the last");
    const char* params = "LayerNorm scale or bias is not a constant float32 [features]";
    if (!known(ln.inputs[1])) return no(params);
    const int g = slot_of(ln.inputs[1]);
    int b = -1;
    if (ln.inputs.size() > 2 && !ln.inputs[2].empty()) {
      if (!known(ln.inputs[2])) return no(params);
      b = slot_of(ln.inputs[2]);
    }
    auto ok = [&](int sl) {
      return slot(sl).fixed && slot(sl).type == ElemType::kF32 && numel(slot(sl).shape) == F;
    };
    if (!ok(g) || (b >= 0 && !ok(b))) return no(params);
    t->gamma = slot(g).fixed->data<float>();
    t->beta = b >= 0 ? slot(b).fixed->data<float>() : nullptr;
    t->eps = attrs(ln).epsilon;
    return true;
  }

  bool add(const Node& n) {
    if (n.inputs.size() != 2 || !known(n.inputs[0]) || !known(n.inputs[1])) return false;
    const int x = slot_of(n.inputs[0]), y = slot_of(n.inputs[1]);
    if (!fm_able(x) || !fm_able(y) || slot(x).shape != slot(y).shape) return false;
    if (slot(x).fm < 0 && slot(y).fm < 0)
      return false;  // both token-major: leave to the interpreter
    // Residual add + LayerNorm as one step when the sum feeds only the LayerNorm.
    size_t li = 0, lj = 0;
    LayerNormStep ln_step;
    const char* why = "";
    const int64_t rows = slot(x).features(), cols = slot(x).tokens();
    if (only_use(n.outputs[0], &li, &lj) && lj == 0 && !ix_.is_output(n.outputs[0]) &&
        layernorm_params(g_.nodes[li], static_cast<int64_t>(slot(x).shape.size()),
                         slot(x).features(), &ln_step, &why)) {
      ln_step.src = fm(x);
      ln_step.residual = fm(y);
      // The skipped sum keeps a shape-only slot (for any Shape node reading it).
      new_slot(n.outputs[0], slot(x).shape, ElemType::kF32);
      const int o = new_slot(g_.nodes[li].outputs[0], slot(x).shape, ElemType::kF32);
      ln_step.out = new_buffer(fm_bytes(rows, cols, 4));
      slot(o).fm = ln_step.out;
      done_[li] = true;
      ++p_.summary.fused_add_layernorm;
      emit(Step(ln_step, rows, cols));
      return true;
    }
    AddStep t;
    t.x = fm(x);
    t.y = fm(y);
    const int o = new_slot(n.outputs[0], slot(x).shape, ElemType::kF32);
    t.out = new_buffer(fm_bytes(rows, cols, 4));
    slot(o).fm = t.out;
    emit(Step(t, rows, cols));
    return true;
  }

  // A Reshape that keeps the last dimension regroups only the tokens: the feature-major
  // panels are the same bytes, so the output is a view of the input's buffers (no step).
  // Linear layers exported on flattened [B*S, H] activations reshape this way.
  bool view_reshape(const Node& n) {
    if (n.inputs.size() < 2 || !known(n.inputs[0]) || ix_.is_output(n.outputs[0])) return false;
    const int x = slot_of(n.inputs[0]);
    const Slot& xs = slot(x);
    if (!fm_able(x) || xs.fm < 0 || xs.heap) return false;
    const Shape& t = meta(n.outputs[0]).shape;  // its target, from the shape pass
    if (t.empty() || t.back() != xs.features() || numel(t) != numel(xs.shape)) return false;
    const Slot copy = xs;
    const int o = new_slot(n.outputs[0], t, ElemType::kF32);
    Slot& v = slot(o);
    v.fm = copy.fm;
    v.q8 = copy.q8;
    v.q8s = copy.q8s;
    v.q8q = copy.q8q;
    v.q8_step = copy.q8_step;
    v.view_of = x;
    ++p_.summary.views;
    return true;
  }

  // The node reading `v` through layout-only Reshapes: its index, the input it reads
  // and the Reshapes on the way (with the shape they end in).
  bool only_use_through_views(const std::string& v, Shape shape, size_t* node, size_t* input,
                              std::vector<size_t>* views, Shape* out_shape) {
    std::string cur = v;
    for (int depth = 0; depth < 4; ++depth) {
      if (!only_use(cur, node, input)) return false;
      const Node& c = g_.nodes[*node];
      if (op_of(c) != OpId::kReshape || *input != 0 || c.inputs.size() < 2) {
        *out_shape = shape;
        return true;
      }
      const Shape& t = meta(c.outputs[0]).shape;
      if (t.empty() || t.back() != shape.back() || numel(t) != numel(shape)) return false;
      views->push_back(*node);
      shape = t;
      cur = c.outputs[0];
    }
    return false;
  }

  // Attention, decided on the shaped graph before lowering (find_attention): Q, K and V
  // each the exported head split (Reshape [B,S,H*d] -> [B,S,H,d] -> Transpose) of a
  // feature-major value, the output merged back (Transpose(0,2,1,3) -> Reshape [B,S,H*dv])
  // and a mask the kernel takes. The claimed Reshapes and Transposes get no steps: the
  // kernel reads heads as row blocks of the projections and writes the merged output. An
  // attention that does not match runs op by op, every node in graph order.
  struct HeadSplit {
    std::string x;  // the feature-major [B, S, H*d] value
    int64_t heads = 0, dim = 0;
  };
  struct AttnPlan {
    HeadSplit hs[3];
    size_t out_reshape = 0;        // the Reshape writing the merged [B, S, H*dv] output
    int64_t mask_strides[4] = {};  // the mask's strides over [B, H, S, T] (when it has one)
  };

  void find_attention() {
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const Node& n = g_.nodes[i];
      if (op_of(n) != OpId::kSparqAttention) continue;
      AttnPlan plan;
      std::vector<size_t> claim;
      std::string why;
      if (match_attention(i, &plan, &claim, &why)) {
        for (size_t k : claim) done_[k] = true;
        attns_[&n] = plan;
      } else {
        if (verbose())
          std::fprintf(stderr, "sparq: plan: node '%s' runs op by op: %s\n", n.name.c_str(),
                       why.c_str());
        reasons_[&n] = "attention not fused at plan time: " + why;
      }
    }
  }

  bool match_attention(size_t i, AttnPlan* plan, std::vector<size_t>* claim, std::string* why) {
    const Node& n = g_.nodes[i];
    auto no = [&](const std::string& w) {
      *why = w;
      return false;
    };
    if (n.inputs.size() < 3) return no("fewer than 3 inputs");
    for (size_t k = 0; k < 3; ++k) {
      const char* not_split = "an input is not a head split of a feature-major value";
      size_t ti = 0, ai = 0, aj = 0, ri = 0, ui = 0, uj = 0;
      if (!ix_.producer(n.inputs[k], &ti) || op_of(g_.nodes[ti]) != OpId::kTranspose ||
          !only_use(n.inputs[k], &ai, &aj) || ai != i || aj != k)
        return no(not_split);
      const Node& tr = g_.nodes[ti];
      const std::vector<int64_t> perm = perm_of(tr);
      const bool perm_ok = k == 1 ? perm == std::vector<int64_t>{0, 2, 3, 1}
                                  : perm == std::vector<int64_t>{0, 2, 1, 3};
      if (!perm_ok || !ix_.producer(tr.inputs[0], &ri) || op_of(g_.nodes[ri]) != OpId::kReshape ||
          !only_use(tr.inputs[0], &ui, &uj) || ui != ti)
        return no(not_split);
      const Node& rs = g_.nodes[ri];
      const ValueMeta& x = meta(rs.inputs[0]);
      const Shape& t = meta(rs.outputs[0]).shape;
      if (x.value || x.type != ElemType::kF32 || x.shape.size() != 3 || numel(x.shape) <= 0 ||
          t.size() != 4 || t[0] != x.shape[0] || t[1] != x.shape[1] || t[2] * t[3] != x.shape[2])
        return no(not_split);
      plan->hs[k] = {rs.inputs[0], t[2], t[3]};
      claim->push_back(ri);
      claim->push_back(ti);
    }
    const HeadSplit* hs = plan->hs;
    const Shape& qs = meta(hs[0].x).shape;
    const Shape& ks = meta(hs[1].x).shape;
    const Shape& vs = meta(hs[2].x).shape;
    const int64_t B = qs[0], S = qs[1], H = hs[0].heads, T = ks[1], dv = hs[2].dim;
    if (ks[0] != B || vs[0] != B || vs[1] != T || hs[1].heads != H || hs[2].heads != H ||
        hs[1].dim != hs[0].dim) {
      return no("head shapes differ");
    }
    // The output goes through Transpose(0,2,1,3) and a Reshape back to [B, S, H*dv].
    size_t ti = 0, tj = 0, ri = 0, rj = 0;
    if (!only_data_use(n.outputs[0], &ti, &tj) || op_of(g_.nodes[ti]) != OpId::kTranspose ||
        perm_of(g_.nodes[ti]) != std::vector<int64_t>{0, 2, 1, 3}) {
      return no("output is not Transpose(0,2,1,3)");
    }
    if (!only_data_use(g_.nodes[ti].outputs[0], &ri, &rj) ||
        op_of(g_.nodes[ri]) != OpId::kReshape || rj != 0)
      return no("transpose is not followed by a Reshape");
    if (meta(g_.nodes[ri].outputs[0]).shape != Shape{B, S, H * dv})
      return no("reshape target is not [B, S, H*dv]");
    const MaskKind mk = attrs(n).mask;
    if (n.inputs.size() > 3 && !n.inputs[3].empty() && mk != MaskKind::kNone) {
      const ValueMeta& m = meta(n.inputs[3]);
      if (mk == MaskKind::kAdd && m.type != ElemType::kF32) return no("additive mask not float32");
      if (mk == MaskKind::kWhere && m.type != ElemType::kBool) return no("select mask not bool");
      int64_t* st = plan->mask_strides;
      std::string w;
      if (!attention_mask_strides(m.shape, {B, H, S, T}, st, &w)) return no(w);
      if (st[2] != 0 && S > 1) return no("mask varies by query");  // op by op
    }
    claim->push_back(ti);
    claim->push_back(ri);
    plan->out_reshape = ri;
    return true;
  }

  // SparqMaskBias: one step from the [B, S] mask to its additive [B, 1, 1, S] bias.
  bool mask_bias_step(const Node& n) {
    const int x = slot_of(n.inputs[0]);
    if (slot(x).shape.size() != 2) return decline(n, "the mask is not [batch, sequence]");
    tm(x);
    MaskBiasStep t;
    t.src = x;
    t.fill = attrs(n).fill;
    const ValueMeta& out = meta(n.outputs[0]);
    t.out = new_slot(n.outputs[0], out.shape, out.type);
    slot(t.out).heap = true;
    ++p_.summary.fused_mask_bias;
    emit(Step(t, 0, 0));
    return true;
  }

  // Lowers a SparqAttention find_attention claimed.
  bool attention(size_t i) {
    const Node& n = g_.nodes[i];
    auto it = attns_.find(&n);
    if (it == attns_.end()) return false;
    const AttnPlan& plan = it->second;
    const HeadSplit* hs = plan.hs;
    const Shape& qs = meta(hs[0].x).shape;
    const Shape& ks = meta(hs[1].x).shape;
    const int64_t B = qs[0], S = qs[1], H = hs[0].heads, dh = hs[0].dim, T = ks[1], dv = hs[2].dim;
    AttentionStep t;
    FmAttentionArgs& a = t.att;
    a.batch = B;
    a.heads = H;
    a.seq = S;
    a.keys = T;
    a.dh = dh;
    a.dv = dv;
    a.ld_q = B * S;
    a.ld_k = a.ld_v = B * T;
    a.ld_out = B * S;
    a.scale = attrs(n).scale;
    const MaskKind mk = attrs(n).mask;
    if (n.inputs.size() > 3 && !n.inputs[3].empty() && mk != MaskKind::kNone) {
      const int ms = slot_of(n.inputs[3]);
      const int64_t* st = plan.mask_strides;
      a.mask_b = st[0];
      a.mask_h = st[1];
      a.mask_t = st[3];
      // Non-null markers; the run fills in the real pointers.
      static const float kMarkF = 0.0f;
      static const uint8_t kMarkB = 0;
      if (mk == MaskKind::kAdd) a.add_mask = &kMarkF;
      else a.select_mask = &kMarkB;
      a.fill = attrs(n).fill;
      tm(ms);
      t.mask = ms;
    }
    t.q = fm(slot_of(hs[0].x));
    t.k = fm(slot_of(hs[1].x));
    t.v = fm(slot_of(hs[2].x));
    const int o = new_slot(g_.nodes[plan.out_reshape].outputs[0], {B, S, H * dv}, ElemType::kF32);
    t.out = new_buffer(fm_bytes(H * dv, B * S, 4));
    slot(o).fm = t.out;
    ++p_.summary.fused_attention;
    t.bf16 = int8_model_;
    m_.choose_attention(&t);
    emit(Step(t, 0, 0));
    return true;
  }

  // Releases, then arena offsets: largest first, each at the lowest offset that no
  // lifetime-overlapping buffer already holds.
  void finish() {
    std::vector<int> last(p_.slots.size(), -1);
    for (size_t i = 0; i < p_.steps.size(); ++i) {
      p_.steps[i].slots([&](int s) {
        if (s >= 0) last[static_cast<size_t>(s)] = static_cast<int>(i);
      });
    }
    std::set<int> keep;
    for (const auto& o : p_.outputs) keep.insert(o.second);
    for (const auto& in : p_.inputs) keep.insert(in.second);  // the caller's
    for (size_t s = 0; s < last.size(); ++s) {
      if (last[s] >= 0 && p_.slots[s].heap && !p_.slots[s].fixed &&
          !keep.count(static_cast<int>(s))) {
        p_.steps[static_cast<size_t>(last[s])].release.push_back(static_cast<int>(s));
      }
    }
    // Runs of panel-local steps on the same tokens execute panel by panel, each thread
    // taking its panels through the whole run (Machine::exec_segment), not step by step;
    // the memory plan widens lifetimes to whole runs (engine/plan/memory_plan.h).
    const size_t n = p_.steps.size();
    std::vector<bool> local(n);
    std::vector<int64_t> tokens(n);
    for (size_t i = 0; i < n; ++i) {
      local[i] = m_.panel_local(p_.steps[i]);
      tokens[i] = p_.steps[i].cols;
    }
    const Segments seg = panel_segments(local, tokens);
    p_.seg_end = seg.end;
    std::vector<BufferLife> lives(p_.buffers.size());
    for (size_t i = 0; i < lives.size(); ++i)
      lives[i] = {p_.buffers[i].bytes, p_.buffers[i].first, p_.buffers[i].last};
    // A buffer written and last read inside one segment holds one panel per part of it.
    p_.panel_local.assign(p_.buffers.size(), 0);
    const bool segments = m_.segments_run();
    for (size_t i = 0; segments && i < lives.size(); ++i) {
      const int w0 = p_.buffers[i].first, r1 = p_.buffers[i].last;
      if (w0 < 0 || seg.start[static_cast<size_t>(w0)] != seg.start[static_cast<size_t>(r1)] ||
          seg.end[static_cast<size_t>(w0)] - seg.start[static_cast<size_t>(w0)] < 2) {
        continue;
      }
      const int64_t panels = panels_of(p_.steps[static_cast<size_t>(w0)].cols);
      const int64_t parts = std::min<int64_t>(panels, m_.threads());
      const size_t bytes = p_.buffers[i].bytes;
      if (parts >= panels || bytes % static_cast<size_t>(panels) != 0) continue;
      p_.panel_local[i] = static_cast<int64_t>(bytes) / panels;
      lives[i].bytes = static_cast<size_t>(parts * p_.panel_local[i]);
    }
    const MemoryPlan mp = plan_memory(std::move(lives), seg);
    for (size_t i = 0; i < p_.buffers.size(); ++i) p_.buffers[i].offset = mp.offsets[i];
    const size_t total = mp.arena_bytes, unshared = mp.unshared_bytes;
    p_.arena_bytes = total;
    p_.summary.arena_bytes = total;
    p_.summary.unshared_bytes = unshared;
    p_.summary.steps = static_cast<int>(p_.steps.size());
  }

  const Model& model_;
  const Graph& g_;
  const GraphIndex ix_;  // who produces and reads each value
  Executor::Plan& p_;
  const Machine& m_;
  std::map<std::string, int> ids_;
  std::vector<bool> done_;
  std::map<std::string, ValueMeta> meta_;       // the shape pass: every value's shape, type, value
  std::map<const Node*, EmbedPlan> embeds_;     // LayerNorms lowered as embeddings steps
  std::map<const Node*, std::string> reasons_;  // why no fused step took a node (generic's report)
  std::map<const Node*, AttnPlan> attns_;       // attentions lowered as attention steps
  std::map<const Node*, std::shared_ptr<const NodeAttrs>> parsed_here_;
  bool int8_model_ = false;
  PlanOptions options_;
};

}  // namespace

Executor::Executor(std::shared_ptr<const Model> model, ThreadPool* pool,
                   const RuntimeOptions& options)
    : model_(std::move(model)), pool_(pool), options_(options) {}
Executor::~Executor() = default;

void Executor::set_options(const PlanOptions& o) {
  options_.plan = o;
  plans_.clear();
}

std::map<std::string, Value> Executor::run(const std::map<std::string, Value>& inputs,
                                           size_t* peak_bytes, PlanSummary* summary) {
  std::vector<std::vector<int64_t>> key;
  for (const ValueInfo& vi : model_->graph().inputs) {
    auto it = inputs.find(vi.name);
    if (it == inputs.end() || !it->second)
      throw Error(Status::kInvalidArgument, "missing input '" + vi.name + "'");
    key.push_back(it->second->shape);
    key.back().push_back(static_cast<int64_t>(it->second->type));
  }
  RunState st;
  std::map<std::string, Value> out;
  auto hit = plans_.begin();
  for (; hit != plans_.end(); ++hit)
    if (hit->first == key) break;
  Machine machine(*model_, pool_, &scratch_, options_);
  if (hit == plans_.end()) {
    // A new shape: plan it from shapes alone, then run it as every later run does.
    auto plan = std::make_unique<Plan>();
    try {
      Planner planner(*model_, *plan, machine, options_.plan);
      planner.run(inputs);
    } catch (const Unplannable& e) {
      plan = std::make_unique<Plan>();
      plan->unplannable = e.what();
    }
    if (verbose()) {
      const PlanSummary& ps = plan->summary;
      if (!plan->unplannable.empty()) {
        std::fprintf(stderr, "sparq: plan: not made, the graph runs op by op: %s\n",
                     plan->unplannable.c_str());
      } else {
        std::fprintf(
            stderr,
            "sparq: plan: %d steps (%d op by op), %d nodes folded, %d matmuls, %d attentions, %d "
            "residuals, %d embeddings and %d add+LayerNorm fused, arena %.2f MiB (%.2f MiB "
            "without reuse)\n",
            ps.steps, ps.generic_steps, ps.folded, ps.matmuls, ps.fused_attention,
            ps.fused_residual, ps.fused_embeddings, ps.fused_add_layernorm,
            static_cast<double>(ps.arena_bytes) / 1048576.0,
            static_cast<double>(ps.unshared_bytes) / 1048576.0);
      }
    }
    plans_.emplace_front(std::move(key), std::move(plan));
    if (plans_.size() > kMaxPlans) plans_.pop_back();
    hit = plans_.begin();
  }
  plans_.splice(plans_.begin(), plans_, hit);  // most recently used first
  Plan& p = *plans_.front().second;
  if (!p.unplannable.empty()) throw Unplannable(p.unplannable);
  if (p.arena_bytes > limits().max_plan_bytes) {
    throw Error(Status::kOutOfMemory, "the plan's arena would need " + human_bytes(p.arena_bytes) +
                                          ", above the limit of " +
                                          human_bytes(limits().max_plan_bytes) +
                                          " (SPARQ_MAX_PLAN_BYTES)");
  }
  if (p.arena.size() < p.arena_bytes) p.arena.resize(std::max<size_t>(p.arena_bytes, 64));
  st.buf.resize(p.buffers.size());
  st.panel_local = &p.panel_local;
  for (size_t i = 0; i < p.buffers.size(); ++i)
    st.buf[i] = p.arena.as<uint8_t>() + p.buffers[i].offset;
  st.env.assign(p.slots.size(), nullptr);
  for (const auto& in : p.inputs) st.env[static_cast<size_t>(in.second)] = inputs.at(in.first);
  // Runs of panel-local steps on the same tokens go out as one parallel region each
  // (segments_run).
  const bool segmented = machine.segments_run();
  for (size_t i = 0; i < p.steps.size();) {
    const size_t j = segmented ? static_cast<size_t>(p.seg_end[i]) : i + 1;
    if (j - i >= 2) {
      machine.exec_segment(p, &p.steps[i], &p.steps[0] + j, st);
      i = j;
    } else {
      machine.exec(p, p.steps[i], st);
      ++i;
    }
  }
  machine.print_profile();
  for (const auto& o : p.outputs) {
    const Slot& s = p.slots[static_cast<size_t>(o.second)];
    out[o.first] = s.fixed ? s.fixed : st.env[static_cast<size_t>(o.second)];
  }
  if (peak_bytes) *peak_bytes = p.arena_bytes + st.peak;
  if (summary) *summary = p.summary;
  return out;
}

}  // namespace sparq
