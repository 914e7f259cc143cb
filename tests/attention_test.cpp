// The attention row kernels of every ISA against a float64 reference, on awkward shapes
// (keys and head sizes that are not multiples of the vector width) with no mask, an
// additive mask and a select mask, each broadcast as the exports do.
#include "kernels/attention/attention.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace sparq::test {
namespace {

class AttentionIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam())) GTEST_SKIP() << isa_name(GetParam()) << " not supported here";
  }
};

TEST_P(AttentionIsaTest, MatchesFloat64Reference) {
  const F32AttentionFn kernel = attention_kernels(GetParam()).f32;
  struct Case {
    int64_t B, H, S, T, dh, dv;
    int mask;
  };
  for (const Case c : {Case{1, 1, 1, 1, 1, 1, 0}, Case{2, 3, 5, 7, 9, 11, 1},
                       Case{1, 2, 17, 33, 64, 64, 2}, Case{2, 4, 16, 16, 16, 16, 1},
                       Case{1, 12, 13, 40, 64, 64, 2}, Case{3, 1, 8, 100, 5, 3, 0}}) {
    SCOPED_TRACE(std::to_string(c.B) + "x" + std::to_string(c.H) + "x" + std::to_string(c.S) +
                 " T=" + std::to_string(c.T) + " dh=" + std::to_string(c.dh) +
                 " mask=" + std::to_string(c.mask));
    const auto q = random_floats(c.B * c.H * c.S * c.dh, 1),
               kt = random_floats(c.B * c.H * c.dh * c.T, 2),
               v = random_floats(c.B * c.H * c.T * c.dv, 3);
    std::vector<float> add(c.B * c.T);
    std::vector<uint8_t> sel(c.B * c.T);
    for (int64_t i = 0; i < c.B * c.T; ++i) {
      sel[i] = (i % 5) == 4;  // some masked keys, never all of a row
      add[i] = sel[i] ? -3.4e38f : 0.0f;
    }
    AttentionArgs a;
    a.q = q.data();
    a.kt = kt.data();
    a.v = v.data();
    std::vector<float> out(c.B * c.H * c.S * c.dv, 0.0f);
    a.out = out.data();
    a.heads = c.H;
    a.seq = c.S;
    a.keys = c.T;
    a.dh = c.dh;
    a.dv = c.dv;
    a.scale = 0.125f;
    a.fill = -3.4e38f;
    if (c.mask == 1) a.add_mask = add.data();
    if (c.mask == 2) a.select_mask = sel.data();
    if (c.mask) {  // mask [B, 1, 1, T]
      a.mask_stride[0] = c.T;
      a.mask_stride[3] = 1;
    }
    std::vector<float> scratch(c.T);
    const int64_t rows = c.B * c.H * c.S;
    kernel(a, 0, rows / 2, scratch.data());  // two calls: row ranges are independent
    kernel(a, rows / 2, rows, scratch.data());
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t b = row / (c.H * c.S), h = (row / c.S) % c.H;
      std::vector<double> p(c.T);
      double mx = -1e300, sum = 0;
      for (int64_t t = 0; t < c.T; ++t) {
        double z = 0;
        for (int64_t d = 0; d < c.dh; ++d)
          z += double(q[row * c.dh + d]) * kt[((b * c.H + h) * c.dh + d) * c.T + t];
        z *= 0.125;
        if (c.mask && sel[b * c.T + t]) z = -3.4e38;
        p[t] = z;
        mx = std::max(mx, z);
      }
      for (double& z : p) sum += (z = std::exp(z - mx));
      for (int64_t j = 0; j < c.dv; ++j) {
        double o = 0;
        for (int64_t t = 0; t < c.T; ++t) o += p[t] / sum * v[((b * c.H + h) * c.T + t) * c.dv + j];
        ASSERT_NEAR(out[row * c.dv + j], o, 2e-5 * (1 + std::fabs(o)))
            << "row " << row << " col " << j;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, AttentionIsaTest,
                         ::testing::Values(Isa::kGeneric, Isa::kAvx2, Isa::kAvx512,
                                           Isa::kAvx512Vnni),
                         [](const ::testing::TestParamInfo<Isa>& param_info) {
                           return std::string(isa_name(param_info.param));
                         });

}  // namespace
}  // namespace sparq::test
