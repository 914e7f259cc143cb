// The feature-major kernels (attention, LayerNorm, quantization) of every ISA against
// float64 references, on awkward shapes: query and key counts that are not multiples of
// the vector width, head sizes that are not multiples of the 8-row register block, row
// strides wider than the token count, and work split into independent sub-ranges.
#include "kernels/fm/fm.h"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace sparq::test {
namespace {

// The shape fields of FmAttentionArgs from a test case's B, H, S, T, dh and dv.
template <class Case>
void set_attention_shape(FmAttentionArgs& a, const Case& c) {
  a.batch = c.B;
  a.heads = c.H;
  a.seq = c.S;
  a.keys = c.T;
  a.dh = c.dh;
  a.dv = c.dv;
}

class FmIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam())) GTEST_SKIP() << isa_name(GetParam()) << " not supported here";
  }
};

TEST_P(FmIsaTest, AttentionMatchesFloat64Reference) {
  const FmKernels& kern = fm_kernels(GetParam());
  struct Case {
    int64_t B, H, S, T, dh, dv;
    int mask;
  };
  // The fp32 kernel, then the bf16 and int8 ones where this CPU has them.
  for (const int precision : {0, 1, 2}) {
    const bool bf16 = precision == 1, int8 = precision == 2;
    if (bf16 && kern.attention_bf16 == nullptr) continue;
    if (int8 && kern.attention_int8 == nullptr) continue;
    const FmAttentionFn kernel = int8   ? kern.attention_int8
                                 : bf16 ? kern.attention_bf16
                                        : kern.attention;
    // bf16 keeps 8 bits of mantissa: products of inputs in [-1, 1] are off by ~2^-8. int8
    // rounds Q, K and V to 127 steps of their maxima and the probabilities to 255 steps
    // (measured: errors up to ~1e-3 here; 1e-4 fails, 1e-2 passes).
    const double tol = int8 ? 1e-2 : bf16 ? 2e-2 : 2e-5;
    for (const int64_t chunk :
         {int64_t{0}, int64_t{2}}) {  // item orders: (b, h, block), then chunked
      for (const int64_t P :
           {int64_t{0}, int64_t{16}, int64_t{64}}) {  // row-major, then panel layouts
        for (const Case c :
             {Case{1, 1, 1, 1, 1, 1, 0}, Case{2, 3, 5, 7, 9, 11, 1}, Case{1, 2, 17, 33, 64, 64, 2},
              Case{2, 4, 32, 32, 16, 16, 1}, Case{1, 12, 13, 40, 64, 64, 2},
              Case{3, 1, 8, 100, 5, 3, 0}, Case{2, 2, 70, 70, 24, 17, 1}}) {
          SCOPED_TRACE(std::to_string(c.B) + "x" + std::to_string(c.H) + "x" + std::to_string(c.S) +
                       " T=" + std::to_string(c.T) + " dh=" + std::to_string(c.dh) +
                       " dv=" + std::to_string(c.dv) + " mask=" + std::to_string(c.mask) +
                       " panel=" + std::to_string(P) + " chunk=" + std::to_string(chunk) +
                       (bf16   ? " bf16"
                        : int8 ? " int8"
                               : ""));
          // Row-major with row strides wider than the tokens (pad 3), or panels of P tokens.
          const int64_t mq = c.B * c.S, mk = c.B * c.T, ldq = mq + 3, ldk = mk + 3, ldo = mq + 3;
          auto at = [P](int64_t R, int64_t ld, int64_t r, int64_t m) {
            return P > 0 ? (m / P) * R * P + r * P + m % P : r * ld + m;
          };
          auto size = [P](int64_t R, int64_t ld, int64_t m) {
            return P > 0 ? (m + P - 1) / P * P * R : R * ld;
          };
          const int64_t Rq = c.H * c.dh, Rv = c.H * c.dv;
          const auto q = random_floats(size(Rq, ldq, mq), 1),
                     k = random_floats(size(Rq, ldk, mk), 2),
                     v = random_floats(size(Rv, ldk, mk), 3);
          std::vector<float> add(c.B * c.T);
          std::vector<uint8_t> sel(c.B * c.T);
          for (int64_t i = 0; i < c.B * c.T; ++i) {
            sel[i] = (i % 5) == 4;  // some masked keys, never all of a row
            add[i] = sel[i] ? -3.4e38f : 0.0f;
          }
          FmAttentionArgs a;
          a.q = q.data();
          a.k = k.data();
          a.v = v.data();
          const float sentinel = 1234.5f;
          std::vector<float> out(size(Rv, ldo, mq), sentinel);
          a.out = out.data();
          a.ld_q = ldq;
          a.ld_k = a.ld_v = ldk;
          a.ld_out = ldo;
          a.panel = P;
          a.chunk_blocks = chunk;
          set_attention_shape(a, c);
          a.scale = 0.125f;
          a.fill = -3.4e38f;
          if (c.mask == 1) a.add_mask = add.data();
          if (c.mask == 2) a.select_mask = sel.data();
          a.mask_b = c.T;
          a.mask_t = 1;
          std::vector<float> scratch(fm_attention_scratch_floats(a, kern.query_block));
          // int8 with chunked items: K and V packed beforehand in units (two calls), as the
          // executor does; with the plain item order the kernel packs each head itself.
          std::vector<float> packed;
          if (int8 && chunk > 0) {
            packed.assign(static_cast<size_t>(c.B * c.H * fm_attention_int8_head_floats(a)),
                          std::nanf(""));
            a.kv_packed = packed.data();
            const int64_t units = fm_attention_int8_units(a);
            kern.attention_int8_prep(a, 0, units / 2, scratch.data());
            kern.attention_int8_prep(a, units / 2, units, scratch.data());
          }
          const int64_t items = fm_attention_items(a, kern.query_block);
          kernel(a, 0, items / 2, scratch.data());  // two calls: items are independent
          kernel(a, items / 2, items, scratch.data());
          std::vector<bool> written(out.size(), false);
          for (int64_t b = 0; b < c.B; ++b) {
            for (int64_t h = 0; h < c.H; ++h) {
              for (int64_t s = 0; s < c.S; ++s) {
                std::vector<double> p(c.T);
                double mx = -1e300, sum = 0;
                for (int64_t t = 0; t < c.T; ++t) {
                  double z = 0;
                  for (int64_t d = 0; d < c.dh; ++d) {
                    z += double(q[at(Rq, ldq, h * c.dh + d, b * c.S + s)]) *
                         k[at(Rq, ldk, h * c.dh + d, b * c.T + t)];
                  }
                  z *= 0.125;
                  if (c.mask && sel[b * c.T + t]) z = -3.4e38;
                  p[t] = z;
                  mx = std::max(mx, z);
                }
                for (double& z : p) sum += (z = std::exp(z - mx));
                for (int64_t j = 0; j < c.dv; ++j) {
                  double o = 0;
                  for (int64_t t = 0; t < c.T; ++t)
                    o += p[t] / sum * v[at(Rv, ldk, h * c.dv + j, b * c.T + t)];
                  const int64_t idx = at(Rv, ldo, h * c.dv + j, b * c.S + s);
                  written[idx] = true;
                  ASSERT_NEAR(out[idx], o, tol * (1 + std::fabs(o)))
                      << "b " << b << " h " << h << " s " << s << " j " << j;
                }
              }
            }
          }
          // Nothing outside the output's elements is touched (row padding, panel tails).
          for (size_t i = 0; i < out.size(); ++i) {
            if (!written[i]) {
              ASSERT_EQ(out[i], sentinel) << "element " << i;
            }
          }
        }
      }
    }
  }
}

// Every attention kernel reads Q, K, V and the masks only inside them: each tensor ends at a
// guard page exactly where its last token's last value is (row-major with no padding, or
// the panels the executor allocates), on awkward shapes, with and without K/V packed
// first; the result is checked against the kernel's own run on ordinary buffers.
TEST_P(FmIsaTest, AttentionReadsNothingPastItsInputs) {
  const FmKernels& kern = fm_kernels(GetParam());
  struct Case {
    int64_t B, H, S, T, dh, dv;
  };
  for (const int precision : {0, 1, 2}) {
    const FmAttentionFn kernel = precision == 2   ? kern.attention_int8
                                 : precision == 1 ? kern.attention_bf16
                                                  : kern.attention;
    if (kernel == nullptr) continue;
    for (const int64_t P : {int64_t{0}, int64_t{16}, int64_t{64}}) {
      for (const Case c : {Case{1, 1, 1, 1, 1, 1}, Case{1, 2, 5, 7, 9, 11},
                           Case{2, 3, 33, 70, 64, 64}, Case{1, 2, 17, 48, 20, 16}}) {
        for (const int mask : {0, 1, 2}) {
          SCOPED_TRACE("precision " + std::to_string(precision) + " panel " + std::to_string(P) +
                       " S=" + std::to_string(c.S) + " T=" + std::to_string(c.T) +
                       " dh=" + std::to_string(c.dh) + " mask=" + std::to_string(mask));
          const int64_t mq = c.B * c.S, mk = c.B * c.T, Rq = c.H * c.dh, Rv = c.H * c.dv;
          auto size = [P](int64_t R, int64_t m) { return P > 0 ? (m + P - 1) / P * P * R : R * m; };
          GuardedBuffer<float> q(size(Rq, mq)), k(size(Rq, mk)), v(size(Rv, mk));
          GuardedBuffer<float> out(size(Rv, mq));
          GuardedBuffer<float> add(mk);
          GuardedBuffer<uint8_t> sel(mk);
          const auto rq = random_floats(q.size(), 7), rk = random_floats(k.size(), 8),
                     rv = random_floats(v.size(), 9);
          std::copy(rq.begin(), rq.end(), q.data());
          std::copy(rk.begin(), rk.end(), k.data());
          std::copy(rv.begin(), rv.end(), v.data());
          for (int64_t i = 0; i < mk; ++i) {
            sel[i] = (i % 3) == 2;
            add[i] = sel[i] ? -1e4f : 0.0f;
          }
          for (int prep = 0; prep < (precision == 2 ? 2 : 1); ++prep) {
            FmAttentionArgs a;
            a.q = q.data();
            a.k = k.data();
            a.v = v.data();
            a.out = out.data();
            a.ld_q = a.ld_out = mq;
            a.ld_k = a.ld_v = mk;
            a.panel = P;
            set_attention_shape(a, c);
            a.scale = 0.3f;
            a.fill = -1e4f;
            if (mask == 1) a.add_mask = add.data();
            if (mask == 2) a.select_mask = sel.data();
            a.mask_b = c.T;
            a.mask_t = 1;
            std::vector<float> scratch(fm_attention_scratch_floats(a, kern.query_block));
            std::vector<float> packed;
            if (prep) {
              packed.resize(static_cast<size_t>(c.B * c.H * fm_attention_int8_head_floats(a)));
              a.kv_packed = packed.data();
              kern.attention_int8_prep(a, 0, fm_attention_int8_units(a), scratch.data());
            }
            kernel(a, 0, fm_attention_items(a, kern.query_block), scratch.data());
            // The same call on ordinary copies gives the same bits.
            std::vector<float> q2(q.data(), q.data() + q.size()), k2(k.data(), k.data() + k.size()),
                v2(v.data(), v.data() + v.size()), out2(out.size());
            FmAttentionArgs b = a;
            b.q = q2.data();
            b.k = k2.data();
            b.v = v2.data();
            b.out = out2.data();
            if (prep) kern.attention_int8_prep(b, 0, fm_attention_int8_units(b), scratch.data());
            kernel(b, 0, fm_attention_items(b, kern.query_block), scratch.data());
            for (int64_t h = 0; h < c.H; ++h) {
              for (int64_t j = 0; j < c.dv; ++j) {
                for (int64_t m = 0; m < mq; ++m) {
                  const int64_t i = P > 0 ? (m / P) * Rv * P + (h * c.dv + j) * P + m % P
                                          : (h * c.dv + j) * mq + m;
                  ASSERT_EQ(out[i], out2[static_cast<size_t>(i)]) << "h " << h << " j " << j;
                  ASSERT_TRUE(std::isfinite(out[i]));
                }
              }
            }
          }
        }
      }
    }
  }
}

TEST_P(FmIsaTest, LayerNormMatchesFloat64Reference) {
  const FmKernels& kern = fm_kernels(GetParam());
  for (const auto& [F, M] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 3}, {768, 128}, {33, 65}, {256, 200}}) {
    SCOPED_TRACE(std::to_string(F) + "x" + std::to_string(M));
    const int64_t ld = M + 5;
    auto x = random_floats(F * ld, 4, -3.0f, 5.0f);
    const auto g = random_floats(F, 5), bt = random_floats(F, 6);
    std::vector<float> y(F * ld, 0.0f);
    kern.layernorm(x.data(), ld, F, 0, M / 3, g.data(), bt.data(), 1e-5f, y.data(), ld, nullptr);
    kern.layernorm(x.data(), ld, F, M / 3, M, g.data(), bt.data(), 1e-5f, y.data(), ld, nullptr);
    double maxref = 0, maxerr = 0;
    for (int64_t m = 0; m < M; ++m) {
      double mean = 0, var = 0;
      for (int64_t f = 0; f < F; ++f) mean += x[f * ld + m];
      mean /= F;
      for (int64_t f = 0; f < F; ++f) var += (x[f * ld + m] - mean) * (x[f * ld + m] - mean);
      var /= F;
      for (int64_t f = 0; f < F; ++f) {
        const double r = (x[f * ld + m] - mean) / std::sqrt(var + 1e-5) * g[f] + bt[f];
        maxref = std::max(maxref, std::fabs(r));
        maxerr = std::max(maxerr, std::fabs(r - y[f * ld + m]));
      }
    }
    EXPECT_LE(maxerr, 1e-5 * (1 + maxref));
    // In place gives the same result.
    kern.layernorm(x.data(), ld, F, 0, M, g.data(), bt.data(), 1e-5f, x.data(), ld, nullptr);
    for (int64_t f = 0; f < F; ++f)
      for (int64_t m = 0; m < M; ++m) ASSERT_EQ(x[f * ld + m], y[f * ld + m]);
  }
}

TEST_P(FmIsaTest, QuantizeMatchesReference) {
  const FmKernels& kern = fm_kernels(GetParam());
  for (const auto& [F, M] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 3}, {768, 128}, {33, 65}}) {
    SCOPED_TRACE(std::to_string(F) + "x" + std::to_string(M));
    const int64_t ld = M + 5, ldq = M + 7;
    auto x = random_floats(F * ld, 7, -4.0f, 4.0f);
    for (int64_t f = 0; f < F; ++f) x[f * ld + 0] = 0.0f;  // an all-zero token
    std::vector<uint8_t> q(F * ldq, 77);
    std::vector<float> scale(M, -1.0f);
    kern.quantize(x.data(), ld, F, 0, M / 2, nullptr, q.data(), ldq, scale.data());
    kern.quantize(x.data(), ld, F, M / 2, M, nullptr, q.data(), ldq, scale.data());
    for (int64_t m = 0; m < M; ++m) {
      float mx = 0;
      for (int64_t f = 0; f < F; ++f) mx = std::max(mx, std::fabs(x[f * ld + m]));
      const float sc = mx > 0 ? mx / 127.0f : 1.0f;
      ASSERT_FLOAT_EQ(scale[m], sc) << "token " << m;
      for (int64_t f = 0; f < F; ++f) {
        const double exact = x[f * ld + m] / static_cast<double>(sc);
        const int qv = static_cast<int>(q[f * ldq + m]) - 128;
        ASSERT_LE(std::fabs(qv - exact), 0.5 + 1e-4) << "f " << f << " m " << m;
        ASSERT_LE(std::abs(qv), 127);
      }
      for (int64_t m2 = M; m2 < ldq; ++m2) ASSERT_EQ(q[m2], 77);
    }
  }
}

// Every path's quantization is the generic one bit for bit (scales and bytes): the
// executor's outputs must not depend on the ISA that quantized them. Whole 64-token
// blocks, tails, and values on rounding ties and at the clamp.
TEST_P(FmIsaTest, QuantizeBitIdenticalToGeneric) {
  const FmKernels& kern = fm_kernels(GetParam());
  const FmKernels& ref = fm_kernels(Isa::kGeneric);
  for (const auto& [F, M] :
       std::vector<std::pair<int64_t, int64_t>>{{768, 128}, {5, 64}, {9, 200}}) {
    const int64_t ld = M + 3;
    auto x = random_floats(F * ld, 11, -3.0f, 3.0f);
    // Ties: with max |x| = 127 in a column the scale is 1, so k + 0.5 is an exact tie.
    for (int64_t f = 0; f < F; ++f)
      x[f * ld + 1] = f == 0 ? 127.0f : -63.5f + static_cast<float>(f % 7);
    for (int64_t f = 0; f < F; ++f) x[f * ld + 2] = f % 2 ? -0.0f : 0.0f;
    // A NaN among finite values (the maximum skips it; the NaN itself clamps to -127), and a
    // token with a NaN and an infinity (its scale is inf, every byte 128 or the clamp).
    x[(F / 2) * ld + 3] = std::numeric_limits<float>::quiet_NaN();
    x[4] = std::numeric_limits<float>::quiet_NaN();
    x[(F - 1) * ld + 4] = -std::numeric_limits<float>::infinity();
    std::vector<uint8_t> q1(F * ld, 1), q2(F * ld, 2);
    std::vector<float> s1(M), s2(M);
    kern.quantize(x.data(), ld, F, 0, M, nullptr, q1.data(), ld, s1.data());
    ref.quantize(x.data(), ld, F, 0, M, nullptr, q2.data(), ld, s2.data());
    for (int64_t m = 0; m < M; ++m) ASSERT_EQ(s1[m], s2[m]) << "token " << m;
    for (int64_t f = 0; f < F; ++f)
      for (int64_t m = 0; m < M; ++m)
        ASSERT_EQ(q1[f * ld + m], q2[f * ld + m]) << "F=" << F << " f " << f << " m " << m;
  }
}

// LayerNorm that takes its output's maxima, then a quantization from those maxima (the
// executor's fused LayerNorm + quantize), against the two kernels run apart: the same y,
// scales and bytes bit for bit, on every path, for token ranges that start anywhere,
// in place and not, with an all-zero token (after the LayerNorm: beta only) and a NaN.
TEST_P(FmIsaTest, LayerNormMaximaQuantizeSameAsApart) {
  const FmKernels& kern = fm_kernels(GetParam());
  for (const auto& [F, M] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {5, 64}, {9, 200}, {33, 65}, {768, 128}, {768, 77}}) {
    for (const bool in_place : {false, true}) {
      SCOPED_TRACE(std::to_string(F) + "x" + std::to_string(M) + (in_place ? " in place" : ""));
      const int64_t ld = M + 5, ldq = M + 3;
      auto x = random_floats(F * ld, 21, -3.0f, 5.0f);
      const auto g = random_floats(F, 22), bt = random_floats(F, 23);
      if (M > 2) {
        for (int64_t f = 0; f < F; ++f) x[f * ld + 1] = 0.0f;
        x[2] = std::numeric_limits<float>::quiet_NaN();
      }
      // Apart: LayerNorm, then the quantization's own maxima.
      std::vector<float> y1(F * ld, 0.0f), s1(M, -1.0f);
      std::vector<uint8_t> q1(F * ldq, 7);
      kern.layernorm(x.data(), ld, F, 0, M, g.data(), bt.data(), 1e-5f, y1.data(), ld, nullptr);
      kern.quantize(y1.data(), ld, F, 0, M, nullptr, q1.data(), ldq, s1.data());
      // Fused, over two ranges (the second starting inside a 64-token block).
      std::vector<float> x2 = x, y2(F * ld, 0.0f), s2(M, -1.0f), mx(M, -1.0f);
      std::vector<uint8_t> q2(F * ldq, 7);
      float* y = in_place ? x2.data() : y2.data();
      const int64_t cut = M / 3;
      for (const auto& [t0, t1] : {std::pair<int64_t, int64_t>{0, cut}, {cut, M}}) {
        kern.layernorm(x2.data(), ld, F, t0, t1, g.data(), bt.data(), 1e-5f, y, ld, mx.data());
        kern.quantize(y, ld, F, t0, t1, mx.data(), q2.data(), ldq, s2.data());
      }
      for (int64_t m = 0; m < M; ++m) {
        float want = 0.0f;  // the maximum as the quantization takes it (a NaN never)
        for (int64_t f = 0; f < F; ++f) want = std::max(want, std::fabs(y1[f * ld + m]));
        ASSERT_EQ(mx[m], want) << "token " << m;
        ASSERT_EQ(s1[m], s2[m]) << "token " << m;
        for (int64_t f = 0; f < F; ++f) {
          const float a = y1[f * ld + m], b = y[f * ld + m];
          ASSERT_TRUE(a == b || (std::isnan(a) && std::isnan(b))) << "f " << f << " m " << m;
          ASSERT_EQ(q1[f * ldq + m], q2[f * ldq + m]) << "f " << f << " m " << m;
        }
      }
    }
  }
}

// Which attention an int8 model gets: the preferred kernel if the table has it and it is
// chosen on this CPU (the AVX2 int8 kernel only where two vpmaddwd issue a cycle), else
// the next one down, and fp32 when asked.
TEST(FmAttentionChoice, FallsBackInOrderAndHonoursThePreference) {
  // Distinct bodies: identical ones could be folded into one function (-fipa-icf).
  const FmAttentionFn fp32 = [](const FmAttentionArgs&, int64_t, int64_t, float* s) { *s = 32; };
  const FmAttentionFn bf16 = [](const FmAttentionArgs&, int64_t, int64_t, float* s) { *s = 16; };
  const FmAttentionFn int8 = [](const FmAttentionArgs&, int64_t, int64_t, float* s) { *s = 8; };
  ASSERT_NE(fp32, bf16);
  ASSERT_NE(bf16, int8);
  ASSERT_NE(fp32, int8);
  FmKernels k;
  k.attention = fp32;
  k.attention_name = "fp32";
  EXPECT_EQ(fm_low_precision_attention(k, FmAttentionPref::kInt8, nullptr), fp32);
  k.attention_bf16 = bf16;
  k.attention_bf16_name = "bf16";
  k.attention_int8 = int8;
  k.attention_int8_name = "int8";
  const char* name = nullptr;
  EXPECT_EQ(fm_low_precision_attention(k, FmAttentionPref::kInt8, &name), int8);
  EXPECT_STREQ(name, "int8");
  EXPECT_EQ(fm_low_precision_attention(k, FmAttentionPref::kBf16, nullptr), bf16);
  EXPECT_EQ(fm_low_precision_attention(k, FmAttentionPref::kFp32, nullptr), fp32);
  k.attention_int8_preferred = false;  // present (and tested) but slower here
  EXPECT_EQ(fm_low_precision_attention(k, FmAttentionPref::kInt8, &name), bf16);
  EXPECT_STREQ(name, "bf16");
  k.attention_bf16 = nullptr;
  EXPECT_EQ(fm_low_precision_attention(k, FmAttentionPref::kInt8, nullptr), fp32);
}

// The AVX2 table always has the int8 kernel (the tests above run it on every AVX2 CPU);
// it is preferred exactly where the CPU check says so.
TEST(FmAttentionChoice, Avx2Int8PreferredOnlyWithTwoMaddPipes) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "no AVX2";
  const FmKernels& k = fm_kernels(Isa::kAvx2);
  ASSERT_NE(k.attention_int8, nullptr);
  ASSERT_NE(k.attention_int8_prep, nullptr);
  EXPECT_EQ(k.attention_int8_preferred, two_int16_madd_pipes());
  EXPECT_EQ(fm_low_precision_attention(k, FmAttentionPref::kInt8, nullptr),
            two_int16_madd_pipes() ? k.attention_int8 : k.attention);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, FmIsaTest,
                         ::testing::Values(Isa::kGeneric, Isa::kAvx2, Isa::kAvx512,
                                           Isa::kAvx512Vnni),
                         [](const ::testing::TestParamInfo<Isa>& param_info) {
                           return std::string(isa_name(param_info.param));
                         });

}  // namespace
}  // namespace sparq::test
