// The `sparq` Python module (pybind11): convert, Model, Model.run.
//
// Model.run borrows C-contiguous numpy inputs without copying them, releases the GIL
// while the engine runs, and may be called from several Python threads at once on one
// Model: each call takes an idle Session from the model's pool (creating one when all
// are busy), so calls never share scratch memory. Outputs are new numpy arrays.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "engine/model.h"
#include "formats/error.h"
#include "formats/onnx_import.h"
#include "kernels/common/isa.h"
#include "sparq/version.h"

namespace py = pybind11;

namespace sparq {
namespace {

// Raised as ValueError (bad input) or RuntimeError (everything else), with the message.
struct PyInvalid : std::exception {};

py::object dtype_name(ElemType t) {
  switch (t) {
    case ElemType::kF32: return py::str("float32");
    case ElemType::kF64: return py::str("float64");
    case ElemType::kS8: return py::str("int8");
    case ElemType::kU8: return py::str("uint8");
    case ElemType::kI32: return py::str("int32");
    case ElemType::kI64: return py::str("int64");
    case ElemType::kBool: return py::str("bool");
  }
  return py::none();
}

bool elem_type_of(const py::dtype& d, ElemType* t) {
  const char kind = d.kind();
  const ssize_t size = d.itemsize();
  if (kind == 'f' && size == 4) *t = ElemType::kF32;
  else if (kind == 'f' && size == 8) *t = ElemType::kF64;
  else if (kind == 'i' && size == 8) *t = ElemType::kI64;
  else if (kind == 'i' && size == 4) *t = ElemType::kI32;
  else if (kind == 'i' && size == 1) *t = ElemType::kS8;
  else if (kind == 'u' && size == 1) *t = ElemType::kU8;
  else if (kind == 'b' && size == 1) *t = ElemType::kBool;
  else return false;
  return true;
}

py::list describe(const std::vector<ValueInfo>& infos) {
  py::list out;
  for (const ValueInfo& v : infos) {
    py::dict d;
    d["name"] = v.name;
    d["dtype"] = dtype_name(v.type);
    py::list shape;
    for (const Dim& dim : v.shape) {
      if (dim.value >= 0) shape.append(dim.value);
      else if (!dim.symbol.empty()) shape.append(dim.symbol);
      else shape.append(py::none());
    }
    d["shape"] = py::tuple(shape);
    out.append(d);
  }
  return out;
}

class PyModel {
 public:
  PyModel(const std::string& path, int threads) : threads_(threads) {
    if (threads < 0) throw Error(Status::kInvalidArgument, "threads must be >= 0 (0 = every core)");
    model_ = Model::load(path);
    // One session up front: the common single-threaded caller never builds another.
    idle_.push_back(std::make_unique<Session>(model_, threads_));
  }

  py::list inputs() const { return describe(model_->graph().inputs); }
  py::list outputs() const { return describe(model_->graph().outputs); }
  std::string path() const { return model_->path(); }
  int threads() const { return threads_; }

  py::dict run(const py::dict& feeds) {
    // Borrow every input: the arrays are kept alive by `keep` for the whole call.
    std::vector<py::array> keep;
    std::map<std::string, Value> inputs;
    for (const auto& item : feeds) {
      if (!py::isinstance<py::str>(item.first))
        throw Error(Status::kInvalidArgument, "input names must be str");
      const std::string name = py::cast<std::string>(item.first);
      py::array a = py::array::ensure(item.second, py::array::c_style);
      if (!a) throw Error(Status::kInvalidArgument, "input '" + name + "' is not an array");
      auto c = std::make_shared<Constant>();
      if (!elem_type_of(a.dtype(), &c->type)) {
        throw Error(Status::kInvalidArgument, "input '" + name + "' has unsupported dtype " +
                                                  py::cast<std::string>(py::str(a.dtype())));
      }
      for (ssize_t d = 0; d < a.ndim(); ++d) c->shape.push_back(a.shape(d));
      c->view = static_cast<const uint8_t*>(a.data());
      if (c->view == nullptr) c->view = reinterpret_cast<const uint8_t*>(&kEmpty);
      keep.push_back(std::move(a));
      inputs[name] = c;
    }
    std::map<std::string, Value> out;
    {
      py::gil_scoped_release nogil;
      std::unique_ptr<Session> s = acquire();
      try {
        out = s->run(std::move(inputs));
        std::lock_guard<std::mutex> lock(mu_);
        last_plan_ = s->plan_summary();
        has_plan_ = true;
      } catch (...) {
        release(std::move(s));
        throw;
      }
      release(std::move(s));
    }
    py::dict result;
    for (const auto& kv : out) {
      const Constant& c = *kv.second;
      ElemType t = c.type;
      std::vector<ssize_t> shape(c.shape.begin(), c.shape.end());
      py::dtype dt = t == ElemType::kF32    ? py::dtype::of<float>()
                     : t == ElemType::kF64  ? py::dtype::of<double>()
                     : t == ElemType::kI64  ? py::dtype::of<int64_t>()
                     : t == ElemType::kI32  ? py::dtype::of<int32_t>()
                     : t == ElemType::kS8   ? py::dtype::of<int8_t>()
                     : t == ElemType::kBool ? py::dtype::of<bool>()
                                            : py::dtype::of<uint8_t>();
      // A new array per call (a copy: outputs may be views of plan constants).
      py::array a(dt, shape);
      std::memcpy(a.mutable_data(), c.raw(), static_cast<size_t>(c.elements()) * elem_type_size(t));
      result[py::str(kv.first)] = a;
    }
    return result;
  }

  // The plan of the last successful run's input shapes (sparq_session_plan_summary).
  py::dict plan_summary() {
    PlanSummary p;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!has_plan_) throw Error(Status::kInvalidArgument, "no successful run yet");
      p = last_plan_;
    }
    py::dict d;
    d["steps"] = p.steps;
    d["op_by_op_steps"] = p.op_by_op.size();
    d["folded_nodes"] = p.folded;
    d["matmuls"] = p.matmuls;
    d["fused_attention"] = p.fused_attention;
    d["fused_residual"] = p.fused_residual;
    d["fused_embeddings"] = p.fused_embeddings;
    d["fused_add_layernorm"] = p.fused_add_layernorm;
    d["fused_quantize"] = p.fused_quantize;
    d["arena_bytes"] = p.arena_bytes;
    d["unshared_bytes"] = p.unshared_bytes;
    py::list steps;
    for (const OffPathNode& o : p.op_by_op) {
      py::dict s;
      s["node"] = o.node;
      s["op"] = o.op;
      s["reason"] = o.cause;
      steps.append(s);
    }
    d["op_by_op"] = steps;
    d["not_planned"] = p.not_planned;  // why these shapes ran op by op ("" when planned)
    return d;
  }

 private:
  std::unique_ptr<Session> acquire() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!idle_.empty()) {
        auto s = std::move(idle_.back());
        idle_.pop_back();
        return s;
      }
    }
    return std::make_unique<Session>(model_, threads_);
  }
  void release(std::unique_ptr<Session> s) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(std::move(s));
  }

  static constexpr uint64_t kEmpty = 0;
  std::shared_ptr<const Model> model_;
  int threads_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Session>> idle_;
  PlanSummary last_plan_;
  bool has_plan_ = false;
};

py::list convert(const std::string& onnx_path, const std::string& out_path,
                 const py::object& precision, const std::string& block, const py::object& prune,
                 bool fuse, bool require_fused) {
  ConvertOptions o;
  // None: the CLI's default (fp32 for float weights; a quantized model's stay int8).
  o.precision_given = !precision.is_none();
  if (o.precision_given) o.precision = py::cast<std::string>(precision);
  o.block = block;
  o.fuse = fuse;
  o.require_fused = require_fused;
  if (!prune.is_none()) {
    o.prune = py::cast<double>(prune);
    if (!(o.prune >= 0.0 && o.prune < 1.0)) {
      throw Error(Status::kInvalidArgument,
                  "prune must be a sparsity in [0, 1), got " + std::to_string(o.prune));
    }
  }
  std::vector<LayerReport> report;
  FastPathReport fast;
  {
    py::gil_scoped_release nogil;
    report = convert_graph(import_onnx(onnx_path), out_path, o, nullptr, &fast);
  }
  if (!fast.fused()) {
    const std::string msg = "sparq: " + std::to_string(fast.off.size()) +
                            " encoder pieces stay off the fast path (op by op, slower, same "
                            "answers): " +
                            fast.summary() + "; require_fused=True makes this an error";
    if (PyErr_WarnEx(PyExc_RuntimeWarning, msg.c_str(), 1) != 0) throw py::error_already_set();
  }
  py::list out;
  for (const LayerReport& r : report) {
    py::dict d;
    d["name"] = r.name;
    d["k"] = r.k;
    d["n"] = r.n;
    d["sparsity"] = r.sparsity;
    d["block"] = r.block;
    d["sparse"] = r.sparse;
    d["bytes"] = r.bytes;
    out.append(d);
  }
  return out;
}

}  // namespace
}  // namespace sparq

PYBIND11_MODULE(sparq, m) {
  using namespace sparq;
  m.doc() = "sparq: block-sparse Transformer encoder inference on CPUs";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      if (e.status() == Status::kInvalidArgument) PyErr_SetString(PyExc_ValueError, e.what());
      else PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
  m.attr("__version__") = SPARQ_VERSION_STRING;
  m.def(
      "isa", [] { return std::string(isa_name(active_isa())); },
      "The kernel ISA in use (avx512vnni, avx512, avx2, generic).");
  m.def("convert", &convert, py::arg("onnx_path"), py::arg("out_path"),
        py::arg("precision") = py::none(), py::arg("block") = "auto", py::arg("prune") = py::none(),
        py::arg("fuse") = true, py::arg("require_fused") = false,
        "Converts an ONNX encoder into a .sparq file (as `sparq convert`); returns the per-weight "
        "report. precision None is the CLI's default (fp32 for float weights; a quantized "
        "model's matmuls stay int8). Warns (RuntimeWarning) when an encoder matmul, attention, "
        "LayerNorm or GELU is "
        "not fused; require_fused=True raises instead and writes nothing.");
  py::class_<PyModel>(m, "Model")
      .def(py::init<const std::string&, int>(), py::arg("path"), py::arg("threads") = 0,
           "Loads a .sparq model; `threads` per concurrent run (0 = every core).")
      .def_property_readonly("inputs", &PyModel::inputs)
      .def_property_readonly("outputs", &PyModel::outputs)
      .def_property_readonly("path", &PyModel::path)
      .def_property_readonly("threads", &PyModel::threads)
      .def("run", &PyModel::run, py::arg("inputs"),
           "Runs the model on a dict of numpy arrays; returns a dict of new numpy arrays.")
      .def("plan_summary", &PyModel::plan_summary,
           "The execution plan of the last successful run's input shapes: step counts, fused "
           "counts, arena bytes and each op-by-op step (node, op, reason).");
}
