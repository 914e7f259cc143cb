// The C API boundary: every entry point catches every exception and turns it into a
// sparq_status plus a thread-local message. No C++ exception crosses it.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "engine/limits.h"
#include "engine/model.h"
#include "formats/error.h"
#include "kernels/common/isa.h"
#include "sparq/sparq.h"
#include "sparq/version.h"

struct sparq_model {
  std::shared_ptr<const sparq::Model> model;
  std::vector<std::vector<int64_t>> input_shapes, output_shapes;
};

struct sparq_session {
  std::shared_ptr<const sparq::Model> model;
  std::unique_ptr<sparq::Session> session;
  std::atomic<bool> busy{false};
  std::vector<std::string> names;
  std::vector<sparq::Value> outputs;
  size_t peak_bytes = 0;
  bool has_plan = false;
  sparq::PlanSummary plan;
};

namespace {

thread_local std::string g_last_error;

sparq_status fail(sparq_status s, const std::string& msg) {
  g_last_error = msg;
  return s;
}

sparq_status to_status(sparq::Status s) {
  switch (s) {
    case sparq::Status::kOk: return SPARQ_OK;
    case sparq::Status::kInvalidArgument: return SPARQ_INVALID_ARGUMENT;
    case sparq::Status::kUnsupported: return SPARQ_UNSUPPORTED;
    case sparq::Status::kFormatError: return SPARQ_FORMAT_ERROR;
    case sparq::Status::kOutOfMemory: return SPARQ_OUT_OF_MEMORY;
    case sparq::Status::kInternal: break;
  }
  return SPARQ_INTERNAL;
}

template <class F>
sparq_status guard(F&& f) {
  try {
    f();
    return SPARQ_OK;
  } catch (const sparq::Error& e) {
    return fail(to_status(e.status()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(SPARQ_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(SPARQ_INTERNAL, e.what());
  } catch (...) {
    return fail(SPARQ_INTERNAL, "unknown error");
  }
}

sparq_dtype to_dtype(sparq::ElemType t) {
  switch (t) {
    case sparq::ElemType::kI64: return SPARQ_INT64;
    case sparq::ElemType::kI32: return SPARQ_INT32;
    case sparq::ElemType::kF32: return SPARQ_FLOAT32;
    case sparq::ElemType::kF64: return SPARQ_FLOAT64;
    case sparq::ElemType::kS8: return SPARQ_INT8;
    case sparq::ElemType::kU8: return SPARQ_UINT8;
    case sparq::ElemType::kBool: return SPARQ_BOOL;
  }
  return SPARQ_FLOAT32;
}

std::vector<int64_t> dims(const sparq::ValueInfo& v) {
  std::vector<int64_t> d;
  for (const sparq::Dim& x : v.shape) d.push_back(x.value);
  return d;
}

}  // namespace

extern "C" {

SPARQ_API const char* sparq_version(void) { return SPARQ_VERSION_STRING; }

SPARQ_API const char* sparq_kernel_isa(void) { return sparq::isa_name(sparq::active_isa()); }

SPARQ_API const char* sparq_last_error_message(void) { return g_last_error.c_str(); }

SPARQ_API sparq_status sparq_model_load(const char* path, sparq_model** out) {
  if (out == nullptr) return fail(SPARQ_INVALID_ARGUMENT, "sparq_model_load: out is NULL");
  *out = nullptr;
  if (path == nullptr) return fail(SPARQ_INVALID_ARGUMENT, "sparq_model_load: path is NULL");
  return guard([&] {
    auto m = std::make_unique<sparq_model>();
    m->model = sparq::Model::load(path);
    for (const auto& v : m->model->graph().inputs) m->input_shapes.push_back(dims(v));
    for (const auto& v : m->model->graph().outputs) m->output_shapes.push_back(dims(v));
    *out = m.release();
  });
}

SPARQ_API void sparq_model_free(sparq_model* model) { delete model; }

SPARQ_API size_t sparq_model_input_count(const sparq_model* m) {
  return m ? m->model->graph().inputs.size() : 0;
}

SPARQ_API size_t sparq_model_output_count(const sparq_model* m) {
  return m ? m->model->graph().outputs.size() : 0;
}

static sparq_status describe(const sparq_model* m, size_t i, sparq_tensor* out, bool input) {
  if (m == nullptr || out == nullptr) return fail(SPARQ_INVALID_ARGUMENT, "model or out is NULL");
  const auto& vs = input ? m->model->graph().inputs : m->model->graph().outputs;
  const auto& shapes = input ? m->input_shapes : m->output_shapes;
  if (i >= vs.size()) {
    return fail(SPARQ_INVALID_ARGUMENT, std::string(input ? "input" : "output") + " index " +
                                            std::to_string(i) + " out of range (" +
                                            std::to_string(vs.size()) + ")");
  }
  out->name = vs[i].name.c_str();
  out->dtype = to_dtype(vs[i].type);
  out->rank = static_cast<int>(shapes[i].size());
  out->shape = shapes[i].data();
  out->data = nullptr;
  return SPARQ_OK;
}

SPARQ_API sparq_status sparq_model_input(const sparq_model* m, size_t i, sparq_tensor* out) {
  return describe(m, i, out, true);
}

SPARQ_API sparq_status sparq_model_output(const sparq_model* m, size_t i, sparq_tensor* out) {
  return describe(m, i, out, false);
}

SPARQ_API sparq_status sparq_session_create(const sparq_model* model, int threads,
                                            sparq_session** out) {
  if (out == nullptr) return fail(SPARQ_INVALID_ARGUMENT, "sparq_session_create: out is NULL");
  *out = nullptr;
  if (model == nullptr) return fail(SPARQ_INVALID_ARGUMENT, "sparq_session_create: model is NULL");
  if (threads < 0)
    return fail(SPARQ_INVALID_ARGUMENT, "sparq_session_create: threads must be >= 0");
  return guard([&] {
    auto s = std::make_unique<sparq_session>();
    s->model = model->model;
    s->session = std::make_unique<sparq::Session>(s->model, threads);
    *out = s.release();
  });
}

SPARQ_API void sparq_session_free(sparq_session* s) { delete s; }

SPARQ_API sparq_status sparq_session_run(sparq_session* s, const sparq_tensor* inputs, size_t n) {
  if (s == nullptr) return fail(SPARQ_INVALID_ARGUMENT, "sparq_session_run: session is NULL");
  if (n > 0 && inputs == nullptr)
    return fail(SPARQ_INVALID_ARGUMENT, "sparq_session_run: inputs is NULL");
  bool expected = false;
  if (!s->busy.compare_exchange_strong(expected, true)) {
    return fail(SPARQ_INVALID_ARGUMENT,
                "sparq_session_run: the session is already running on another thread");
  }
  const sparq_status st = guard([&] {
    std::map<std::string, sparq::Value> in;
    for (size_t i = 0; i < n; ++i) {
      const sparq_tensor& t = inputs[i];
      if (t.name == nullptr)
        throw sparq::Error(sparq::Status::kInvalidArgument,
                           "input " + std::to_string(i) + " has no name");
      if (t.rank < 0 || t.rank > 8 || (t.rank > 0 && t.shape == nullptr)) {
        throw sparq::Error(sparq::Status::kInvalidArgument,
                           std::string("input '") + t.name + "' has a bad rank or shape");
      }
      auto c = std::make_shared<sparq::Constant>();
      // A C caller can store any int in the enum; read it as one (loading an out-of-range
      // enum value is undefined in C++).
      static_assert(sizeof(sparq_dtype) == sizeof(int), "sparq_dtype is an int");
      int dtype = 0;
      std::memcpy(&dtype, &t.dtype, sizeof dtype);
      switch (dtype) {
        case SPARQ_INT64: c->type = sparq::ElemType::kI64; break;
        case SPARQ_INT32: c->type = sparq::ElemType::kI32; break;
        case SPARQ_FLOAT32: c->type = sparq::ElemType::kF32; break;
        case SPARQ_FLOAT64: c->type = sparq::ElemType::kF64; break;
        case SPARQ_INT8: c->type = sparq::ElemType::kS8; break;
        case SPARQ_UINT8: c->type = sparq::ElemType::kU8; break;
        case SPARQ_BOOL: c->type = sparq::ElemType::kBool; break;
        default:
          throw sparq::Error(
              sparq::Status::kInvalidArgument,
              std::string("input '") + t.name + "' has an unknown dtype " + std::to_string(dtype));
      }
      uint64_t elems = 1;
      for (int d = 0; d < t.rank; ++d) {
        if (t.shape[d] < 0 || t.shape[d] > sparq::limits().max_input_elements) {
          throw sparq::Error(sparq::Status::kInvalidArgument,
                             std::string("input '") + t.name + "' has a bad shape");
        }
        if (__builtin_mul_overflow(elems, static_cast<uint64_t>(t.shape[d]), &elems))
          elems = UINT64_MAX;
        c->shape.push_back(t.shape[d]);
      }
      if (elems > static_cast<uint64_t>(sparq::limits().max_input_elements)) {
        throw sparq::Error(sparq::Status::kInvalidArgument,
                           std::string("input '") + t.name + "' has " + std::to_string(elems) +
                               " elements, above the limit of " +
                               std::to_string(sparq::limits().max_input_elements) +
                               " (SPARQ_MAX_INPUT_ELEMENTS)");
      }
      if (elems > 0 && t.data == nullptr)
        throw sparq::Error(sparq::Status::kInvalidArgument,
                           std::string("input '") + t.name + "' has no data");
      const size_t bytes = static_cast<size_t>(elems) * sparq::elem_type_size(c->type);
      c->bytes.assign(static_cast<const uint8_t*>(t.data),
                      static_cast<const uint8_t*>(t.data) + bytes);
      if (!in.emplace(t.name, c).second)
        throw sparq::Error(sparq::Status::kInvalidArgument,
                           std::string("input '") + t.name + "' given twice");
    }
    s->names.clear();
    s->outputs.clear();
    size_t peak = 0;
    const auto out = s->session->run(in, &peak);
    for (const auto& v : s->model->graph().outputs) {
      s->names.push_back(v.name);
      s->outputs.push_back(out.at(v.name));
    }
    s->peak_bytes = peak;
    s->plan = s->session->plan_summary();
    s->has_plan = true;
  });
  s->busy.store(false);
  return st;
}

SPARQ_API size_t sparq_session_output_count(const sparq_session* s) {
  return s ? s->outputs.size() : 0;
}

SPARQ_API sparq_status sparq_session_output(const sparq_session* s, size_t i, sparq_tensor* out) {
  if (s == nullptr || out == nullptr) return fail(SPARQ_INVALID_ARGUMENT, "session or out is NULL");
  if (s->outputs.empty())
    return fail(SPARQ_INVALID_ARGUMENT, "sparq_session_output: no successful run yet");
  if (i >= s->outputs.size())
    return fail(SPARQ_INVALID_ARGUMENT, "output index " + std::to_string(i) + " out of range");
  const sparq::Constant& c = *s->outputs[i];
  out->name = s->names[i].c_str();
  out->dtype = to_dtype(c.type);
  out->rank = static_cast<int>(c.shape.size());
  out->shape = c.shape.data();
  out->data = const_cast<uint8_t*>(c.raw());
  return SPARQ_OK;
}

SPARQ_API size_t sparq_session_peak_bytes(const sparq_session* s) { return s ? s->peak_bytes : 0; }

SPARQ_API sparq_status sparq_session_plan_summary(const sparq_session* s, sparq_plan_summary* out) {
  if (s == nullptr || out == nullptr) return fail(SPARQ_INVALID_ARGUMENT, "session or out is NULL");
  if (out->struct_size < sizeof(size_t))
    return fail(SPARQ_INVALID_ARGUMENT, "set struct_size to sizeof(sparq_plan_summary)");
  if (!s->has_plan) return fail(SPARQ_INVALID_ARGUMENT, "no successful run yet");
  const sparq::PlanSummary& p = s->plan;
  sparq_plan_summary full;
  full.struct_size = out->struct_size;
  full.steps = p.steps;
  full.op_by_op_steps = static_cast<int>(p.op_by_op.size());
  full.folded_nodes = p.folded;
  full.matmuls = p.matmuls;
  full.fused_attention = p.fused_attention;
  full.fused_residual = p.fused_residual;
  full.fused_embeddings = p.fused_embeddings;
  full.fused_add_layernorm = p.fused_add_layernorm;
  full.arena_bytes = p.arena_bytes;
  full.unshared_bytes = p.unshared_bytes;
  full.fused_quantize = p.fused_quantize;
  std::memcpy(out, &full, std::min(out->struct_size, sizeof full));
  return SPARQ_OK;
}

SPARQ_API sparq_status sparq_session_op_by_op_step(const sparq_session* s, size_t index,
                                                   const char** node, const char** op,
                                                   const char** reason) {
  if (s == nullptr) return fail(SPARQ_INVALID_ARGUMENT, "session is NULL");
  if (!s->has_plan) return fail(SPARQ_INVALID_ARGUMENT, "no successful run yet");
  if (index >= s->plan.op_by_op.size())
    return fail(SPARQ_INVALID_ARGUMENT, "op-by-op step " + std::to_string(index) +
                                            " is out of range (" +
                                            std::to_string(s->plan.op_by_op.size()) + " steps)");
  const sparq::OffPathNode& o = s->plan.op_by_op[index];
  if (node) *node = o.node.c_str();
  if (op) *op = o.op.c_str();
  if (reason) *reason = o.cause.c_str();
  return SPARQ_OK;
}

}  // extern "C"
