#!/usr/bin/python3
"""A float64 NumPy evaluation of an ONNX graph's semantics, for the ops of sparq's test
models and the quantized ops (issue 12): the reference a quantized model's `sparq run`
outputs are checked against (tests/quantized_model_test.py).

    onnx_numpy_ref.py MODEL.onnx OUTDIR NAME=FILE.npy [NAME=FILE.npy ...]

writes OUTDIR/<output>.npy (float64 for float outputs). Floats are carried in float64
throughout; the quantized ops follow ONNX's formulas (round half to even, saturation)
on those float64 values, so the only differences from an exact float32 run are
float32 rounding and the quantized values it moves across a rounding boundary.
"""
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

# ONNX element types to NumPy (floats as float64).
DTYPES = {1: np.float64, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 11: np.float64}


def as_array(t):
    a = numpy_helper.to_array(t)
    return a.astype(np.float64) if a.dtype.kind == "f" else a


def attrs(n):
    return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}


def saturate(v, dtype):
    info = np.iinfo(dtype)
    return np.clip(np.nan_to_num(v, nan=0.0), info.min, info.max).astype(dtype)


def per_axis(p, x, axis):
    """A scale or zero point reshaped to broadcast along x's axis (per tensor: as is)."""
    p = np.asarray(p)
    if p.size == 1:
        return p.reshape(())
    shape = [1] * x.ndim
    shape[axis % x.ndim] = p.size
    return p.reshape(shape)


def row_param(p, a):
    """MatMulInteger / QLinearMatMul: a's per-row parameter as a column to broadcast."""
    p = np.asarray(p)
    return p.reshape(()) if p.size == 1 else (p.reshape(-1, 1) if p.ndim == 1 else p)


def run_node(n, ins, opset):
    at = attrs(n)
    op = n.op_type
    x = ins[0] if ins else None
    if op == "Constant":
        return [as_array(at["value"])] if "value" in at else [np.array(at[k]) for k in at]
    if op in ("Add", "Sub", "Mul", "Div"):
        a, b = ins
        if op == "Div" and a.dtype.kind in "iu":
            return [np.trunc(a / b).astype(a.dtype)]
        return [{"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](a, b).astype(a.dtype)]
    if op == "Pow":
        return [np.power(ins[0], ins[1]).astype(ins[0].dtype)]
    if op in ("Sqrt", "Tanh", "Exp", "Reciprocal", "Neg", "Relu", "Sigmoid", "Erf", "Not"):
        if op == "Erf":
            from math import erf
            return [np.vectorize(erf, otypes=[np.float64])(x)]
        f = {"Sqrt": np.sqrt, "Tanh": np.tanh, "Exp": np.exp, "Reciprocal": lambda v: 1.0 / v, "Neg": np.negative,
             "Relu": lambda v: np.maximum(v, 0), "Sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
             "Not": np.logical_not}[op]
        return [f(x)]
    if op == "Cast":
        return [x.astype(DTYPES[at["to"]])]
    if op == "Identity" or op == "Dropout":
        return [x]
    if op == "Shape":
        s = np.array(x.shape, dtype=np.int64)
        return [s[at.get("start", 0):at.get("end", len(s))]]
    if op == "Gather":
        return [np.take(x, ins[1], axis=at.get("axis", 0))]
    if op == "Unsqueeze":
        axes = list(ins[1]) if len(ins) > 1 else at["axes"]
        r = x.ndim + len(axes)
        for a in sorted(v % r for v in axes):
            x = np.expand_dims(x, a)
        return [x]
    if op == "Squeeze":
        axes = list(ins[1]) if len(ins) > 1 else at.get("axes")
        return [np.squeeze(x, axis=tuple(axes) if axes is not None else None)]
    if op == "Concat":
        return [np.concatenate(ins, axis=at["axis"])]
    if op == "Reshape":
        shape = [x.shape[i] if (d == 0 and not at.get("allowzero", 0)) else d for i, d in enumerate(ins[1])]
        return [x.reshape(shape)]
    if op == "Transpose":
        return [np.transpose(x, at.get("perm"))]
    if op == "Slice":
        starts, ends = ins[1], ins[2]
        axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
        steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
        sl = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            sl[a] = slice(int(s), int(e), int(st))
        return [x[tuple(sl)]]
    if op == "ReduceMean":
        axes = at.get("axes")
        return [np.mean(x, axis=tuple(axes) if axes is not None else None, keepdims=bool(at.get("keepdims", 1)))]
    if op == "Softmax":
        axis = at.get("axis", -1 if opset >= 13 else 1)
        if opset < 13:
            lead = x.shape[:axis % x.ndim]
            f = x.reshape(int(np.prod(lead)), -1)
            e = np.exp(f - f.max(axis=1, keepdims=True))
            return [(e / e.sum(axis=1, keepdims=True)).reshape(x.shape)]
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return [e / e.sum(axis=axis, keepdims=True)]
    if op == "MatMul":
        return [np.matmul(ins[0], ins[1])]
    if op == "Gemm":
        a = ins[0].T if at.get("transA", 0) else ins[0]
        b = ins[1].T if at.get("transB", 0) else ins[1]
        y = at.get("alpha", 1.0) * (a @ b)
        return [y + at.get("beta", 1.0) * ins[2] if len(ins) > 2 and ins[2] is not None else y]
    if op == "LayerNormalization":
        axis = at.get("axis", -1)
        axes = tuple(range(axis % x.ndim, x.ndim))
        m = x.mean(axis=axes, keepdims=True)
        v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
        y = (x - m) / np.sqrt(v + at.get("epsilon", 1e-5)) * ins[1]
        return [y + ins[2] if len(ins) > 2 and ins[2] is not None else y]
    if op == "Equal":
        return [np.equal(ins[0], ins[1])]
    if op == "Where":
        return [np.where(ins[0], ins[1], ins[2])]
    if op == "Expand":
        return [x * np.ones(tuple(ins[1]), dtype=x.dtype)]
    if op == "ConstantOfShape":
        v = as_array(at["value"]) if "value" in at else np.zeros(1)
        return [np.full(tuple(x), v.reshape(-1)[0], dtype=v.dtype)]
    if op == "CumSum":
        axis = int(np.asarray(ins[1]).reshape(-1)[0])
        y = np.flip(x, axis) if at.get("reverse", 0) else x
        c = np.cumsum(y, axis=axis)
        if at.get("exclusive", 0):
            c = c - y
        return [(np.flip(c, axis) if at.get("reverse", 0) else c).astype(x.dtype)]
    if op == "Range":
        return [np.arange(ins[0], ins[1], ins[2]).astype(ins[0].dtype)]
    # ---- quantized ops
    if op == "QuantizeLinear":
        zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.uint8(0)
        axis = at.get("axis", 1)
        q = np.rint(x / per_axis(ins[1], x, axis)) + per_axis(zp, x, axis).astype(np.float64)
        return [saturate(q, np.asarray(zp).dtype)]
    if op == "DequantizeLinear":
        axis = at.get("axis", 1)
        zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), x.dtype)
        return [(x.astype(np.float64) - per_axis(zp, x, axis).astype(np.float64)) * per_axis(ins[1], x, axis)]
    if op == "DynamicQuantizeLinear":
        lo, hi = min(0.0, float(np.min(x))), max(0.0, float(np.max(x)))
        scale = (hi - lo if hi != lo else 1.0) / 255.0
        zp = np.uint8(np.rint(np.clip(0.0 - lo / scale, 0, 255)))
        return [saturate(np.rint(x / scale) + float(zp), np.uint8), np.array(scale), np.array(zp)]
    if op in ("MatMulInteger", "QLinearMatMul"):
        if op == "MatMulInteger":
            a, b = ins[0], ins[1]
            azp = ins[2] if len(ins) > 2 and ins[2] is not None else 0
            bzp = ins[3] if len(ins) > 3 and ins[3] is not None else 0
        else:
            a, a_s, azp, b, b_s, bzp, y_s, y_zp = ins
        acc = np.matmul(a.astype(np.int64) - row_param(azp, a).astype(np.int64),
                        b.astype(np.int64) - np.asarray(bzp).astype(np.int64))
        if op == "MatMulInteger":
            return [acc.astype(np.int32)]
        y = np.rint(acc * (row_param(a_s, a) * np.asarray(b_s) / y_s)) + float(np.asarray(y_zp).reshape(-1)[0])
        return [saturate(y, y_zp.dtype)]
    raise NotImplementedError(op)


def evaluate(model, feeds, values=None):
    """The graph outputs by name; `values` (a dict), when given, receives every value."""
    g = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    env = {t.name: as_array(t) for t in g.initializer}
    for k, v in feeds.items():
        env[k] = v.astype(np.float64) if v.dtype.kind == "f" else v
    for n in g.node:
        outs = run_node(n, [env[i] if i else None for i in n.input], opset)
        for name, v in zip(n.output, outs):
            if name:
                env[name] = np.asarray(v)
    if values is not None:
        values.update(env)
    return {o.name: env[o.name] for o in g.output}


def main():
    model, outdir = onnx.load(sys.argv[1]), sys.argv[2]
    feeds = {}
    for arg in sys.argv[3:]:
        k, f = arg.split("=", 1)
        feeds[k] = np.load(f)
    os.makedirs(outdir, exist_ok=True)
    for k, v in evaluate(model, feeds).items():
        np.save(os.path.join(outdir, k + ".npy"), v)


if __name__ == "__main__":
    main()
