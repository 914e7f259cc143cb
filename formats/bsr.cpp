#include "formats/bsr.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "formats/error.h"

namespace sparq {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

[[noreturn]] void format_error(const std::string& what) {
  throw Error(Status::kFormatError, "packed weights: " + what);
}

void check_dims(int64_t n, int64_t k, BlockShape block) {
  if (n <= 0 || k <= 0) throw Error(Status::kInvalidArgument, "matrix dimensions must be > 0");
  if (n > INT32_MAX || k > INT32_MAX) {
    throw Error(Status::kInvalidArgument, "matrix dimensions must fit in 32 bits");
  }
  if (block.out < 1 || block.in < 1 || block.out > 64 || block.in > 64) {
    throw Error(Status::kInvalidArgument, "block shape out of range");
  }
}

// Multiplies with an overflow check (for sizes read from untrusted bytes).
int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    format_error(std::string(what) + " overflows");
  return r;
}

}  // namespace

std::string block_shape_name(BlockShape b) {
  return std::to_string(b.out) + "x" + std::to_string(b.in);
}

bool parse_block_shape(const std::string& text, BlockShape* out) {
  int o = 0, i = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%dx%d%c", &o, &i, &tail) != 2) return false;
  if (o < 1 || i < 1 || o > 64 || i > 64) return false;
  *out = BlockShape{o, i};
  return true;
}

double BsrMatrix::block_sparsity() const {
  const double total = static_cast<double>(block_rows()) * static_cast<double>(block_cols());
  return total == 0 ? 0.0 : 1.0 - static_cast<double>(nnz_blocks()) / total;
}

void BsrMatrix::to_dense(float* wt) const {
  std::fill(wt, wt + n * k, 0.0f);
  const int64_t bo = block.out, bi = block.in;
  for (int64_t br = 0; br < block_rows(); ++br) {
    for (int64_t b = row_ptr[br]; b < row_ptr[br + 1]; ++b) {
      const float* v = values.data() + b * bo * bi;
      for (int64_t r = 0; r < bo; ++r) {
        const int64_t row = br * bo + r;
        if (row >= n) break;
        for (int64_t c = 0; c < bi; ++c) {
          const int64_t colk = col[b] * bi + c;
          if (colk < k) wt[row * k + colk] = v[r * bi + c];
        }
      }
    }
  }
}

BsrMatrix bsr_from_dense(const float* wt, int64_t n, int64_t k, BlockShape block) {
  check_dims(n, k, block);
  BsrMatrix m;
  m.n = n;
  m.k = k;
  m.block = block;
  const int64_t bo = block.out, bi = block.in;
  m.row_ptr.push_back(0);
  for (int64_t br = 0; br < m.block_rows(); ++br) {
    for (int64_t bc = 0; bc < m.block_cols(); ++bc) {
      bool any = false;
      for (int64_t r = 0; r < bo && !any; ++r) {
        const int64_t row = br * bo + r;
        if (row >= n) break;
        for (int64_t c = 0; c < bi; ++c) {
          const int64_t colk = bc * bi + c;
          if (colk < k && wt[row * k + colk] != 0.0f) {
            any = true;
            break;
          }
        }
      }
      if (!any) continue;
      m.col.push_back(bc);
      for (int64_t r = 0; r < bo; ++r) {
        for (int64_t c = 0; c < bi; ++c) {
          const int64_t row = br * bo + r, colk = bc * bi + c;
          m.values.push_back(row < n && colk < k ? wt[row * k + colk] : 0.0f);
        }
      }
    }
    m.row_ptr.push_back(static_cast<int64_t>(m.col.size()));
  }
  return m;
}

void prune_blocks(float* wt, int64_t n, int64_t k, BlockShape block, double sparsity) {
  check_dims(n, k, block);
  if (!(sparsity >= 0.0 && sparsity <= 1.0)) {
    throw Error(Status::kInvalidArgument, "sparsity must be in [0, 1]");
  }
  const int64_t bo = block.out, bi = block.in;
  const int64_t brs = ceil_div(n, bo), bcs = ceil_div(k, bi), total = brs * bcs;
  std::vector<double> norm(static_cast<size_t>(total), 0.0);
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t colk = 0; colk < k; ++colk) {
      const double v = wt[row * k + colk];
      norm[static_cast<size_t>((row / bo) * bcs + colk / bi)] += v * v;
    }
  }
  const int64_t drop = std::llround(sparsity * static_cast<double>(total));
  std::vector<int64_t> order(static_cast<size_t>(total));
  std::iota(order.begin(), order.end(), 0);
  auto less = [&](int64_t a, int64_t b) {
    const double na = norm[static_cast<size_t>(a)], nb = norm[static_cast<size_t>(b)];
    return na < nb || (na == nb && a < b);
  };
  if (drop < total) {
    std::nth_element(order.begin(), order.begin() + drop, order.end(), less);
  }
  for (int64_t i = 0; i < drop; ++i) {
    const int64_t b = order[static_cast<size_t>(i)];
    const int64_t br = b / bcs, bc = b % bcs;
    for (int64_t r = 0; r < bo; ++r) {
      const int64_t row = br * bo + r;
      if (row >= n) break;
      for (int64_t c = 0; c < bi; ++c) {
        const int64_t colk = bc * bi + c;
        if (colk < k) wt[row * k + colk] = 0.0f;
      }
    }
  }
}

double weight_sparsity(const float* wt, int64_t n, int64_t k) {
  int64_t zeros = 0;
  for (int64_t i = 0; i < n * k; ++i) zeros += wt[i] == 0.0f;
  return n * k == 0 ? 0.0 : static_cast<double>(zeros) / static_cast<double>(n * k);
}

void quantize_per_channel(const float* wt, int64_t n, int64_t k, int8_t* q, float* scales) {
  for (int64_t row = 0; row < n; ++row) {
    const float* w = wt + row * k;
    float maxabs = 0.0f;
    for (int64_t c = 0; c < k; ++c) maxabs = std::max(maxabs, std::fabs(w[c]));
    const float scale = maxabs > 0.0f ? maxabs / 127.0f : 1.0f;
    scales[row] = scale;
    for (int64_t c = 0; c < k; ++c) {
      const float v = std::nearbyint(w[c] / scale);
      q[row * k + c] = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, v)));
    }
  }
}

std::size_t PackedMatrix::bytes() const {
  return group_ptr_.size() + indices_.size() + values_.size() + compensation_.size() +
         scales_.size() + quad_index_.size() + pair_safe_.bytes();
}

double PackedMatrix::stored_density() const {
  const int64_t slots = view_.num_groups * view_.rows_per_block * view_.group;
  if (slots == 0) return 0.0;
  int64_t nonzero = 0;
  if (view_.type == WeightType::kF32) {
    const float* v = static_cast<const float*>(view_.values);
    for (int64_t i = 0; i < slots; ++i) nonzero += v[i] != 0.0f;
  } else {
    const int8_t* v = static_cast<const int8_t*>(view_.values);
    for (int64_t i = 0; i < slots; ++i) nonzero += v[i] != 0;
  }
  return static_cast<double>(nonzero) / static_cast<double>(slots);
}

PackedArraySizes PackedMatrix::array_sizes() const { return expected_array_sizes(view_); }

PackedArraySizes expected_array_sizes(const PackedWeights& v) {
  PackedArraySizes s;
  s.group_ptr = v.dense ? 0 : v.num_block_rows + 1;
  s.indices = v.dense ? 0 : v.num_groups * v.group;
  s.values = v.num_groups * v.rows_per_block * v.group;
  s.compensation = s.scales =
      v.type == WeightType::kS8 ? int64_t{v.num_block_rows} * v.rows_per_block : 0;
  return s;
}

PackedMatrix PackedMatrix::pack_f32(const float* wt, int64_t n, int64_t k, BlockShape block,
                                    bool dense) {
  return pack(WeightType::kF32, wt, nullptr, n, k, block, dense);
}

PackedMatrix PackedMatrix::pack_s8(const int8_t* wq, const float* scales, int64_t n, int64_t k,
                                   BlockShape block, bool dense) {
  return pack(WeightType::kS8, wq, scales, n, k, block, dense);
}

PackedMatrix PackedMatrix::pack(WeightType type, const void* w, const float* scales, int64_t n,
                                int64_t k, BlockShape block, bool dense) {
  check_dims(n, k, block);
  const bool s8 = type == WeightType::kS8;
  if (s8 && k > kMaxInt8K) {
    throw Error(Status::kUnsupported, "int8 weights with K = " + std::to_string(k) +
                                          " input channels exceed the limit of " +
                                          std::to_string(kMaxInt8K));
  }
  const int64_t R = block.out % 4 == 0 ? 4 : 1;
  const int64_t G = s8 ? 4 : 1;
  const int64_t nbr = ceil_div(n, R);
  auto weight = [&](int64_t row, int64_t colk) -> float {
    if (row >= n || colk >= k) return 0.0f;
    return s8 ? static_cast<float>(static_cast<const int8_t*>(w)[row * k + colk])
              : static_cast<const float*>(w)[row * k + colk];
  };

  // Input indices each block-row stores, in ascending order, before grouping.
  std::vector<std::vector<int32_t>> cols;
  if (!dense) {
    cols.resize(static_cast<size_t>(nbr));
    const int64_t bi = block.in;
    for (int64_t br = 0; br < nbr; ++br) {
      std::vector<int32_t>& list = cols[static_cast<size_t>(br)];
      for (int64_t c0 = 0; c0 < k; c0 += bi) {
        bool any = false;
        for (int64_t c = c0; c < std::min(k, c0 + bi) && !any; ++c) {
          for (int64_t r = 0; r < R; ++r) {
            if (weight(br * R + r, c) != 0.0f) {
              any = true;
              break;
            }
          }
        }
        if (!any) continue;
        for (int64_t c = c0; c < std::min(k, c0 + bi); ++c) list.push_back(static_cast<int32_t>(c));
      }
    }
  }

  PackedMatrix p;
  p.block_ = block;
  PackedWeights& v = p.view_;
  v.type = type;
  v.n = static_cast<int32_t>(n);
  v.k = static_cast<int32_t>(k);
  v.rows_per_block = static_cast<int32_t>(R);
  v.group = static_cast<int32_t>(G);
  v.num_block_rows = static_cast<int32_t>(nbr);
  v.dense = dense;
  if (dense) {
    v.num_groups = nbr * ceil_div(k, G);
  } else {
    p.group_ptr_.resize(static_cast<size_t>(nbr + 1) * sizeof(int32_t));
    int32_t* gp = p.group_ptr_.as<int32_t>();
    int64_t total = 0;
    for (int64_t br = 0; br < nbr; ++br) {
      gp[br] = static_cast<int32_t>(total);
      total += ceil_div(static_cast<int64_t>(cols[static_cast<size_t>(br)].size()), G);
    }
    if (total > INT32_MAX / 4) throw Error(Status::kUnsupported, "matrix has too many blocks");
    gp[nbr] = static_cast<int32_t>(total);
    v.num_groups = total;
  }
  const size_t elem = s8 ? 1 : 4;
  p.values_.resize(static_cast<size_t>(v.num_groups * R * G) * elem);
  if (!dense) p.indices_.resize(static_cast<size_t>(v.num_groups * G) * sizeof(int32_t));
  if (s8) {
    p.compensation_.resize(static_cast<size_t>(nbr * R) * sizeof(int32_t));
    p.scales_.resize(static_cast<size_t>(nbr * R) * sizeof(float));
  }

  int32_t* idx = dense ? nullptr : p.indices_.as<int32_t>();
  int64_t g = 0;
  for (int64_t br = 0; br < nbr; ++br) {
    const int64_t count = dense ? k : static_cast<int64_t>(cols[static_cast<size_t>(br)].size());
    const int64_t ngroups = ceil_div(count, G);
    for (int64_t gl = 0; gl < ngroups; ++gl, ++g) {
      for (int64_t j = 0; j < G; ++j) {
        const int64_t pos = gl * G + j;
        const bool real = pos < count;
        int64_t colk = 0;
        if (dense) {
          colk = std::min(pos, k - 1);
        } else {
          colk = cols[static_cast<size_t>(br)][static_cast<size_t>(std::min(pos, count - 1))];
          idx[g * G + j] = static_cast<int32_t>(colk);
        }
        for (int64_t r = 0; r < R; ++r) {
          const float val = real ? weight(br * R + r, colk) : 0.0f;
          const size_t at = static_cast<size_t>((g * R + r) * G + j);
          if (s8) {
            p.values_.as<int8_t>()[at] = static_cast<int8_t>(val);
          } else {
            p.values_.as<float>()[at] = val;
          }
        }
      }
    }
  }
  v.group_ptr = dense ? nullptr : p.group_ptr_.as<int32_t>();
  v.indices = idx;
  v.values = p.values_.data();
  if (s8) {
    int32_t* comp = p.compensation_.as<int32_t>();
    float* sc = p.scales_.as<float>();
    for (int64_t row = 0; row < nbr * R; ++row) {
      int64_t sum = 0;
      if (row < n) {
        for (int64_t c = 0; c < k; ++c) sum += static_cast<const int8_t*>(w)[row * k + c];
      }
      comp[row] = static_cast<int32_t>(128 * sum);
      sc[row] = row < n && scales != nullptr ? scales[row] : 1.0f;
    }
    v.compensation = comp;
    v.scales = sc;
  }
  p.quad_index_ = quad_index_of(v);
  if (p.quad_index_.size() > 0) v.quad_index = p.quad_index_.as<uint16_t>();
  return p;
}

void PackedMatrix::derive_pair_safe(bool sparse_rows4) {
  pair_safe_ = pair_safe_of(view_, sparse_rows4);
  pair_safe_.attach(&view_);
}

void PairSafeWeights::attach(PackedWeights* w) const {
  if (values.size() > 0) {
    w->pair_safe_values = values.as<int8_t>();
    w->pair_fix_ptr = fix_ptr.as<int32_t>();
    w->pair_fix_quad = fix_quad.as<int32_t>();
    w->pair_fix_values = fix_values.as<int8_t>();
  }
  if (paired_ptr.size() > 0) {
    w->paired_ptr = paired_ptr.as<int32_t>();
    w->paired_index = paired_index.as<uint16_t>();
    w->paired_values = paired_values.as<int8_t>();
  }
}

namespace {

void fill_buffer(AlignedBuffer& buf, const void* src, size_t bytes) {
  buf.resize(std::max<size_t>(bytes, 1));
  if (bytes > 0) std::memcpy(buf.data(), src, bytes);
}

// The paired arrays as a PairSafeWeights, or none past 1.5x w's groups: a group costs the
// same whether its pairs are whole or half zeros, and there the widening kernel is kept.
PairSafeWeights paired_form(const PackedWeights& w, const std::vector<int32_t>& ptr,
                            const std::vector<uint16_t>& index, const std::vector<int8_t>& values) {
  PairSafeWeights out;
  const int64_t groups = static_cast<int64_t>(index.size() / 4);
  if (2 * groups > 3 * w.num_groups) return out;
  fill_buffer(out.paired_ptr, ptr.data(), ptr.size() * sizeof(int32_t));
  fill_buffer(out.paired_index, index.data(), index.size() * sizeof(uint16_t));
  fill_buffer(out.paired_values, values.data(), values.size());
  return out;
}

// The sparse R = 1 form (PackedWeights::paired_*): per row, the minority sign's weights
// each pair with one of the largest of the other sign (a pair of opposite signs never
// saturates), and the rest, of one sign, pair smallest with largest while their magnitudes
// sum to at most 128 (the most such pairs), the others with a zero; two pairs a group, in
// the order of their first input.
PairSafeWeights sign_paired_of(const PackedWeights& w) {
  PairSafeWeights out;
  if (w.k > 65536 || w.num_groups > std::numeric_limits<int32_t>::max() / 4) return out;
  struct Entry {
    int32_t mag;
    int32_t index;
    int8_t value;
  };
  struct Pair {
    Entry a, b;  // b.value == 0: a zero partner (b.index = a.index)
  };
  const int8_t* v = static_cast<const int8_t*>(w.values);
  std::vector<int32_t> ptr(static_cast<size_t>(w.n) + 1, 0);
  std::vector<uint16_t> index;
  std::vector<int8_t> values;
  std::vector<Entry> pos, neg;
  std::vector<Pair> pairs;
  auto by_mag_desc = [](const Entry& x, const Entry& y) {
    return x.mag != y.mag ? x.mag > y.mag : x.index < y.index;
  };
  for (int64_t n = 0; n < w.n; ++n) {
    pos.clear();
    neg.clear();
    pairs.clear();
    for (int64_t g = w.group_ptr[n]; g < w.group_ptr[n + 1]; ++g) {
      for (int j = 0; j < 4; ++j) {
        const int8_t x = v[g * 4 + j];
        const Entry e{std::abs(int32_t{x}), w.indices[g * 4 + j], x};
        if (x > 0) pos.push_back(e);
        else if (x < 0) neg.push_back(e);
      }
    }
    std::sort(pos.begin(), pos.end(), by_mag_desc);
    std::sort(neg.begin(), neg.end(), by_mag_desc);
    std::vector<Entry>& more = pos.size() >= neg.size() ? pos : neg;
    const std::vector<Entry>& fewer = pos.size() >= neg.size() ? neg : pos;
    for (size_t i = 0; i < fewer.size(); ++i) pairs.push_back({more[i], fewer[i]});
    // The rest of `more`, largest first: [lo, hi] still unpaired.
    int64_t lo = static_cast<int64_t>(fewer.size()), hi = static_cast<int64_t>(more.size()) - 1;
    while (lo <= hi) {
      const Entry& big = more[static_cast<size_t>(lo)];
      const Entry& small = more[static_cast<size_t>(hi)];
      if (lo < hi && big.mag + small.mag <= 128) {
        pairs.push_back({big, small});
        --hi;
      } else {
        pairs.push_back({big, Entry{0, big.index, 0}});
      }
      ++lo;
    }
    std::sort(pairs.begin(), pairs.end(), [](const Pair& x, const Pair& y) {
      const int32_t fx = std::min(x.a.index, x.b.index), fy = std::min(y.a.index, y.b.index);
      return fx != fy ? fx < fy : std::max(x.a.index, x.b.index) < std::max(y.a.index, y.b.index);
    });
    for (size_t i = 0; i < pairs.size(); i += 2) {
      const Pair& p = pairs[i];
      const Pair q =
          i + 1 < pairs.size() ? pairs[i + 1] : Pair{{0, p.a.index, 0}, {0, p.a.index, 0}};
      for (const Entry& e : {p.a, p.b, q.a, q.b}) {
        index.push_back(static_cast<uint16_t>(e.index));
        values.push_back(e.value);
      }
    }
    ptr[static_cast<size_t>(n) + 1] = static_cast<int32_t>(index.size() / 4);
  }
  return paired_form(w, ptr, index, values);
}

// The sparse R = 4 form: the block-row's input columns (4 weights each, one a row) paired so
// that every row's two weights are safe (opposite signs, one sign within 128, or a zero), by
// a greedy pass in input order that takes each column's first safe partner among the next
// kPairWindow unpaired ones (O(columns x window) at load); a column without one gets a
// zero partner. Two pairs a group, [row][4] as the stored groups.
PairSafeWeights sign_paired_rows4_of(const PackedWeights& w) {
  PairSafeWeights out;
  constexpr int64_t kPairWindow = 64;
  if (w.k > 65536 || w.num_groups > std::numeric_limits<int32_t>::max() / 4) return out;
  struct Col {
    int32_t index;
    int8_t v[4];
  };
  auto safe = [](int32_t a, int32_t b) {
    return a == 0 || b == 0 || (a > 0) != (b > 0) || std::abs(a) + std::abs(b) <= 128;
  };
  auto compatible = [&](const Col& a, const Col& b) {
    for (int r = 0; r < 4; ++r)
      if (!safe(a.v[r], b.v[r])) return false;
    return true;
  };
  const int8_t* v = static_cast<const int8_t*>(w.values);
  std::vector<int32_t> ptr(static_cast<size_t>(w.num_block_rows) + 1, 0);
  std::vector<uint16_t> index;
  std::vector<int8_t> values;
  std::vector<Col> cols;
  std::vector<uint8_t> used;
  std::vector<std::pair<int64_t, int64_t>> pairs;  // column indices, -1 = a zero partner
  for (int64_t br = 0; br < w.num_block_rows; ++br) {
    cols.clear();
    for (int64_t g = w.group_ptr[br]; g < w.group_ptr[br + 1]; ++g) {
      for (int j = 0; j < 4; ++j) {
        Col c{w.indices[g * 4 + j], {}};
        bool any = false;
        for (int r = 0; r < 4; ++r) {
          c.v[r] = v[g * 16 + r * 4 + j];
          any = any || c.v[r] != 0;
        }
        if (any) cols.push_back(c);
      }
    }
    const int64_t nc = static_cast<int64_t>(cols.size());
    used.assign(static_cast<size_t>(nc), 0);
    pairs.clear();
    for (int64_t i = 0; i < nc; ++i) {
      if (used[static_cast<size_t>(i)]) continue;
      used[static_cast<size_t>(i)] = 1;
      int64_t partner = -1;
      for (int64_t j = i + 1, seen = 0; j < nc && seen < kPairWindow; ++j) {
        if (used[static_cast<size_t>(j)]) continue;
        ++seen;
        if (compatible(cols[static_cast<size_t>(i)], cols[static_cast<size_t>(j)])) {
          partner = j;
          break;
        }
      }
      if (partner >= 0) used[static_cast<size_t>(partner)] = 1;
      pairs.emplace_back(i, partner);
    }
    for (size_t p = 0; p < pairs.size(); p += 2) {
      int64_t slot[4] = {pairs[p].first, pairs[p].second, -1, -1};
      if (p + 1 < pairs.size()) {
        slot[2] = pairs[p + 1].first;
        slot[3] = pairs[p + 1].second;
      }
      for (int j = 0; j < 4; ++j) {
        // A zero slot repeats its pair's input (or the group's first).
        const int64_t c = slot[j] >= 0 ? slot[j] : slot[j & 2] >= 0 ? slot[j & 2] : slot[0];
        index.push_back(static_cast<uint16_t>(cols[static_cast<size_t>(c)].index));
      }
      for (int r = 0; r < 4; ++r)
        for (int j = 0; j < 4; ++j)
          values.push_back(slot[j] >= 0 ? cols[static_cast<size_t>(slot[j])].v[r] : int8_t{0});
    }
    ptr[static_cast<size_t>(br) + 1] = static_cast<int32_t>(index.size() / 4);
  }
  return paired_form(w, ptr, index, values);
}

}  // namespace

PairSafeWeights pair_safe_of(const PackedWeights& w, bool sparse_rows4) {
  PairSafeWeights out;
  if (w.type != WeightType::kS8 || w.group != 4) return out;
  if (!w.dense && w.rows_per_block == 1) {
    if (w.quad_index != nullptr || quad_index_of(w).size() > 0) return out;  // the quad kernel
    return sign_paired_of(w);
  }
  if (!w.dense && w.rows_per_block == 4) {
    if (!sparse_rows4) return out;
    return sign_paired_rows4_of(w);
  }
  if (!w.dense || w.rows_per_block != 4) return out;
  // The fix offsets are int32, and a group can have 4 fixes (one a row) while they are made.
  if (w.num_groups > std::numeric_limits<int32_t>::max() / 4) return out;
  const int64_t gpr = w.groups_per_dense_row(), nbr = w.num_block_rows;
  // The values are cut in place in their copy; the fixes grow as they are found.
  const size_t value_bytes = static_cast<size_t>(w.num_groups) * 16;
  out.values.resize(std::max<size_t>(value_bytes, 1));
  int8_t* safe = out.values.as<int8_t>();
  if (value_bytes > 0) std::memcpy(safe, w.values, value_bytes);
  out.fix_ptr.resize(static_cast<size_t>(nbr * 4 + 1) * sizeof(int32_t));
  int32_t* fix_ptr = out.fix_ptr.as<int32_t>();
  std::vector<int8_t> fix_values;
  std::vector<int32_t> fix_quad;
  for (int64_t br = 0; br < nbr; ++br) {
    for (int r = 0; r < 4; ++r) {
      fix_ptr[br * 4 + r] = static_cast<int32_t>(fix_quad.size());
      for (int64_t q = 0; q < gpr; ++q) {
        int8_t* g = safe + (br * gpr + q) * 16 + r * 4;  // this row's quad
        int8_t fix[4] = {};
        bool any = false;
        for (int i = 0; i < 4; i += 2) {
          const int32_t a = g[i], b = g[i + 1];
          // Only a pair of one sign can saturate: with u8 x, x0 a + x1 b lies between
          // 255 (a- + b-) and 255 (a+ + b+), so it fits int16 when each part is within 128.
          if (std::max(a, 0) + std::max(b, 0) <= 128 && std::min(a, 0) + std::min(b, 0) >= -128) {
            continue;
          }
          // Keep the larger magnitude; the smaller keeps its sign and 128 - |larger|.
          const int cut = std::abs(a) >= std::abs(b) ? i + 1 : i;
          const int32_t small = g[cut], room = 128 - std::max(std::abs(a), std::abs(b));
          const int32_t kept = small < 0 ? -room : room;
          g[cut] = static_cast<int8_t>(kept);
          fix[cut] = static_cast<int8_t>(small - kept);  // |small - kept| <= 128
          any = true;
        }
        if (!any) continue;
        fix_quad.push_back(static_cast<int32_t>(q));
        fix_values.insert(fix_values.end(), fix, fix + 4);
      }
    }
  }
  fix_ptr[nbr * 4] = static_cast<int32_t>(fix_quad.size());
  // A fix costs about half a group's time or more: uniform weights (a quarter of the pairs
  // past 128 with one sign, fixes in 43% of the rows' quads, 1.7 a group) ran the
  // pair-safe kernel in 10.4-10.8 ms where the exact widening one takes 9.8-10.4 (AVX2,
  // Zen 3, K 768, N 3072). Past one fix a group the matrix gets no pair-safe form.
  // Bell-shaped weights need far fewer (K 768: normal 1.8% of the pairs, fixes in 3.6% of
  // the rows' quads; laplace 0.4% and 0.8%).
  if (static_cast<int64_t>(fix_quad.size()) > w.num_groups) return PairSafeWeights{};
  fill_buffer(out.fix_quad, fix_quad.data(), fix_quad.size() * sizeof(int32_t));
  fill_buffer(out.fix_values, fix_values.data(), fix_values.size());
  return out;
}

AlignedBuffer quad_index_of(const PackedWeights& w) {
  AlignedBuffer out;
  if (w.type != WeightType::kS8 || w.rows_per_block != 1 || w.group != 4 || w.dense) return out;
  const int8_t* v = static_cast<const int8_t*>(w.values);
  for (int64_t g = 0; g < w.num_groups; ++g) {
    const int32_t* idx = w.indices + g * 4;
    if (idx[0] % 4 != 0) return out;
    for (int32_t j = 1; j < 4; ++j) {
      const int32_t want = idx[0] + j;
      if (idx[j] != std::min(want, w.k - 1)) return out;
      if (want >= w.k && v[g * 4 + j] != 0) return out;  // a clamped slot must weigh nothing
    }
  }
  // (At least one element, so that a matrix without groups is a quad matrix too.)
  out.resize(static_cast<size_t>(std::max<int64_t>(w.num_groups, 1)) * sizeof(uint16_t));
  uint16_t* q = out.as<uint16_t>();
  for (int64_t g = 0; g < w.num_groups; ++g) q[g] = static_cast<uint16_t>(w.indices[g * 4] / 4);
  return out;
}

void validate_packed(const PackedWeights& w, const PackedArraySizes& s) {
  if (w.n <= 0 || w.k <= 0) format_error("dimensions must be positive");
  if (w.rows_per_block != 4 && w.rows_per_block != 1) format_error("rows per block must be 1 or 4");
  const int64_t G = w.type == WeightType::kS8 ? 4 : 1;
  if (w.type != WeightType::kS8 && w.type != WeightType::kF32) format_error("unknown weight type");
  if (w.group != G) format_error("group size does not match the weight type");
  if (w.type == WeightType::kS8 && w.k > kMaxInt8K) format_error("int8 K above the limit");
  const int64_t R = w.rows_per_block;
  const int64_t nbr = ceil_div(w.n, R);
  if (w.num_block_rows != nbr) format_error("block-row count does not match N");
  if (w.num_groups < 0) format_error("negative group count");
  if (w.values == nullptr && w.num_groups > 0) format_error("missing values");
  if (w.dense) {
    if (w.num_groups != checked_mul(nbr, ceil_div(w.k, G), "group count")) {
      format_error("dense group count does not match N and K");
    }
  } else {
    if (w.group_ptr == nullptr || (w.indices == nullptr && w.num_groups > 0)) {
      format_error("missing index arrays");
    }
    if (s.group_ptr != nbr + 1) format_error("group offset array has the wrong length");
    if (w.group_ptr[0] != 0) format_error("first group offset is not 0");
    for (int64_t br = 0; br < nbr; ++br) {
      if (w.group_ptr[br + 1] < w.group_ptr[br]) format_error("group offsets decrease");
    }
    if (w.group_ptr[nbr] != w.num_groups) format_error("last group offset is not the group count");
    if (s.indices != checked_mul(w.num_groups, G, "index count")) {
      format_error("index array has the wrong length");
    }
    for (int64_t br = 0; br < nbr; ++br) {
      int32_t prev = -1;
      for (int64_t i = w.group_ptr[br] * G; i < w.group_ptr[br + 1] * G; ++i) {
        const int32_t c = w.indices[i];
        if (c < 0 || c >= w.k) {
          format_error("index " + std::to_string(c) + " out of range [0, " + std::to_string(w.k) +
                       ") in block-row " + std::to_string(br));
        }
        if (c < prev) format_error("indices not sorted in block-row " + std::to_string(br));
        prev = c;
      }
    }
  }
  const int64_t slots = checked_mul(checked_mul(w.num_groups, R, "value count"), G, "value count");
  if (s.values != slots) format_error("value array has the wrong length");
  if (w.type == WeightType::kS8) {
    if (w.compensation == nullptr || w.scales == nullptr) format_error("missing int8 side arrays");
    if (s.compensation != nbr * R || s.scales != nbr * R) {
      format_error("compensation or scale array has the wrong length");
    }
    std::vector<int64_t> sums(static_cast<size_t>(nbr * R), 0);
    const int8_t* v = static_cast<const int8_t*>(w.values);
    for (int64_t br = 0; br < nbr; ++br) {
      const int64_t g0 = w.dense ? br * ceil_div(w.k, G) : w.group_ptr[br];
      const int64_t g1 = w.dense ? g0 + ceil_div(w.k, G) : w.group_ptr[br + 1];
      for (int64_t g = g0; g < g1; ++g)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t j = 0; j < G; ++j)
            sums[static_cast<size_t>(br * R + r)] += v[(g * R + r) * G + j];
    }
    for (int64_t row = 0; row < nbr * R; ++row) {
      if (128 * sums[static_cast<size_t>(row)] != w.compensation[row]) {
        format_error("compensation of row " + std::to_string(row) + " does not match its weights");
      }
      if (!(std::isfinite(w.scales[row]) && w.scales[row] > 0.0f)) {
        format_error("scale of row " + std::to_string(row) + " is not finite and positive");
      }
    }
  }
}

}  // namespace sparq
