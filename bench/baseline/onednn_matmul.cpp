#include "bench/baseline/onednn_matmul.h"

#include <cmath>
#include <cstring>
#include <omp.h>
#include <random>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

namespace sparq::bench {

using dnnl::memory;

struct OnednnMatmul::Impl {
  int64_t m, k, n;
  bool int8;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{eng};
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  std::vector<memory> src, wei, dst;
};

OnednnMatmul::OnednnMatmul(int64_t m, int64_t k, int64_t n, bool int8, int copies)
    : impl_(std::make_unique<Impl>()) {
  Impl& p = *impl_;
  p.m = m;
  p.k = k;
  p.n = n;
  p.int8 = int8;
  const auto src_dt = int8 ? memory::data_type::u8 : memory::data_type::f32;
  const auto wei_dt = int8 ? memory::data_type::s8 : memory::data_type::f32;
  const memory::desc src_md({m, k}, src_dt, memory::format_tag::ab);
  const memory::desc wei_any({k, n}, wei_dt, memory::format_tag::any);
  const memory::desc dst_md({m, n}, memory::data_type::f32, memory::format_tag::ab);
  dnnl::primitive_attr attr;
  if (int8) attr.set_output_scales(1 << 1, std::vector<float>(static_cast<size_t>(n), 0.01f));
  const dnnl::matmul::desc d(src_md, wei_any, dst_md);
  p.pd = dnnl::matmul::primitive_desc(d, attr, p.eng);
  p.prim = dnnl::matmul(p.pd);
  p.dst.emplace_back(dst_md, p.eng);  // one output buffer, reused
  std::mt19937 rng(42);
  for (int c = 0; c < copies; ++c) {
    p.src.emplace_back(src_md, p.eng);
    p.wei.emplace_back(p.pd.weights_desc(), p.eng);
    if (int8) {
      auto* s = static_cast<uint8_t*>(p.src.back().get_data_handle());
      for (int64_t i = 0; i < m * k; ++i) s[i] = static_cast<uint8_t>(rng() & 0xFF);
    } else {
      auto* s = static_cast<float*>(p.src.back().get_data_handle());
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      for (int64_t i = 0; i < m * k; ++i) s[i] = u(rng);
    }
  }
}

OnednnMatmul::~OnednnMatmul() = default;

void OnednnMatmul::set_weights(const float* wt) {
  Impl& p = *impl_;
  const auto wei_dt = p.int8 ? memory::data_type::s8 : memory::data_type::f32;
  const memory::desc plain({p.k, p.n}, wei_dt, memory::format_tag::ab);
  memory staging(plain, p.eng);
  if (p.int8) {
    auto* q = static_cast<int8_t*>(staging.get_data_handle());
    for (int64_t nn = 0; nn < p.n; ++nn) {
      float maxabs = 0.0f;
      for (int64_t kk = 0; kk < p.k; ++kk) maxabs = std::max(maxabs, std::fabs(wt[nn * p.k + kk]));
      const float scale = maxabs > 0 ? maxabs / 127.0f : 1.0f;
      for (int64_t kk = 0; kk < p.k; ++kk) {
        q[kk * p.n + nn] = static_cast<int8_t>(std::nearbyint(wt[nn * p.k + kk] / scale));
      }
    }
  } else {
    auto* f = static_cast<float*>(staging.get_data_handle());
    for (int64_t nn = 0; nn < p.n; ++nn)
      for (int64_t kk = 0; kk < p.k; ++kk) f[kk * p.n + nn] = wt[nn * p.k + kk];
  }
  for (memory& w : p.wei) {
    dnnl::reorder(staging, w).execute(p.stream, staging, w);
  }
  p.stream.wait();
}

void OnednnMatmul::run(int i, bool hot_src) {
  Impl& p = *impl_;
  const size_t c = static_cast<size_t>(i) % p.src.size();
  p.prim.execute(p.stream, {{DNNL_ARG_SRC, p.src[hot_src ? 0 : c]},
                            {DNNL_ARG_WEIGHTS, p.wei[c]},
                            {DNNL_ARG_DST, p.dst[0]}});
  p.stream.wait();
}

int OnednnMatmul::copies() const { return static_cast<int>(impl_->src.size()); }

std::string OnednnMatmul::implementation() const { return impl_->pd.impl_info_str(); }

void OnednnMatmul::set_threads(int threads) { omp_set_num_threads(threads); }

std::string OnednnMatmul::version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

}  // namespace sparq::bench
