#include "engine/ops/attrs.h"

#include <cstring>

#include "engine/ops/registry.h"
#include "formats/error.h"

namespace sparq {
namespace {

// A 1-D (or, with `scalar`, 0-D) tensor of `n` values of type T.
template <class T>
std::shared_ptr<const Constant> tensor_of(ElemType type, const T* v, size_t n, bool scalar) {
  auto c = std::make_shared<Constant>();
  c->type = type;
  if (!scalar) c->shape = {static_cast<int64_t>(n)};
  c->bytes.resize(n * sizeof(T));
  if (n > 0) std::memcpy(c->bytes.data(), v, n * sizeof(T));
  return c;
}

[[noreturn]] void bad(const Node& n, const std::string& what) {
  throw Error(Status::kFormatError, "node '" + n.name + "' (" + n.op + "): " + what);
}

}  // namespace

std::shared_ptr<const NodeAttrs> parse_attrs(const Node& n, int64_t opset) {
  auto a = std::make_shared<NodeAttrs>();
  auto i = [&](const char* k, int64_t d) {
    const Attribute* x = n.attr(k);
    return x ? x->i : d;
  };
  auto f = [&](const char* k, float d) {
    const Attribute* x = n.attr(k);
    return x ? x->f : d;
  };
  auto s = [&](const char* k) -> const std::string* {
    const Attribute* x = n.attr(k);
    return x ? &x->s : nullptr;
  };
  switch (op_of(n)) {
    case OpId::kConcat:
    case OpId::kGather: a->axis = i("axis", 0); break;
    case OpId::kQuantizeLinear:
    case OpId::kDequantizeLinear: a->axis = i("axis", 1); break;
    case OpId::kSoftmax: a->axis = i("axis", opset >= 13 ? -1 : 1); break;
    case OpId::kLayerNormalization:
      a->axis = i("axis", -1);
      a->epsilon = f("epsilon", 1e-5f);
      break;
    case OpId::kCast: a->to = i("to", 0); break;
    case OpId::kGemm:
      a->alpha = f("alpha", 1.0f);
      a->beta = f("beta", 1.0f);
      a->trans_a = i("transA", 0) != 0;
      a->trans_b = i("transB", 0) != 0;
      break;
    case OpId::kReduceMean:
    case OpId::kSqueeze:
    case OpId::kUnsqueeze:
      if (const Attribute* x = n.attr("axes")) {
        a->axes = x->ints;
        a->has_axes = true;
      }
      a->keepdims = i("keepdims", 1) != 0;
      break;
    case OpId::kReshape: a->allowzero = i("allowzero", 0) != 0; break;
    case OpId::kTranspose:
      if (const Attribute* x = n.attr("perm")) a->perm = x->ints;
      break;
    case OpId::kShape:
      a->start = i("start", 0);
      a->end = i("end", INT64_MAX);
      break;
    case OpId::kCumSum:
      a->exclusive = i("exclusive", 0) != 0;
      a->reverse = i("reverse", 0) != 0;
      break;
    case OpId::kConstant:
      for (const auto& kv : n.attrs) {
        const Attribute& x = kv.second;
        if (kv.first == "value") a->value = x.t;
        else if (kv.first == "value_float") a->value = tensor_of(ElemType::kF32, &x.f, 1, true);
        else if (kv.first == "value_floats")
          a->value = tensor_of(ElemType::kF32, x.floats.data(), x.floats.size(), false);
        else if (kv.first == "value_int") a->value = tensor_of(ElemType::kI64, &x.i, 1, true);
        else if (kv.first == "value_ints")
          a->value = tensor_of(ElemType::kI64, x.ints.data(), x.ints.size(), false);
      }
      break;
    case OpId::kConstantOfShape:
      if (const Attribute* x = n.attr("value")) a->value = x->t;
      break;
    case OpId::kSparqMatMul: {
      if (const std::string* w = s("weight")) a->weight = *w;
      const std::string* p = s("precision");
      if (p != nullptr && *p != "fp32" && *p != "int8") bad(n, "unknown precision '" + *p + "'");
      a->int8 = p != nullptr && *p == "int8";
      if (const std::string* act = s("activation")) {
        if (!activation_from_name(*act, &a->activation))
          bad(n, "unknown activation '" + *act + "'");
      }
      break;
    }
    case OpId::kSparqMaskBias: a->fill = f("fill", 0.0f); break;
    case OpId::kSparqAttention: {
      a->scale = f("scale", 1.0f);
      a->fill = f("fill", 0.0f);
      const std::string* k = s("mask_kind");
      if (k == nullptr || *k == "none") a->mask = MaskKind::kNone;
      else if (*k == "add") a->mask = MaskKind::kAdd;
      else if (*k == "where") a->mask = MaskKind::kWhere;
      else bad(n, "unknown mask kind '" + *k + "'");
      break;
    }
    default: break;  // no attributes the engine reads
  }
  return a;
}

}  // namespace sparq
