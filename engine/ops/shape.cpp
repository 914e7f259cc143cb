#include "engine/ops/shape.h"

#include <string>

#include "engine/ops/attrs.h"
#include "engine/ops/registry.h"
#include "engine/shapes.h"
#include "formats/error.h"

namespace sparq {
namespace {

[[noreturn]] void bad(const Node& n, const std::string& why) {
  throw Error(Status::kInvalidArgument, "node '" + n.name + "' (" + n.op + "): " + why);
}

struct Ctx {
  const Node& n;
  const std::vector<const ValueMeta*>& ins;

  const ValueMeta& need(size_t i) const {
    if (i >= ins.size() || ins[i] == nullptr) bad(n, "missing input " + std::to_string(i));
    return *ins[i];
  }
  const ValueMeta* opt(size_t i) const { return i < ins.size() ? ins[i] : nullptr; }
  // Input i's shape and type for the rules of engine/shapes.h (null dims: omitted).
  TensorDesc desc(size_t i, bool required = false) const {
    const ValueMeta* m = required ? &need(i) : opt(i);
    return m ? TensorDesc{&m->shape, m->type} : TensorDesc{};
  }
  // The integer values of input i, which this op's output shape depends on.
  std::vector<int64_t> ints(size_t i) const {
    const ValueMeta& m = need(i);
    if (!m.value) {
      throw Error(Status::kUnsupported, "node '" + n.name + "' (" + n.op +
                                            "): its output shape depends on input " +
                                            std::to_string(i) + ", known only at run time");
    }
    const Constant& c = *m.value;
    if (c.type != ElemType::kI64 && c.type != ElemType::kI32) bad(n, "expected an integer tensor");
    std::vector<int64_t> v(static_cast<size_t>(c.elements()));
    for (size_t k = 0; k < v.size(); ++k)
      v[k] = c.type == ElemType::kI64 ? c.data<int64_t>()[k] : c.data<int32_t>()[k];
    return v;
  }
  double scalar(size_t i) const {
    const ValueMeta& m = need(i);
    if (!m.value || m.value->elements() < 1) {
      throw Error(Status::kUnsupported, "node '" + n.name + "' (" + n.op +
                                            "): its output shape depends on input " +
                                            std::to_string(i) + ", known only at run time");
    }
    const Constant& c = *m.value;
    switch (c.type) {
      case ElemType::kF32: return c.data<float>()[0];
      case ElemType::kF64: return c.data<double>()[0];
      case ElemType::kI64: return static_cast<double>(c.data<int64_t>()[0]);
      case ElemType::kI32: return c.data<int32_t>()[0];
      default: bad(n, "unsupported Range type");
    }
  }
  void check(bool ok, const std::string& why) const {
    if (!ok) bad(n, why);
  }
};

ValueMeta meta(std::vector<int64_t> shape, ElemType t) {
  ValueMeta m;
  m.shape = std::move(shape);
  m.type = t;
  return m;
}

ElemType cast_target(const Node& n, int64_t to) {
  switch (to) {
    case 1: return ElemType::kF32;
    case 2: return ElemType::kU8;
    case 3: return ElemType::kS8;
    case 6: return ElemType::kI32;
    case 7: return ElemType::kI64;
    case 9: return ElemType::kBool;
    case 11: return ElemType::kF64;
    default:
      throw Error(Status::kUnsupported,
                  "node '" + n.name + "' (Cast): cast to type " + std::to_string(to));
  }
}

ValueMeta one(const Ctx& c, int64_t opset, const std::function<int64_t(const Node&)>& matmul_n) {
  const Node& n = c.n;
  const std::shared_ptr<const NodeAttrs> at = attrs_of(n, opset);
  std::string why;
  std::vector<int64_t> out;
  switch (op_of(n)) {
    case OpId::kAdd:
    case OpId::kSub:
    case OpId::kMul:
    case OpId::kDiv:
    case OpId::kPow: {
      const ValueMeta &a = c.need(0), &b = c.need(1);
      c.check(broadcast_shapes({&a.shape, &b.shape}, &out, &why), why);
      if (op_of(n) != OpId::kPow && !(a.type == ElemType::kF32 && b.type == ElemType::kF32))
        c.check(a.type == b.type, "inputs have different types");
      return meta(out, a.type);
    }
    case OpId::kEqual: {
      const ValueMeta &a = c.need(0), &b = c.need(1);
      c.check(broadcast_shapes({&a.shape, &b.shape}, &out, &why), why);
      return meta(out, ElemType::kBool);
    }
    case OpId::kWhere: {
      const ValueMeta &w = c.need(0), &x = c.need(1), &y = c.need(2);
      c.check(x.type == y.type, "X and Y have different types");
      c.check(broadcast_shapes({&w.shape, &x.shape, &y.shape}, &out, &why), why);
      return meta(out, x.type);
    }
    case OpId::kSqrt:
    case OpId::kErf:
    case OpId::kTanh:
    case OpId::kRelu:
    case OpId::kNeg:
    case OpId::kNot:
    case OpId::kSigmoid:
    case OpId::kReciprocal:
    case OpId::kExp:
    case OpId::kIdentity:
    case OpId::kDropout:
    case OpId::kSoftmax:
    case OpId::kCumSum: return meta(c.need(0).shape, c.need(0).type);
    case OpId::kLayerNormalization: return meta(c.need(0).shape, c.need(0).type);
    case OpId::kCast: return meta(c.need(0).shape, cast_target(n, at->to));
    case OpId::kConstant: {
      if (at->value) return meta(at->value->shape, at->value->type);
      throw Error(Status::kUnsupported,
                  "node '" + n.name + "' (Constant): Constant without a supported value attribute");
    }
    case OpId::kShape: {
      const int64_t rank = static_cast<int64_t>(c.need(0).shape.size());
      int64_t start = at->start, end = at->end;
      if (start < 0) start += rank;
      if (end < 0) end += rank;
      start = std::clamp<int64_t>(start, 0, rank);
      end = std::clamp<int64_t>(end, start, rank);
      return meta({end - start}, ElemType::kI64);
    }
    case OpId::kConstantOfShape: {
      out = c.ints(0);
      for (int64_t d : out) c.check(d >= 0, "negative dimension");
      return meta(out, at->value ? at->value->type : ElemType::kF32);
    }
    case OpId::kRange: {
      int64_t count = 0;
      c.check(range_count(c.scalar(0), c.scalar(1), c.scalar(2), &count, &why), why);
      return meta({count}, c.need(0).type);
    }
    case OpId::kReshape: {
      out = c.ints(1);
      c.check(reshape_target(c.need(0).shape, &out, at->allowzero, &why), why);
      return meta(out, c.need(0).type);
    }
    case OpId::kUnsqueeze:
    case OpId::kSqueeze: {
      std::vector<int64_t> axes;
      if (c.opt(1) != nullptr) axes = c.ints(1);
      else if (at->has_axes) axes = at->axes;
      const bool ok = op_of(n) == OpId::kUnsqueeze
                          ? unsqueeze_shape(c.need(0).shape, axes, &out, &why)
                          : squeeze_shape(c.need(0).shape, axes, &out, &why);
      c.check(ok, why);
      return meta(out, c.need(0).type);
    }
    case OpId::kTranspose: {
      c.check(transpose_shape(c.need(0).shape, at->perm, &out, nullptr, &why), why);
      return meta(out, c.need(0).type);
    }
    case OpId::kConcat: {
      std::vector<const std::vector<int64_t>*> shapes;
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        c.check(c.need(i).type == c.need(0).type, "inputs differ in rank or type");
        shapes.push_back(&c.need(i).shape);
      }
      int64_t ax = 0;
      c.check(concat_shape(shapes, at->axis, &out, &ax, &why), why);
      return meta(out, c.need(0).type);
    }
    case OpId::kSlice: {
      std::vector<int64_t> axes, steps;
      if (c.opt(3) != nullptr) axes = c.ints(3);
      if (c.opt(4) != nullptr) steps = c.ints(4);
      SliceDims sd;
      c.check(slice_dims(c.need(0).shape, c.ints(1), c.ints(2), axes, steps, &sd, &why), why);
      return meta(sd.out, c.need(0).type);
    }
    case OpId::kExpand: {
      const std::vector<int64_t> target = c.ints(1);
      c.check(broadcast_shapes({&c.need(0).shape, &target}, &out, &why), why);
      return meta(out, c.need(0).type);
    }
    case OpId::kGather: {
      int64_t ax = 0;
      c.check(gather_shape(c.need(0).shape, c.need(1).shape, at->axis, &out, &ax, &why), why);
      return meta(out, c.need(0).type);
    }
    case OpId::kMatMul: {
      c.check(matmul_shape(c.need(0).shape, c.need(1).shape, &out, &why), why);
      return meta(out, c.need(0).type);
    }
    case OpId::kMatMulInteger: {
      QuantParamForm form[2];
      c.check(matmul_integer_rule(c.desc(0, true), c.desc(1, true), c.desc(2), c.desc(3), &out,
                                  form, &why),
              why);
      return meta(out, ElemType::kI32);
    }
    case OpId::kQLinearMatMul: {
      TensorDesc d[8];
      for (size_t i = 0; i < 8; ++i) d[i] = c.desc(i, true);
      ElemType t = ElemType::kU8;
      QuantParamForm form[2];
      c.check(qlinear_matmul_rule(d, &out, &t, form, &why), why);
      return meta(out, t);
    }
    case OpId::kQuantizeLinear:
    case OpId::kDequantizeLinear: {
      ElemType t = ElemType::kF32;
      int64_t ax = -1;
      c.check(quantize_linear_rule(op_of(n) == OpId::kQuantizeLinear, opset, at->axis,
                                   c.desc(0, true), c.desc(1, true), c.desc(2), &t, &ax, &why),
              why);
      return meta(c.need(0).shape, t);
    }
    case OpId::kDynamicQuantizeLinear: {
      const ValueMeta& x = c.need(0);
      c.check(x.type == ElemType::kF32,
              std::string("x must be float32, not ") + elem_type_name(x.type));
      return meta(x.shape, ElemType::kU8);  // y; the scale and zero point: infer_node
    }
    case OpId::kGemm: {
      const ValueMeta &a = c.need(0), &b = c.need(1);
      c.check(a.shape.size() == 2 && b.shape.size() == 2, "Gemm needs 2-D A and B");
      const int64_t m = at->trans_a ? a.shape[1] : a.shape[0];
      const int64_t ka = at->trans_a ? a.shape[0] : a.shape[1];
      const int64_t kb = at->trans_b ? b.shape[1] : b.shape[0];
      const int64_t nn = at->trans_b ? b.shape[0] : b.shape[1];
      c.check(ka == kb,
              "inner dimensions differ: " + std::to_string(ka) + " vs " + std::to_string(kb));
      out = {m, nn};
      if (const ValueMeta* cm = c.opt(2)) {
        std::vector<int64_t> bc;
        c.check(broadcast_shapes({&out, &cm->shape}, &bc, &why) && bc == out,
                "C does not broadcast to A.B");
      }
      return meta(out, a.type);
    }
    case OpId::kReduceMean: {
      c.check(reduce_shape(c.need(0).shape, at->axes, at->keepdims, &out, nullptr, &why), why);
      return meta(out, c.need(0).type);
    }
    case OpId::kSparqMaskBias: {
      const ValueMeta& m = c.need(0);
      c.check(m.shape.size() == 2, "the attention mask must be [batch, sequence]");
      return meta({m.shape[0], 1, 1, m.shape[1]}, ElemType::kF32);
    }
    case OpId::kSparqAttention: {
      const ValueMeta &q = c.need(0), &kt = c.need(1), &v = c.need(2);
      c.check(q.shape.size() == 4 && kt.shape.size() == 4 && v.shape.size() == 4,
              "expects float32 rank-4 Q, K^T and V");
      return meta({q.shape[0], q.shape[1], q.shape[2], v.shape[3]}, ElemType::kF32);
    }
    case OpId::kSparqMatMul: {
      out = c.need(0).shape;
      c.check(!out.empty(), "input does not have K features");
      if (!matmul_n) {
        throw Error(Status::kUnsupported,
                    "node '" + n.name + "' (SparqMatMul): its shape needs the model's weights");
      }
      out.back() = matmul_n(n);
      return meta(out, ElemType::kF32);
    }
    case OpId::kCount: break;
  }
  (void)opset;
  throw Error(Status::kUnsupported, "node '" + n.name + "': unknown op '" + n.op + "'");
}

}  // namespace

std::vector<ValueMeta> infer_node(const Node& n, int64_t opset,
                                  const std::vector<const ValueMeta*>& ins,
                                  const std::function<int64_t(const Node&)>& matmul_n) {
  const Ctx c{n, ins};
  std::vector<ValueMeta> outs(n.outputs.size());
  if (!outs.empty()) outs[0] = one(c, opset, matmul_n);
  // Second outputs: Dropout's mask (bool, the data's shape); DynamicQuantizeLinear's
  // scale (float32) and zero point (uint8), both scalars. LayerNormalization's Mean and
  // InvStdDev are refused at import.
  if (outs.size() > 1 && op_of(n) == OpId::kDropout && !n.outputs[1].empty())
    outs[1] = meta(outs[0].shape, ElemType::kBool);
  if (op_of(n) == OpId::kDynamicQuantizeLinear) {
    if (outs.size() > 1) outs[1] = meta({}, ElemType::kF32);
    if (outs.size() > 2) outs[2] = meta({}, ElemType::kU8);
  }
  return outs;
}

}  // namespace sparq
