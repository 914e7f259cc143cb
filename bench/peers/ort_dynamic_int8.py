#!/usr/bin/python3
"""Rewrites an fp32 ONNX model the way onnxruntime.quantization.quantize_dynamic does
(which is a PyPI package, not reachable here), for ONNX Runtime's dynamic-int8 peer
benchmark: every MatMul with a constant 2-D weight W[K, N] becomes
    DynamicQuantizeLinear(x) -> x_q (u8), x_scale, x_zp
    MatMulInteger(x_q, W_q (s8), x_zp)  -> int32
    Cast(float) * (x_scale * w_scale[N])
with W quantized symmetric per output column (int8, zero point 0).
Usage: ort_dynamic_int8.py IN.onnx OUT.onnx"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto


def main():
    src, dst = sys.argv[1], sys.argv[2]
    m = onnx.load(src)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    uses = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    new_nodes, new_inits, converted = [], [], 0
    for n in g.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT:
            new_nodes.append(n)
            continue
        wf = numpy_helper.to_array(w).astype(np.float32)
        scale = np.abs(wf).max(axis=0) / 127.0
        scale[scale == 0] = 1.0
        wq = np.clip(np.rint(wf / scale), -127, 127).astype(np.int8)
        p = n.name.replace("/", "_") or f"mm{converted}"
        new_inits += [numpy_helper.from_array(wq, p + "_Wq"),
                      numpy_helper.from_array(scale.astype(np.float32), p + "_Wscale"),
                      numpy_helper.from_array(np.int8(0), p + "_Wzp")]
        x, y = n.input[0], n.output[0]
        new_nodes += [
            helper.make_node("DynamicQuantizeLinear", [x], [p + "_xq", p + "_xs", p + "_xzp"], name=p + "_dql"),
            helper.make_node("MatMulInteger", [p + "_xq", p + "_Wq", p + "_xzp", p + "_Wzp"], [p + "_i32"], name=p + "_mmi"),
            helper.make_node("Cast", [p + "_i32"], [p + "_f"], to=TensorProto.FLOAT, name=p + "_cast"),
            helper.make_node("Mul", [p + "_xs", p + "_Wscale"], [p + "_s"], name=p + "_scale"),
            helper.make_node("Mul", [p + "_f", p + "_s"], [y], name=p + "_deq"),
        ]
        uses[n.input[1]] -= 1
        converted += 1
    keep = [t for t in g.initializer if uses.get(t.name, 0) > 0]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    del g.node[:]
    g.node.extend(new_nodes)
    onnx.save(m, dst)
    print(f"ort_dynamic_int8: {converted} MatMuls quantized -> {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
