#include "formats/graph_io.h"

#include <cstring>
#include <set>

#include "formats/error.h"

namespace sparq {
namespace {

constexpr char kMagic[4] = {'S', 'Q', 'G', '1'};
constexpr uint32_t kMaxCount = 1u << 24;
constexpr uint32_t kMaxString = 1u << 20;

class Out {
 public:
  template <class T>
  void put(T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void str(const std::string& v) {
    put<uint32_t>(static_cast<uint32_t>(v.size()));
    s += v;
  }
  std::string s;
};

class In {
 public:
  In(std::string_view d, const std::string& path) : d_(d), path_(path) {}
  [[noreturn]] void bad(const std::string& what) const {
    throw Error(Status::kFormatError, path_ + ": corrupt graph: " + what);
  }
  template <class T>
  T get() {
    if (sizeof(T) > d_.size() - at_) bad("truncated");
    T v;
    std::memcpy(&v, d_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  // A count of items that each take at least `min_bytes` of what follows: bounded by the
  // bytes left, so a corrupt count can never make the reader allocate more than the
  // graph's own size in items before it fails.
  uint32_t count(size_t min_bytes) {
    const uint32_t n = get<uint32_t>();
    if (n > kMaxCount || static_cast<uint64_t>(n) * min_bytes > d_.size() - at_)
      bad("count too large");
    return n;
  }
  std::string str() {
    const uint32_t n = get<uint32_t>();
    if (n > kMaxString || n > d_.size() - at_) bad("string out of bounds");
    std::string v(d_.data() + at_, n);
    at_ += n;
    return v;
  }
  bool done() const { return at_ == d_.size(); }

 private:
  std::string_view d_;
  size_t at_ = 0;
  const std::string& path_;
};

DType file_dtype(ElemType t) {
  switch (t) {
    case ElemType::kF32: return DType::kF32;
    case ElemType::kS8: return DType::kS8;
    case ElemType::kU8:
    case ElemType::kBool: return DType::kU8;
    case ElemType::kI32: return DType::kI32;
    case ElemType::kI64:
    case ElemType::kF64: return DType::kI64;  // 8-byte payloads
  }
  return DType::kU8;
}

void put_values(Out& o, const std::vector<ValueInfo>& vs) {
  o.put<uint32_t>(static_cast<uint32_t>(vs.size()));
  for (const ValueInfo& v : vs) {
    o.str(v.name);
    o.put<uint8_t>(static_cast<uint8_t>(v.type));
    o.put<uint32_t>(static_cast<uint32_t>(v.shape.size()));
    for (const Dim& d : v.shape) {
      o.put<int64_t>(d.value);
      o.str(d.symbol);
    }
  }
}

ElemType elem(In& in, uint8_t t) {
  if (t < 1 || t > 7) in.bad("unknown element type");
  return static_cast<ElemType>(t);
}

std::vector<ValueInfo> get_values(In& in) {
  std::vector<ValueInfo> vs(in.count(4 + 1 + 4));  // name, type, rank
  for (ValueInfo& v : vs) {
    v.name = in.str();
    v.type = elem(in, in.get<uint8_t>());
    const uint32_t rank = in.count(8 + 4);
    if (rank > 8) in.bad("rank above 8");
    for (uint32_t i = 0; i < rank; ++i) {
      Dim d;
      d.value = in.get<int64_t>();
      d.symbol = in.str();
      if (d.value < -1) in.bad("bad dimension");
      v.shape.push_back(d);
    }
  }
  return vs;
}

}  // namespace

std::string serialize_graph(const Graph& g, SparqFileWriter& w) {
  Out o;
  o.s.append(kMagic, 4);
  o.put<int64_t>(g.opset);
  put_values(o, g.inputs);
  put_values(o, g.outputs);
  size_t next_const = 0;
  auto add_const = [&](const Constant& c) {
    const std::string name = "const/" + std::to_string(next_const++);
    // The file keeps the byte payload; the graph records the exact element type.
    const int64_t elems = c.elements();
    const size_t es = elem_type_size(c.type);
    const DType dt = file_dtype(c.type);
    std::vector<int64_t> shape = {elems * static_cast<int64_t>(es / dtype_size(dt))};
    w.add_tensor(name, dt, shape, c.raw());
    return name;
  };
  o.put<uint32_t>(static_cast<uint32_t>(g.nodes.size()));
  for (const Node& n : g.nodes) {
    o.str(n.name);
    o.str(n.op);
    o.put<uint32_t>(static_cast<uint32_t>(n.inputs.size()));
    for (const std::string& s : n.inputs) o.str(s);
    o.put<uint32_t>(static_cast<uint32_t>(n.outputs.size()));
    for (const std::string& s : n.outputs) o.str(s);
    o.put<uint32_t>(static_cast<uint32_t>(n.attrs.size()));
    for (const auto& kv : n.attrs) {
      const Attribute& a = kv.second;
      o.str(kv.first);
      o.put<uint8_t>(static_cast<uint8_t>(a.kind));
      switch (a.kind) {
        case Attribute::Kind::kInt: o.put<int64_t>(a.i); break;
        case Attribute::Kind::kFloat: o.put<float>(a.f); break;
        case Attribute::Kind::kString: o.str(a.s); break;
        case Attribute::Kind::kInts:
          o.put<uint32_t>(static_cast<uint32_t>(a.ints.size()));
          for (int64_t v : a.ints) o.put<int64_t>(v);
          break;
        case Attribute::Kind::kFloats:
          o.put<uint32_t>(static_cast<uint32_t>(a.floats.size()));
          for (float v : a.floats) o.put<float>(v);
          break;
        case Attribute::Kind::kTensor: {
          o.put<uint8_t>(static_cast<uint8_t>(a.t->type));
          o.put<uint32_t>(static_cast<uint32_t>(a.t->shape.size()));
          for (int64_t d : a.t->shape) o.put<int64_t>(d);
          o.str(add_const(*a.t));
          break;
        }
      }
    }
  }
  o.put<uint32_t>(static_cast<uint32_t>(g.initializers.size()));
  for (const auto& kv : g.initializers) {
    o.str(kv.first);
    o.put<uint8_t>(static_cast<uint8_t>(kv.second->type));
    o.put<uint32_t>(static_cast<uint32_t>(kv.second->shape.size()));
    for (int64_t d : kv.second->shape) o.put<int64_t>(d);
    o.str(add_const(*kv.second));
  }
  return o.s;
}

Graph deserialize_graph(const std::shared_ptr<const SparqFile>& file) {
  const std::string path = "model";
  In in(file->metadata(), path);
  if (file->metadata().size() < 4 || std::memcmp(file->metadata().data(), kMagic, 4) != 0) {
    in.bad("wrong magic");
  }
  in.get<uint32_t>();
  Graph g;
  g.opset = in.get<int64_t>();
  g.inputs = get_values(in);
  g.outputs = get_values(in);
  // A constant: element type and shape from the graph, bytes from the named tensor.
  auto get_const = [&]() {
    auto c = std::make_shared<Constant>();
    c->type = elem(in, in.get<uint8_t>());
    const uint32_t rank = in.count(8);
    if (rank > 8) in.bad("rank above 8");
    uint64_t elems = 1;
    for (uint32_t i = 0; i < rank; ++i) {
      const int64_t d = in.get<int64_t>();
      if (d < 0 || __builtin_mul_overflow(elems, static_cast<uint64_t>(d), &elems))
        in.bad("bad shape");
      c->shape.push_back(d);
    }
    const std::string name = in.str();
    const TensorInfo* t = file->find(name);
    if (t == nullptr) in.bad("missing constant '" + name + "'");
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(elems, elem_type_size(c->type), &bytes) || bytes != t->size) {
      in.bad("constant '" + name + "' size does not match its shape");
    }
    c->view = static_cast<const uint8_t*>(file->data(*t));
    c->owner = file;
    return c;
  };
  g.nodes.resize(in.count(5 * 4));  // name, op and three counts
  for (Node& n : g.nodes) {
    n.name = in.str();
    n.op = in.str();
    n.inputs.resize(in.count(4));
    for (std::string& s : n.inputs) s = in.str();
    n.outputs.resize(in.count(4));
    for (std::string& s : n.outputs) s = in.str();
    const uint32_t na = in.count(4 + 1);
    for (uint32_t i = 0; i < na; ++i) {
      const std::string key = in.str();
      Attribute a;
      const uint8_t kind = in.get<uint8_t>();
      if (kind > static_cast<uint8_t>(Attribute::Kind::kTensor)) in.bad("unknown attribute kind");
      a.kind = static_cast<Attribute::Kind>(kind);
      switch (a.kind) {
        case Attribute::Kind::kInt: a.i = in.get<int64_t>(); break;
        case Attribute::Kind::kFloat: a.f = in.get<float>(); break;
        case Attribute::Kind::kString: a.s = in.str(); break;
        case Attribute::Kind::kInts: {
          const uint32_t c = in.count(8);
          for (uint32_t j = 0; j < c; ++j) a.ints.push_back(in.get<int64_t>());
          break;
        }
        case Attribute::Kind::kFloats: {
          const uint32_t c = in.count(4);
          for (uint32_t j = 0; j < c; ++j) a.floats.push_back(in.get<float>());
          break;
        }
        case Attribute::Kind::kTensor: a.t = get_const(); break;
      }
      n.attrs[key] = std::move(a);
    }
  }
  const uint32_t ni = in.count(4 + 1 + 4 + 4);  // name, type, rank, tensor name
  for (uint32_t i = 0; i < ni; ++i) {
    const std::string name = in.str();
    if (!g.initializers.emplace(name, get_const()).second)
      in.bad("duplicate initializer '" + name + "'");
  }
  if (!in.done()) in.bad("trailing bytes");
  // References: every node input is a graph input, an initializer or an earlier output.
  std::set<std::string> defined;
  for (const ValueInfo& v : g.inputs) defined.insert(v.name);
  for (const auto& kv : g.initializers) defined.insert(kv.first);
  for (const Node& n : g.nodes) {
    for (const std::string& s : n.inputs) {
      if (!s.empty() && !defined.count(s))
        in.bad("node '" + n.name + "' uses undefined '" + s + "'");
    }
    for (const std::string& s : n.outputs) defined.insert(s);
  }
  for (const ValueInfo& v : g.outputs) {
    if (!defined.count(v.name)) in.bad("output '" + v.name + "' is never computed");
  }
  return g;
}

}  // namespace sparq
