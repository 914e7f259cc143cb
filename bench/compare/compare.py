#!/usr/bin/python3
"""The peer benchmark: sparq against ONNX Runtime and PyTorch on the same models, the
same shapes and the same threads, measured side by side in one run.

    bench/compare/run.sh [options]          (installs what it needs, builds, then runs this)
    /usr/bin/python3 bench/compare/compare.py [--models bert-mini,distilbert,bert-base,bert-large]
        [--sparsities 0,0.7,0.8,0.9] [--blocks 4x1,1x4,1x1] [--threads 1,2] [--long-seq 384]
        [--budget-s 2]
        [--sparq build/release/sparq] [--work out/compare] [--out bench/results]

For every model (seeded random weights from tools/make_models.py), sparsity and block
pattern (magnitude block pruning of the encoder's Linear layers in 4x1, 1x4 or 1x1 blocks,
--blocks, default 4x1; 0 = the dense model, measured once), batch 1, seq 128
(and --long-seq for BERT-base and BERT-large), each thread count:
  * sparq fp32 and int8 (`sparq bench --json`; the break-even table picks sparse or dense);
  * ONNX Runtime fp32 and dynamic int8 (npm's onnxruntime-node in bench/peers, graph
    optimizations on, the better of intra-op spinning on and off; int8 through
    bench/peers/ort_dynamic_int8.py, MatMulInteger with per-column int8 weights);
  * PyTorch fp32 and dynamic int8 (Debian's python3-torch on Debian's OpenBLAS,
    torch.ao.quantization.quantize_dynamic on every Linear, the onednn engine,
    torch.set_num_threads, inference mode).
Writes <out>/<date>-<cpu>.md (table: p50 and p90 per engine, speedups of sparq over each
peer, and sparq int8 against ONNX Runtime's dynamic int8 on the dense model), <date>-<cpu>.json (every measurement) and PNG plots (python3-matplotlib): latency
against sparsity per model, and sparq's speedup over ONNX Runtime. A peer that cannot be
installed or run is skipped and the report says so; nothing is estimated or filled in.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

MODELS = {  # name: (make_models family, size, label)
    "bert-mini": ("bert", "bert-mini", "BERT-Mini (4 layers, hidden 256)"),
    "distilbert": ("distilbert", "distilbert", "DistilBERT (6 layers, hidden 768)"),
    "bert-base": ("bert", "bert-base", "BERT-base (12 layers, hidden 768)"),
    "bert-large": ("bert", "bert-large", "BERT-large (24 layers, hidden 1024)"),
}
ENGINES = [("sparq", "int8"), ("sparq", "fp32"), ("onnxruntime", "int8"), ("onnxruntime", "fp32"),
           ("pytorch", "int8"), ("pytorch", "fp32")]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def iterations_for(probe_ms, budget_s):
    return int(max(5, min(100, budget_s * 1000.0 / max(probe_ms, 1e-3))))


class Peers:
    """Which peers can run here, and why not when they cannot."""

    def __init__(self, work):
        self.notes = []
        self.node = shutil.which("node")
        self.ort = False
        if self.node and os.path.isdir(os.path.join(ROOT, "bench/peers/node_modules/onnxruntime-node")):
            self.ort = True
        elif not self.node:
            self.notes.append("ONNX Runtime skipped: node is not installed (apt-get install nodejs npm).")
        else:
            self.notes.append("ONNX Runtime skipped: bench/peers/node_modules is missing "
                              "(cd bench/peers && npm install --ignore-scripts) and npm could not install it.")
        try:
            import torch  # noqa: F401
            self.torch = True
        except Exception as e:  # noqa: BLE001
            self.torch = False
            self.notes.append(f"PyTorch skipped: import torch failed ({e}).")


def export_model(family, size, sparsity, block, work):
    """make_models.py export (ONNX, batch 1, dynamic axes), cached per (model, sparsity, block)."""
    tag = "" if sparsity == 0 or block == "4x1" else f"-{block}"
    d = os.path.join(work, f"{size}-{int(round(sparsity * 100))}{tag}")
    if not os.path.exists(os.path.join(d, "model.onnx")):
        cmd = [sys.executable, os.path.join(ROOT, "tools/make_models.py"), "--family", family, "--size", size,
               "--opset", "17", "--batch", "1", "--seq", "128", "--no-reference", "--out", d]
        if sparsity > 0:
            cmd += ["--prune", str(sparsity), "--block", block]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return d


def torch_model(family, size, sparsity, block):
    """The same module make_models.py exported (same seed, same pruning)."""
    import torch
    import make_models as mm
    model, c = mm.build(family, size, False, 0)
    if sparsity > 0:
        with torch.no_grad():
            for _, lin in mm.encoder_linears(model):
                w = mm.prune_blocks(lin.weight.double().numpy(), block, sparsity)
                lin.weight.copy_(torch.from_numpy(w).to(lin.weight.dtype))
    return model.float().eval(), c


def openblas_threads_setter():
    """openblas_set_num_threads from the libblas.so.3 torch links (Debian's OpenBLAS),
    or None (reference BLAS: single-threaded anyway)."""
    import ctypes
    for lib in ("libblas.so.3", "libopenblas.so.0"):
        try:
            f = getattr(ctypes.CDLL(lib), "openblas_set_num_threads")
            f.argtypes = [ctypes.c_int]
            return f
        except (OSError, AttributeError):
            continue
    return None


def bench_torch(model, family, vocab, seq, threads, budget_s):
    """PyTorch's best setting: torch.set_num_threads(threads), and OpenBLAS's own thread
    pool at 1 or `threads` (both run, the better counts: the two pools can fight)."""
    setter = openblas_threads_setter()
    best = None
    # (torch threads, OpenBLAS threads); with T > 1 also one torch thread, in case its
    # intra-op pool costs more than it gains on these shapes (the better counts).
    settings = [(threads, threads)]
    if threads > 1:
        settings = [(threads, 1), (threads, threads), (1, threads), (1, 1)] if setter else [(threads, 1), (1, 1)]
    for tt, blas in settings:
        if setter:
            setter(blas)
        r = bench_torch_once(model, family, vocab, seq, tt, budget_s)
        r["torch_threads"], r["blas_threads"] = tt, (blas if setter else None)
        if best is None or r["p50"] < best["p50"]:
            best = r
    return best


def bench_torch_once(model, family, vocab, seq, threads, budget_s):
    import torch
    torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    ids = torch.from_numpy(rng.integers(3, vocab, size=(1, seq), dtype=np.int64))
    mask = torch.ones((1, seq), dtype=torch.int64)
    args = (ids, mask, torch.zeros((1, seq), dtype=torch.int64)) if family == "bert" else (ids, mask)
    with torch.inference_mode():
        for _ in range(2):
            model(*args)
        t0 = time.perf_counter()
        model(*args)
        n = iterations_for((time.perf_counter() - t0) * 1e3, budget_s)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            model(*args)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"p50": statistics.median(times), "p90": times[min(len(times) - 1, int(np.ceil(0.9 * len(times))) - 1)],
            "iterations": n}


def bench_sparq(sparq, path, seq, threads, budget_s):
    def run(iters, warmup):
        out = subprocess.check_output([sparq, "bench", path, "--threads", str(threads), "--seq", str(seq),
                                       "--warmup", str(warmup), "--iterations", str(iters), "--json"],
                                      stderr=subprocess.DEVNULL)
        return json.loads(out)
    probe = run(3, 2)["latency_ms"]["p50"]
    n = iterations_for(probe, budget_s)
    d = run(n, 3)
    return {"p50": d["latency_ms"]["p50"], "p90": d["latency_ms"]["p90"], "iterations": n}


def bench_ort(model_path, seq, threads, budget_s):
    script = os.path.join(ROOT, "bench/peers/ort_bench.js")

    def run(spin, iters):
        out = subprocess.check_output(["node", script, model_path, str(threads), str(spin), str(seq), str(iters)],
                                      cwd=os.path.join(ROOT, "bench/peers"), stderr=subprocess.DEVNULL)
        return json.loads(out)
    probe = run(0, 2)["p50"]
    n = iterations_for(probe, budget_s)
    best = None
    for spin in ([0, 1] if threads > 1 else [0]):
        r = run(spin, n)
        if best is None or r["p50"] < best["p50"]:
            best = {"p50": r["p50"], "p90": r["p90"], "iterations": n, "spin": bool(spin)}
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="bert-mini,distilbert,bert-base,bert-large")
    ap.add_argument("--sparsities", default="0,0.7,0.8,0.9")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--blocks", default="4x1",
                    help="block patterns to prune in, comma-separated: 4x1 (Intel-style), 1x4 (Neural Magic's "
                         "4-block), 1x1 (unstructured); the dense model is measured once")
    ap.add_argument("--long-seq", type=int, default=384, help="also run BERT-base and BERT-large at this length (0: no)")
    ap.add_argument("--budget-s", type=float, default=2.0, help="about this much timing per measurement")
    ap.add_argument("--sparq", default=os.path.join(ROOT, "build/release/sparq"))
    ap.add_argument("--work", default=os.path.join(ROOT, "out/compare"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results"))
    a = ap.parse_args()
    models = [m for m in a.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            sys.exit(f"compare: unknown model '{m}' (one of {', '.join(MODELS)})")
    sparsities = [float(s) for s in a.sparsities.split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    blocks = [b for b in a.blocks.split(",") if b]
    for b in blocks:
        if b not in ("4x1", "1x4", "1x1"):
            sys.exit(f"compare: unknown block pattern '{b}' (4x1, 1x4 or 1x1)")
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    peers = Peers(a.work)
    if peers.torch:
        import torch
        if "onednn" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "onednn"
    rows = []
    started = time.time()
    for name in models:
        family, size, _ = MODELS[name]
        seqs = [128] + ([a.long_seq] if a.long_seq and name in ("bert-base", "bert-large") else [])
        for s, block in [(s, b) for s in sparsities for b in (blocks if s > 0 else ["dense"])]:
            log(f"{name} sparsity {s:.0%} {block}: export and convert")
            d = export_model(family, size, s, block, a.work)
            onnx = os.path.join(d, "model.onnx")
            sq = {}
            for p in ("fp32", "int8"):
                sq[p] = os.path.join(d, f"model-{p}.sparq")
                if not os.path.exists(sq[p]):
                    subprocess.run([a.sparq, "convert", onnx, "-o", sq[p], "--precision", p], check=True,
                                   stdout=subprocess.DEVNULL)
            ort_int8 = os.path.join(d, "model-ort-int8.onnx")
            if peers.ort and not os.path.exists(ort_int8):
                subprocess.run([sys.executable, os.path.join(ROOT, "bench/peers/ort_dynamic_int8.py"), onnx, ort_int8],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            tm = {}
            if peers.torch:
                import torch
                fp, c = torch_model(family, size, s, block)
                tm["fp32"] = fp
                tm["int8"] = torch.ao.quantization.quantize_dynamic(fp, {torch.nn.Linear}, dtype=torch.qint8)
                vocab = c.vocab
            for seq in seqs:
                for t in threads:
                    log(f"{name} {s:.0%} {block} seq {seq} threads {t}")
                    base = {"model": name, "sparsity": s, "block": block, "seq": seq, "threads": t}
                    for p in ("int8", "fp32"):
                        rows.append(dict(base, engine="sparq", precision=p, **bench_sparq(a.sparq, sq[p], seq, t, a.budget_s)))
                    if peers.ort:
                        for p, path in (("int8", ort_int8), ("fp32", onnx)):
                            try:
                                rows.append(dict(base, engine="onnxruntime", precision=p,
                                                 **bench_ort(path, seq, t, a.budget_s)))
                            except subprocess.CalledProcessError as e:
                                peers.notes.append(f"ONNX Runtime {p} failed on {name} seq {seq}: exit {e.returncode}")
                    if peers.torch:
                        for p in ("int8", "fp32"):
                            rows.append(dict(base, engine="pytorch", precision=p,
                                             **bench_torch(tm[p], family, vocab, seq, t, a.budget_s)))
    elapsed = time.time() - started
    stamp = datetime.date.today().isoformat()
    cpu = cpu_name()
    stem = os.path.join(a.out, f"{stamp}-{slug(cpu)}")
    meta = {"date": stamp, "cpu": cpu, "cores": os.cpu_count(), "command": " ".join(sys.argv),
            "elapsed_s": round(elapsed), "notes": peers.notes, "sparq_version":
            subprocess.check_output([a.sparq, "version"]).decode().strip()}
    with open(stem + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    write_markdown(stem, meta, rows, models, sparsities, threads, blocks)
    plot(stem, rows, models, threads, blocks)
    log(f"wrote {stem}.md, .json and plots in {elapsed / 60:.1f} min")


def lookup(rows, **k):
    for r in rows:
        if all(r.get(x) == y for x, y in k.items()):
            return r
    return None


def write_markdown(stem, meta, rows, models, sparsities, threads, blocks):
    L = [f"# sparq against ONNX Runtime and PyTorch: {meta['date']}, {meta['cpu']}", "",
         f"{meta['sparq_version']}; {meta['cores']} cores visible; batch 1; p50 (p90) latency in ms, all engines "
         f"measured in one run of `{meta['command']}` ({meta['elapsed_s'] / 60:.0f} min).",
         f"Sparsity: every encoder Linear pruned by magnitude in blocks of {', '.join(blocks)} "
         "(4x1: 4 output features x 1 input feature; 1x4: Neural Magic's 4-block; 1x1: unstructured; "
         "0% = the dense model). "
         "Speedup = peer p50 / sparq p50 at the same precision (int8 against the peers' dynamic int8, fp32 "
         "against fp32). ONNX Runtime: the better of spinning on and off. PyTorch: the best of torch.set_num_threads "
         "1 or T with OpenBLAS's own pool at 1 or T threads (the JSON records which).", ""]
    for n in meta["notes"]:
        L.append(f"- Note: {n}")
    if meta["notes"]:
        L.append("")
    for name in models:
        L.append(f"## {MODELS[name][2]}")
        L.append("")
        L.append("| seq | threads | sparsity | block | sparq int8 | sparq fp32 | ORT int8 | ORT fp32 | PyTorch int8 "
                 "| PyTorch fp32 | int8 vs ORT | int8 vs PyTorch | fp32 vs ORT | fp32 vs PyTorch | int8 vs ORT dense |")
        L.append("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        seqs = sorted({r["seq"] for r in rows if r["model"] == name})
        for seq in seqs:
            for t in threads:
                for s, block in [(s, b) for s in sparsities for b in (blocks if s > 0 else ["dense"])]:
                    k = dict(model=name, seq=seq, threads=t, sparsity=s, block=block)
                    cell = []
                    for e, p in ENGINES:
                        r = lookup(rows, engine=e, precision=p, **k)
                        cell.append(f"{r['p50']:.2f} ({r['p90']:.2f})" if r else "—")

                    def sp(peer, p):
                        a_, b_ = lookup(rows, engine="sparq", precision=p, **k), lookup(rows, engine=peer, precision=p, **k)
                        return f"{b_['p50'] / a_['p50']:.2f}x" if a_ and b_ else "—"
                    # Against ONNX Runtime's dynamic int8 on the dense model (issue 11's targets).
                    a_ = lookup(rows, engine="sparq", precision="int8", **k)
                    d_ = lookup(rows, engine="onnxruntime", precision="int8", model=name, seq=seq, threads=t,
                                sparsity=0.0, block="dense")
                    vs_dense = f"{d_['p50'] / a_['p50']:.2f}x" if a_ and d_ else "—"
                    L.append(f"| {seq} | {t} | {s:.0%} | {block} | " + " | ".join(cell) + " | " +
                             " | ".join([sp("onnxruntime", "int8"), sp("pytorch", "int8"), sp("onnxruntime", "fp32"),
                                         sp("pytorch", "fp32"), vs_dense]) + " |")
        L.append("")
        L.append(f"![latency]({os.path.basename(stem)}-{name}-latency.png)")
        L.append("")
    L.append(f"![speedup over ONNX Runtime]({os.path.basename(stem)}-speedup-ort.png)")
    L.append("")
    with open(stem + ".md", "w") as f:
        f.write("\n".join(L))


def plot(stem, rows, models, threads, blocks):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        log(f"no plots: matplotlib unavailable ({e})")
        return
    styles = {("sparq", "int8"): ("tab:red", "-"), ("sparq", "fp32"): ("tab:red", "--"),
              ("onnxruntime", "int8"): ("tab:blue", "-"), ("onnxruntime", "fp32"): ("tab:blue", "--"),
              ("pytorch", "int8"): ("tab:green", "-"), ("pytorch", "fp32"): ("tab:green", "--")}
    for name in models:
        fig, axes = plt.subplots(1, len(threads), figsize=(5.5 * len(threads), 4), squeeze=False)
        for ax, t in zip(axes[0], threads):
            markers = {"4x1": "o", "1x4": "s", "1x1": "^"}
            for (e, p), (color, ls) in styles.items():
                for b in blocks:  # each pattern's curve starts at the dense model
                    pts = sorted((r["sparsity"], r["p50"]) for r in rows
                                 if r["model"] == name and r["seq"] == 128 and r["threads"] == t and r["engine"] == e
                                 and r["precision"] == p and r.get("block") in (b, "dense"))
                    if pts:
                        ax.plot([100 * x for x, _ in pts], [y for _, y in pts], color=color, linestyle=ls,
                                marker=markers[b], label=f"{e} {p}" + (f" {b}" if len(blocks) > 1 else ""))
            ax.set_yscale("log")
            ax.set_xlabel("sparsity (%)")
            ax.set_ylabel("p50 latency (ms), log scale")
            ax.set_title(f"{MODELS[name][2]}, seq 128, {t} thread{'s' if t > 1 else ''}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(f"{stem}-{name}-latency.png", dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, p in zip(axes, ("int8", "fp32")):
        for name in models:
            for t, ls in zip(threads, ("-", "--", ":")):
                for b in blocks:
                    pts = []
                    for r in rows:
                        if (r["model"] == name and r["seq"] == 128 and r["threads"] == t and r["engine"] == "sparq"
                                and r["precision"] == p and r.get("block") in (b, "dense")):
                            o = lookup(rows, model=name, seq=128, threads=t, sparsity=r["sparsity"],
                                       block=r["block"], engine="onnxruntime", precision=p)
                            if o:
                                pts.append((r["sparsity"], o["p50"] / r["p50"]))
                    pts.sort()
                    if pts:
                        ax.plot([100 * x for x, _ in pts], [y for _, y in pts], linestyle=ls, marker="o",
                                label=f"{name}, {t}T" + (f", {b}" if len(blocks) > 1 else ""))
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("ONNX Runtime p50 / sparq p50")
        ax.set_title(f"sparq {p} speedup over ONNX Runtime {p}, seq 128", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{stem}-speedup-ort.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
