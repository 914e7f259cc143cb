#!/usr/bin/python3
"""Quantized versions of a float test model (issue 12, part 2), written with the onnx
Python API: every MatMul with a constant 2-D weight W[K, N] becomes one of the forms
quantized exporters write. The Gemm layers (pooler, classifier) stay float.

    make_quantized_models.py IN.onnx OUT.onnx --form FORM [--weights W] [--scale S]
        [--chain C] [--attention A] [--calibrate DIR]

FORM:
  dynamic   ONNX Runtime's dynamic quantization: DynamicQuantizeLinear(x) ->
            MatMulInteger(xq, Wq, x_zp, w_zp) -> Cast(float) -> the scale Muls
  qdq       MatMul(DequantizeLinear(QuantizeLinear(x)), DequantizeLinear(Wq, axis 1))
  qdq-t     the QAT export shape: Wq stored [N, K], DequantizeLinear(axis 0) -> Transpose
  integer   QOperator: QuantizeLinear(x, static scale) -> MatMulInteger -> Cast ->
            Mul(x_scale x w_scale, one constant)
  qlinear   QOperator: QuantizeLinear(x) -> QLinearMatMul -> DequantizeLinear(y)
W (weights):
  s8        int8 symmetric, zero point 0 (default)
  u8-128    uint8 shifted by 128, zero point 128 (Neural Magic's deployable exports):
            a pruned weight is stored as 128
  u8-asym   uint8 asymmetric from each channel's (or the tensor's) min and max (ONNX
            Runtime's QUInt8): q - zp spans up to [-255, 255]
S (weight scales): channel (per output channel, default) | tensor
C (dynamic only): product (Mul(cast, Mul(x_scale, w_scale)), as quantize_dynamic writes
  it, default) | chain (Mul(Mul(cast, x_scale), w_scale))
A (the attention's activation x activation MatMuls, Q x K^T and P x V):
  none      left float (default)
  qdq       both inputs fake-quantized: QuantizeLinear -> DequantizeLinear (static uint8
            per-tensor scale and zero point, as quantize_static's QDQ format and QAT
            exports write them)
  qlinear   QOperator: QuantizeLinear of both inputs -> QLinearMatMul(a, b) ->
            DequantizeLinear(y)
--data-qdq: also what ONNX Runtime's quantize_static writes, in its QDQ format, around its
  data-movement and Softmax operators (QDQDirect8BitOp, QDQSoftmax): every Reshape and
  Transpose reads a fake-quantized input (QuantizeLinear -> DequantizeLinear, static uint8
  per tensor), and their and Softmax's outputs are fake-quantized for their readers
  (Softmax's with the fixed scale 1/256 and zero point 0), unless already so. Softmax's
  input stays float (its min/max would span the mask value).
Static activation scales (qdq, integer, qlinear, --attention and --data-qdq) are calibrated as uint8 min/max on the
model's own test inputs (DIR/input_*.npy, DIR = IN's directory by default) by a float64
evaluation (tools/onnx_numpy_ref.py)."""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_numpy_ref  # noqa: E402


def quantize_weight(wf, weights, scale_kind):
    """(q, scale, zp) for W[K, N]: scale and zp per column [N] or scalars."""
    axis = 0 if scale_kind == "channel" else None
    if weights == "u8-asym":
        lo = np.minimum(wf.min(axis=axis), 0.0)
        hi = np.maximum(wf.max(axis=axis), 0.0)
        scale = ((hi - lo) / 255.0).astype(np.float32)
        scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
        zp = np.clip(np.rint(-lo / scale), 0, 255).astype(np.uint8)
        q = np.clip(np.rint(wf / scale) + zp.astype(np.float64), 0, 255).astype(np.uint8)
        return q, scale, zp
    scale = (np.abs(wf).max(axis=axis) / 127.0).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
    s8 = np.clip(np.rint(wf / scale), -127, 127)
    if weights == "u8-128":
        zp = np.full(scale.shape, 128, np.uint8)
        return (s8 + 128).astype(np.uint8), scale, zp
    return s8.astype(np.int8), scale, np.zeros(scale.shape, np.int8)


def act_params(v):
    """uint8 min/max calibration of a float activation: (scale, zero point)."""
    lo, hi = min(0.0, float(v.min())), max(0.0, float(v.max()))
    scale = np.float32((hi - lo) / 255.0 if hi > lo else 1.0)
    return scale, np.uint8(np.clip(np.rint(-lo / scale), 0, 255))


def quantize_attention_matmul(n, kind, values, new_inits, index):
    """The nodes replacing an activation x activation MatMul(a, b) -> y: both inputs
    quantized with static uint8 per-tensor scales calibrated on their float values."""
    p = (n.name.replace("/", "_") or f"attn{index}") + "_q"
    out = []

    def init(arr, suffix):
        new_inits.append(numpy_helper.from_array(np.asarray(arr), p + suffix))
        return p + suffix

    def node(op, ins, outs):
        out.append(helper.make_node(op, ins, outs, name=f"{p}_{op}{len(out)}"))

    qs = []
    for k, v in enumerate(n.input):
        s, z = act_params(values[v])
        node("QuantizeLinear", [v, init(s, f"_s{k}"), init(z, f"_z{k}")], [f"{p}_q{k}"])
        qs.append((f"{p}_q{k}", f"{p}_s{k}", f"{p}_z{k}"))
    y = n.output[0]
    if kind == "qdq":
        for k, (q, s, z) in enumerate(qs):
            node("DequantizeLinear", [q, s, z], [f"{p}_dq{k}"])
        node("MatMul", [f"{p}_dq0", f"{p}_dq1"], [y])
    else:
        ys, yz = act_params(values[y])
        node("QLinearMatMul", list(qs[0]) + list(qs[1]) + [init(ys, "_ys"), init(yz, "_yz")], [p + "_yq"])
        node("DequantizeLinear", [p + "_yq", p + "_ys", p + "_yz"], [y])
    return out


def is_float(values, v):
    return v in values and np.asarray(values[v]).dtype.kind == "f"


def fake_quantize_data_ops(nodes, values, new_inits):
    """--data-qdq: the node list with fake-quantized inputs and outputs on every Reshape,
    Transpose and Softmax of activations (values: the float graph's calibration values)."""
    producer = {o: n for n in nodes for o in n.output}
    readers = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    out, count = [], 0

    def pair(v, scale, zp):
        nonlocal count
        p = f"dataqdq{count}"
        count += 1
        new_inits.append(numpy_helper.from_array(np.asarray(np.float32(scale)), p + "_s"))
        new_inits.append(numpy_helper.from_array(np.asarray(np.uint8(zp)), p + "_z"))
        return [helper.make_node("QuantizeLinear", [v, p + "_s", p + "_z"], [p + "_q"], name=p + "_Q"),
                helper.make_node("DequantizeLinear", [p + "_q", p + "_s", p + "_z"], [p + "_dq"],
                                 name=p + "_DQ")], p + "_dq"

    for n in nodes:
        if n.op_type not in ("Reshape", "Transpose", "Softmax"):
            out.append(n)
            continue
        x = n.input[0]
        px = producer.get(x)
        # Softmax's input stays float: its min/max spans the mask (-1e4, or the float
        # minimum), which leaves the scores no steps; quantize_static users exclude it.
        if (n.op_type != "Softmax" and is_float(values, x)
                and not (px is not None and px.op_type == "DequantizeLinear")):
            extra, dq = pair(x, *act_params(values[x]))
            out.extend(extra)
            n.input[0] = dq
        out.append(n)
        y = n.output[0]
        rs = readers.get(y, [])
        if is_float(values, y) and rs and not all(r.op_type == "QuantizeLinear" for r in rs):
            sz = (1.0 / 256.0, 0) if n.op_type == "Softmax" else act_params(values[y])
            n.output[0] = y + "_float"
            extra, dq = pair(y + "_float", *sz)
            extra[1].output[0] = y
            producer[y] = extra[1]  # y is now a DequantizeLinear's: its readers need no pair
            out.extend(extra)
    return out, count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--form", required=True, choices=["dynamic", "qdq", "qdq-t", "integer", "qlinear"])
    ap.add_argument("--weights", default="s8", choices=["s8", "u8-128", "u8-asym"])
    ap.add_argument("--scale", default="channel", choices=["channel", "tensor"])
    ap.add_argument("--chain", default="product", choices=["product", "chain"])
    ap.add_argument("--attention", default="none", choices=["none", "qdq", "qlinear"])
    ap.add_argument("--data-qdq", action="store_true")
    ap.add_argument("--calibrate", default=None)
    a = ap.parse_args()
    m = onnx.load(a.src)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    values = {}
    if a.form != "dynamic" or a.attention != "none" or a.data_qdq:
        d = a.calibrate or os.path.dirname(os.path.abspath(a.src))
        feeds = {i.name: np.load(os.path.join(d, f"input_{i.name}.npy")) for i in g.input}
        onnx_numpy_ref.evaluate(m, feeds, values)
    uses = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    consts = set(inits) | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    nodes, new_inits, done, attention = [], [], 0, 0
    for n in g.node:
        if (a.attention != "none" and n.op_type == "MatMul" and len(n.input) == 2
                and not consts.intersection(n.input)):
            nodes.extend(quantize_attention_matmul(n, a.attention, values, new_inits, attention))
            attention += 1
            continue
        w = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT:
            nodes.append(n)
            continue
        wf = numpy_helper.to_array(w).astype(np.float64)
        q, ws, wz = quantize_weight(wf, a.weights, a.scale)
        p = (n.name.replace("/", "_") or f"mm{done}") + "_q"
        x, y = n.input[0], n.output[0]

        def init(arr, suffix):
            new_inits.append(numpy_helper.from_array(np.asarray(arr), p + suffix))
            return p + suffix

        def node(op, ins, outs, **kw):
            nodes.append(helper.make_node(op, ins, outs, name=p + "_" + op + str(len(nodes)), **kw))

        if a.form == "dynamic":
            node("DynamicQuantizeLinear", [x], [p + "_xq", p + "_xs", p + "_xzp"])
            node("MatMulInteger", [p + "_xq", init(q, "_W"), p + "_xzp", init(wz, "_Wzp")], [p + "_i32"])
            node("Cast", [p + "_i32"], [p + "_f"], to=TensorProto.FLOAT)
            if a.chain == "product":
                node("Mul", [p + "_xs", init(ws, "_Ws")], [p + "_s"])
                node("Mul", [p + "_f", p + "_s"], [y])
            else:
                node("Mul", [p + "_f", p + "_xs"], [p + "_fx"])
                node("Mul", [init(ws, "_Ws"), p + "_fx"], [y])
        else:
            xs, xz = act_params(values[x])
            node("QuantizeLinear", [x, init(xs, "_xs"), init(xz, "_xz")], [p + "_xq"])
            if a.form in ("qdq", "qdq-t"):
                node("DequantizeLinear", [p + "_xq", p + "_xs", p + "_xz"], [p + "_xdq"])
                if a.form == "qdq":
                    node("DequantizeLinear", [init(q, "_W"), init(ws, "_Ws"), init(wz, "_Wzp")], [p + "_Wf"], axis=1)
                else:
                    node("DequantizeLinear", [init(np.ascontiguousarray(q.T), "_Wt"), init(ws, "_Ws"),
                                              init(wz, "_Wzp")], [p + "_Wft"], axis=0)
                    node("Transpose", [p + "_Wft"], [p + "_Wf"], perm=[1, 0])
                node("MatMul", [p + "_xdq", p + "_Wf"], [y])
            elif a.form == "integer":
                node("MatMulInteger", [p + "_xq", init(q, "_W"), p + "_xz", init(wz, "_Wzp")], [p + "_i32"])
                node("Cast", [p + "_i32"], [p + "_f"], to=TensorProto.FLOAT)
                node("Mul", [p + "_f", init((xs * ws).astype(np.float32), "_s")], [y])
            else:
                ys, yz = act_params(values[y])
                node("QLinearMatMul", [p + "_xq", p + "_xs", p + "_xz", init(q, "_W"), init(ws, "_Ws"),
                                       init(wz, "_Wzp"), init(ys, "_ys"), init(yz, "_yz")], [p + "_yq"])
                node("DequantizeLinear", [p + "_yq", p + "_ys", p + "_yz"], [y])
        uses[n.input[1]] -= 1
        done += 1
    data_pairs = 0
    if a.data_qdq:
        nodes, data_pairs = fake_quantize_data_ops(nodes, values, new_inits)
    keep = [t for t in g.initializer if uses.get(t.name, 0) > 0]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    del g.node[:]
    g.node.extend(nodes)
    if a.form in ("qdq", "qdq-t") or a.attention != "none" or a.data_qdq:  # opset 13
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx") and o.version < 13:
                o.version = 13
    onnx.save(m, a.dst)
    print(f"make_quantized_models: {done} MatMuls as {a.form} ({a.weights}, {a.scale}), "
          f"{attention} attention MatMuls as {a.attention}, {data_pairs} data-movement and Softmax "
          f"QDQ pairs -> {a.dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
