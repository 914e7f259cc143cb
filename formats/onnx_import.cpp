#include "formats/onnx_import.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <onnx/onnx_pb.h>
#include <set>
#include <sstream>

#include "engine/ops/registry.h"
#include "formats/error.h"

namespace sparq {
namespace {

// Largest tensor the importer accepts (16 GiB): guards allocations against hostile sizes.
constexpr uint64_t kMaxTensorBytes = uint64_t{1} << 34;

[[noreturn]] void format_error(const std::string& src, const std::string& what) {
  throw Error(Status::kFormatError, src + ": " + what);
}
[[noreturn]] void unsupported(const std::string& src, const std::string& what) {
  throw Error(Status::kUnsupported, src + ": " + what);
}

bool map_type(int32_t onnx_type, ElemType* out) {
  switch (onnx_type) {
    case onnx::TensorProto::FLOAT: *out = ElemType::kF32; return true;
    case onnx::TensorProto::UINT8: *out = ElemType::kU8; return true;
    case onnx::TensorProto::INT8: *out = ElemType::kS8; return true;
    case onnx::TensorProto::INT32: *out = ElemType::kI32; return true;
    case onnx::TensorProto::INT64: *out = ElemType::kI64; return true;
    case onnx::TensorProto::BOOL: *out = ElemType::kBool; return true;
    case onnx::TensorProto::DOUBLE: *out = ElemType::kF64; return true;
    default: return false;
  }
}

bool safe_relative_path(const std::string& p) {
  if (p.empty() || p[0] == '/') return false;
  std::stringstream ss(p);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part == "..") return false;
  }
  return true;
}

class Importer {
 public:
  Constant tensor_bytes(const std::string& bytes) {
    onnx::TensorProto t;
    if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
        !t.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      format_error(src_, "not a valid ONNX TensorProto");
    }
    return tensor(t);
  }

  Importer(std::string base_dir, std::string src)
      : base_dir_(std::move(base_dir)), src_(std::move(src)) {}

  Graph run(const std::string& bytes) {
    if (bytes.empty()) format_error(src_, "the file is empty");
    onnx::ModelProto model;
    if (bytes.size() > static_cast<size_t>(INT32_MAX) ||
        !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      format_error(src_, "not a valid ONNX model (protobuf parse failed: truncated or corrupt?)");
    }
    if (!model.has_graph()) format_error(src_, "the model has no graph");
    Graph g;
    for (const auto& os : model.opset_import()) {
      if (os.domain().empty() || os.domain() == "ai.onnx") g.opset = os.version();
    }
    if (g.opset == 0) format_error(src_, "the model declares no default-domain opset");
    if (g.opset < kMinOpset || g.opset > kMaxOpset) {
      unsupported(src_, "opset " + std::to_string(g.opset) + " is not supported (supported: " +
                            std::to_string(kMinOpset) + " to " + std::to_string(kMaxOpset) + ")");
    }
    const onnx::GraphProto& gp = model.graph();
    for (const auto& t : gp.initializer()) {
      if (t.name().empty()) format_error(src_, "an initializer has no name");
      if (!g.initializers.emplace(t.name(), std::make_shared<Constant>(tensor(t))).second) {
        format_error(src_, "initializer '" + t.name() + "' is defined twice");
      }
    }
    for (const auto& vi : gp.input()) {
      if (g.initializers.count(vi.name())) continue;  // older exports list initializers as inputs
      g.inputs.push_back(value_info(vi));
    }
    for (const auto& vi : gp.output()) g.outputs.push_back(value_info(vi));
    if (g.outputs.empty()) format_error(src_, "the graph has no outputs");

    const std::vector<std::string>& ops = supported_onnx_ops();
    const std::set<std::string> supported(ops.begin(), ops.end());
    for (int i = 0; i < gp.node_size(); ++i) {
      const onnx::NodeProto& np = gp.node(i);
      Node n;
      n.op = np.op_type();
      n.name = np.name().empty() ? n.op + "_" + std::to_string(i) : np.name();
      const bool default_domain = np.domain().empty() || np.domain() == "ai.onnx";
      if (!default_domain || !supported.count(n.op)) {
        const std::string op = default_domain ? n.op : np.domain() + "::" + n.op;
        unsupported(src_, "unsupported op '" + op + "' in node '" + n.name + "'");
      }
      n.inputs.assign(np.input().begin(), np.input().end());
      n.outputs.assign(np.output().begin(), np.output().end());
      for (const auto& a : np.attribute()) n.attrs[a.name()] = attribute(a, n);
      g.nodes.push_back(std::move(n));
    }
    // Every node against its registry row (arity, attribute kinds, the opset's form),
    // then the wiring, before any pass looks at the graph.
    validate_graph(g, /*allow_sparq_ops=*/false, src_);
    resolve_ops(g);
    return g;
  }

 private:
  ValueInfo value_info(const onnx::ValueInfoProto& vi) {
    ValueInfo v;
    v.name = vi.name();
    if (v.name.empty()) format_error(src_, "a graph input or output has no name");
    if (!vi.type().has_tensor_type()) {
      unsupported(src_, "graph value '" + v.name + "' is not a tensor");
    }
    const auto& tt = vi.type().tensor_type();
    if (!map_type(tt.elem_type(), &v.type)) {
      unsupported(
          src_, "graph value '" + v.name + "' has element type " + std::to_string(tt.elem_type()));
    }
    if (tt.has_shape()) {
      for (const auto& d : tt.shape().dim()) {
        Dim dim;
        if (d.has_dim_value()) {
          if (d.dim_value() < 0)
            format_error(src_, "graph value '" + v.name + "' has a negative dimension");
          dim.value = d.dim_value();
        } else {
          dim.symbol = d.dim_param();
        }
        v.shape.push_back(dim);
      }
    }
    return v;
  }

  Constant tensor(const onnx::TensorProto& t) {
    const std::string what = "tensor '" + t.name() + "'";
    Constant c;
    if (!map_type(t.data_type(), &c.type)) {
      unsupported(src_, what + " has unsupported data type " + std::to_string(t.data_type()));
    }
    uint64_t elems = 1;
    for (int64_t d : t.dims()) {
      if (d < 0 || __builtin_mul_overflow(elems, static_cast<uint64_t>(d), &elems)) {
        format_error(src_, what + " has a negative or overflowing shape");
      }
      c.shape.push_back(d);
    }
    const uint64_t esize = elem_type_size(c.type);
    if (elems > kMaxTensorBytes / esize) format_error(src_, what + " is too large");
    const uint64_t nbytes = elems * esize;
    if (t.data_location() == onnx::TensorProto::EXTERNAL) {
      c.bytes = external(t, nbytes, what);
      return c;
    }
    // The data present is checked against the shape before anything is allocated: a
    // tensor that declares 2^32 elements with a few bytes of data is refused at once.
    if (t.has_raw_data()) {
      if (t.raw_data().size() != nbytes) {
        format_error(src_, what + " has " + std::to_string(t.raw_data().size()) +
                               " bytes of data, its shape needs " + std::to_string(nbytes));
      }
      c.bytes.resize(nbytes);
      if (nbytes) std::memcpy(c.bytes.data(), t.raw_data().data(), nbytes);
      return c;
    }
    auto need = [&](int64_t have) {
      if (static_cast<uint64_t>(have) != elems) {
        format_error(src_, what + " has " + std::to_string(have) + " values, its shape needs " +
                               std::to_string(elems));
      }
      c.bytes.resize(nbytes);
    };
    switch (c.type) {
      case ElemType::kF32:
        need(t.float_data_size());
        if (elems) std::memcpy(c.bytes.data(), t.float_data().data(), nbytes);
        break;
      case ElemType::kF64:
        need(t.double_data_size());
        if (elems) std::memcpy(c.bytes.data(), t.double_data().data(), nbytes);
        break;
      case ElemType::kI64:
        need(t.int64_data_size());
        if (elems) std::memcpy(c.bytes.data(), t.int64_data().data(), nbytes);
        break;
      case ElemType::kI32:
        need(t.int32_data_size());
        if (elems) std::memcpy(c.bytes.data(), t.int32_data().data(), nbytes);
        break;
      case ElemType::kS8:
      case ElemType::kU8:
      case ElemType::kBool: {
        // Stored widened to int32: a value outside the type (a uint8 zero point of 300)
        // is refused, never wrapped.
        need(t.int32_data_size());
        const int32_t lo = c.type == ElemType::kS8 ? -128 : 0;
        const int32_t hi = c.type == ElemType::kS8 ? 127 : c.type == ElemType::kU8 ? 255 : 1;
        for (uint64_t i = 0; i < elems; ++i) {
          const int32_t v = t.int32_data(static_cast<int>(i));
          if (v < lo || v > hi) {
            format_error(src_, what + " holds " + std::to_string(v) + " at index " +
                                   std::to_string(i) + ", out of range for " +
                                   elem_type_name(c.type));
          }
          c.bytes[i] = static_cast<uint8_t>(v);
        }
        break;
      }
    }
    return c;
  }

  std::vector<uint8_t> external(const onnx::TensorProto& t, uint64_t nbytes,
                                const std::string& what) {
    std::string location;
    uint64_t offset = 0;
    int64_t length = -1;
    for (const auto& kv : t.external_data()) {
      if (kv.key() == "location") {
        location = kv.value();
      } else if (kv.key() == "offset" || kv.key() == "length") {
        char* end = nullptr;
        const long long v = std::strtoll(kv.value().c_str(), &end, 10);
        if (kv.value().empty() || *end != '\0' || v < 0) {
          format_error(src_, what + " has a bad external data " + kv.key());
        }
        if (kv.key() == "offset") offset = static_cast<uint64_t>(v);
        else length = v;
      }
    }
    if (base_dir_.empty())
      format_error(src_, what + " uses external data, which needs a model file path");
    if (!safe_relative_path(location)) {
      format_error(src_, what + " has external data location '" + location +
                             "' outside the model's directory");
    }
    if (length >= 0 && static_cast<uint64_t>(length) != nbytes) {
      format_error(src_, what + " external data length " + std::to_string(length) +
                             " does not match its shape (" + std::to_string(nbytes) + " bytes)");
    }
    const std::string path = base_dir_ + "/" + location;
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) format_error(src_, what + ": cannot open external data file '" + path + "'");
    const uint64_t size = static_cast<uint64_t>(in.tellg());
    if (offset > size || nbytes > size - offset) {
      format_error(src_, what + ": external data lies past the end of '" + path + "'");
    }
    std::vector<uint8_t> out(nbytes);
    in.seekg(static_cast<std::streamoff>(offset));
    if (nbytes &&
        !in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(nbytes))) {
      format_error(src_, what + ": cannot read external data from '" + path + "'");
    }
    return out;
  }

  Attribute attribute(const onnx::AttributeProto& a, const Node& n) {
    Attribute r;
    switch (a.type()) {
      case onnx::AttributeProto::INT:
        r.kind = Attribute::Kind::kInt;
        r.i = a.i();
        break;
      case onnx::AttributeProto::FLOAT:
        r.kind = Attribute::Kind::kFloat;
        r.f = a.f();
        break;
      case onnx::AttributeProto::STRING:
        r.kind = Attribute::Kind::kString;
        r.s = a.s();
        break;
      case onnx::AttributeProto::INTS:
        r.kind = Attribute::Kind::kInts;
        r.ints.assign(a.ints().begin(), a.ints().end());
        break;
      case onnx::AttributeProto::FLOATS:
        r.kind = Attribute::Kind::kFloats;
        r.floats.assign(a.floats().begin(), a.floats().end());
        break;
      case onnx::AttributeProto::TENSOR:
        r.kind = Attribute::Kind::kTensor;
        r.t = std::make_shared<Constant>(tensor(a.t()));
        break;
      default:
        unsupported(src_, "attribute '" + a.name() + "' of node '" + n.name + "' (" + n.op +
                              ") has an unsupported kind");
    }
    return r;
  }

  std::string base_dir_, src_;
};

}  // namespace

const std::vector<std::string>& supported_onnx_ops() {
  static const std::vector<std::string> ops = op_names(OpDomain::kOnnx);
  return ops;
}

Graph import_onnx_bytes(const std::string& bytes, const std::string& base_dir,
                        const std::string& source_name) {
  return Importer(base_dir, source_name).run(bytes);
}

Constant import_onnx_tensor(const std::string& bytes, const std::string& source_name) {
  return Importer("", source_name).tensor_bytes(bytes);
}

Graph import_onnx(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(Status::kInvalidArgument, "cannot open '" + path + "'");
  const std::streamoff size = in.tellg();
  if (size < 0 || static_cast<uint64_t>(size) > uint64_t{INT32_MAX}) {
    format_error(path, "the file is too large for a protobuf model (use external data)");
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (size > 0 && !in.read(&bytes[0], size))
    throw Error(Status::kInvalidArgument, "cannot read '" + path + "'");
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  return import_onnx_bytes(bytes, dir, path);
}

}  // namespace sparq
