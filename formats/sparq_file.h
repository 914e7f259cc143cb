// The .sparq model file: a versioned, checksummed container of named tensors plus one
// opaque metadata blob (the optimized graph, once the converter writes it). Tensor data
// is 64-byte aligned, so a loader maps the file and uses the weights where they lie.
// The byte layout is in docs/file-format.md.
//
// Writing goes to a temporary file in the target directory, which is renamed over the
// target only when complete: a failed write leaves nothing behind. Opening maps the file
// read-only and validates the header, the tensor table and every offset, size and
// shape product against the file before anything is used. The full data checksum is
// separate (verify()), so a warm-cache open stays cheap.
#ifndef SPARQ_FORMATS_SPARQ_FILE_H_
#define SPARQ_FORMATS_SPARQ_FILE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "formats/bsr.h"
#include "sparq/export.h"

namespace sparq {

enum class DType : uint8_t { kF32 = 1, kS8 = 2, kU8 = 3, kI32 = 4, kI64 = 5 };

SPARQ_API const char* dtype_name(DType t);
// Bytes per element; 0 for a value that is not a DType.
SPARQ_API size_t dtype_size(DType t);

inline constexpr int kMaxRank = 8;
inline constexpr size_t kMaxNameBytes = 1024;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;    // from the start of the file, a multiple of 64
  uint64_t size = 0;      // bytes = product(shape) * dtype_size
  uint64_t checksum = 0;  // XXH3-64 of the bytes
  int64_t elements() const;
};

class SPARQ_API SparqFileWriter {
 public:
  // Copies nothing: `data` must stay valid until write() returns.
  void add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                  const void* data);
  // Copies `bytes` bytes of `data` into the writer (for small tensors built on the fly).
  void add_tensor_copy(const std::string& name, DType dtype, std::vector<int64_t> shape,
                       const void* data, size_t bytes);
  void set_metadata(std::string bytes) { metadata_ = std::move(bytes); }
  // Writes atomically (temporary file + rename). Throws Error on any failure, after
  // removing the temporary file.
  void write(const std::string& path) const;

 private:
  struct Pending {
    TensorInfo info;
    const void* data;
  };
  std::vector<Pending> tensors_;
  std::vector<std::unique_ptr<std::string>> owned_;
  std::string metadata_;
};

class SPARQ_API SparqFile {
 public:
  // Maps and validates; throws Error(kFormatError) naming the first problem, or
  // Error(kInvalidArgument) when the file cannot be opened.
  static std::shared_ptr<const SparqFile> open(const std::string& path);
  ~SparqFile();
  SparqFile(const SparqFile&) = delete;
  SparqFile& operator=(const SparqFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  // The tensor named `name` with the given dtype and rank, or Error(kFormatError).
  const TensorInfo& require(const std::string& name, DType dtype, int rank) const;
  const void* data(const TensorInfo& t) const { return base_ + t.offset; }
  std::string_view metadata() const { return metadata_; }
  // Checks the header, table and every tensor's data checksum; throws on mismatch.
  void verify() const;

 private:
  SparqFile() = default;
  void parse();
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t table_checksum_ = 0;
  uint64_t table_offset_ = 0, table_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
  std::string_view metadata_;
  uint64_t metadata_checksum_ = 0;
  std::string path_;
};

// A packed matrix stored as the tensors "<name>.meta" (i64[8]: type, n, k, rows per
// block, group, dense, num_groups, block shape out*256+in) and its arrays
// "<name>.group_ptr", ".indices", ".values", ".compensation", ".scales".
SPARQ_API void add_packed(SparqFileWriter& w, const std::string& name, const PackedMatrix& m);
// A view into the mapped file, checked with validate_packed(); valid while `file` lives.
SPARQ_API PackedWeights read_packed(const SparqFile& file, const std::string& name,
                                    BlockShape* block = nullptr);

}  // namespace sparq

#endif  // SPARQ_FORMATS_SPARQ_FILE_H_
