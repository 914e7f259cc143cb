// SpmmTester: one builder per kernel family (STYLE.md). It makes seeded random
// weights, prunes them through formats/, packs them, runs a kernel table through the
// threaded driver on guard-page buffers, and checks every output against a plain
// reference: double precision for fp32 (bounded by the rounding of a K-term sum) and
// exact int32 for int8.
#ifndef SPARQ_TESTS_SPMM_TESTER_H_
#define SPARQ_TESTS_SPMM_TESTER_H_

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/parallel.h"
#include "formats/bsr.h"
#include "kernels/spmm/spmm.h"
#include "tests/test_util.h"

namespace sparq::test {

inline double ref_activation(Activation act, double y) {
  switch (act) {
    case Activation::kNone: return y;
    case Activation::kGeluErf: return 0.5 * y * (1.0 + std::erf(y / std::sqrt(2.0)));
    case Activation::kGeluTanh:
      return 0.5 * y * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (y + 0.044715 * y * y * y)));
    case Activation::kGeluSigmoid: return y / (1.0 + std::exp(-1.702 * y));
  }
  return y;
}

class SpmmTester {
 public:
  SpmmTester& m(int64_t v) {
    m_ = v;
    return *this;
  }
  SpmmTester& k(int64_t v) {
    k_ = v;
    return *this;
  }
  SpmmTester& n(int64_t v) {
    n_ = v;
    return *this;
  }
  SpmmTester& block(BlockShape v) {
    block_ = v;
    return *this;
  }
  SpmmTester& sparsity(double v) {
    sparsity_ = v;
    return *this;
  }
  SpmmTester& dense(bool v) {
    dense_ = v;
    return *this;
  }
  SpmmTester& channel_scale(bool v) {
    channel_scale_ = v;
    return *this;
  }
  SpmmTester& token_scale(bool v) {
    token_scale_ = v;
    return *this;
  }
  SpmmTester& bias(bool v) {
    bias_ = v;
    return *this;
  }
  SpmmTester& activation(Activation v) {
    activation_ = v;
    return *this;
  }
  SpmmTester& residual(bool v) {
    residual_ = v;
    return *this;
  }
  SpmmTester& u8_out(bool v) {
    u8_out_ = v;
    return *this;
  }
  // int8 only: run a quad matrix (1x4) through spmm_u8s8_quads on activations packed
  // into quad order first (the planned executor's producer-side layout), on a guard-page
  // buffer of exactly the layout's size.
  SpmmTester& prepacked(bool v) {
    prepacked_ = v;
    return *this;
  }
  SpmmTester& threads(int v) {
    threads_ = v;
    return *this;
  }
  SpmmTester& seed(uint32_t v) {
    seed_ = v;
    return *this;
  }

  std::string Describe() const {
    std::ostringstream os;
    os << "M=" << m_ << " K=" << k_ << " N=" << n_ << " block=" << block_shape_name(block_)
       << " sparsity=" << sparsity_ << (dense_ ? " dense" : "") << (prepacked_ ? " prepacked" : "")
       << " threads=" << threads_;
    return os.str();
  }

  // fp32 weights and activations.
  void TestF32(const SpmmKernels& kernels) const {
    SCOPED_TRACE(Describe() + " kernel=" + kernels.f32_name(block_.out % 4 == 0 ? 4 : 1));
    std::vector<float> w = Weights();
    const PackedMatrix packed = PackedMatrix::pack_f32(w.data(), n_, k_, block_, dense_);
    GuardedBuffer<float> x(static_cast<size_t>(k_ * m_));
    Fill(x, seed_ + 1, -1.0f, 1.0f);
    Side side(*this);
    GuardedBuffer<float> out(static_cast<size_t>(n_ * m_));
    GuardedBuffer<uint8_t> out_u8(static_cast<size_t>(n_ * m_));
    Epilogue ep = side.MakeEpilogue(out.data(), out_u8.data(), m_);
    Run([&](ThreadPool* pool) { spmm_f32(kernels, pool, packed.view(), x.data(), m_, m_, ep); });
    for (int64_t nn = 0; nn < n_; ++nn) {
      for (int64_t mm = 0; mm < m_; ++mm) {
        double acc = 0.0, abs_sum = 0.0;
        for (int64_t kk = 0; kk < k_; ++kk) {
          const double p = double{w[nn * k_ + kk]} * double{x[kk * m_ + mm]};
          acc += p;
          abs_sum += std::fabs(p);
        }
        CheckOne(side, nn, mm, acc, abs_sum * static_cast<double>(k_ + 2) * 1.2e-7,
                 out[nn * m_ + mm], u8_out_ ? &out_u8[nn * m_ + mm] : nullptr);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }

  // u8 activations (zero point 128) x s8 weights. Without scales, bias, activation or
  // residual the output is float(exact int32 sum) and must match bit for bit.
  void TestU8S8(const SpmmKernels& kernels) const {
    std::vector<float> w = Weights();
    std::vector<int8_t> q(w.size());
    std::vector<float> scales(static_cast<size_t>(n_));
    quantize_per_channel(w.data(), n_, k_, q.data(), scales.data());
    PackedMatrix packed = PackedMatrix::pack_s8(q.data(), scales.data(), n_, k_, block_, dense_);
    packed.derive_pair_safe();
    validate_packed(packed.view(), packed.array_sizes());
    const bool quads = packed.view().quad_index != nullptr && kernels.u8s8_quads_r1 != nullptr;
    SCOPED_TRACE(Describe() + " kernel=" +
                 (quads ? kernels.u8s8_quads_r1_name : kernels.u8s8_name(packed.view())));
    GuardedBuffer<uint8_t> x(static_cast<size_t>(k_ * m_));
    std::mt19937 rng(seed_ + 1);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>(rng() & 0xFF);
    Side side(*this);
    GuardedBuffer<float> out(static_cast<size_t>(n_ * m_));
    GuardedBuffer<uint8_t> out_u8(static_cast<size_t>(n_ * m_));
    Epilogue ep = side.MakeEpilogue(out.data(), out_u8.data(), m_);
    if (prepacked_) {
      ASSERT_NE(packed.view().quad_index, nullptr) << "not a quad matrix";
      ASSERT_NE(kernels.u8s8_quads_r1, nullptr);
      const int64_t ldq = (m_ + 63) / 64 * 64;
      GuardedBuffer<uint8_t> xq(static_cast<size_t>((k_ + 3) / 4 * ldq * 4));
      kernels.u8_pack_quads(x.data(), m_, k_, m_, xq.data(), ldq);
      Run([&](ThreadPool* pool) {
        spmm_u8s8_quads(kernels, pool, packed.view(), xq.data(), ldq, m_, ep);
      });
    } else {
      Run([&](ThreadPool* pool) { spmm_u8s8(kernels, pool, packed.view(), x.data(), m_, m_, ep); });
    }
    const bool exact = !channel_scale_ && !token_scale_ && !bias_ && !residual_ && !u8_out_ &&
                       activation_ == Activation::kNone;
    for (int64_t nn = 0; nn < n_; ++nn) {
      for (int64_t mm = 0; mm < m_; ++mm) {
        int64_t acc = 0;
        for (int64_t kk = 0; kk < k_; ++kk) {
          acc += int64_t{q[nn * k_ + kk]} * (int64_t{x[kk * m_ + mm]} - 128);
        }
        ASSERT_LE(std::llabs(acc), int64_t{std::numeric_limits<int32_t>::max()});
        if (exact) {
          const float expect = static_cast<float>(static_cast<int32_t>(acc));
          ASSERT_EQ(out[nn * m_ + mm], expect) << "at n=" << nn << " m=" << mm;
          continue;
        }
        // The kernel converts the exact sum to float once: relative error 2^-24.
        CheckOne(side, nn, mm, static_cast<double>(acc), std::fabs(double(acc)) * 1.2e-7,
                 out[nn * m_ + mm], u8_out_ ? &out_u8[nn * m_ + mm] : nullptr);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }

 private:
  // Random per-row side inputs of the epilogue.
  struct Side {
    explicit Side(const SpmmTester& tester) : t(tester) {
      std::mt19937 rng(t.seed_ + 7);
      std::uniform_real_distribution<float> pos(0.25f, 2.0f), sym(-1.0f, 1.0f);
      if (t.channel_scale_)
        for (int64_t i = 0; i < t.n_; ++i) channel.push_back(pos(rng));
      if (t.token_scale_)
        for (int64_t i = 0; i < t.m_; ++i) token.push_back(pos(rng) * 0.01f);
      if (t.bias_)
        for (int64_t i = 0; i < t.n_; ++i) bias.push_back(sym(rng));
      if (t.residual_) {
        residual = std::make_unique<GuardedBuffer<float>>(static_cast<size_t>(t.n_ * t.m_));
        for (size_t i = 0; i < residual->size(); ++i) (*residual)[i] = sym(rng);
      }
    }
    Epilogue MakeEpilogue(float* out, uint8_t* out_u8, int64_t ld) const {
      Epilogue ep;
      ep.channel_scale = channel.empty() ? nullptr : channel.data();
      ep.token_scale = token.empty() ? nullptr : token.data();
      ep.bias = bias.empty() ? nullptr : bias.data();
      ep.activation = t.activation_;
      ep.residual = residual ? residual->data() : nullptr;
      ep.ld_residual = ld;
      ep.ld_out = ld;
      if (t.u8_out_) {
        ep.out_u8 = out_u8;
        ep.out_inv_scale = 1.0f / out_scale;
        ep.out_zero_point = 100;
      } else {
        ep.out_f32 = out;
      }
      return ep;
    }
    const SpmmTester& t;
    std::vector<float> channel, token, bias;
    std::unique_ptr<GuardedBuffer<float>> residual;
    float out_scale = 0.05f;
  };

  std::vector<float> Weights() const {
    std::vector<float> w = random_floats(static_cast<size_t>(n_ * k_), seed_);
    prune_blocks(w.data(), n_, k_, block_, sparsity_);
    return w;
  }

  template <class T>
  static void Fill(GuardedBuffer<T>& b, uint32_t seed, float lo, float hi) {
    std::vector<float> v = random_floats(b.size(), seed, lo, hi);
    for (size_t i = 0; i < b.size(); ++i) b[i] = v[i];
  }

  template <class F>
  void Run(F&& call) const {
    if (threads_ <= 1) {
      call(nullptr);
    } else {
      ThreadPool pool(threads_);
      call(&pool);
    }
  }

  // Checks one output against the double reference built from `acc` (the pre-epilogue
  // sum) with `acc_err` its rounding bound.
  void CheckOne(const Side& s, int64_t nn, int64_t mm, double acc, double acc_err, float got,
                const uint8_t* got_u8) const {
    double scale = 1.0;
    if (!s.channel.empty()) scale *= s.channel[static_cast<size_t>(nn)];
    if (!s.token.empty()) scale *= s.token[static_cast<size_t>(mm)];
    double y = acc * scale, err = acc_err * scale + std::fabs(y) * 3e-7;
    if (!s.bias.empty()) y += s.bias[static_cast<size_t>(nn)];
    if (activation_ != Activation::kNone) {
      y = ref_activation(activation_, y);
      err = err * 1.2 + 2e-6 * (1.0 + std::fabs(y));  // |gelu'| < 1.13; vector erf/tanh error
    }
    if (s.residual) y += (*s.residual)[static_cast<size_t>(nn * m_ + mm)];
    err += 1e-7 * (1.0 + std::fabs(y));
    if (got_u8 != nullptr) {
      const double qd = std::nearbyint(y / s.out_scale) + 100.0;
      const double lo = std::min(255.0, std::max(0.0, std::floor((y - err) / s.out_scale + 100.0)));
      const double hi = std::min(255.0, std::max(0.0, std::ceil((y + err) / s.out_scale + 100.0)));
      ASSERT_TRUE(*got_u8 >= lo && *got_u8 <= hi)
          << "u8 at n=" << nn << " m=" << mm << ": got " << int{*got_u8} << ", expected about "
          << qd << " (y=" << y << ")";
      return;
    }
    ASSERT_NEAR(got, y, err) << "at n=" << nn << " m=" << mm;
  }

  int64_t m_ = 16, k_ = 16, n_ = 16;
  BlockShape block_ = kBlock4x1;
  double sparsity_ = 0.5;
  bool dense_ = false, prepacked_ = false;
  bool channel_scale_ = false, token_scale_ = false, bias_ = false, residual_ = false,
       u8_out_ = false;
  Activation activation_ = Activation::kNone;
  int threads_ = 1;
  uint32_t seed_ = 1234;
};

}  // namespace sparq::test

#endif  // SPARQ_TESTS_SPMM_TESTER_H_
