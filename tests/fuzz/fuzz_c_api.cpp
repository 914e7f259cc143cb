// Fuzz target: the C API's tensor descriptors. The bytes describe up to four input
// tensors (name, dtype, rank, shape, data) for sparq_session_run on a small converted
// model, then output and model queries by index. Any status is an answer; a crash, a
// sanitizer report or an OK on a descriptor the model cannot take is a bug.
//
// The model: $SPARQ_FUZZ_CAPI_MODEL, else tests/fuzz/c_api_model.sparq (committed: a
// micro BERT with input_ids, attention_mask and token_type_ids, int8, one layer).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sparq/sparq.h"

namespace {

sparq_model* g_model = nullptr;
sparq_session* g_session = nullptr;

class Bytes {
 public:
  Bytes(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  template <class T>
  T take() {
    T v{};
    const size_t k = sizeof(T) < n_ - at_ ? sizeof(T) : n_ - at_;
    if (k > 0) std::memcpy(&v, d_ + at_, k);
    at_ += k;
    return v;
  }
  size_t left() const { return n_ - at_; }

 private:
  const uint8_t* d_;
  size_t n_, at_ = 0;
};

}  // namespace

// The input limit the harness agrees with: descriptors above it get a one-byte buffer
// and must be refused before the library reads them.
constexpr uint64_t kMaxElements = uint64_t{1} << 19;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("SPARQ_MAX_INPUT_ELEMENTS", std::to_string(kMaxElements).c_str(), 1);
  std::string path;
  if (const char* m = std::getenv("SPARQ_FUZZ_CAPI_MODEL")) {
    path = m;
  } else {
    path = SPARQ_FUZZ_DIR "/c_api_model.sparq";
  }
  if (sparq_model_load(path.c_str(), &g_model) != SPARQ_OK ||
      sparq_session_create(g_model, 1, &g_session) != SPARQ_OK) {
    std::fprintf(stderr, "fuzz_c_api: cannot load %s: %s\n", path.c_str(),
                 sparq_last_error_message());
    std::exit(2);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_session == nullptr) LLVMFuzzerInitialize(nullptr, nullptr);
  static const char* kNames[] = {"input_ids", "attention_mask", "token_type_ids",
                                 "",          "input_ids\n",    nullptr};
  Bytes b(data, size);
  const size_t n = b.take<uint8_t>() % 5;
  std::vector<sparq_tensor> ts(n);
  std::vector<std::vector<int64_t>> shapes(n);
  std::vector<std::vector<uint8_t>> bufs(n);
  std::vector<std::string> names(n);
  bool expect_refusal = false;
  for (size_t i = 0; i < n; ++i) {
    sparq_tensor& t = ts[i];
    const uint8_t pick = b.take<uint8_t>();
    if (pick % 8 < 6) {
      t.name = kNames[pick % 8];
    } else {  // a name of arbitrary bytes
      const size_t len = b.take<uint8_t>() % 16;
      for (size_t k = 0; k < len; ++k) names[i] += static_cast<char>(b.take<uint8_t>() | 1);
      t.name = names[i].c_str();
    }
    // Mostly valid dtypes, sometimes any 32-bit value.
    const uint8_t dt = b.take<uint8_t>();
    const int32_t dtype = dt < 240 ? dt % 7 : b.take<int32_t>();
    std::memcpy(&t.dtype, &dtype, sizeof dtype);  // a C caller may store any int
    const int8_t rank = b.take<int8_t>();
    t.rank = rank % 4 == 0 ? rank : (rank & 3);
    const bool null_shape = (pick & 0x80) != 0 && t.rank > 0;
    uint64_t elems = 1;
    bool overflow = false;
    const int dims = t.rank > 0 && t.rank <= 8 ? t.rank : 0;
    for (int d = 0; d < dims; ++d) {
      const uint8_t kind = b.take<uint8_t>();
      int64_t v = kind < 200 ? kind % 12 : b.take<int64_t>();
      shapes[i].push_back(v);
      if (v < 0 || __builtin_mul_overflow(elems, static_cast<uint64_t>(v), &elems)) overflow = true;
    }
    t.shape = null_shape ? nullptr : shapes[i].data();
    const size_t esize = dtype == SPARQ_INT32 || dtype == SPARQ_FLOAT32                       ? 4
                         : dtype == SPARQ_INT8 || dtype == SPARQ_UINT8 || dtype == SPARQ_BOOL ? 1
                                                                                              : 8;
    // The buffer the descriptor claims, when the library may accept it; past the limit
    // the library must refuse the shape before it reads anything (a one-byte buffer
    // makes AddressSanitizer report any read of it).
    if (!overflow && elems <= kMaxElements) {
      bufs[i].resize(elems * esize);
      for (size_t k = 0; k < bufs[i].size() && b.left() > 0; ++k)
        bufs[i][k] = b.take<uint8_t>() % 3;
      t.data = bufs[i].empty() ? nullptr : bufs[i].data();
    } else {
      bufs[i].resize(1);
      t.data = bufs[i].data();
      expect_refusal = true;
    }
    if ((pick & 0x40) != 0) t.data = nullptr;
  }
  const sparq_status st = sparq_session_run(g_session, n ? ts.data() : nullptr, n);
  if (st == SPARQ_OK && expect_refusal) __builtin_trap();
  if (sparq_last_error_message() == nullptr) __builtin_trap();
  sparq_tensor out;
  const size_t oi = b.take<uint8_t>() % 4;
  if (sparq_session_output(g_session, oi, &out) == SPARQ_OK) {
    // Read the whole view: a wrong dtype or shape shows as an over-read here.
    size_t elems = 1;
    for (int d = 0; d < out.rank; ++d) elems *= static_cast<size_t>(out.shape[d]);
    const size_t es = out.dtype == SPARQ_INT64 || out.dtype == SPARQ_FLOAT64   ? 8
                      : out.dtype == SPARQ_INT32 || out.dtype == SPARQ_FLOAT32 ? 4
                                                                               : 1;
    volatile uint8_t sink = 0;
    for (size_t k = 0; k < elems * es; ++k) sink ^= static_cast<const uint8_t*>(out.data)[k];
    (void)sink;
  }
  sparq_tensor d;
  sparq_model_input(g_model, b.take<uint8_t>() % 5, &d);
  sparq_model_output(g_model, b.take<uint8_t>() % 5, &d);
  return 0;
}
