#!/usr/bin/python3
"""A QAT-style (fake-quantized) test model as torch exports it (issue 12, part 2): the
module of tools/make_models.py with every encoder Linear's weight fake-quantized
(torch.fake_quantize_per_channel_affine: int8, symmetric per output channel, scale
max|w| / 127, zero point 0) and, with --activations, its input too
(torch.fake_quantize_per_tensor_affine: uint8 min/max calibrated on the test inputs),
exported by torch.onnx.export at opset 13+. torch writes a fake quantization as
QuantizeLinear -> DequantizeLinear, so a weight reaches its MatMul as
QuantizeLinear(W) -> DequantizeLinear(axis 0) -> Transpose (the shape QAT exports have).

    make_qat_model.py --family bert --size tiny --opset 13 --out DIR [--head]
        [--prune S --block B] [--activations] [--batch 2 --seq 11] [--seed 0]

Writes DIR/model.onnx (the fake-quantized export), DIR/input_<name>.npy,
DIR/ref_<output>.npy (the float model's float64 outputs, without fake quantization: the
reference a quantized model is checked against) and DIR/manifest.json (with
"quantized_matmuls": how many Linear layers are fake-quantized)."""
import argparse
import copy
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_models as mm  # noqa: E402


def fake_quantized_forward(self, x):
    if self.fq_x_scale is not None:
        x = torch.fake_quantize_per_tensor_affine(x, self.fq_x_scale, self.fq_x_zp, 0, 255)
    w = torch.fake_quantize_per_channel_affine(self.weight, self.fq_scale, self.fq_zp, 0, -128, 127)
    return F.linear(x, w, self.bias)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["bert", "distilbert", "roberta"], default="bert")
    ap.add_argument("--size", choices=sorted(mm.SIZES), default="tiny")
    ap.add_argument("--head", action="store_true")
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--prune", type=float, default=None)
    ap.add_argument("--block", choices=["4x1", "1x4", "1x1"], default="4x1")
    ap.add_argument("--activations", action="store_true", help="fake-quantize each Linear's input too")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=11)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.opset < 13:
        sys.exit("make_qat_model: per-channel QuantizeLinear / DequantizeLinear need opset 13")
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    model, c = mm.build(a.family, a.size, a.head, a.seed)
    linears = list(mm.encoder_linears(model))
    if a.prune is not None:
        with torch.no_grad():
            for _, lin in linears:
                w = mm.prune_blocks(lin.weight.double().numpy(), a.block, a.prune)
                lin.weight.copy_(torch.from_numpy(w).to(lin.weight.dtype))
    inputs = mm.make_inputs(a.family, c, a.batch, a.seq, a.seed)
    names = list(inputs)
    if a.family == "distilbert":
        outputs = ["logits"] if a.head else ["last_hidden_state"]
    else:
        outputs = ["logits"] if a.head else ["last_hidden_state", "pooler_output"]
    args = tuple(torch.from_numpy(inputs[n]) for n in names)
    with torch.no_grad():  # the float model's float64 reference, before fake quantization
        ref = copy.deepcopy(model).double()(*args)
    # Calibration of the Linear inputs (uint8 min/max over the test inputs), float32.
    seen = {}
    hooks = [lin.register_forward_pre_hook(lambda m, x, n=n: seen.__setitem__(n, x[0].detach()))
             for n, lin in linears]
    with torch.no_grad():
        model(*args)
    for h in hooks:
        h.remove()
    for n, lin in linears:
        w = lin.weight.detach()
        scale = w.abs().amax(dim=1) / 127.0
        lin.fq_scale = torch.where(scale == 0, torch.ones_like(scale), scale).float()
        lin.fq_zp = torch.zeros(w.shape[0], dtype=torch.int32)
        lin.fq_x_scale = lin.fq_x_zp = None
        if a.activations:
            lo, hi = min(0.0, float(seen[n].min())), max(0.0, float(seen[n].max()))
            lin.fq_x_scale = (hi - lo) / 255.0 if hi > lo else 1.0
            lin.fq_x_zp = int(np.clip(round(-lo / lin.fq_x_scale), 0, 255))
        lin.forward = types.MethodType(fake_quantized_forward, lin)
    dyn = {n: {0: "batch", 1: "sequence"} for n in names}
    dyn.update({o: {0: "batch"} if o in ("logits", "pooler_output") else {0: "batch", 1: "sequence"}
                for o in outputs})
    path = os.path.join(a.out, "model.onnx")
    torch.onnx.export(model, args, path, input_names=names, output_names=outputs, dynamic_axes=dyn,
                      opset_version=a.opset)
    for n, v in inputs.items():
        np.save(os.path.join(a.out, f"input_{n}.npy"), v)
    for o, t in zip(outputs, ref):
        np.save(os.path.join(a.out, f"ref_{o}.npy"), t.numpy())
    manifest = {"family": a.family, "size": a.size, "head": a.head, "opset": a.opset, "prune": a.prune,
                "block": a.block, "batch": a.batch, "seq": a.seq, "seed": a.seed, "inputs": names,
                "outputs": outputs, "vocab": c.vocab, "max_positions": c.max_pos,
                "fake_quant": {"weights": "int8 per channel", "activations": "uint8 per tensor, static"
                               if a.activations else None},
                "quantized_matmuls": len(linears)}
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"make_qat_model: wrote {path} ({len(linears)} fake-quantized Linear layers)", file=sys.stderr)


if __name__ == "__main__":
    main()
