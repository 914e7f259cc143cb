#!/usr/bin/python3
"""Builds Hugging Face-compatible BERT, DistilBERT and RoBERTa encoders with seeded
random weights, optionally prunes them, exports them with torch.onnx.export, and writes
float64 reference outputs for test inputs.

The modules below reproduce the structure, parameter names and forward computation of
transformers' BertModel / BertForSequenceClassification, DistilBertModel /
DistilBertForSequenceClassification and RobertaModel (eval mode), so the exported graphs
have the same ops as real exports. They are written here from the architecture;
transformers itself is not a Debian package.

Usage (Debian's python3-torch, python3-onnx, python3-numpy):
  /usr/bin/python3 tools/make_models.py --family bert --size tiny --opset 14 --out DIR
      [--head] [--prune 0.9 --block 4x1] [--batch 2 --seq 11] [--seed 0]
Writes DIR/model.onnx, DIR/input_<name>.npy (int64), DIR/ref_<output>.npy (float64),
DIR/manifest.json.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
from torch import nn

SIZES = {
    # name: (layers, hidden, heads, intermediate, vocab, max_positions)
    "tiny": (2, 32, 4, 64, 100, 64),
    "micro": (1, 8, 2, 16, 16, 16),  # fuzz seeds (tools/make_fuzz_corpus.py)
    "bert-mini": (4, 256, 4, 1024, 30522, 512),
    "distilbert": (6, 768, 12, 3072, 30522, 512),
    "bert-base": (12, 768, 12, 3072, 30522, 512),
    "bert-large": (24, 1024, 16, 4096, 30522, 512),
}


class Config:
    def __init__(self, size, family):
        layers, hidden, heads, inter, vocab, max_pos = SIZES[size]
        self.layers, self.hidden, self.heads, self.inter = layers, hidden, heads, inter
        self.vocab, self.max_pos = vocab, max_pos
        self.type_vocab = 1 if family == "roberta" else 2
        self.pad_id = 1 if family == "roberta" else 0
        if family == "roberta":
            self.max_pos = max_pos + 2
        self.eps = 1e-12 if family != "roberta" else 1e-5
        self.labels = 3
        # Export variants (set by main from the command line; the defaults are the forms
        # transformers writes, and leave the exported graph byte for byte as before).
        self.scale = "div"        # div | mul | q-div | q-mul | qk-mul (BERT default div)
        self.gelu = "erf"         # erf | tanh | sigmoid
        self.linear = "matmul"    # matmul | gemm2d (Linear on flattened [B*S, H] activations)
        self.mask_fill = "min"    # min | -10000 | -inf (DistilBERT's Where form only)
        self.mask_dtype = "int64"  # int64 | bool


def min_value(t):
    return torch.finfo(t.dtype).min


def mask_fill(c, t):
    if c.mask_fill == "-10000":
        return -10000.0
    if c.mask_fill == "-inf":
        return -float("inf")
    return min_value(t)


def linear(c, layer, x):
    """layer(x), or with --linear gemm2d the same on the activations flattened to 2D (torch
    exports that as Reshape -> Gemm(transB=1) -> Reshape)."""
    if c.linear != "gemm2d":
        return layer(x)
    lead = x.size()[:-1]
    y = nn.functional.linear(x.reshape(-1, x.size(-1)), layer.weight, layer.bias)
    return y.view(lead + (layer.weight.size(0),))


def gelu(c, x):
    if c.gelu == "tanh":  # transformers' NewGELUActivation / gelu_new
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    if c.gelu == "sigmoid":  # QuickGELU
        return x * torch.sigmoid(1.702 * x)
    return nn.functional.gelu(x)  # exact (erf) GELU, as in BERT


def scores(c, q, kt, dh, default):
    """q @ kt scaled by 1/sqrt(dh) in the form `c.scale` names (`default` when unset)."""
    form = default if c.scale == "div" else c.scale
    if form == "q-div":
        return torch.matmul(q / math.sqrt(dh), kt)
    if form == "q-mul":
        return torch.matmul(q * (1.0 / math.sqrt(dh)), kt)
    if form == "qk-mul":  # torch's scaled_dot_product_attention decomposition
        r = math.sqrt(1.0 / math.sqrt(dh))
        return torch.matmul(q * r, kt * r)
    if form == "mul":
        return torch.matmul(q, kt) * (1.0 / math.sqrt(dh))
    return torch.matmul(q, kt) / math.sqrt(dh)


# ---- BERT / RoBERTa (transformers.models.bert / roberta) --------------------------
class BertEmbeddings(nn.Module):
    def __init__(self, c, roberta):
        super().__init__()
        self.roberta = roberta
        self.pad_id = c.pad_id
        self.word_embeddings = nn.Embedding(c.vocab, c.hidden, padding_idx=c.pad_id)
        self.position_embeddings = nn.Embedding(c.max_pos, c.hidden)
        self.token_type_embeddings = nn.Embedding(c.type_vocab, c.hidden)
        self.LayerNorm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.register_buffer("position_ids", torch.arange(c.max_pos).expand((1, -1)))
        self.register_buffer("token_type_ids", torch.zeros((1, c.max_pos), dtype=torch.long))

    def forward(self, input_ids, token_type_ids=None):
        seq = input_ids.size(1)
        if self.roberta:
            # create_position_ids_from_input_ids: padding tokens keep the padding index
            mask = input_ids.ne(self.pad_id).int()
            incremental = torch.cumsum(mask, dim=1).type_as(mask) * mask
            position_ids = incremental.long() + self.pad_id
        else:
            position_ids = self.position_ids[:, :seq]
        if token_type_ids is None:
            token_type_ids = self.token_type_ids[:, :seq].expand(input_ids.size(0), seq)
        e = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        e = e + self.position_embeddings(position_ids)
        return self.LayerNorm(e)


class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.heads, self.dh = c.heads, c.hidden // c.heads
        self.query = nn.Linear(c.hidden, c.hidden)
        self.key = nn.Linear(c.hidden, c.hidden)
        self.value = nn.Linear(c.hidden, c.hidden)

    def split(self, x):
        return x.view(x.size()[:-1] + (self.heads, self.dh)).permute(0, 2, 1, 3)

    def forward(self, h, ext_mask):
        c = self.c
        q = self.split(linear(c, self.query, h))
        k, v = self.split(linear(c, self.key, h)), self.split(linear(c, self.value, h))
        if c.scale == "div":
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.dh) + ext_mask
        else:
            s = scores(c, q, k.transpose(-1, -2), self.dh, "div") + ext_mask
        probs = nn.functional.softmax(s, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.size()[:-2] + (self.heads * self.dh,))


class BertSelfOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.dense = nn.Linear(c.hidden, c.hidden)
        self.LayerNorm = nn.LayerNorm(c.hidden, eps=c.eps)

    def forward(self, h, inp):
        return self.LayerNorm(linear(self.c, self.dense, h) + inp)


class BertAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertSelfOutput(c)

    def forward(self, h, ext_mask):
        return self.output(self.self(h, ext_mask), h)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.dense = nn.Linear(c.hidden, c.inter)

    def forward(self, h):
        return gelu(self.c, linear(self.c, self.dense, h))


class BertOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.dense = nn.Linear(c.inter, c.hidden)
        self.LayerNorm = nn.LayerNorm(c.hidden, eps=c.eps)

    def forward(self, h, inp):
        return self.LayerNorm(linear(self.c, self.dense, h) + inp)


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, h, ext_mask):
        a = self.attention(h, ext_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c) for _ in range(c.layers)])

    def forward(self, h, ext_mask):
        for layer in self.layer:
            h = layer(h, ext_mask)
        return h


class BertPooler(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden, c.hidden)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))


class BertModel(nn.Module):
    def __init__(self, c, roberta=False):
        super().__init__()
        self.c = c
        self.embeddings = BertEmbeddings(c, roberta)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = self.embeddings(input_ids, token_type_ids)
        ext = attention_mask[:, None, None, :].to(dtype=h.dtype)
        ext = (1.0 - ext) * mask_fill(self.c, h)
        seq = self.encoder(h, ext)
        return seq, self.pooler(seq)


class BertForSequenceClassification(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bert = BertModel(c)
        self.classifier = nn.Linear(c.hidden, c.labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return (self.classifier(pooled),)


# ---- DistilBERT (transformers.models.distilbert) ------------------------------------
class DistilEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab, c.hidden, padding_idx=c.pad_id)
        self.position_embeddings = nn.Embedding(c.max_pos, c.hidden)
        self.LayerNorm = nn.LayerNorm(c.hidden, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(c.max_pos).expand((1, -1)))

    def forward(self, input_ids):
        pos = self.position_ids[:, : input_ids.size(1)]
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(pos))


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.n_heads, self.dim = c.heads, c.hidden
        self.q_lin = nn.Linear(c.hidden, c.hidden)
        self.k_lin = nn.Linear(c.hidden, c.hidden)
        self.v_lin = nn.Linear(c.hidden, c.hidden)
        self.out_lin = nn.Linear(c.hidden, c.hidden)

    def forward(self, x, mask):
        bs, q_len, dim = x.size()
        dh = self.dim // self.n_heads
        mask_reshp = (bs, 1, 1, q_len)

        def shape(t):
            return t.view(bs, -1, self.n_heads, dh).transpose(1, 2)

        def unshape(t):
            return t.transpose(1, 2).contiguous().view(bs, -1, self.n_heads * dh)

        c = self.c
        if c.scale == "div" and c.linear == "matmul":
            q = shape(self.q_lin(x)) / math.sqrt(dh)
            k, v = shape(self.k_lin(x)), shape(self.v_lin(x))
            s = torch.matmul(q, k.transpose(2, 3))
        else:
            q = shape(linear(c, self.q_lin, x))
            k, v = shape(linear(c, self.k_lin, x)), shape(linear(c, self.v_lin, x))
            s = scores(c, q, k.transpose(2, 3), dh, "q-div")
        if c.mask_dtype == "bool":
            m = (~mask).view(mask_reshp).expand_as(s)
        else:
            m = (mask == 0).view(mask_reshp).expand_as(s)
        s = s.masked_fill(m, torch.tensor(mask_fill(c, s)))
        w = nn.functional.softmax(s, dim=-1)
        return linear(c, self.out_lin, unshape(torch.matmul(w, v)))


class FFN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.lin1 = nn.Linear(c.hidden, c.inter)
        self.lin2 = nn.Linear(c.inter, c.hidden)

    def forward(self, x):
        c = self.c
        return linear(c, self.lin2, gelu(c, linear(c, self.lin1, x)))


class TransformerBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = MultiHeadSelfAttention(c)
        self.sa_layer_norm = nn.LayerNorm(c.hidden, eps=1e-12)
        self.ffn = FFN(c)
        self.output_layer_norm = nn.LayerNorm(c.hidden, eps=1e-12)

    def forward(self, x, mask):
        sa = self.sa_layer_norm(self.attention(x, mask) + x)
        return self.output_layer_norm(self.ffn(sa) + sa)


class DistilBertModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = DistilEmbeddings(c)
        self.layer = nn.ModuleList([TransformerBlock(c) for _ in range(c.layers)])

    def forward(self, input_ids, attention_mask):
        h = self.embeddings(input_ids)
        for layer in self.layer:
            h = layer(h, attention_mask)
        return (h,)


class DistilBertForSequenceClassification(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.distilbert = DistilBertModel(c)
        self.pre_classifier = nn.Linear(c.hidden, c.hidden)
        self.classifier = nn.Linear(c.hidden, c.labels)

    def forward(self, input_ids, attention_mask):
        h = self.distilbert(input_ids, attention_mask)[0][:, 0]
        return (self.classifier(nn.functional.relu(self.pre_classifier(h))),)


# ---- weights, pruning, export ---------------------------------------------------------
def randomize(model, seed):
    """Seeded random weights; LayerNorm weights random too (not ones)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight") or "layer_norm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def encoder_linears(model):
    """The Linear layers pruning applies to: encoder layers only (no embeddings,
    pooler or classifier)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and (".layer." in name or name.startswith("layer.") or
                                         "encoder.layer" in name or "distilbert.layer" in name):
            yield name, m


def prune_blocks(w, block, sparsity):
    """Magnitude block pruning on a torch weight [out, in] (= W^T of the ONNX MatMul
    initializer). block "4x1": 4 consecutive output features x 1 input feature; "1x4":
    1 output feature x 4 consecutive input features; "1x1". Exactly round(S x blocks)
    blocks with the lowest L2 norm are zeroed, ties broken by the lower block index."""
    bo, bi = {"4x1": (4, 1), "1x4": (1, 4), "1x1": (1, 1)}[block]
    n, k = w.shape
    nb_r, nb_c = -(-n // bo), -(-k // bi)
    padded = np.zeros((nb_r * bo, nb_c * bi))
    padded[:n, :k] = w
    norms = (padded.reshape(nb_r, bo, nb_c, bi) ** 2).sum(axis=(1, 3)).reshape(-1)
    drop = int(round(sparsity * norms.size))
    order = np.lexsort((np.arange(norms.size), norms))[:drop]
    keep = np.ones(norms.size, dtype=bool)
    keep[order] = False
    mask = np.repeat(np.repeat(keep.reshape(nb_r, nb_c), bo, axis=0), bi, axis=1)[:n, :k]
    return w * mask


def build(family, size, head, seed):
    c = Config(size, family)
    if family == "bert":
        m = BertForSequenceClassification(c) if head else BertModel(c)
    elif family == "roberta":
        if head:
            sys.exit("make_models: --head is implemented for bert and distilbert")
        m = BertModel(c, roberta=True)
    else:
        m = DistilBertForSequenceClassification(c) if head else DistilBertModel(c)
    randomize(m, seed)
    return m.eval(), c


def make_inputs(family, c, batch, seq, seed, left_pad=False, mask_dtype="int64"):
    rng = np.random.default_rng(seed + 1)
    ids = rng.integers(3, c.vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(1, batch):  # padding, a different length per row
        valid = max(1, seq - 2 * b - 1)
        if left_pad:
            mask[b, :seq - valid] = 0
            ids[b, :seq - valid] = c.pad_id
        else:
            mask[b, valid:] = 0
            ids[b, valid:] = c.pad_id
    inputs = {"input_ids": ids, "attention_mask": mask.astype(bool) if mask_dtype == "bool" else mask}
    if family == "bert":
        tt = np.zeros((batch, seq), dtype=np.int64)
        tt[:, seq // 2:] = 1
        inputs["token_type_ids"] = tt
    return inputs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["bert", "distilbert", "roberta"], default="bert")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--head", action="store_true", help="sequence-classification head")
    ap.add_argument("--opset", type=int, default=14)
    ap.add_argument("--prune", type=float, default=None, help="sparsity in [0, 1)")
    ap.add_argument("--block", choices=["4x1", "1x4", "1x1"], default="4x1")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=11)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--left-pad", action="store_true", help="pad on the left (position ids are then not arange)")
    ap.add_argument("--no-reference", action="store_true", help="skip the float64 reference")
    # Export variants (issue 10): the same model as another exporter setting writes it.
    ap.add_argument("--fresh-layernorm", action="store_true",
                    help="LayerNorm weights 1 and biases 0, as freshly initialized (torch then shares "
                         "equal initializers through Identity nodes)")
    ap.add_argument("--no-constant-folding", action="store_true",
                    help="export with do_constant_folding=False (weights reach MatMul through Transpose)")
    ap.add_argument("--attention-scale", choices=["div", "mul", "q-div", "q-mul", "qk-mul"], default="div",
                    help="how 1/sqrt(d) is applied: scores divided (BERT's default; DistilBERT's default "
                         "q-div divides Q), scores multiplied, Q divided or multiplied, or Q and K^T each "
                         "multiplied by d^-1/4 (torch's scaled_dot_product_attention)")
    ap.add_argument("--gelu", choices=["erf", "tanh", "sigmoid"], default="erf",
                    help="GELU form: exact erf, tanh approximation (gelu_new), x * sigmoid(1.702 x)")
    ap.add_argument("--linear", choices=["matmul", "gemm2d"], default="matmul",
                    help="gemm2d: encoder Linear layers on activations flattened to [B*S, H] (Gemm)")
    ap.add_argument("--mask-fill", choices=["min", "-10000", "-inf"], default="min",
                    help="value for masked scores: float32 min (transformers today), -10000 (older "
                         "BERT exports), -inf (older DistilBERT; Where form only)")
    ap.add_argument("--mask-dtype", choices=["int64", "bool"], default="int64",
                    help="attention_mask input type")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.mask_fill == "-inf" and a.family != "distilbert":
        sys.exit("make_models: --mask-fill -inf is DistilBERT's Where form only (an additive -inf mask "
                 "is NaN where the mask is 1)")
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    model, c = build(a.family, a.size, a.head, a.seed)
    c.scale, c.gelu, c.linear = a.attention_scale, a.gelu, a.linear
    c.mask_fill, c.mask_dtype = a.mask_fill, a.mask_dtype
    if a.fresh_layernorm:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "LayerNorm" in name or "layer_norm" in name:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
    if a.prune is not None:
        with torch.no_grad():
            for _, lin in encoder_linears(model):
                w = prune_blocks(lin.weight.double().numpy(), a.block, a.prune)
                lin.weight.copy_(torch.from_numpy(w).to(lin.weight.dtype))
    inputs = make_inputs(a.family, c, a.batch, a.seq, a.seed, a.left_pad, a.mask_dtype)
    names = list(inputs)
    if a.family == "distilbert":
        outputs = ["logits"] if a.head else ["last_hidden_state"]
    else:
        outputs = ["logits"] if a.head else ["last_hidden_state", "pooler_output"]
    dyn = {n: {0: "batch", 1: "sequence"} for n in names}
    dyn.update({o: {0: "batch"} if o in ("logits", "pooler_output") else {0: "batch", 1: "sequence"}
                for o in outputs})
    args = tuple(torch.from_numpy(inputs[n]) for n in names)
    path = os.path.join(a.out, "model.onnx")
    torch.onnx.export(model, args, path, input_names=names, output_names=outputs,
                      dynamic_axes=dyn, opset_version=a.opset,
                      do_constant_folding=not a.no_constant_folding)
    for n, v in inputs.items():
        np.save(os.path.join(a.out, f"input_{n}.npy"), v)
    if not a.no_reference:
        with torch.no_grad():
            ref = model.double()(*args)
        for o, t in zip(outputs, ref):
            np.save(os.path.join(a.out, f"ref_{o}.npy"), t.numpy())
    manifest = {"family": a.family, "size": a.size, "head": a.head, "opset": a.opset,
                "prune": a.prune, "block": a.block, "batch": a.batch, "seq": a.seq,
                "seed": a.seed, "left_pad": a.left_pad, "inputs": names, "outputs": outputs,
                "vocab": c.vocab, "max_positions": c.max_pos}
    if a.fresh_layernorm:
        manifest["fresh_layernorm"] = True
    if a.no_constant_folding:
        manifest["constant_folding"] = False
    for k, default in (("attention_scale", "div"), ("gelu", "erf"), ("linear", "matmul"),
                       ("mask_fill", "min"), ("mask_dtype", "int64")):
        if getattr(a, k) != default:
            manifest[k] = getattr(a, k)
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"make_models: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
