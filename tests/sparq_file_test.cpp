// formats/sparq_file: round trips, and refusal (never a crash) of truncated, corrupted,
// hostile and missing files; atomic writes.
#include "formats/sparq_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>
#include <xxhash.h>

#include <gtest/gtest.h>

#include "engine/model.h"
#include "engine/parallel.h"
#include "formats/error.h"
#include "tests/test_util.h"

namespace sparq::test {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sparq_test_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    DIR* d = opendir(path_.c_str());
    while (dirent* e = readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
        out.push_back(e->d_name);
    }
    closedir(d);
    return out;
  }

 private:
  std::string path_;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Opening must throw sparq::Error (and nothing else, and not crash).
void expect_refused(const std::string& path, const char* what) {
  try {
    auto f = SparqFile::open(path);
    ADD_FAILURE() << "accepted " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

// Header field offsets (docs/file-format.md), for crafting hostile files.
constexpr size_t kTableOffset = 24, kTableSize = 32, kTableChecksum = 64, kHeaderChecksum = 72;

uint64_t get64(const std::string& s, size_t at) {
  uint64_t v;
  std::memcpy(&v, &s[at], 8);
  return v;
}
void put64(std::string& s, size_t at, uint64_t v) { std::memcpy(&s[at], &v, 8); }
// Recomputes the table and header checksums after an edit, so that only the semantic
// checks can catch it.
void reseal(std::string& s) {
  const uint64_t off = get64(s, kTableOffset), size = get64(s, kTableSize);
  if (off <= s.size() && size <= s.size() - off)
    put64(s, kTableChecksum, XXH3_64bits(&s[off], size));
  put64(s, kHeaderChecksum, XXH3_64bits(&s[0], kHeaderChecksum));
}

struct Sample {
  std::vector<float> f{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 9.0f};
  std::vector<int8_t> s8{-128, 0, 127};
  std::vector<int64_t> i64{1, -2, 1LL << 40};
  std::string write(const TempDir& dir) const {
    SparqFileWriter w;
    w.add_tensor("weights/f", DType::kF32, {2, 3}, f.data());
    w.add_tensor("q", DType::kS8, {3}, s8.data());
    w.add_tensor("ids", DType::kI64, {3}, i64.data());
    w.add_tensor("empty", DType::kF32, {0, 4}, nullptr);
    const float scalar = 4.0f;
    w.add_tensor_copy("scalar", DType::kF32, {}, &scalar, sizeof(scalar));
    w.set_metadata("graph bytes \x01\x02");
    const std::string path = dir.file("model.sparq");
    w.write(path);
    return path;
  }
};

TEST(SparqFile, RoundTrip) {
  TempDir dir;
  Sample s;
  const std::string path = s.write(dir);
  auto f = SparqFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->file_size() % 64, 0u);
  ASSERT_EQ(f->tensors().size(), 5u);
  const TensorInfo& t = f->require("weights/f", DType::kF32, 2);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.offset % 64, 0u);
  EXPECT_EQ(std::memcmp(f->data(t), s.f.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f->data(f->require("ids", DType::kI64, 1)), s.i64.data(), 24), 0);
  EXPECT_EQ(f->require("empty", DType::kF32, 2).size, 0u);
  EXPECT_EQ(*static_cast<const float*>(f->data(f->require("scalar", DType::kF32, 0))), 4.0f);
  EXPECT_EQ(f->metadata(), "graph bytes \x01\x02");
  EXPECT_EQ(f->find("nope"), nullptr);
  EXPECT_THROW(f->require("q", DType::kF32, 1), Error);
  EXPECT_THROW(f->require("q", DType::kS8, 2), Error);
  EXPECT_NO_THROW(f->verify());
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.sparq"});  // no temporary left
}

TEST(SparqFile, WriterRejectsBadTensors) {
  SparqFileWriter w;
  float x = 0;
  w.add_tensor("a", DType::kF32, {1}, &x);
  EXPECT_THROW(w.add_tensor("a", DType::kF32, {1}, &x), Error);
  EXPECT_THROW(w.add_tensor("", DType::kF32, {1}, &x), Error);
  EXPECT_THROW(w.add_tensor("b", DType::kF32, {-1}, &x), Error);
  EXPECT_THROW(w.add_tensor("c", DType::kF32, {1, 2, 3, 4, 5, 6, 7, 8, 9}, &x), Error);
  EXPECT_THROW(w.add_tensor("d", DType::kF32, {INT64_MAX, 4}, &x), Error);
  EXPECT_THROW(w.add_tensor("e", DType::kF32, {2}, nullptr), Error);
}

TEST(SparqFile, FailedWriteLeavesNothing) {
  TempDir dir;
  SparqFileWriter w;
  float x = 1;
  w.add_tensor("a", DType::kF32, {1}, &x);
  EXPECT_THROW(w.write(dir.file("missing/dir/model.sparq")), Error);
  // Target is a directory: the rename fails and the temporary file is removed.
  ASSERT_EQ(mkdir(dir.file("adir").c_str(), 0755), 0);
  ASSERT_EQ(std::fopen(dir.file("adir/inside").c_str(), "w") != nullptr, true);
  EXPECT_THROW(w.write(dir.file("adir")), Error);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"adir"});
}

TEST(SparqFile, RefusesMissingEmptyAndRandomFiles) {
  TempDir dir;
  expect_refused(dir.file("does-not-exist.sparq"), "a missing file");
  write_all(dir.file("empty.sparq"), "");
  expect_refused(dir.file("empty.sparq"), "an empty file");
  std::mt19937 rng(3);
  for (size_t n : {1, 64, 127, 128, 1000, 100000}) {
    std::string junk(n, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    write_all(dir.file("junk.sparq"), junk);
    expect_refused(dir.file("junk.sparq"), "random bytes");
  }
  ASSERT_EQ(mkdir(dir.file("d.sparq").c_str(), 0755), 0);
  expect_refused(dir.file("d.sparq"), "a directory");
}

TEST(SparqFile, RefusesEveryTruncation) {
  TempDir dir;
  const std::string good = read_all(Sample().write(dir));
  const std::string path = dir.file("cut.sparq");
  for (size_t n = 0; n < good.size(); ++n) {
    write_all(path, good.substr(0, n));
    expect_refused(path, ("a file cut to " + std::to_string(n) + " bytes").c_str());
    if (HasFailure()) return;
  }
  write_all(path, good + std::string(64, '\0'));
  expect_refused(path, "a file with trailing bytes");
}

TEST(SparqFile, DetectsEveryCorruptByte) {
  TempDir dir;
  const std::string good = read_all(Sample().write(dir));
  const std::string path = dir.file("flip.sparq");
  const uint64_t table_end = get64(good, kTableOffset) + get64(good, kTableSize);
  const uint64_t meta_off = get64(good, 40), meta_size = get64(good, 48);
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x5A);
    write_all(path, bad);
    const bool structural = i < 80 || (i >= get64(good, kTableOffset) && i < table_end);
    const bool unused_header = i >= 80 && i < 128;
    try {
      auto f = SparqFile::open(path);
      EXPECT_FALSE(structural) << "byte " << i << " flipped but the file opened";
      if (!unused_header && !structural) {
        // Data, metadata or padding: verify() must notice data and metadata changes.
        bool changed_payload = i >= meta_off && i < meta_off + meta_size;
        for (const TensorInfo& t : f->tensors())
          changed_payload |= i >= t.offset && i < t.offset + t.size;
        if (changed_payload) {
          EXPECT_THROW(f->verify(), Error) << "byte " << i;
        }
      }
    } catch (const Error&) {
      EXPECT_TRUE(structural) << "byte " << i << " outside the structure was refused at open";
    }
    if (HasFailure()) return;
  }
}

TEST(SparqFile, RefusesHostileTables) {
  TempDir dir;
  const std::string good = read_all(Sample().write(dir));
  const std::string path = dir.file("hostile.sparq");
  const uint64_t table = get64(good, kTableOffset);
  // The first entry: u32 name_len, u8 dtype, u8 rank, u16 0, "weights/f" padded to 16,
  // i64 shape[2], u64 offset, u64 size, u64 checksum.
  const size_t shape0 = table + 8 + 16, offset_at = shape0 + 16, size_at = offset_at + 8;
  auto edit = [&](auto&& change, const char* what) {
    std::string s = good;
    change(s);
    reseal(s);
    write_all(path, s);
    expect_refused(path, what);
  };
  edit([&](std::string& s) { put64(s, offset_at, good.size()); }, "an offset at the end");
  edit([&](std::string& s) { put64(s, offset_at, good.size() + 4096); }, "an offset past the end");
  edit([&](std::string& s) { put64(s, offset_at, UINT64_MAX - 63); }, "an offset that wraps");
  edit([&](std::string& s) { put64(s, offset_at, get64(good, offset_at) + 4); },
       "a misaligned offset");
  edit([&](std::string& s) { put64(s, offset_at, 0); }, "a tensor over the header");
  edit(
      [&](std::string& s) {
        put64(s, shape0, 1ULL << 62);
        put64(s, size_at, 0);
      },
      "an overflowing shape");
  edit([&](std::string& s) { put64(s, shape0, static_cast<uint64_t>(-2)); },
       "a negative dimension");
  edit([&](std::string& s) { put64(s, size_at, 1ULL << 40); }, "a size past the end");
  edit([&](std::string& s) { s[table + 4] = 42; }, "an unknown dtype");
  edit([&](std::string& s) { s[table + 5] = 9; }, "rank 9");
  edit(
      [&](std::string& s) {
        uint32_t n = 1u << 30;
        std::memcpy(&s[table], &n, 4);
      },
      "a huge name");
  edit(
      [&](std::string& s) {
        uint32_t c = 1000;
        std::memcpy(&s[12], &c, 4);
      },
      "a wrong tensor count");
  edit([&](std::string& s) { put64(s, kTableSize, 1ULL << 50); }, "a table past the end");
  edit(
      [&](std::string& s) {
        uint32_t v = 4;
        std::memcpy(&s[8], &v, 4);
      },
      "version 4");
  edit(
      [&](std::string& s) {
        uint32_t v = 0;
        std::memcpy(&s[8], &v, 4);
      },
      "version 0");
}

TEST(SparqFile, PackedMatricesRoundTripAndRunIdentically) {
  TempDir dir;
  const int64_t n = 70, k = 90, m = 33;
  std::vector<float> w = random_floats(n * k, 5);
  prune_blocks(w.data(), n, k, kBlock4x1, 0.8);
  std::vector<int8_t> q(w.size());
  std::vector<float> sc(n);
  quantize_per_channel(w.data(), n, k, q.data(), sc.data());
  const PackedMatrix s8 = PackedMatrix::pack_s8(q.data(), sc.data(), n, k, kBlock4x1);
  const PackedMatrix f32 = PackedMatrix::pack_f32(w.data(), n, k, kBlock1x1);
  const PackedMatrix dense = PackedMatrix::pack_s8(q.data(), sc.data(), n, k, kBlock4x1, true);
  SparqFileWriter wr;
  add_packed(wr, "s8", s8);
  add_packed(wr, "f32", f32);
  add_packed(wr, "dense", dense);
  wr.write(dir.file("m.sparq"));
  auto f = SparqFile::open(dir.file("m.sparq"));
  f->verify();
  BlockShape b;
  const PackedWeights rs8 = read_packed(*f, "s8", &b);
  EXPECT_EQ(b, kBlock4x1);
  const PackedWeights rf32 = read_packed(*f, "f32", &b);
  EXPECT_EQ(b, kBlock1x1);
  const PackedWeights rdense = read_packed(*f, "dense");
  EXPECT_TRUE(rdense.dense);
  std::vector<uint8_t> xu(k * m);
  for (size_t i = 0; i < xu.size(); ++i) xu[i] = static_cast<uint8_t>(i * 37);
  std::vector<float> xf = random_floats(k * m, 6);
  auto run_s8 = [&](const PackedWeights& v) {
    std::vector<float> y(n * m);
    Epilogue ep;
    ep.out_f32 = y.data();
    ep.ld_out = m;
    spmm_u8s8(spmm_kernels(), nullptr, v, xu.data(), m, m, ep);
    return y;
  };
  auto run_f32 = [&](const PackedWeights& v) {
    std::vector<float> y(n * m);
    Epilogue ep;
    ep.out_f32 = y.data();
    ep.ld_out = m;
    spmm_f32(spmm_kernels(), nullptr, v, xf.data(), m, m, ep);
    return y;
  };
  EXPECT_EQ(run_s8(rs8), run_s8(s8.view()));
  EXPECT_EQ(run_s8(rdense), run_s8(dense.view()));
  EXPECT_EQ(run_f32(rf32), run_f32(f32.view()));
  EXPECT_THROW(read_packed(*f, "absent"), Error);
}

TEST(SparqFile, RefusesInconsistentPackedMatrix) {
  TempDir dir;
  std::vector<float> w = random_floats(16 * 16, 9);
  prune_blocks(w.data(), 16, 16, kBlock4x1, 0.5);
  const PackedMatrix p = PackedMatrix::pack_f32(w.data(), 16, 16, kBlock4x1);
  const PackedWeights& v = p.view();
  // Indices pointing past K, stored with valid checksums: validate_packed must catch it.
  std::vector<int32_t> idx(v.indices, v.indices + v.num_groups);
  idx.back() = 1000;
  SparqFileWriter wr;
  const int64_t meta[8] = {0, 16, 16, 4, 1, 0, v.num_groups, 4 * 256 + 1};
  wr.add_tensor("w.meta", DType::kI64, {8}, meta);
  wr.add_tensor("w.group_ptr", DType::kI32, {v.num_block_rows + 1}, v.group_ptr);
  wr.add_tensor("w.indices", DType::kI32, {v.num_groups}, idx.data());
  wr.add_tensor("w.values", DType::kF32, {v.num_groups * 4}, v.values);
  wr.write(dir.file("bad.sparq"));
  auto f = SparqFile::open(dir.file("bad.sparq"));
  EXPECT_THROW(read_packed(*f, "w"), Error);
}

// Version-1 files (written before the version-2 graph additions) still load and run: a
// committed v1 micro BERT with a classification head, through the planned executor and
// op by op, which agree.
TEST(SparqFile, Version1FilesStillLoadAndRun) {
  const auto model = Model::load(SPARQ_TEST_DATA "/v1-micro-bert.sparq");
  EXPECT_EQ(model->file().version(), 1u);
  auto ids = std::make_shared<Constant>();
  ids->type = ElemType::kI64;
  ids->shape = {2, 5};
  ids->bytes.resize(10 * 8);
  for (int64_t i = 0; i < 10; ++i) reinterpret_cast<int64_t*>(ids->bytes.data())[i] = 2 + i % 9;
  std::map<std::string, Value> out[2];
  for (int k = 0; k < 2; ++k) {
    Session s(model, 1);
    s.use_interpreter(k == 1);
    out[k] = s.run({{"input_ids", ids}});
  }
  const Constant& a = *out[0].at("logits");
  const Constant& b = *out[1].at("logits");
  ASSERT_EQ(a.shape, b.shape);
  ASSERT_EQ(a.shape.size(), 2u);
  EXPECT_EQ(a.shape[0], 2);
  for (int64_t i = 0; i < a.elements(); ++i) {
    EXPECT_TRUE(std::isfinite(a.data<float>()[i]));
    EXPECT_NEAR(a.data<float>()[i], b.data<float>()[i], 0.05);  // int8 per-token vs op by op
  }
}

}  // namespace
}  // namespace sparq::test
