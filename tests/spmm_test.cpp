// Every SpMM kernel of every ISA this CPU supports, against the reference in
// spmm_tester.h: awkward shapes, every block shape, 0/50/90/100% sparsity, dense
// packing, every epilogue feature, and serial/threaded twins.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/common/isa.h"
#include "tests/spmm_tester.h"

namespace sparq::test {
namespace {

struct Shape {
  int64_t m, k, n;
};

// M, K and N below, at and above the vector width, tile and block; primes; BERT-ish.
const std::vector<Shape> kShapes = {{1, 1, 1},    {3, 5, 7},       {16, 4, 4},    {17, 9, 5},
                                    {33, 13, 11}, {64, 64, 64},    {65, 31, 18},  {100, 129, 67},
                                    {127, 37, 9}, {128, 256, 130}, {200, 70, 33}, {250, 3, 4}};
const std::vector<double> kSparsities = {0.0, 0.5, 0.9, 1.0};
const std::vector<BlockShape> kBlocks = {kBlock4x1, kBlock1x4, kBlock1x1};

class SpmmIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam())) GTEST_SKIP() << isa_name(GetParam()) << " not supported here";
  }
  const SpmmKernels& kernels() const { return spmm_kernels(GetParam()); }
};

TEST_P(SpmmIsaTest, F32AllShapesSparsitiesBlocks) {
  for (const Shape& s : kShapes)
    for (double sp : kSparsities)
      for (BlockShape b : kBlocks) {
        SpmmTester().m(s.m).k(s.k).n(s.n).block(b).sparsity(sp).TestF32(kernels());
        if (HasFatalFailure()) return;
      }
}

TEST_P(SpmmIsaTest, U8S8AllShapesSparsitiesBlocksBitExact) {
  for (const Shape& s : kShapes)
    for (double sp : kSparsities)
      for (BlockShape b : kBlocks) {
        SpmmTester().m(s.m).k(s.k).n(s.n).block(b).sparsity(sp).TestU8S8(kernels());
        if (HasFatalFailure()) return;
      }
}

TEST_P(SpmmIsaTest, DensePacking) {
  for (const Shape& s : kShapes)
    for (BlockShape b : {kBlock4x1, kBlock1x1}) {
      SpmmTester().m(s.m).k(s.k).n(s.n).block(b).sparsity(0.0).dense(true).TestF32(kernels());
      SpmmTester().m(s.m).k(s.k).n(s.n).block(b).sparsity(0.0).dense(true).TestU8S8(kernels());
      // A pruned matrix packed dense still computes the same product.
      SpmmTester().m(s.m).k(s.k).n(s.n).block(b).sparsity(0.7).dense(true).TestU8S8(kernels());
      if (HasFatalFailure()) return;
    }
}

TEST_P(SpmmIsaTest, EpilogueFeatures) {
  for (const Shape& s : {Shape{37, 50, 21}, Shape{128, 96, 64}}) {
    for (BlockShape b : kBlocks) {
      for (bool dense : {false, true}) {
        auto base = [&] {
          return SpmmTester().m(s.m).k(s.k).n(s.n).block(b).sparsity(0.6).dense(dense);
        };
        base().bias(true).TestF32(kernels());
        base().channel_scale(true).bias(true).activation(Activation::kGeluErf).TestF32(kernels());
        base().bias(true).activation(Activation::kGeluTanh).residual(true).TestF32(kernels());
        base().bias(true).activation(Activation::kGeluSigmoid).TestF32(kernels());
        base().residual(true).u8_out(true).TestF32(kernels());
        base().channel_scale(true).token_scale(true).TestU8S8(kernels());
        base()
            .channel_scale(true)
            .token_scale(true)
            .bias(true)
            .activation(Activation::kGeluErf)
            .TestU8S8(kernels());
        base()
            .channel_scale(true)
            .token_scale(true)
            .bias(true)
            .activation(Activation::kGeluTanh)
            .residual(true)
            .TestU8S8(kernels());
        base()
            .channel_scale(true)
            .token_scale(true)
            .bias(true)
            .activation(Activation::kGeluSigmoid)
            .residual(true)
            .TestU8S8(kernels());
        base().channel_scale(true).token_scale(true).bias(true).u8_out(true).TestU8S8(kernels());
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST_P(SpmmIsaTest, BertShapes) {
  for (const Shape& s : {Shape{128, 768, 768}, Shape{128, 768, 3072}, Shape{130, 3072, 768}}) {
    SpmmTester().m(s.m).k(s.k).n(s.n).sparsity(0.9).TestU8S8(kernels());
    SpmmTester().m(s.m).k(s.k).n(s.n).sparsity(0.9).bias(true).TestF32(kernels());
    if (HasFatalFailure()) return;
  }
}

// The fused activations over their whole useful range (and past it, where erf and tanh
// saturate and exp underflows or overflows), through an identity weight: every value
// within 1e-6 * (1 + |x|) of the float64 function.
TEST_P(SpmmIsaTest, ActivationsWideRange) {
  constexpr int64_t kN = 16, kM = 4096;
  std::vector<float> w(kN * kN, 0.0f);
  for (int64_t i = 0; i < kN; ++i) w[static_cast<size_t>(i * kN + i)] = 1.0f;
  const PackedMatrix p = PackedMatrix::pack_f32(w.data(), kN, kN, kBlock1x1);
  std::vector<float> x(kN * kM);
  for (int64_t i = 0; i < kN * kM; ++i)
    x[static_cast<size_t>(i)] = -30.0f + 60.0f * i / (kN * kM - 1);
  for (Activation act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kGeluSigmoid}) {
    std::vector<float> y(kN * kM);
    Epilogue ep;
    ep.out_f32 = y.data();
    ep.ld_out = kM;
    ep.activation = act;
    spmm_f32(kernels(), nullptr, p.view(), x.data(), kM, kM, ep);
    double worst = 0;
    for (int64_t i = 0; i < kN * kM; ++i) {
      const double v = x[static_cast<size_t>(i)];
      const double ref = ref_activation(act, v);
      worst = std::max(worst, std::fabs(y[static_cast<size_t>(i)] - ref) / (1.0 + std::fabs(v)));
    }
    EXPECT_LT(worst, 1e-6) << "activation " << static_cast<int>(act);
  }
}

// The erf GELU near every interval edge of the AVX-512 and AVX2 piecewise forms
// (k 5.5 / 31, k = 0..31, and k 5.5 / 7, k = 0..7, and a few ulps either side), far out,
// and at the special values: within 3e-7 (1 + |x|) of float64 on every ISA;
// GELU(inf) = inf, NaN stays NaN, GELU(0) = 0.
TEST_P(SpmmIsaTest, GeluErfIntervalEdges) {
  std::vector<float> xs = {0.0f,  1e-30f, -1e-30f, 1e-6f, -1e-6f, 6.0f,
                           -6.0f, 40.0f,  -40.0f,  1e30f, -1e30f};
  for (const int intervals : {31, 7}) {
    for (int k = 0; k <= intervals; ++k) {
      for (const float sign : {1.0f, -1.0f}) {
        float x = sign * static_cast<float>(k * 5.5 / intervals);
        for (int u = 0; u < 3; ++u) x = std::nextafter(x, -1e9f);
        for (int u = 0; u < 7; ++u, x = std::nextafter(x, 1e9f)) xs.push_back(x);
      }
    }
  }
  const int64_t kN = 16, kM = static_cast<int64_t>(xs.size()) + 2;
  std::vector<float> w(kN * kN, 0.0f);
  for (int64_t i = 0; i < kN; ++i) w[static_cast<size_t>(i * kN + i)] = 1.0f;
  const PackedMatrix p = PackedMatrix::pack_f32(w.data(), kN, kN, kBlock1x1);
  std::vector<float> x(kN * kM, 0.0f);
  for (int64_t r = 0; r < kN; ++r) {
    for (size_t i = 0; i < xs.size(); ++i) x[static_cast<size_t>(r * kM) + i] = xs[i];
    x[static_cast<size_t>(r * kM + kM - 2)] = std::numeric_limits<float>::infinity();
    x[static_cast<size_t>(r * kM + kM - 1)] = std::numeric_limits<float>::quiet_NaN();
  }
  std::vector<float> y(kN * kM);
  Epilogue ep;
  ep.out_f32 = y.data();
  ep.ld_out = kM;
  ep.activation = Activation::kGeluErf;
  spmm_f32(kernels(), nullptr, p.view(), x.data(), kM, kM, ep);
  for (int64_t r = 0; r < kN; ++r) {
    for (size_t i = 0; i < xs.size(); ++i) {
      const double v = xs[i], got = y[static_cast<size_t>(r * kM) + i];
      const double ref = ref_activation(Activation::kGeluErf, v);
      ASSERT_LE(std::fabs(got - ref), 3e-7 * (1.0 + std::fabs(v))) << "x = " << v;
      if (v == 0.0) {
        EXPECT_EQ(got, 0.0);
      }
    }
    EXPECT_EQ(y[static_cast<size_t>(r * kM + kM - 2)], std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isnan(y[static_cast<size_t>(r * kM + kM - 1)]));
  }
}

// The 1x4 kernel on activations its producer already put in quad order: awkward shapes
// (K not a multiple of 4, tokens not a multiple of 64), every sparsity, the epilogue,
// threads; the buffer ends at a guard page exactly where the layout ends.
TEST_P(SpmmIsaTest, QuadKernelOnPrepackedActivations) {
  if (kernels().u8s8_quads_r1 == nullptr) GTEST_SKIP() << "no quad kernel on this path";
  for (const Shape& s : kShapes)
    for (double sp : kSparsities) {
      SpmmTester().m(s.m).k(s.k).n(s.n).block(kBlock1x4).sparsity(sp).prepacked(true).TestU8S8(
          kernels());
      if (HasFatalFailure()) return;
    }
  for (int threads : {1, 2}) {
    SpmmTester()
        .m(200)
        .k(150)
        .n(70)
        .block(kBlock1x4)
        .sparsity(0.7)
        .prepacked(true)
        .threads(threads)
        .channel_scale(true)
        .token_scale(true)
        .bias(true)
        .activation(Activation::kGeluErf)
        .residual(true)
        .TestU8S8(kernels());
    SpmmTester()
        .m(64)
        .k(768)
        .n(300)
        .block(kBlock1x4)
        .sparsity(0.9)
        .prepacked(true)
        .threads(threads)
        .u8_out(true)
        .channel_scale(true)
        .token_scale(true)
        .TestU8S8(kernels());
  }
}

// Quad order from every path's packer: byte (q * ldq + t) * 4 + j = X[4q + j][t], zero past
// K and at the padded tokens.
TEST_P(SpmmIsaTest, PackQuadsMatchesTheLayout) {
  if (kernels().u8_pack_quads == nullptr) GTEST_SKIP() << "no packer on this path";
  for (const Shape& s : kShapes) {
    const int64_t ldq = (s.m + 63) / 64 * 64;
    std::vector<uint8_t> x(static_cast<size_t>(s.k * s.m));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>(i * 37 + 11);
    GuardedBuffer<uint8_t> xq(static_cast<size_t>((s.k + 3) / 4 * ldq * 4));
    for (size_t i = 0; i < xq.size(); ++i) xq[i] = 0xAB;
    kernels().u8_pack_quads(x.data(), s.m, s.k, s.m, xq.data(), ldq);
    for (int64_t q = 0; q < (s.k + 3) / 4; ++q)
      for (int64_t t = 0; t < ldq; ++t)
        for (int64_t j = 0; j < 4; ++j) {
          const int64_t kk = 4 * q + j;
          const uint8_t want = kk < s.k && t < s.m ? x[static_cast<size_t>(kk * s.m + t)] : 0;
          ASSERT_EQ(xq[static_cast<size_t>((q * ldq + t) * 4 + j)], want)
              << "M=" << s.m << " K=" << s.k << " q=" << q << " t=" << t << " j=" << j;
        }
  }
}

// A token's output does not depend on where its tile starts: every kernel run once over
// all tokens and again in calls over uneven token ranges (splits that leave tails of
// every length, as 64-token panels, threads and batch sizes do) gives the same bits,
// through every epilogue feature. (Repeated sequences in a bigger batch must give the
// repeated answers: tests/conformance_test.cpp checks that end to end.)
TEST_P(SpmmIsaTest, OutputsDoNotDependOnTheTokenSplit) {
  constexpr int64_t kM = 131, kK = 70, kN = 12;
  const std::vector<int64_t> cuts = {0, 1, 4, 11, 16, 29, 37, 64, 67, 96, 127, kM};
  std::vector<float> w = random_floats(kN * kK, 5);
  std::vector<float> xf = random_floats(kK * kM, 6, -2.0f, 2.0f),
                     token = random_floats(kM, 7, 0.01f, 0.02f),
                     channel = random_floats(kN, 8, 0.5f, 2.0f), bias = random_floats(kN, 9),
                     residual = random_floats(kN * kM, 10);
  std::vector<uint8_t> xu(static_cast<size_t>(kK * kM));
  for (size_t i = 0; i < xu.size(); ++i) xu[i] = static_cast<uint8_t>((i * 97 + 13) & 0xFF);
  const int64_t ldq = (kM + 63) / 64 * 64;
  std::vector<uint8_t> xq(static_cast<size_t>((kK + 3) / 4 * ldq * 4));
  if (kernels().u8_pack_quads != nullptr)
    kernels().u8_pack_quads(xu.data(), kM, kK, kM, xq.data(), ldq);
  for (BlockShape b : kBlocks) {
    std::vector<float> wb = w;
    prune_blocks(wb.data(), kN, kK, b, 0.5);
    std::vector<int8_t> q(wb.size());
    std::vector<float> scales(kN);
    quantize_per_channel(wb.data(), kN, kK, q.data(), scales.data());
    const PackedMatrix pf = PackedMatrix::pack_f32(wb.data(), kN, kK, b);
    const PackedMatrix ps = PackedMatrix::pack_s8(q.data(), scales.data(), kN, kK, b);
    const int r = pf.view().rows_per_block;
    for (Activation act : {Activation::kNone, Activation::kGeluErf, Activation::kGeluTanh,
                           Activation::kGeluSigmoid}) {
      for (int kind = 0; kind < 4; ++kind) {  // f32, u8s8, u8s8 -> u8, quads
        if (kind == 3 && (ps.view().quad_index == nullptr || kernels().u8s8_quads_r1 == nullptr))
          continue;
        SCOPED_TRACE(std::string(block_shape_name(b)) + " activation " + activation_name(act) +
                     " kind " + std::to_string(kind));
        auto run = [&](const std::vector<int64_t>& splits) {
          std::vector<float> out(static_cast<size_t>(kN * kM), -1.0f);
          std::vector<uint8_t> out_u8(static_cast<size_t>(kN * kM), 7);
          Epilogue ep;
          ep.channel_scale = kind == 0 ? nullptr : channel.data();
          ep.token_scale = kind == 0 ? nullptr : token.data();
          ep.bias = bias.data();
          ep.activation = act;
          ep.residual = residual.data();
          ep.ld_residual = kM;
          ep.ld_out = kM;
          if (kind == 2) {
            ep.out_u8 = out_u8.data();
            ep.out_inv_scale = 20.0f;
            ep.out_zero_point = 128;
          } else {
            ep.out_f32 = out.data();
          }
          for (size_t i = 0; i + 1 < splits.size(); ++i) {
            const int64_t m0 = splits[i], m1 = splits[i + 1];
            if (kind == 0) {
              kernels().f32(r)(pf.view(), xf.data(), kM, m0, m1, 0, pf.view().num_block_rows, ep);
            } else if (kind == 3) {
              kernels().u8s8_quads_r1(ps.view(), xq.data(), ldq, m0, m1, 0,
                                      ps.view().num_block_rows, ep);
            } else {
              kernels().u8s8(r)(ps.view(), xu.data(), kM, m0, m1, 0, ps.view().num_block_rows, ep);
            }
          }
          return std::make_pair(out, out_u8);
        };
        const auto whole = run({0, kM});
        const auto split = run(cuts);
        for (int64_t n = 0; n < kN; ++n) {
          for (int64_t m = 0; m < kM; ++m) {
            const size_t i = static_cast<size_t>(n * kM + m);
            if (kind == 2) {
              ASSERT_EQ(whole.second[i], split.second[i]) << "n=" << n << " m=" << m;
            } else {
              ASSERT_EQ(std::memcmp(&whole.first[i], &split.first[i], sizeof(float)), 0)
                  << "n=" << n << " m=" << m << ": " << whole.first[i] << " vs " << split.first[i];
            }
          }
        }
      }
    }
  }
}

// Threaded twin: two threads through the nonzero-balanced partition give the same
// answers as the reference (and so as the serial run).
TEST_P(SpmmIsaTest, ThreadedTwin) {
  // (A 1x4 matrix's activations: with a 64-token tile per thread each thread packs and runs
  // its own tiles (128 x 770, 130 x 96); with fewer tiles than threads they are packed on
  // the pool in slices of quads, the last one at K's ragged edge (64 x 1030, large enough
  // for the pool), and the block-rows are split.)
  // (Two tiles whose weights outweigh their activations three times, 128 x 96 x 2000, are
  // split by block-rows, each tile packed or copied by one thread first; the others by tokens.)
  for (const Shape& s : {Shape{128, 300, 260}, Shape{64, 768, 1000}, Shape{19, 129, 333},
                         Shape{128, 770, 64}, Shape{64, 1030, 64}, Shape{128, 96, 2000}}) {
    for (BlockShape b : kBlocks) {
      SpmmTester().m(s.m).k(s.k).n(s.n).block(b).sparsity(0.8).threads(2).TestU8S8(kernels());
      SpmmTester().m(s.m).k(s.k).n(s.n).block(b).sparsity(0.8).threads(2).bias(true).TestF32(
          kernels());
      SpmmTester().m(s.m).k(s.k).n(s.n).block(b).sparsity(0.0).dense(true).threads(2).TestU8S8(
          kernels());
      if (HasFatalFailure()) return;
    }
  }
  // Three 64-token tiles (the last ragged) of a row-major X on two threads, and one tile
  // split by block-rows: spmm_u8s8 copies such X into 64-token panels first, and every
  // per-token input of the epilogue must follow the tile.
  for (const Shape& s : {Shape{130, 96, 40}, Shape{50, 96, 40}, Shape{130, 96, 2000}}) {
    for (BlockShape b : kBlocks) {
      SpmmTester()
          .m(s.m)
          .k(s.k)
          .n(s.n)
          .block(b)
          .sparsity(0.7)
          .threads(2)
          .channel_scale(true)
          .token_scale(true)
          .bias(true)
          .residual(true)
          .u8_out(true)
          .TestU8S8(kernels());
      if (HasFatalFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, SpmmIsaTest,
                         ::testing::Values(Isa::kGeneric, Isa::kAvx2, Isa::kAvx512,
                                           Isa::kAvx512Vnni),
                         [](const ::testing::TestParamInfo<Isa>& param_info) {
                           return std::string(isa_name(param_info.param));
                         });

// Which matrices are quad matrices: every 1x4 packing (K a multiple of 4 or not, and an
// unstructured matrix packed as 1x4, whose blocks simply hold zeros); never the 1x1
// packing of an unstructured matrix, a 4x1 packing, a dense one, fp32, or a matrix with a
// group whose indices are not one aligned quad.
TEST(QuadIndex, DerivedOnlyForAlignedQuads) {
  for (int64_t k : {64, 66, 3}) {
    std::vector<float> w = random_floats(static_cast<size_t>(40 * k), 3);
    prune_blocks(w.data(), 40, k, kBlock1x4, 0.5);
    std::vector<int8_t> q(w.size());
    std::vector<float> sc(40);
    quantize_per_channel(w.data(), 40, k, q.data(), sc.data());
    const PackedMatrix p = PackedMatrix::pack_s8(q.data(), sc.data(), 40, k, kBlock1x4);
    ASSERT_NE(p.view().quad_index, nullptr) << "K=" << k;
    for (int64_t g = 0; g < p.view().num_groups; ++g)
      EXPECT_EQ(p.view().quad_index[g] * 4, p.view().indices[g * 4]);
    EXPECT_EQ(PackedMatrix::pack_s8(q.data(), sc.data(), 40, k, kBlock4x1).view().quad_index,
              nullptr);
    EXPECT_EQ(PackedMatrix::pack_s8(q.data(), sc.data(), 40, k, kBlock1x4, true).view().quad_index,
              nullptr);
    EXPECT_EQ(PackedMatrix::pack_f32(w.data(), 40, k, kBlock1x4).view().quad_index, nullptr);
  }
  std::vector<float> w = random_floats(16 * 64, 4);
  prune_blocks(w.data(), 16, 64, kBlock1x1, 0.9);
  std::vector<int8_t> q(w.size());
  std::vector<float> sc(16);
  quantize_per_channel(w.data(), 16, 64, q.data(), sc.data());
  const PackedMatrix p = PackedMatrix::pack_s8(q.data(), sc.data(), 16, 64, kBlock1x4);
  ASSERT_NE(p.view().quad_index, nullptr);
  EXPECT_EQ(PackedMatrix::pack_s8(q.data(), sc.data(), 16, 64, kBlock1x1).view().quad_index,
            nullptr);
  // The same arrays with one group's indices shifted off its quad: not a quad matrix.
  PackedWeights v = p.view();
  std::vector<int32_t> idx(v.indices, v.indices + v.num_groups * 4);
  for (int j = 0; j < 4; ++j)
    idx[static_cast<size_t>(4 + j)] = std::min<int32_t>(idx[4] + j + 1, 63);
  v.indices = idx.data();
  EXPECT_EQ(quad_index_of(v).size(), 0u);
}

// Dense int8 weights, both kinds with few enough fix groups for AVX2's pair-safe form:
// bell-shaped (normal-like), or small weights with one pair in 16 of the worst cases
// for saturation (+-127 / +-127, 127 / -1, -128 / -128, 64 / 65, and the opposite-sign
// 127 / -127 and -128 / 127, which cannot saturate).
std::vector<int8_t> dense_int8_weights(int64_t n, int64_t k, bool worst, uint32_t seed) {
  std::vector<int8_t> q(static_cast<size_t>(n * k));
  uint32_t s = seed;
  auto next = [&] { return s = s * 1664525u + 1013904223u; };
  for (size_t i = 0; i < q.size(); ++i) {
    if (worst) {
      const int8_t pattern[] = {127,  127, -127, -127, 127,  -1,   -128,
                                -128, 64,  65,   127,  -127, -128, 127};
      if (i % 2 == 0 && next() % 16 == 0) {
        const size_t pick = (next() >> 8) % 7;
        q[i] = pattern[2 * pick];
        if (i + 1 < q.size()) q[++i] = pattern[2 * pick + 1];
      } else {
        q[i] = static_cast<int8_t>(static_cast<int32_t>((next() >> 8) % 41) - 20);
      }
    } else {
      // Sum of 4 uniforms: bell-shaped, a few pairs past 128 in magnitude.
      int32_t v = 0;
      for (int j = 0; j < 4; ++j) v += static_cast<int32_t>(next() >> 24) - 128;
      q[i] = static_cast<int8_t>(v / 5);
    }
  }
  return q;
}

TEST(PairSafe, GroupsSumToTheWeightsAndNoPairSaturates) {
  for (bool worst : {false, true}) {
    const int64_t n = 13, k = 37;
    std::vector<int8_t> q = dense_int8_weights(n, k, worst, 3);
    std::vector<float> sc(static_cast<size_t>(n), 0.01f);
    PackedMatrix p = PackedMatrix::pack_s8(q.data(), sc.data(), n, k, kBlock4x1, true);
    p.derive_pair_safe();
    const PackedWeights& v = p.view();
    const PairSafeWeights ps = pair_safe_of(v);
    ASSERT_FALSE(ps.empty());
    ASSERT_NE(v.pair_safe_values, nullptr);
    const int64_t gpr = v.groups_per_dense_row();
    const int8_t* w = static_cast<const int8_t*>(v.values);
    int64_t fixes = 0, opposite_big = 0;
    for (int64_t br = 0; br < v.num_block_rows; ++br) {
      for (int r = 0; r < 4; ++r) {
        const int64_t row = br * 4 + r;
        std::vector<int32_t> sum(static_cast<size_t>(gpr * 4), 0);
        for (int64_t qd = 0; qd < gpr; ++qd)
          for (int j = 0; j < 4; j += 2) {
            const int32_t a = v.pair_safe_values[(br * gpr + qd) * 16 + r * 4 + j];
            const int32_t b = v.pair_safe_values[(br * gpr + qd) * 16 + r * 4 + j + 1];
            // No u8 pair saturates int16: the positive and the negative parts each
            // within 128 (255 x 128 < 2^15).
            EXPECT_LE(std::max(a, 0) + std::max(b, 0), 128);
            EXPECT_GE(std::min(a, 0) + std::min(b, 0), -128);
            // A pair of opposite signs cannot saturate and is never cut.
            const int32_t a0 = w[(br * gpr + qd) * 16 + r * 4 + j];
            const int32_t b0 = w[(br * gpr + qd) * 16 + r * 4 + j + 1];
            if ((a0 < 0) != (b0 < 0)) {
              EXPECT_EQ(a, a0);
              EXPECT_EQ(b, b0);
              opposite_big += std::abs(a0) + std::abs(b0) > 128;
            }
            sum[static_cast<size_t>(qd * 4 + j)] += a;
            sum[static_cast<size_t>(qd * 4 + j + 1)] += b;
          }
        ASSERT_LE(v.pair_fix_ptr[row], v.pair_fix_ptr[row + 1]);
        for (int32_t f = v.pair_fix_ptr[row]; f < v.pair_fix_ptr[row + 1]; ++f, ++fixes) {
          const int32_t qd = v.pair_fix_quad[f];
          ASSERT_GE(qd, 0);
          ASSERT_LT(qd, gpr);
          if (f > v.pair_fix_ptr[row]) {
            ASSERT_GT(qd, v.pair_fix_quad[f - 1]);
          }
          for (int j = 0; j < 4; j += 2) {
            const int32_t a = v.pair_fix_values[f * 4 + j], b = v.pair_fix_values[f * 4 + j + 1];
            EXPECT_LE(std::abs(a) + std::abs(b), 128);
            EXPECT_TRUE(a == 0 || b == 0);
            sum[static_cast<size_t>(qd * 4 + j)] += a;
            sum[static_cast<size_t>(qd * 4 + j + 1)] += b;
          }
        }
        for (int64_t qd = 0; qd < gpr; ++qd)
          for (int j = 0; j < 4; ++j)
            ASSERT_EQ(sum[static_cast<size_t>(qd * 4 + j)], w[(br * gpr + qd) * 16 + r * 4 + j])
                << "row " << row << " quad " << qd;
      }
    }
    EXPECT_EQ(fixes, v.pair_fix_ptr[v.num_block_rows * 4]);
    if (worst) {
      EXPECT_GT(fixes, 0);         // these weights include pairs past 128 of one sign
      EXPECT_GT(opposite_big, 0);  // and of opposite signs
    }
  }
  // Uniform weights (a quarter of the pairs past 128 with one sign, more than one fix a
  // group) get no pair-safe form, nor fp32 matrices (sparse 1x1 int8 ones: below).
  std::vector<int8_t> flat(16 * 64);
  uint32_t s = 11;
  for (auto& f : flat) {
    s = s * 1664525u + 1013904223u;
    f = static_cast<int8_t>(static_cast<int32_t>((s >> 8) % 255) - 127);
  }
  std::vector<float> fsc(16, 0.01f);
  EXPECT_TRUE(
      pair_safe_of(PackedMatrix::pack_s8(flat.data(), fsc.data(), 16, 64, kBlock4x1, true).view())
          .empty());
  std::vector<float> w = random_floats(8 * 16, 2);
  EXPECT_TRUE(
      pair_safe_of(PackedMatrix::pack_f32(w.data(), 8, 16, kBlock4x1, true).view()).empty());
}

// spmm_u8s8 on p (whose weights W^T[N][K] are q, channel scales 1), serial and on a pool,
// against exact int64 sums; activations 255 everywhere (the saturating case for
// vpmaddubsw), or mixed.
void ExpectExactU8S8(const SpmmKernels& kernels, const PackedMatrix& p,
                     const std::vector<int8_t>& q, const Shape& sh, bool mixed) {
  std::vector<uint8_t> x(static_cast<size_t>(sh.k * sh.m), 255);
  if (mixed) {
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  }
  std::vector<float> y(static_cast<size_t>(sh.n * sh.m), -1.0f),
      ts(static_cast<size_t>(sh.m), 1.0f);
  Epilogue ep;
  ep.out_f32 = y.data();
  ep.ld_out = sh.m;
  ep.channel_scale = p.view().scales;
  ep.token_scale = ts.data();
  ThreadPool pool(2);
  for (ThreadPool* tp : {static_cast<ThreadPool*>(nullptr), &pool}) {
    spmm_u8s8(kernels, tp, p.view(), x.data(), sh.m, sh.m, ep);
    for (int64_t nn = 0; nn < sh.n; ++nn)
      for (int64_t t = 0; t < sh.m; ++t) {
        int64_t want = 0;
        for (int64_t c = 0; c < sh.k; ++c)
          want += int64_t{q[static_cast<size_t>(nn * sh.k + c)]} *
                  (int64_t{x[static_cast<size_t>(c * sh.m + t)]} - 128);
        ASSERT_EQ(y[static_cast<size_t>(nn * sh.m + t)], static_cast<float>(want))
            << "m " << sh.m << " k " << sh.k << " n " << sh.n << " mixed " << mixed << " row " << nn
            << " token " << t << " threads " << (tp ? 2 : 1);
      }
  }
}

// The dense int8 path (on AVX2 the pair-safe GEMM) on bell-shaped and worst-case weights,
// against exact int64 sums; activations include 255 everywhere, the saturating case.
TEST_P(SpmmIsaTest, DenseInt8BellShapedAndSaturatingWeights) {
  const Shape shapes[] = {{1, 4, 4}, {17, 37, 13}, {64, 64, 64}, {130, 200, 9}, {63, 768, 12}};
  for (const Shape& sh : shapes)
    for (bool worst : {false, true})
      for (int xs = 0; xs < 2; ++xs) {
        std::vector<int8_t> q = dense_int8_weights(sh.n, sh.k, worst, 7);
        std::vector<float> sc(static_cast<size_t>(sh.n), 1.0f);
        PackedMatrix p = PackedMatrix::pack_s8(q.data(), sc.data(), sh.n, sh.k, kBlock4x1, true);
        p.derive_pair_safe();
        SCOPED_TRACE("worst " + std::to_string(worst));
        ExpectExactU8S8(kernels(), p, q, sh, xs == 1);
        if (HasFatalFailure()) return;
      }
}

// Sparse int8 weights for the 1x1 pattern with the saturating cases of vpmaddubsw in
// them: about half zeros, and the rest drawn, by row, from both signs (one-signed pairs past
// 128, 127 + 127 and -128 + -1, opposite signs, -128 + 127, and small weights), from
// positive weights only (127, 1, 2, 64, 65: pairs at 128 and at 129), from negative ones
// only (-128, -1, -100, -28, -64, -65) or from 64 and 65 (64 + 65 would saturate at 255);
// `one_sign`: only large positive ones (no two can pair).
std::vector<int8_t> sparse_int8_weights(int64_t n, int64_t k, bool one_sign, uint32_t seed) {
  std::vector<int8_t> q(static_cast<size_t>(n * k), 0);
  uint32_t s = seed;
  auto next = [&] { return s = s * 1664525u + 1013904223u; };
  const int8_t mixed[] = {127, 127, -128, -1, 64, 65, 1, 64, -100, -28, -128, 127, 5, -7, 20, 3};
  const int8_t positive[] = {127, 1, 2, 64, 65, 63};
  const int8_t negative[] = {-128, -1, -100, -28, -64, -65};
  for (size_t i = 0; i < q.size(); ++i) {
    if ((next() >> 16) % 2 == 0) continue;  // a high bit: the low ones have short periods
    const uint32_t r = (next() >> 8) % 16, kind = static_cast<uint32_t>(i / k % 4);
    q[i] = one_sign    ? static_cast<int8_t>(100 + r % 28)
           : kind == 0 ? mixed[r]
           : kind == 1 ? positive[r % 6]
           : kind == 2 ? negative[r % 6]
                       : static_cast<int8_t>(64 + r % 2);
  }
  return q;
}

// The sparse 1x1 form of pair_safe_of: every row's nonzeros exactly once, no pair of one
// sign past 128, inputs in range, the fewest groups the pairing allows on a row chosen
// for it; none for one-signed large weights, quad matrices and 4-row blocks.
TEST(PairSafe, SparseRowsAreSignPaired) {
  const int64_t n = 23, k = 301;
  std::vector<int8_t> q = sparse_int8_weights(n, k, false, 5);
  // Row 0: 127 + 1, 100 + 28 and 90 + 38 pair within 128 (3 pairs, 2 groups), where pairing
  // largest with largest would leave 6 weights alone (3 groups).
  std::fill(q.begin(), q.begin() + k, int8_t{0});
  const int8_t row0[] = {100, 28, 90, 38, 127, 1};
  for (int i = 0; i < 6; ++i) q[static_cast<size_t>(7 + 40 * i)] = row0[i];
  std::vector<float> sc(static_cast<size_t>(n), 0.01f);
  PackedMatrix p = PackedMatrix::pack_s8(q.data(), sc.data(), n, k, kBlock1x1, false);
  p.derive_pair_safe();
  const PackedWeights& v = p.view();
  ASSERT_NE(v.paired_ptr, nullptr);
  EXPECT_EQ(v.pair_safe_values, nullptr);
  EXPECT_EQ(v.paired_ptr[0], 0);
  EXPECT_EQ(v.paired_ptr[1], 2);
  const int8_t* w = static_cast<const int8_t*>(v.values);
  int64_t same_sign_pairs = 0, opposite_big = 0;
  for (int64_t row = 0; row < n; ++row) {
    std::vector<std::pair<int32_t, int32_t>> want, got;
    for (int64_t g = v.group_ptr[row]; g < v.group_ptr[row + 1]; ++g)
      for (int j = 0; j < 4; ++j)
        if (w[g * 4 + j] != 0) want.emplace_back(v.indices[g * 4 + j], w[g * 4 + j]);
    ASSERT_LE(v.paired_ptr[row], v.paired_ptr[row + 1]);
    for (int64_t g = v.paired_ptr[row]; g < v.paired_ptr[row + 1]; ++g) {
      for (int j = 0; j < 4; ++j) {
        ASSERT_LT(v.paired_index[g * 4 + j], k);
        if (v.paired_values[g * 4 + j] != 0)
          got.emplace_back(v.paired_index[g * 4 + j], v.paired_values[g * 4 + j]);
      }
      for (int j = 0; j < 4; j += 2) {
        const int32_t a = v.paired_values[g * 4 + j], b = v.paired_values[g * 4 + j + 1];
        if ((a > 0 && b > 0) || (a < 0 && b < 0)) {
          EXPECT_LE(std::abs(a) + std::abs(b), 128) << "row " << row << " group " << g;
          ++same_sign_pairs;
        }
        opposite_big += (a > 0) != (b > 0) && a != 0 && b != 0 && std::abs(a) + std::abs(b) > 128;
      }
    }
    std::sort(want.begin(), want.end());
    std::sort(got.begin(), got.end());
    ASSERT_EQ(got, want) << "row " << row;
    // At most one pair of the row is alone in its group, and at most the unpairable
    // weights of the majority sign have a zero partner: never more than one group over
    // half the row's nonzeros plus one.
    EXPECT_LE(v.paired_ptr[row + 1] - v.paired_ptr[row], static_cast<int64_t>(want.size()) / 2 + 1);
  }
  EXPECT_GT(same_sign_pairs, 0);
  EXPECT_GT(opposite_big, 0);
  EXPECT_LE(2 * int64_t{v.paired_ptr[n]}, 3 * v.num_groups);
  // One-signed weights of 100-127 pair only with zeros (twice the groups): no form.
  std::vector<int8_t> big = sparse_int8_weights(n, k, true, 6);
  EXPECT_TRUE(
      pair_safe_of(PackedMatrix::pack_s8(big.data(), sc.data(), n, k, kBlock1x1, false).view())
          .empty());
  // The 1x4 pattern has its quad kernel; 4-row blocks have their own form (below), only
  // where asked for.
  std::vector<float> f = random_floats(static_cast<size_t>(n * k), 9);
  prune_blocks(f.data(), n, k, kBlock1x4, 0.8);
  std::vector<int8_t> fq(f.size());
  quantize_per_channel(f.data(), n, k, fq.data(), sc.data());
  EXPECT_TRUE(
      pair_safe_of(PackedMatrix::pack_s8(fq.data(), sc.data(), n, k, kBlock1x4, false).view())
          .empty());
  EXPECT_TRUE(
      pair_safe_of(PackedMatrix::pack_s8(q.data(), sc.data(), n, k, kBlock4x1, false).view(), false)
          .empty());
}

// The sparse 4-row form: every input column (its 4 weights) exactly once, in every row
// each pair safe, inputs in range; on the saturating weights, uniform ones (the most
// pairs no row allows) and dense one-signed large ones (no two columns pair: no form).
TEST(PairSafe, SparseBlockRowsArePairedInEveryRow) {
  const int64_t n = 22, k = 301;  // a last block-row of 2 rows
  for (int kind = 0; kind < 3; ++kind) {
    std::vector<int8_t> q = sparse_int8_weights(n, k, false, 12);
    if (kind == 2) {  // every weight one-signed and large: no two columns pair
      for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<int8_t>(100 + i % 28);
    }
    if (kind == 1) {
      uint32_t st = 3;
      for (auto& x : q) {
        st = st * 1664525u + 1013904223u;
        x = (st >> 16) % 3 == 0 ? static_cast<int8_t>(static_cast<int32_t>((st >> 8) % 255) - 127)
                                : int8_t{0};
      }
    }
    std::vector<float> sc(static_cast<size_t>(n), 0.01f);
    PackedMatrix p = PackedMatrix::pack_s8(q.data(), sc.data(), n, k, kBlock4x1, false);
    p.derive_pair_safe();
    const PackedWeights& v = p.view();
    SCOPED_TRACE("kind " + std::to_string(kind));
    if (kind == 2) {
      EXPECT_EQ(v.paired_ptr, nullptr);
      continue;
    }
    ASSERT_NE(v.paired_ptr, nullptr);
    const int8_t* w = static_cast<const int8_t*>(v.values);
    for (int64_t br = 0; br < v.num_block_rows; ++br) {
      // (input, its 4 weights) of every column with a nonzero, stored and paired.
      std::vector<std::vector<int32_t>> want, got;
      for (int64_t g = v.group_ptr[br]; g < v.group_ptr[br + 1]; ++g)
        for (int j = 0; j < 4; ++j) {
          std::vector<int32_t> c = {v.indices[g * 4 + j]};
          bool any = false;
          for (int r = 0; r < 4; ++r) {
            c.push_back(w[g * 16 + r * 4 + j]);
            any = any || c.back() != 0;
          }
          if (any) want.push_back(c);
        }
      ASSERT_LE(v.paired_ptr[br], v.paired_ptr[br + 1]);
      for (int64_t g = v.paired_ptr[br]; g < v.paired_ptr[br + 1]; ++g) {
        for (int j = 0; j < 4; ++j) {
          ASSERT_LT(v.paired_index[g * 4 + j], k);
          std::vector<int32_t> c = {v.paired_index[g * 4 + j]};
          bool any = false;
          for (int r = 0; r < 4; ++r) {
            c.push_back(v.paired_values[g * 16 + r * 4 + j]);
            any = any || c.back() != 0;
          }
          if (any) got.push_back(c);
        }
        for (int r = 0; r < 4; ++r)
          for (int j = 0; j < 4; j += 2) {
            const int32_t a = v.paired_values[g * 16 + r * 4 + j];
            const int32_t b = v.paired_values[g * 16 + r * 4 + j + 1];
            if ((a > 0 && b > 0) || (a < 0 && b < 0)) {
              EXPECT_LE(std::abs(a) + std::abs(b), 128) << "block-row " << br << " group " << g;
            }
          }
      }
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, want) << "block-row " << br;
    }
    EXPECT_LE(2 * int64_t{v.paired_ptr[v.num_block_rows]}, 3 * v.num_groups);
  }
}

// The 1x1 and 4x1 kernels (the sign-paired ones where the form exists) on those weights,
// with activations of 255 everywhere (the saturating case) and mixed, against exact int64
// sums, serial and threaded; token counts around the 32-token tile.
TEST_P(SpmmIsaTest, SparseInt8SaturatingWeights) {
  const Shape shapes[] = {{1, 4, 4}, {31, 37, 13}, {32, 64, 5}, {64, 129, 17}, {97, 300, 9}};
  for (const Shape& sh : shapes)
    for (bool one_sign : {false, true})
      for (int xs = 0; xs < 2; ++xs) {
        std::vector<int8_t> q = sparse_int8_weights(sh.n, sh.k, one_sign, 8);
        std::vector<float> sc(static_cast<size_t>(sh.n), 1.0f);
        for (BlockShape b : {kBlock1x1, kBlock4x1}) {
          PackedMatrix p = PackedMatrix::pack_s8(q.data(), sc.data(), sh.n, sh.k, b, false);
          p.derive_pair_safe();
          const bool paired =
              b.out == 4 ? kernels().u8s8_r4_sign_paired : kernels().u8s8_r1_sign_paired;
          if (paired && !one_sign && p.view().quad_index == nullptr && sh.k >= 32) {
            ASSERT_NE(p.view().paired_ptr, nullptr);
          }
          SCOPED_TRACE("one_sign " + std::to_string(one_sign) + " block " + std::to_string(b.out) +
                       "x" + std::to_string(b.in));
          ExpectExactU8S8(kernels(), p, q, sh, xs == 1);
          if (HasFatalFailure()) return;
        }
      }
}

TEST(SpmmThreads, SerialAndThreadedAreBitIdentical) {
  const SpmmKernels& k = spmm_kernels();
  std::vector<float> w = random_floats(512 * 384, 5);
  // Rows of very different density: the first quarter dense, the rest 95% sparse.
  prune_blocks(w.data() + 128 * 384, 384, 384, kBlock4x1, 0.95);
  const PackedMatrix p = PackedMatrix::pack_f32(w.data(), 512, 384, kBlock4x1);
  std::vector<float> x = random_floats(384 * 128, 6);
  std::vector<float> y1(512 * 128), y2(512 * 128);
  Epilogue e1, e2;
  e1.out_f32 = y1.data();
  e2.out_f32 = y2.data();
  e1.ld_out = e2.ld_out = 128;
  spmm_f32(k, nullptr, p.view(), x.data(), 128, 128, e1);
  ThreadPool pool(2);
  spmm_f32(k, &pool, p.view(), x.data(), 128, 128, e2);
  EXPECT_EQ(y1, y2);
}

TEST(SpmmThreads, PartitionBalancesByNonzeros) {
  std::vector<float> w = random_floats(1024 * 512, 8);
  prune_blocks(w.data() + 256 * 512, 768, 512, kBlock4x1, 0.95);  // dense top quarter
  const PackedMatrix p = PackedMatrix::pack_f32(w.data(), 1024, 512, kBlock4x1);
  const PackedWeights& v = p.view();
  const std::vector<int64_t> b = partition_block_rows(v, 2);
  ASSERT_EQ(b.size(), 3u);
  const int64_t first = v.group_ptr[b[1]] - v.group_ptr[b[0]];
  const int64_t second = v.group_ptr[b[2]] - v.group_ptr[b[1]];
  // Splitting by rows would put ~87% of the work in the first half.
  EXPECT_LT(std::abs(first - second), (first + second) / 10);
  EXPECT_LT(b[1], v.num_block_rows / 2);
}

TEST(Isa, ParseAndName) {
  Isa isa{};
  for (const char* name : {"generic", "avx2", "avx512", "avx512vnni"}) {
    ASSERT_TRUE(parse_isa(name, &isa));
    EXPECT_STREQ(isa_name(isa), name);
  }
  EXPECT_FALSE(parse_isa("sse9", &isa));
  EXPECT_TRUE(isa_supported(Isa::kGeneric));
  EXPECT_LE(active_isa(), detected_isa());
}

}  // namespace
}  // namespace sparq::test
