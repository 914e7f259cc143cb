#include "engine/shapes.h"

#include <algorithm>
#include <cmath>

namespace sparq {

bool safe_elements(const std::vector<int64_t>& shape, int64_t* out) {
  int64_t e = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(e, d, &e)) return false;
  }
  *out = e;
  return true;
}

bool reshape_target(const std::vector<int64_t>& in, std::vector<int64_t>* target, bool allowzero,
                    std::string* why) {
  std::vector<int64_t>& t = *target;
  int64_t in_elems = 0;
  if (!safe_elements(in, &in_elems)) {
    *why = "the input shape overflows";
    return false;
  }
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == 0 && !allowzero) {
      if (i >= in.size()) {
        *why = "0 refers to a missing input dimension";
        return false;
      }
      t[i] = in[i];
    }
    if (t[i] == -1) {
      if (infer >= 0) {
        *why = "more than one -1";
        return false;
      }
      infer = static_cast<int64_t>(i);
    } else if (t[i] < 0) {
      *why = "negative dimension";
      return false;
    } else if (__builtin_mul_overflow(known, t[i], &known)) {
      *why = "the target's element count overflows";
      return false;
    }
  }
  if (infer >= 0) {
    if (known == 0 || in_elems % known != 0) {
      *why = "cannot infer the -1 dimension";
      return false;
    }
    t[static_cast<size_t>(infer)] = in_elems / known;
    known = in_elems;
  }
  if (known != in_elems) {
    *why = "element count changes";
    return false;
  }
  return true;
}

bool broadcast_shapes(const std::vector<const Dims*>& shapes, Dims* out, std::string* why) {
  size_t rank = 0;
  for (const Dims* s : shapes) rank = std::max(rank, s->size());
  Dims r(rank, 1);
  for (const Dims* s : shapes) {
    for (size_t i = 0; i < s->size(); ++i) {
      int64_t& o = r[rank - s->size() + i];
      const int64_t d = (*s)[i];
      if (o == 1) {
        o = d;
      } else if (d != 1 && d != o) {
        *why = "shapes cannot be broadcast together";
        return false;
      }
    }
  }
  *out = std::move(r);
  return true;
}

bool normalize_axis(int64_t axis, size_t rank, int64_t* out, std::string* why) {
  const int64_t r = static_cast<int64_t>(rank);
  if (axis < -r || axis >= r) {
    *why = "axis " + std::to_string(axis) + " out of range for rank " + std::to_string(r);
    return false;
  }
  *out = axis < 0 ? axis + r : axis;
  return true;
}

bool unsqueeze_shape(const Dims& in, std::vector<int64_t> axes, Dims* out, std::string* why) {
  Dims s = in;
  const size_t rank = s.size() + axes.size();
  for (int64_t& x : axes) {
    if (!normalize_axis(x, rank, &x, why)) return false;
  }
  std::sort(axes.begin(), axes.end());
  for (int64_t x : axes) {
    if (x > static_cast<int64_t>(s.size())) {
      *why = "unsqueeze axis " + std::to_string(x) + " out of range";
      return false;
    }
    s.insert(s.begin() + x, 1);
  }
  *out = std::move(s);
  return true;
}

bool squeeze_shape(const Dims& in, std::vector<int64_t> axes, Dims* out, std::string* why) {
  Dims s = in;
  if (axes.empty()) {
    s.erase(std::remove(s.begin(), s.end(), 1), s.end());
  } else {
    for (int64_t& x : axes) {
      if (!normalize_axis(x, s.size(), &x, why)) return false;
    }
    std::sort(axes.rbegin(), axes.rend());
    for (size_t i = 0; i < axes.size(); ++i) {
      const int64_t x = axes[i];
      if (i > 0 && x == axes[i - 1]) continue;  // a repeated axis squeezes once
      if (s[static_cast<size_t>(x)] != 1) {
        *why = "squeezed dimension is not 1";
        return false;
      }
      s.erase(s.begin() + x);
    }
  }
  *out = std::move(s);
  return true;
}

bool transpose_shape(const Dims& in, const std::vector<int64_t>& perm, Dims* out,
                     std::vector<int64_t>* perm_out, std::string* why) {
  const size_t rank = in.size();
  std::vector<int64_t> p = perm;
  if (p.empty()) {
    for (size_t i = 0; i < rank; ++i) p.push_back(static_cast<int64_t>(rank - 1 - i));
  }
  if (p.size() != rank) {
    *why = "perm has the wrong length";
    return false;
  }
  std::vector<bool> seen(rank, false);  // a repeated axis would read past the input
  for (int64_t& x : p) {
    const int64_t given = x;
    if (!normalize_axis(x, rank, &x, why)) return false;
    if (seen[static_cast<size_t>(x)]) {
      *why = "perm is not a permutation (axis " + std::to_string(given) + " repeats)";
      return false;
    }
    seen[static_cast<size_t>(x)] = true;
  }
  Dims o(rank);
  for (size_t i = 0; i < rank; ++i) o[i] = in[static_cast<size_t>(p[i])];
  *out = std::move(o);
  if (perm_out) *perm_out = std::move(p);
  return true;
}

bool concat_shape(const std::vector<const Dims*>& shapes, int64_t axis, Dims* out, int64_t* ax,
                  std::string* why) {
  if (shapes.empty()) {
    *why = "no inputs";
    return false;
  }
  const Dims& first = *shapes[0];
  if (!normalize_axis(axis, first.size(), ax, why)) return false;
  Dims r = first;
  r[static_cast<size_t>(*ax)] = 0;
  for (const Dims* s : shapes) {
    if (s->size() != r.size()) {
      *why = "inputs differ in rank or type";
      return false;
    }
    for (size_t d = 0; d < r.size(); ++d) {
      if (static_cast<int64_t>(d) != *ax && (*s)[d] != first[d]) {
        *why = "inputs differ in shape";
        return false;
      }
    }
    if (__builtin_add_overflow(r[static_cast<size_t>(*ax)], (*s)[static_cast<size_t>(*ax)],
                               &r[static_cast<size_t>(*ax)])) {
      *why = "the concatenated dimension overflows";
      return false;
    }
  }
  *out = std::move(r);
  return true;
}

bool gather_shape(const Dims& data, const Dims& indices, int64_t axis, Dims* out, int64_t* ax,
                  std::string* why) {
  if (data.empty()) {
    *why = "Gather from a scalar";
    return false;
  }
  if (!normalize_axis(axis, data.size(), ax, why)) return false;
  Dims r(data.begin(), data.begin() + *ax);
  r.insert(r.end(), indices.begin(), indices.end());
  r.insert(r.end(), data.begin() + *ax + 1, data.end());
  *out = std::move(r);
  return true;
}

bool slice_dims(const Dims& in, const std::vector<int64_t>& starts,
                const std::vector<int64_t>& ends, std::vector<int64_t> axes,
                std::vector<int64_t> steps, SliceDims* r, std::string* why) {
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    *why = "starts, ends, axes and steps differ in length";
    return false;
  }
  const size_t rank = in.size();
  r->start.assign(rank, 0);
  r->step.assign(rank, 1);
  r->out = in;
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t ax = 0;
    if (!normalize_axis(axes[i], rank, &ax, why)) return false;
    const int64_t dim = in[static_cast<size_t>(ax)], step = steps[i];
    if (step == 0) {
      *why = "step 0";
      return false;
    }
    int64_t s = starts[i], e = ends[i];
    if (s < 0) s += dim;  // no overflow: dim >= 0
    if (e < 0) e += dim;
    int64_t o = 0;  // ceil(length / |step|), written so that no huge step overflows
    if (step > 0) {
      s = std::clamp<int64_t>(s, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      o = e > s ? (e - s - 1) / step + 1 : 0;
    } else {
      s = std::clamp<int64_t>(s, 0, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      o = s > e ? (s - e - 1) / (step == INT64_MIN ? INT64_MAX : -step) + 1 : 0;
    }
    r->out[static_cast<size_t>(ax)] = o;
    r->start[static_cast<size_t>(ax)] = s;
    r->step[static_cast<size_t>(ax)] = step;
  }
  return true;
}

bool matmul_shape(const Dims& a, const Dims& b, Dims* out, std::string* why) {
  Dims as = a, bs = b;
  if (as.empty() || bs.empty()) {
    *why = "MatMul of a scalar";
    return false;
  }
  const bool a1 = as.size() == 1, b1 = bs.size() == 1;
  if (a1) as.insert(as.begin(), 1);
  if (b1) bs.push_back(1);
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  if (bs[bs.size() - 2] != K) {
    *why = "inner dimensions differ: " + std::to_string(K) + " vs " +
           std::to_string(bs[bs.size() - 2]);
    return false;
  }
  const Dims abatch(as.begin(), as.end() - 2), bbatch(bs.begin(), bs.end() - 2);
  Dims batch;
  if (!broadcast_shapes({&abatch, &bbatch}, &batch, why)) return false;
  if (!a1) batch.push_back(M);
  if (!b1) batch.push_back(N);
  *out = std::move(batch);
  return true;
}

bool reduce_shape(const Dims& in, const std::vector<int64_t>& axes, bool keepdims, Dims* out,
                  std::vector<bool>* reduced, std::string* why) {
  const size_t rank = in.size();
  std::vector<bool> red(rank, axes.empty());
  for (int64_t x : axes) {
    int64_t a = 0;
    if (!normalize_axis(x, rank, &a, why)) return false;
    red[static_cast<size_t>(a)] = true;
  }
  Dims o;
  for (size_t d = 0; d < rank; ++d) {
    if (!red[d]) o.push_back(in[d]);
    else if (keepdims) o.push_back(1);
  }
  *out = std::move(o);
  if (reduced) *reduced = std::move(red);
  return true;
}

bool attention_mask_strides(const Dims& mask, const Dims& scores, int64_t strides[4],
                            std::string* why) {
  if (mask.size() > 4) {
    *why = "mask rank above 4";
    return false;
  }
  Dims full(4 - mask.size(), 1);
  full.insert(full.end(), mask.begin(), mask.end());
  int64_t acc = 1;
  for (int d = 3; d >= 0; --d) {
    const int64_t dim = full[static_cast<size_t>(d)];
    if (dim != 1 && dim != scores[static_cast<size_t>(d)]) {
      *why = "mask does not broadcast to the scores";
      return false;
    }
    strides[d] = dim == 1 ? 0 : acc;
    acc *= dim;
  }
  return true;
}

bool range_count(double start, double limit, double delta, int64_t* count, std::string* why) {
  if (delta == 0) {
    *why = "delta is zero";
    return false;
  }
  const double c = std::ceil((limit - start) / delta);
  if (!(c < 9.2e18)) {  // NaN or beyond int64
    *why = "the range has too many elements";
    return false;
  }
  *count = std::max<int64_t>(0, static_cast<int64_t>(c));
  return true;
}

namespace {

bool is_8bit(ElemType t) { return t == ElemType::kS8 || t == ElemType::kU8; }

std::string dims_str(const Dims& d) {
  std::string r = "[";
  for (size_t i = 0; i < d.size(); ++i) r += (i ? ", " : "") + std::to_string(d[i]);
  return r + "]";
}

// One element, rank 0 or 1: per tensor.
bool per_tensor(const Dims& d) { return d.size() <= 1 && shape_elements(d) == 1; }

// A scale and its zero point (if given) have one shape, or are both per tensor.
bool same_param_shape(const Dims& scale, const Dims* zp) {
  return zp == nullptr || *zp == scale || (per_tensor(scale) && per_tensor(*zp));
}

bool fail(std::string* why, std::string what) {
  *why = std::move(what);
  return false;
}

}  // namespace

bool quantize_linear_rule(bool quantize, int64_t opset, int64_t axis, TensorDesc x,
                          TensorDesc scale, TensorDesc zero_point, ElemType* out_type,
                          int64_t* axis_out, std::string* why) {
  const char* s_name = quantize ? "y_scale" : "x_scale";
  const char* z_name = quantize ? "y_zero_point" : "x_zero_point";
  if (quantize) {
    if (x.type != ElemType::kF32 && x.type != ElemType::kI32)
      return fail(why, std::string("x must be float32 or int32, not ") + elem_type_name(x.type));
  } else if (!is_8bit(x.type) && x.type != ElemType::kI32) {
    return fail(why, std::string("x must be int8, uint8 or int32, not ") + elem_type_name(x.type));
  }
  if (scale.type != ElemType::kF32)
    return fail(why, std::string(s_name) + " must be float32, not " + elem_type_name(scale.type));
  if (zero_point.dims != nullptr) {
    if (quantize && !is_8bit(zero_point.type)) {
      return fail(why, std::string(z_name) + " must be int8 or uint8, not " +
                           elem_type_name(zero_point.type));
    }
    if (!quantize && zero_point.type != x.type) {
      return fail(why, std::string(z_name) + " must have x's type (" + elem_type_name(x.type) +
                           "), not " + elem_type_name(zero_point.type));
    }
    if (!same_param_shape(*scale.dims, zero_point.dims)) {
      return fail(why, std::string(z_name) + " has shape " + dims_str(*zero_point.dims) + ", " +
                           s_name + " " + dims_str(*scale.dims) + ": they must match");
    }
  }
  *out_type = !quantize                    ? ElemType::kF32
              : zero_point.dims != nullptr ? zero_point.type
                                           : ElemType::kU8;
  const Dims& sd = *scale.dims;
  if (per_tensor(sd)) {
    *axis_out = -1;
    return true;
  }
  if (opset < 13) {
    return fail(why, std::string(s_name) + " has shape " + dims_str(sd) +
                         ": before opset 13 it is one value (per tensor)");
  }
  if (sd.size() != 1) {
    return fail(why, std::string(s_name) + " has shape " + dims_str(sd) +
                         ": it must be one value or 1-D (per axis)");
  }
  if (!normalize_axis(axis, x.dims->size(), axis_out, why)) return false;
  const int64_t dim = (*x.dims)[static_cast<size_t>(*axis_out)];
  if (sd[0] != dim) {
    return fail(why, std::string(s_name) + " has " + std::to_string(sd[0]) + " values, x's axis " +
                         std::to_string(*axis_out) + " has " + std::to_string(dim));
  }
  return true;
}

bool quant_param_form(const Dims& x, const Dims& param, bool rows, QuantParamForm* form,
                      std::string* why) {
  if (per_tensor(param)) {
    *form = QuantParamForm::kTensor;
    return true;
  }
  // An operand of rank 1 is one row of A, or one column of B: only per tensor fits.
  const size_t r = x.size();
  const int64_t len = r >= 2 ? (rows ? x[r - 2] : x[r - 1]) : 1;
  if (param.size() == 1 && param[0] == len) {
    *form = QuantParamForm::kVector;
    return true;
  }
  if (r >= 2 && param.size() == r) {
    Dims want = x;
    if (rows) want[r - 1] = 1;
    else want[r - 2] = 1;
    if (param == want) {
      *form = QuantParamForm::kBatched;
      return true;
    }
  }
  return fail(why, std::string("shape ") + dims_str(param) + " is neither one value nor " +
                       (rows ? "per row of " : "per column of ") + dims_str(x));
}

bool matmul_integer_rule(TensorDesc a, TensorDesc b, TensorDesc a_zero_point,
                         TensorDesc b_zero_point, Dims* out, QuantParamForm forms[2],
                         std::string* why) {
  const TensorDesc* ops[2] = {&a, &b};
  const TensorDesc* zps[2] = {&a_zero_point, &b_zero_point};
  const char* names[2] = {"A", "B"};
  for (int i = 0; i < 2; ++i) {
    if (!is_8bit(ops[i]->type)) {
      return fail(why, std::string(names[i]) + " must be int8 or uint8, not " +
                           elem_type_name(ops[i]->type));
    }
    forms[i] = QuantParamForm::kTensor;
    if (zps[i]->dims == nullptr) continue;
    const std::string zn = std::string(i == 0 ? "a" : "b") + "_zero_point";
    if (zps[i]->type != ops[i]->type) {
      return fail(why, zn + " must have " + names[i] + "'s type (" + elem_type_name(ops[i]->type) +
                           "), not " + elem_type_name(zps[i]->type));
    }
    if (!quant_param_form(*ops[i]->dims, *zps[i]->dims, i == 0, &forms[i], why)) {
      *why = zn + ": " + *why;
      return false;
    }
  }
  return matmul_shape(*a.dims, *b.dims, out, why);
}

bool qlinear_matmul_rule(const TensorDesc in[8], Dims* out, ElemType* out_type,
                         QuantParamForm forms[2], std::string* why) {
  static const char* const kNames[8] = {"a",       "a_scale",      "a_zero_point", "b",
                                        "b_scale", "b_zero_point", "y_scale",      "y_zero_point"};
  // Sides: a (inputs 0-2), b (3-5), y (6-7: no operand).
  for (int side = 0; side < 3; ++side) {
    const int si = side < 2 ? 3 * side + 1 : 6, zi = si + 1;
    const TensorDesc &x = in[side < 2 ? 3 * side : 0], &s = in[si], &z = in[zi];
    const char *sn = kNames[si], *zn = kNames[zi];
    if (side < 2 && !is_8bit(x.type)) {
      return fail(why, std::string(kNames[3 * side]) + " must be int8 or uint8, not " +
                           elem_type_name(x.type));
    }
    if (s.type != ElemType::kF32)
      return fail(why, std::string(sn) + " must be float32, not " + elem_type_name(s.type));
    if (side < 2 && z.type != x.type) {
      return fail(why, std::string(zn) + " must have " + kNames[3 * side] + "'s type (" +
                           elem_type_name(x.type) + "), not " + elem_type_name(z.type));
    }
    if (side == 2 && !is_8bit(z.type))
      return fail(why, std::string(zn) + " must be int8 or uint8, not " + elem_type_name(z.type));
    if (!same_param_shape(*s.dims, z.dims)) {
      return fail(why, std::string(zn) + " has shape " + dims_str(*z.dims) + ", " + sn + " " +
                           dims_str(*s.dims) + ": they must match");
    }
    if (side == 2) {
      if (!per_tensor(*s.dims)) {
        return fail(why, std::string(sn) + " has shape " + dims_str(*s.dims) +
                             ": the output's scale is one value (per tensor)");
      }
    } else if (!quant_param_form(*x.dims, *s.dims, side == 0, &forms[side], why)) {
      *why = std::string(sn) + ": " + *why;
      return false;
    }
  }
  *out_type = in[7].type;
  return matmul_shape(*in[0].dims, *in[3].dims, out, why);
}

}  // namespace sparq
