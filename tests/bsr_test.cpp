// formats/bsr: building from dense, pruning, packing and validation of untrusted data.
#include "formats/bsr.h"

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "formats/error.h"
#include "tests/test_util.h"

namespace sparq::test {
namespace {

TEST(BlockShape, NamesAndParse) {
  EXPECT_EQ(block_shape_name(kBlock4x1), "4x1");
  EXPECT_EQ(block_shape_name(kBlock1x4), "1x4");
  BlockShape b;
  ASSERT_TRUE(parse_block_shape("1x4", &b));
  EXPECT_EQ(b, kBlock1x4);
  EXPECT_FALSE(parse_block_shape("4x", &b));
  EXPECT_FALSE(parse_block_shape("0x1", &b));
  EXPECT_FALSE(parse_block_shape("4x1x", &b));
}

TEST(Bsr, FromDenseKeepsExactNonzerosAndRoundTrips) {
  for (BlockShape block : {kBlock4x1, kBlock1x4, kBlock1x1, BlockShape{2, 3}}) {
    for (int64_t n : {1, 7, 16}) {
      for (int64_t k : {1, 5, 12}) {
        std::vector<float> w = random_floats(static_cast<size_t>(n * k), 3);
        for (size_t i = 0; i < w.size(); i += 3) w[i] = 0.0f;  // scattered zeros
        const BsrMatrix m = bsr_from_dense(w.data(), n, k, block);
        std::vector<float> back(w.size(), -1.0f);
        m.to_dense(back.data());
        EXPECT_EQ(back, w) << block_shape_name(block) << " n=" << n << " k=" << k;
        for (int64_t br = 0; br < m.block_rows(); ++br)
          for (int64_t b = m.row_ptr[br] + 1; b < m.row_ptr[br + 1]; ++b)
            EXPECT_LT(m.col[b - 1], m.col[b]);
      }
    }
  }
}

TEST(Bsr, EmptyMatrixHasNoBlocks) {
  std::vector<float> w(12 * 8, 0.0f);
  const BsrMatrix m = bsr_from_dense(w.data(), 12, 8, kBlock4x1);
  EXPECT_EQ(m.nnz_blocks(), 0);
  EXPECT_DOUBLE_EQ(m.block_sparsity(), 1.0);
}

TEST(Prune, ZeroesExactlyRoundedCountOfBlocks) {
  for (BlockShape block : {kBlock4x1, kBlock1x4, kBlock1x1}) {
    for (double s : {0.0, 0.33, 0.5, 0.9, 0.95, 1.0}) {
      const int64_t n = 30, k = 22;  // neither a multiple of 4: partial edge blocks
      std::vector<float> w = random_floats(n * k, 11, 0.5f, 1.0f);  // no zero blocks yet
      prune_blocks(w.data(), n, k, block, s);
      const BsrMatrix m = bsr_from_dense(w.data(), n, k, block);
      const int64_t total = m.block_rows() * m.block_cols();
      EXPECT_EQ(total - m.nnz_blocks(), std::llround(s * total))
          << block_shape_name(block) << " " << s;
    }
  }
}

TEST(Prune, RemovesSmallestNormsTiesByIndex) {
  // 1x1 blocks: magnitudes 1..8 shuffled, plus ties.
  std::vector<float> w = {5, -1, 3, 2, -2, 7, 1, 8};
  prune_blocks(w.data(), 2, 4, kBlock1x1, 0.5);  // drops four: |1|, |-1|, |2|, |-2|
  EXPECT_EQ(w, (std::vector<float>{5, 0, 3, 0, 0, 7, 0, 8}));
  std::vector<float> t = {1, 1, 1, 1};
  prune_blocks(t.data(), 1, 4, kBlock1x1, 0.5);  // all tied: lowest indices go first
  EXPECT_EQ(t, (std::vector<float>{0, 0, 1, 1}));
  std::vector<float> b4 = {1, 9, 1, 1,  // block rows of 4x1 blocks: column norms
                           1, 9, 1, 1, 1, 9, 1, 1, 1, 9, 1, 1};
  prune_blocks(b4.data(), 4, 4, kBlock4x1, 0.25);  // one block: column 0 (tie with 2, 3)
  for (int r = 0; r < 4; ++r) EXPECT_EQ(b4[r * 4], 0.0f);
  EXPECT_EQ(b4[2], 1.0f);
  EXPECT_THROW(prune_blocks(b4.data(), 4, 4, kBlock4x1, 1.5), Error);
}

TEST(Quantize, PerChannelSymmetric) {
  std::vector<float> w = {0.5f, -1.0f, 0.25f, 0.0f, 0.0f, 0.0f};
  std::vector<int8_t> q(6);
  std::vector<float> s(2);
  quantize_per_channel(w.data(), 2, 3, q.data(), s.data());
  EXPECT_FLOAT_EQ(s[0], 1.0f / 127.0f);
  EXPECT_EQ(q[0], 64);
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 32);
  EXPECT_EQ(s[1], 1.0f);
  EXPECT_EQ(q[3], 0);
}

TEST(Pack, Int8LayoutGroupsFourIndicesAndPads) {
  // N=4, K=6, 4x1: block-row 0 has nonzero columns {0, 2, 3, 4, 5} -> 2 groups,
  // the second padded with index 5 repeated and zero weights.
  std::vector<int8_t> q(4 * 6, 0);
  for (int r = 0; r < 4; ++r)
    for (int c : {0, 2, 3, 4, 5}) q[r * 6 + c] = static_cast<int8_t>(r * 10 + c + 1);
  std::vector<float> sc(4, 0.5f);
  const PackedMatrix p = PackedMatrix::pack_s8(q.data(), sc.data(), 4, 6, kBlock4x1);
  const PackedWeights& v = p.view();
  EXPECT_EQ(v.rows_per_block, 4);
  EXPECT_EQ(v.group, 4);
  ASSERT_EQ(v.num_groups, 2);
  EXPECT_EQ(std::vector<int32_t>(v.indices, v.indices + 8),
            (std::vector<int32_t>{0, 2, 3, 4, 5, 5, 5, 5}));
  const int8_t* val = static_cast<const int8_t*>(v.values);
  // group 1, row 2: weights at {5, pad, pad, pad}
  EXPECT_EQ(val[(1 * 4 + 2) * 4 + 0], 2 * 10 + 5 + 1);
  EXPECT_EQ(val[(1 * 4 + 2) * 4 + 1], 0);
  int32_t sum_row1 = 0;
  for (int c = 0; c < 6; ++c) sum_row1 += q[6 + c];
  EXPECT_EQ(v.compensation[1], 128 * sum_row1);
  EXPECT_NO_THROW(validate_packed(v, p.array_sizes()));
}

TEST(Pack, FullySparseMatrixHasEmptyBlockRows) {
  std::vector<float> w(9 * 5, 0.0f);
  const PackedMatrix p = PackedMatrix::pack_f32(w.data(), 9, 5, kBlock4x1);
  EXPECT_EQ(p.view().num_groups, 0);
  EXPECT_EQ(p.view().num_block_rows, 3);
  EXPECT_NO_THROW(validate_packed(p.view(), p.array_sizes()));
}

// Corrupts a copy of each array of a valid matrix and expects a FormatError.
class ValidateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<float> w = random_floats(16 * 40, 21);
    prune_blocks(w.data(), 16, 40, kBlock4x1, 0.5);
    std::vector<float> sc(16);
    q_.resize(w.size());
    quantize_per_channel(w.data(), 16, 40, q_.data(), sc.data());
    packed_ = PackedMatrix::pack_s8(q_.data(), sc.data(), 16, 40, kBlock4x1);
    v_ = packed_.view();
    gp_.assign(v_.group_ptr, v_.group_ptr + v_.num_block_rows + 1);
    idx_.assign(v_.indices, v_.indices + v_.num_groups * 4);
    val_.assign(static_cast<const int8_t*>(v_.values),
                static_cast<const int8_t*>(v_.values) + v_.num_groups * 16);
    comp_.assign(v_.compensation, v_.compensation + 16);
    sc_.assign(v_.scales, v_.scales + 16);
    Rebind();
  }
  void Rebind() {
    v_.group_ptr = gp_.data();
    v_.indices = idx_.data();
    v_.values = val_.data();
    v_.compensation = comp_.data();
    v_.scales = sc_.data();
  }
  void ExpectFormatError(const char* what) {
    try {
      validate_packed(v_, expected_array_sizes(v_));
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::kFormatError) << what;
    }
  }
  std::vector<int8_t> q_;
  PackedMatrix packed_;
  PackedWeights v_;
  std::vector<int32_t> gp_, idx_, comp_;
  std::vector<int8_t> val_;
  std::vector<float> sc_;
};

TEST_F(ValidateTest, AcceptsValid) {
  EXPECT_NO_THROW(validate_packed(v_, expected_array_sizes(v_)));
}
TEST_F(ValidateTest, IndexOutOfRange) {
  idx_[3] = 40;
  ExpectFormatError("index == K");
}
TEST_F(ValidateTest, NegativeIndex) {
  idx_[0] = -1;
  ExpectFormatError("negative index");
}
TEST_F(ValidateTest, UnsortedIndices) {
  std::swap(idx_[0], idx_[2]);
  ExpectFormatError("unsorted");
}
TEST_F(ValidateTest, DecreasingOffsets) {
  gp_[1] = gp_[2] + 1;
  ExpectFormatError("offsets");
}
TEST_F(ValidateTest, FirstOffsetNotZero) {
  gp_[0] = 1;
  ExpectFormatError("first offset");
}
TEST_F(ValidateTest, CompensationMismatch) {
  val_[5] ^= 1;
  ExpectFormatError("comp");
}
TEST_F(ValidateTest, BadScale) {
  sc_[2] = -1.0f;
  ExpectFormatError("scale");
}
TEST_F(ValidateTest, WrongRowsPerBlock) {
  v_.rows_per_block = 3;
  ExpectFormatError("R");
}
TEST_F(ValidateTest, BlockRowCountMismatch) {
  v_.num_block_rows += 1;
  ExpectFormatError("nbr");
}
// Sizes are 32-bit so their products cannot overflow int64; a huge, inconsistent
// header must still be refused before anything is read.
TEST_F(ValidateTest, HugeInconsistentHeader) {
  v_.dense = true;
  v_.n = INT32_MAX;
  v_.k = INT32_MAX;
  v_.rows_per_block = 1;
  v_.num_block_rows = INT32_MAX;
  v_.num_groups = INT64_MAX;
  EXPECT_THROW(validate_packed(v_, PackedArraySizes{}), Error);
}
TEST_F(ValidateTest, Int8KAboveLimit) {
  v_.k = static_cast<int32_t>(kMaxInt8K + 1);
  ExpectFormatError("K limit");
  std::vector<int8_t> q(4 * (kMaxInt8K + 1), 1);
  std::vector<float> sc(4, 1.0f);
  EXPECT_THROW(PackedMatrix::pack_s8(q.data(), sc.data(), 4, kMaxInt8K + 1, kBlock4x1), Error);
}
TEST_F(ValidateTest, WrongValueLength) {
  PackedArraySizes s = expected_array_sizes(v_);
  s.values -= 1;
  EXPECT_THROW(validate_packed(v_, s), Error);
}

}  // namespace
}  // namespace sparq::test
