#include "formats/sparq_file.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <xxhash.h>

#include "formats/error.h"

namespace sparq {
namespace {

// File layout, version 1 (docs/file-format.md). All integers little-endian.
constexpr uint8_t kMagic[8] = {0x89, 'S', 'P', 'A', 'R', 'Q', '\r', '\n'};
// Versions (docs/file-format.md, "Versioning"): the container layout is the same in
// all; version 2 graphs may use what version 1 readers lack (the Sigmoid, Reciprocal
// and Exp ops, SparqMaskBias, SparqMatMul activation gelu_sigmoid, SparqAttention
// without a mask), version 3 graphs the quantized ONNX ops (QuantizeLinear,
// DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearMatMul) and opset 10,
// so an older sparq refuses a newer file at the header with a clear message instead of
// at an unknown op.
constexpr uint32_t kVersion = 3;     // written
constexpr uint32_t kMinVersion = 1;  // still read
constexpr uint64_t kHeaderBytes = 128;
constexpr uint64_t kAlign = 64;
// Header fields, by byte offset.
constexpr size_t kOffVersion = 8, kOffCount = 12, kOffFileSize = 16, kOffTableOffset = 24,
                 kOffTableSize = 32, kOffMetaOffset = 40, kOffMetaSize = 48, kOffMetaChecksum = 56,
                 kOffTableChecksum = 64, kOffHeaderChecksum = 72;
constexpr uint32_t kMaxTensors = 1u << 20;

uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
uint64_t hash(const void* p, size_t n) { return XXH3_64bits(p, n); }

template <class T>
void put(std::string& s, size_t at, T v) {
  std::memcpy(&s[at], &v, sizeof(T));
}
template <class T>
void append(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <class T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error(Status::kFormatError, path + ": not a valid .sparq file: " + what);
}

bool valid_dtype(uint8_t d) { return d >= 1 && d <= 5; }

// Bounds-checked reader over the tensor table.
class Cursor {
 public:
  Cursor(const uint8_t* p, uint64_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  template <class T>
  T read() {
    need(sizeof(T));
    T v = get<T>(p_ + at_);
    at_ += sizeof(T);
    return v;
  }
  std::string bytes(uint64_t len) {
    need(len);
    std::string s(reinterpret_cast<const char*>(p_ + at_), len);
    at_ += len;
    return s;
  }
  void align8() {
    const uint64_t next = (at_ + 7) / 8 * 8;
    need(next - at_);
    at_ = next;
  }
  bool done() const { return at_ == n_; }

 private:
  void need(uint64_t len) {
    if (len > n_ - at_) bad(path_, "tensor table is truncated");
  }
  const uint8_t* p_;
  uint64_t n_, at_ = 0;
  const std::string& path_;
};

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kS8: return "int8";
    case DType::kU8: return "uint8";
    case DType::kI32: return "int32";
    case DType::kI64: return "int64";
  }
  return "unknown";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kS8: return 1;
    case DType::kU8: return 1;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

int64_t TensorInfo::elements() const {
  int64_t e = 1;
  for (int64_t d : shape) e *= d;
  return e;
}

void SparqFileWriter::add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                 const void* data) {
  if (name.empty() || name.size() > kMaxNameBytes) {
    throw Error(Status::kInvalidArgument, "tensor name must have 1 to 1024 bytes");
  }
  for (const Pending& p : tensors_) {
    if (p.info.name == name)
      throw Error(Status::kInvalidArgument, "duplicate tensor '" + name + "'");
  }
  if (shape.size() > static_cast<size_t>(kMaxRank)) {
    throw Error(Status::kInvalidArgument, "tensor '" + name + "' has rank above 8");
  }
  uint64_t elems = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(elems, static_cast<uint64_t>(d), &elems)) {
      throw Error(Status::kInvalidArgument, "tensor '" + name + "' has an invalid shape");
    }
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(elems, dtype_size(dtype), &bytes) || dtype_size(dtype) == 0) {
    throw Error(Status::kInvalidArgument, "tensor '" + name + "' is too large");
  }
  if (bytes > 0 && data == nullptr) {
    throw Error(Status::kInvalidArgument, "tensor '" + name + "' has no data");
  }
  Pending p;
  p.info.name = name;
  p.info.dtype = dtype;
  p.info.shape = std::move(shape);
  p.info.size = bytes;
  p.data = data;
  tensors_.push_back(std::move(p));
}

void SparqFileWriter::add_tensor_copy(const std::string& name, DType dtype,
                                      std::vector<int64_t> shape, const void* data, size_t bytes) {
  owned_.push_back(std::make_unique<std::string>(static_cast<const char*>(data), bytes));
  add_tensor(name, dtype, std::move(shape), owned_.back()->data());
  if (tensors_.back().info.size != bytes) {
    tensors_.pop_back();
    throw Error(Status::kInvalidArgument, "tensor '" + name + "': byte count does not match shape");
  }
}

void SparqFileWriter::write(const std::string& path) const {
  // Layout: header, table, metadata, tensors; each section 64-byte aligned.
  std::vector<TensorInfo> infos;
  std::string table;
  uint64_t cursor = 0;
  for (const Pending& p : tensors_) infos.push_back(p.info);
  // The table's size depends only on names and ranks, so build it once with zero
  // offsets to learn its size, then again with the real ones.
  auto build_table = [&](std::string& out) {
    out.clear();
    for (const TensorInfo& t : infos) {
      append<uint32_t>(out, static_cast<uint32_t>(t.name.size()));
      append<uint8_t>(out, static_cast<uint8_t>(t.dtype));
      append<uint8_t>(out, static_cast<uint8_t>(t.shape.size()));
      append<uint16_t>(out, 0);
      out += t.name;
      out.resize((out.size() + 7) / 8 * 8, '\0');
      for (int64_t d : t.shape) append<int64_t>(out, d);
      append<uint64_t>(out, t.offset);
      append<uint64_t>(out, t.size);
      append<uint64_t>(out, t.checksum);
    }
  };
  build_table(table);
  const uint64_t table_offset = kHeaderBytes;
  const uint64_t meta_offset = align_up(table_offset + table.size());
  cursor = align_up(meta_offset + metadata_.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    infos[i].offset = cursor;
    infos[i].checksum = hash(tensors_[i].data, infos[i].size);
    cursor = align_up(cursor + infos[i].size);
  }
  const uint64_t file_size = cursor;
  build_table(table);

  std::string header(kHeaderBytes, '\0');
  std::memcpy(&header[0], kMagic, sizeof(kMagic));
  put<uint32_t>(header, kOffVersion, kVersion);
  put<uint32_t>(header, kOffCount, static_cast<uint32_t>(infos.size()));
  put<uint64_t>(header, kOffFileSize, file_size);
  put<uint64_t>(header, kOffTableOffset, table_offset);
  put<uint64_t>(header, kOffTableSize, table.size());
  put<uint64_t>(header, kOffMetaOffset, meta_offset);
  put<uint64_t>(header, kOffMetaSize, metadata_.size());
  put<uint64_t>(header, kOffMetaChecksum, hash(metadata_.data(), metadata_.size()));
  put<uint64_t>(header, kOffTableChecksum, hash(table.data(), table.size()));
  put<uint64_t>(header, kOffHeaderChecksum, hash(header.data(), kOffHeaderChecksum));

  // Temporary file next to the target, renamed over it when complete.
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = mkstemp(&tmp[0]);
  if (fd < 0) {
    throw Error(Status::kInvalidArgument, "cannot create '" + tmp + "': " + std::strerror(errno));
  }
  bool ok = true;
  std::string err;
  auto pwrite_all = [&](const void* data, uint64_t n, uint64_t at) {
    const char* p = static_cast<const char*>(data);
    while (ok && n > 0) {
      const ssize_t w = ::pwrite(fd, p, std::min<uint64_t>(n, 1u << 30), static_cast<off_t>(at));
      if (w < 0) {
        if (errno == EINTR) continue;
        ok = false;
        err = std::strerror(errno);
        return;
      }
      p += w;
      n -= static_cast<uint64_t>(w);
      at += static_cast<uint64_t>(w);
    }
  };
  if (::ftruncate(fd, static_cast<off_t>(file_size)) != 0) {
    ok = false;
    err = std::strerror(errno);
  }
  pwrite_all(header.data(), header.size(), 0);
  pwrite_all(table.data(), table.size(), table_offset);
  pwrite_all(metadata_.data(), metadata_.size(), meta_offset);
  for (size_t i = 0; i < infos.size(); ++i)
    pwrite_all(tensors_[i].data, infos[i].size, infos[i].offset);
  if (ok && ::fsync(fd) != 0) {
    ok = false;
    err = std::strerror(errno);
  }
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = std::strerror(errno);
  }
  // Files are created 0600 by mkstemp; give them the usual mode.
  if (ok) {
    const mode_t mask = ::umask(0);
    ::umask(mask);
    ::chmod(tmp.c_str(), 0666 & ~mask);
  }
  if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = std::strerror(errno);
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    throw Error(Status::kInvalidArgument, "cannot write '" + path + "': " + err);
  }
}

std::shared_ptr<const SparqFile> SparqFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error(Status::kInvalidArgument, "cannot open '" + path + "': " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(Status::kInvalidArgument, "'" + path + "' is not a regular file");
  }
  std::shared_ptr<SparqFile> f(new SparqFile());
  f->path_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ < kHeaderBytes) {
    ::close(fd);
    bad(path, f->size_ == 0 ? "the file is empty" : "the file is shorter than its header");
  }
  void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    throw Error(Status::kInvalidArgument, "cannot map '" + path + "': " + std::strerror(errno));
  }
  f->base_ = static_cast<const uint8_t*>(p);
  f->parse();
  return f;
}

SparqFile::~SparqFile() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
}

void SparqFile::parse() {
  const uint8_t* h = base_;
  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) bad(path_, "wrong magic bytes");
  if (get<uint64_t>(h + kOffHeaderChecksum) != hash(h, kOffHeaderChecksum)) {
    bad(path_, "header checksum mismatch (corrupt header)");
  }
  version_ = get<uint32_t>(h + kOffVersion);
  if (version_ < kMinVersion || version_ > kVersion) {
    bad(path_, "format version " + std::to_string(version_) +
                   " is not supported (this build reads " + std::to_string(kMinVersion) + " to " +
                   std::to_string(kVersion) +
                   "): reconvert the ONNX model with this sparq (`sparq convert`), or use the "
                   "sparq that wrote it");
  }
  const uint32_t count = get<uint32_t>(h + kOffCount);
  const uint64_t file_size = get<uint64_t>(h + kOffFileSize);
  table_offset_ = get<uint64_t>(h + kOffTableOffset);
  table_size_ = get<uint64_t>(h + kOffTableSize);
  const uint64_t meta_offset = get<uint64_t>(h + kOffMetaOffset);
  const uint64_t meta_size = get<uint64_t>(h + kOffMetaSize);
  metadata_checksum_ = get<uint64_t>(h + kOffMetaChecksum);
  table_checksum_ = get<uint64_t>(h + kOffTableChecksum);
  if (file_size != size_) {
    bad(path_, "the header says " + std::to_string(file_size) + " bytes but the file has " +
                   std::to_string(size_) + " (truncated or extended)");
  }
  if (count > kMaxTensors) bad(path_, "too many tensors");
  auto in_file = [&](uint64_t off, uint64_t len) { return off <= size_ && len <= size_ - off; };
  if (table_offset_ < kHeaderBytes || !in_file(table_offset_, table_size_)) {
    bad(path_, "tensor table lies outside the file");
  }
  if (meta_offset < kHeaderBytes || !in_file(meta_offset, meta_size)) {
    bad(path_, "metadata lies outside the file");
  }
  if (hash(base_ + table_offset_, table_size_) != table_checksum_) {
    bad(path_, "tensor table checksum mismatch (corrupt table)");
  }
  metadata_ = std::string_view(reinterpret_cast<const char*>(base_ + meta_offset), meta_size);

  Cursor c(base_ + table_offset_, table_size_, path_);
  tensors_.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    TensorInfo t;
    const uint32_t name_len = c.read<uint32_t>();
    const uint8_t dtype = c.read<uint8_t>();
    const uint8_t rank = c.read<uint8_t>();
    c.read<uint16_t>();
    if (name_len == 0 || name_len > kMaxNameBytes)
      bad(path_, "tensor " + std::to_string(i) + " has a bad name length");
    t.name = c.bytes(name_len);
    c.align8();
    if (!valid_dtype(dtype)) bad(path_, "tensor '" + t.name + "' has an unknown dtype");
    if (rank > kMaxRank) bad(path_, "tensor '" + t.name + "' has rank above 8");
    t.dtype = static_cast<DType>(dtype);
    uint64_t elems = 1;
    for (uint8_t d = 0; d < rank; ++d) {
      const int64_t dim = c.read<int64_t>();
      if (dim < 0 || __builtin_mul_overflow(elems, static_cast<uint64_t>(dim), &elems)) {
        bad(path_, "tensor '" + t.name + "' has a negative or overflowing shape");
      }
      t.shape.push_back(dim);
    }
    t.offset = c.read<uint64_t>();
    t.size = c.read<uint64_t>();
    t.checksum = c.read<uint64_t>();
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(elems, dtype_size(t.dtype), &bytes) || bytes != t.size) {
      bad(path_, "tensor '" + t.name + "' size does not match its shape");
    }
    if (t.offset % kAlign != 0) bad(path_, "tensor '" + t.name + "' is not 64-byte aligned");
    if (t.offset < kHeaderBytes || !in_file(t.offset, t.size)) {
      bad(path_, "tensor '" + t.name + "' lies outside the file");
    }
    if (!by_name_.emplace(t.name, tensors_.size()).second)
      bad(path_, "duplicate tensor '" + t.name + "'");
    tensors_.push_back(std::move(t));
  }
  if (!c.done()) bad(path_, "tensor table has trailing bytes");
  // Tensors must not overlap each other, the table or the metadata.
  std::vector<std::pair<uint64_t, uint64_t>> spans = {
      {0, kHeaderBytes}, {table_offset_, table_size_}, {meta_offset, meta_size}};
  for (const TensorInfo& t : tensors_) spans.emplace_back(t.offset, t.size);
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].second > 0 && spans[i - 1].first + spans[i - 1].second > spans[i].first) {
      bad(path_, "sections overlap");
    }
  }
}

const TensorInfo* SparqFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SparqFile::require(const std::string& name, DType dtype, int rank) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) bad(path_, "missing tensor '" + name + "'");
  if (t->dtype != dtype) {
    bad(path_,
        "tensor '" + name + "' is " + dtype_name(t->dtype) + ", expected " + dtype_name(dtype));
  }
  if (static_cast<int>(t->shape.size()) != rank) {
    bad(path_, "tensor '" + name + "' has rank " + std::to_string(t->shape.size()) + ", expected " +
                   std::to_string(rank));
  }
  return *t;
}

void SparqFile::verify() const {
  if (hash(metadata_.data(), metadata_.size()) != metadata_checksum_) {
    bad(path_, "metadata checksum mismatch");
  }
  for (const TensorInfo& t : tensors_) {
    if (hash(data(t), t.size) != t.checksum)
      bad(path_, "checksum mismatch in tensor '" + t.name + "'");
  }
}

void add_packed(SparqFileWriter& w, const std::string& name, const PackedMatrix& m) {
  const PackedWeights& v = m.view();
  const PackedArraySizes s = m.array_sizes();
  const int64_t meta[8] = {static_cast<int64_t>(v.type),
                           v.n,
                           v.k,
                           v.rows_per_block,
                           v.group,
                           v.dense ? 1 : 0,
                           v.num_groups,
                           m.block().out * 256 + m.block().in};
  w.add_tensor_copy(name + ".meta", DType::kI64, {8}, meta, sizeof(meta));
  if (!v.dense) {
    w.add_tensor(name + ".group_ptr", DType::kI32, {s.group_ptr}, v.group_ptr);
    w.add_tensor(name + ".indices", DType::kI32, {s.indices}, v.indices);
  }
  w.add_tensor(name + ".values", v.type == WeightType::kS8 ? DType::kS8 : DType::kF32, {s.values},
               v.values);
  if (v.type == WeightType::kS8) {
    w.add_tensor(name + ".compensation", DType::kI32, {s.compensation}, v.compensation);
    w.add_tensor(name + ".scales", DType::kF32, {s.scales}, v.scales);
  }
}

PackedWeights read_packed(const SparqFile& file, const std::string& name, BlockShape* block) {
  const TensorInfo& meta_t = file.require(name + ".meta", DType::kI64, 1);
  if (meta_t.shape[0] != 8) {
    throw Error(Status::kFormatError, "packed matrix '" + name + "': bad metadata length");
  }
  int64_t meta[8];
  std::memcpy(meta, file.data(meta_t), sizeof(meta));
  auto fail = [&](const std::string& what) -> void {
    throw Error(Status::kFormatError, "packed matrix '" + name + "': " + what);
  };
  if (meta[0] != static_cast<int64_t>(WeightType::kF32) &&
      meta[0] != static_cast<int64_t>(WeightType::kS8)) {
    fail("unknown weight type");
  }
  for (int i = 1; i <= 4; ++i) {
    if (meta[i] < 0 || meta[i] > INT32_MAX) fail("dimension out of range");
  }
  if (meta[5] != 0 && meta[5] != 1) fail("bad dense flag");
  PackedWeights v;
  v.type = static_cast<WeightType>(meta[0]);
  v.n = static_cast<int32_t>(meta[1]);
  v.k = static_cast<int32_t>(meta[2]);
  v.rows_per_block = static_cast<int32_t>(meta[3]);
  v.group = static_cast<int32_t>(meta[4]);
  v.dense = meta[5] == 1;
  v.num_groups = meta[6];
  if (v.rows_per_block != 1 && v.rows_per_block != 4) fail("rows per block must be 1 or 4");
  v.num_block_rows =
      static_cast<int32_t>((static_cast<int64_t>(v.n) + v.rows_per_block - 1) / v.rows_per_block);
  const BlockShape b{static_cast<int>(meta[7] / 256), static_cast<int>(meta[7] % 256)};
  if (b.out < 1 || b.in < 1 || b.out > 64 || b.in > 64) fail("bad block shape");
  if (block != nullptr) *block = b;
  PackedArraySizes s;
  const bool s8 = v.type == WeightType::kS8;
  const TensorInfo& values = file.require(name + ".values", s8 ? DType::kS8 : DType::kF32, 1);
  v.values = file.data(values);
  s.values = values.shape[0];
  if (!v.dense) {
    const TensorInfo& gp = file.require(name + ".group_ptr", DType::kI32, 1);
    const TensorInfo& idx = file.require(name + ".indices", DType::kI32, 1);
    v.group_ptr = static_cast<const int32_t*>(file.data(gp));
    v.indices = static_cast<const int32_t*>(file.data(idx));
    s.group_ptr = gp.shape[0];
    s.indices = idx.shape[0];
  }
  if (s8) {
    const TensorInfo& comp = file.require(name + ".compensation", DType::kI32, 1);
    const TensorInfo& sc = file.require(name + ".scales", DType::kF32, 1);
    v.compensation = static_cast<const int32_t*>(file.data(comp));
    v.scales = static_cast<const float*>(file.data(sc));
    s.compensation = comp.shape[0];
    s.scales = sc.shape[0];
  }
  validate_packed(v, s);
  return v;
}

}  // namespace sparq
