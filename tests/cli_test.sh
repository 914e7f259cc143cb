#!/usr/bin/env bash
# End-to-end tests of `sparq convert | run | inspect | bench` on a generated model, and
# of the bad-input contract: one "sparq: error:" line on stderr, exit 1 (2 for usage),
# no crash and nothing written.
# Usage: cli_test.sh SPARQ_BINARY MODELS_DIR
set -u
sparq=$1
models=$2
py=/usr/bin/python3
m=$models/bert-14
if [ ! -f "$m/model.onnx" ]; then echo "cli_test: no models in $models; skipped"; exit 0; fi
work=$(mktemp -d /tmp/sparq_cli_XXXXXX)
trap 'rm -rf "$work"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

# expect_error NAME EXIT_CODE COMMAND...: the exit code, one stderr line "sparq: error:".
expect_error() {
  local name=$1 code=$2; shift 2
  "$@" >"$work/out.txt" 2>"$work/err.txt"
  local rc=$?
  local lines
  lines=$(grep -c . "$work/err.txt")
  if [ "$rc" -ne "$code" ]; then fail "$name: exit $rc, expected $code ($(head -c 300 "$work/err.txt"))"; return; fi
  if ! head -n 1 "$work/err.txt" | grep -q '^sparq: error: '; then fail "$name: stderr: $(head -c 300 "$work/err.txt")"; return; fi
  if [ "$code" -eq 1 ] && [ "$lines" -ne 1 ]; then fail "$name: $lines stderr lines"; return; fi
  pass "$name ($(head -n 1 "$work/err.txt" | cut -c1-110))"
}

compare() {  # compare OUTDIR REFDIR TOL_KIND
  $py - "$1" "$2" "$3" <<'PY'
import sys, glob, os, numpy as np
out, ref, kind = sys.argv[1:4]
for r in glob.glob(os.path.join(ref, "ref_*.npy")):
    name = os.path.basename(r)[4:]
    a, b = np.load(os.path.join(out, name)).astype(np.float64), np.load(r)
    assert a.dtype == np.float64 and np.load(os.path.join(out, name)).dtype == np.float32, "output is not float32"
    assert a.shape == b.shape, (a.shape, b.shape)
    if kind == "fp32":
        err = np.abs(a - b).max(); lim = 1e-3 * np.abs(b).max()
        cos = (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())
        assert err <= lim and cos >= 0.99999, (name, err, lim, cos)
    else:
        a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        cos = (a2 * b2).sum(1) / np.sqrt((a2 * a2).sum(1) * (b2 * b2).sum(1))
        assert cos.min() >= 0.99, (name, cos.min())
PY
}

ins="-i input_ids=$m/input_input_ids.npy -i attention_mask=$m/input_attention_mask.npy -i token_type_ids=$m/input_token_type_ids.npy"

# ---- the main path ----------------------------------------------------------------
for p in fp32 int8; do
  if "$sparq" convert "$m/model.onnx" -o "$work/$p.sparq" --precision $p >"$work/conv.txt" 2>"$work/conv.err" &&
     grep -q "weights packed ($p)" "$work/conv.txt" &&
     "$sparq" run "$work/$p.sparq" $ins -o "$work/out-$p" 2>/dev/null &&
     compare "$work/out-$p" "$m" $p; then
    pass "convert + run $p matches the float64 reference"
  else
    fail "convert + run $p"; cat "$work/conv.err"
  fi
done
if "$sparq" run "$work/fp32.sparq" -i input_ids=$m/input_input_ids.npy -o "$work/defaults" 2>/dev/null &&
   [ -f "$work/defaults/last_hidden_state.npy" ]; then pass "attention_mask and token_type_ids default"; else fail "defaults"; fi
$py -c "import numpy as np; np.save('$work/ids32.npy', np.load('$m/input_input_ids.npy').astype(np.int32))"
if "$sparq" run "$work/fp32.sparq" -i input_ids=$work/ids32.npy -o "$work/i32" 2>/dev/null; then pass "int32 ids accepted"; else fail "int32 ids"; fi
if "$sparq" convert "$m/model.onnx" -o "$work/pruned.sparq" --precision int8 --prune 0.9 2>/dev/null | grep -q "note: --prune" &&
   "$sparq" inspect "$work/pruned.sparq" | grep -q "sparse"; then pass "--prune 0.9 says so and runs sparse"; else fail "--prune"; fi
if "$sparq" convert "$m/model.onnx" -o "$work/t1.sparq" --precision int8 --prune 0.9 --threads 1 >/dev/null 2>&1 &&
   "$sparq" convert "$m/model.onnx" -o "$work/t2.sparq" --precision int8 --prune 0.9 --threads 2 >/dev/null 2>&1 &&
   cmp -s "$work/t1.sparq" "$work/t2.sparq" && cmp -s "$work/t1.sparq" "$work/pruned.sparq"; then
  pass "convert --threads 1 and 2 write the same file"
else fail "convert --threads"; fi
for b in 4x1 1x4 1x1; do
  if "$sparq" convert "$models/bert-pruned-4x1/model.onnx" -o "$work/b$b.sparq" --block $b >/dev/null 2>&1 &&
     "$sparq" run "$work/b$b.sparq" -i input_ids=$models/bert-pruned-4x1/input_input_ids.npy \
       -i attention_mask=$models/bert-pruned-4x1/input_attention_mask.npy \
       -i token_type_ids=$models/bert-pruned-4x1/input_token_type_ids.npy -o "$work/ob$b" 2>/dev/null &&
     compare "$work/ob$b" "$models/bert-pruned-4x1" fp32; then pass "explicit --block $b keeps every weight"; else fail "--block $b"; fi
done
if "$sparq" inspect "$work/fp32.sparq" --verify --json >"$work/insp.json" 2>"$work/insp.err" && [ ! -s "$work/insp.err" ] &&
   $py -c "
import json; d=json.load(open('$work/insp.json')); assert d['checksums_verified'] and d['weights']
p=d['plan']; assert p['batch']==1 and p['seq']==62 and p['steps']>0 and p['matmuls']>0
assert 0 < p['arena_bytes'] <= p['unshared_bytes'] and p['peak_bytes'] >= p['arena_bytes']"; then
  pass "inspect --verify --json"; else fail "inspect --json"; fi
# Fast-path report: the default convert is fused; --no-fuse warns (stderr) and
# --require-fused then refuses and writes nothing; inspect lists the pieces per cause.
if grep -q "^fast path: 13 matmuls packed, 2 attentions, 5 LayerNorms, 2 GELUs fused$" "$work/conv.txt" &&
   [ ! -s "$work/conv.err" ]; then pass "convert reports the fast path"; else fail "convert fast path line"; fi
if "$sparq" convert "$m/model.onnx" -o "$work/nofuse.sparq" --no-fuse >"$work/nf.txt" 2>"$work/nf.err" &&
   grep -q "^sparq: warning: 9 encoder pieces stay off the fast path" "$work/nf.err" &&
   grep -q "5 layernorm" "$work/nf.err" && grep -q "2 attention" "$work/nf.err" && grep -q "2 gelu" "$work/nf.err"; then
  pass "convert --no-fuse warns per cause"; else fail "convert --no-fuse warning: $(head -c 300 "$work/nf.err")"; fi
expect_error "convert --no-fuse --require-fused" 1 "$sparq" convert "$m/model.onnx" -o "$work/refused.sparq" --no-fuse --require-fused
if [ ! -e "$work/refused.sparq" ]; then pass "--require-fused writes nothing"; else fail "--require-fused left a file"; fi
if "$sparq" inspect "$work/nofuse.sparq" --json --seq 9 --batch 3 >"$work/nf.json" 2>/dev/null && $py -c "
import json; d=json.load(open('$work/nf.json'))
f=d['fast_path']; causes=[o['cause'] for o in f['not_fused']]
assert causes.count('layernorm')==5 and causes.count('attention')==2 and causes.count('gelu')==2, causes
p=d['plan']; assert p['batch']==3 and p['seq']==9 and p['op_by_op_steps']==len(p['op_by_op'])>0
assert all(s['node'] and s['op'] and s['reason'] for s in p['op_by_op'])
assert json.load(open('$work/insp.json'))['fast_path']['not_fused']==[]"; then
  pass "inspect --json: fast path per cause, plan for --batch/--seq"; else fail "inspect fast path json"; fi
# Inputs beyond ids: a bool attention_mask gets ones; inspect never fails on its plan.
bm=$models/bert-14-bool-mask
if [ -f "$bm/model.onnx" ] && "$sparq" convert "$bm/model.onnx" -o "$work/bm.sparq" >/dev/null 2>&1 &&
   "$sparq" inspect "$work/bm.sparq" >"$work/bm.txt" 2>&1 && grep -q "2 attentions fused" "$work/bm.txt" &&
   grep -q "input  attention_mask (bool)" "$work/bm.txt"; then
  pass "inspect a model with a bool mask"; else fail "inspect bool mask: $(head -c 300 "$work/bm.txt")"; fi
if "$sparq" bench "$work/int8.sparq" --seq 16 --batch 2 --warmup 1 --iterations 5 --json >"$work/b.json" 2>"$work/b.err" &&
   [ ! -s "$work/b.err" ] && $py -c "
import json; d=json.load(open('$work/b.json'))
assert d['batch']==2 and d['seq']==16 and d['iterations']==5 and set(d['latency_ms'])=={'p50','p90','p99','mean'} and d['throughput_seq_per_s']>0"; then
  pass "bench --json contract"; else fail "bench --json"; fi
if "$sparq" bench "$work/int8.sparq" --seq 16 --instances 2 --threads-per-instance 1 --warmup 1 --iterations 4 --json \
     >"$work/bi.json" 2>"$work/bi.err" && [ ! -s "$work/bi.err" ] && $py -c "
import json; d=json.load(open('$work/bi.json'))
assert d['instances']==2 and d['threads_per_instance']==1 and d['threads']==2 and d['throughput_seq_per_s']>0
assert d['latency_ms']['p50'] <= d['latency_ms']['p90'] <= d['latency_ms']['p99']"; then
  pass "bench --instances 2 --threads-per-instance 1"; else fail "bench --instances"; fi
# SPARQ_PROFILE: per-step times (1) or panel segments timed whole (segments, as a run
# without profiling executes); the outputs are the unprofiled run's, bit for bit.
if "$sparq" run "$work/int8.sparq" $ins -o "$work/prof0" --threads 2 2>/dev/null &&
   SPARQ_PROFILE=segments "$sparq" run "$work/int8.sparq" $ins -o "$work/prof2" --threads 2 2>/dev/null &&
   SPARQ_PROFILE=1 "$sparq" run "$work/int8.sparq" $ins -o "$work/prof1" --threads 2 2>/dev/null &&
   cmp -s "$work/prof0/last_hidden_state.npy" "$work/prof2/last_hidden_state.npy" &&
   cmp -s "$work/prof0/last_hidden_state.npy" "$work/prof1/last_hidden_state.npy" &&
   SPARQ_PROFILE=segments "$sparq" bench "$work/int8.sparq" --batch 2 --seq 64 --threads 2 --warmup 0 \
     --iterations 1 >/dev/null 2>"$work/prof.err" &&
   grep -q '^sparq: profile seg .* wall ' "$work/prof.err" &&
   grep -q '^sparq: profile seg .* slowest part ' "$work/prof.err" &&
   grep -q '^sparq: profile matmul int8 (all threads) ' "$work/prof.err" &&
   SPARQ_PROFILE=1 "$sparq" bench "$work/int8.sparq" --batch 2 --seq 64 --threads 2 --warmup 0 \
     --iterations 1 >/dev/null 2>"$work/prof1.err" &&
   grep -q '^sparq: profile matmul int8 ' "$work/prof1.err" && ! grep -q 'profile seg ' "$work/prof1.err"; then
  pass "SPARQ_PROFILE=1 and =segments: same outputs, their own keys"
else fail "SPARQ_PROFILE: $(head -c 300 "$work/prof.err" 2>/dev/null)"; fi
# Three panels of tokens (batch 3 x seq 60): the buffers that live inside one panel segment
# hold a panel per thread (one slot at 1 thread, two at 2); SPARQ_PROFILE=1 runs without
# segments on buffers of every panel. All of them give the same bytes.
$py -c "
import numpy as np
r = np.random.default_rng(7)
np.save('$work/ids3.npy', r.integers(0, 96, size=(3, 60)).astype(np.int64))
m = np.ones((3, 60), np.int64); m[2, 41:] = 0
np.save('$work/mask3.npy', m); np.save('$work/tt3.npy', np.zeros((3, 60), np.int64))"
ins3="-i input_ids=$work/ids3.npy -i attention_mask=$work/mask3.npy -i token_type_ids=$work/tt3.npy"
seg_ok=1
for p in int8 fp32; do
  for t in 1 2; do
    "$sparq" run "$work/$p.sparq" $ins3 -o "$work/seg-$p-$t" --threads $t >/dev/null 2>&1 &&
      SPARQ_PROFILE=1 "$sparq" run "$work/$p.sparq" $ins3 -o "$work/step-$p-$t" --threads $t >/dev/null 2>&1 &&
      cmp -s "$work/seg-$p-$t/last_hidden_state.npy" "$work/step-$p-$t/last_hidden_state.npy" &&
      cmp -s "$work/seg-$p-$t/pooler_output.npy" "$work/step-$p-$t/pooler_output.npy" || seg_ok=0
  done
  cmp -s "$work/seg-$p-1/last_hidden_state.npy" "$work/seg-$p-2/last_hidden_state.npy" || seg_ok=0
done
if [ $seg_ok = 1 ]; then pass "3 panels: segment-local buffers (1 and 2 threads) = buffers of every panel, bit for bit"
else fail "segment-local buffers"; fi
# A generous cap: some layout meets it, the best is reported at the top level with
# every candidate; an impossible cap reports met_cap false.
if "$sparq" bench "$work/int8.sparq" --seq 16 --latency-cap 10000 --warmup 1 --iterations 3 --json >"$work/bc.json" \
     2>"$work/bc.err" && [ ! -s "$work/bc.err" ] && $py -c "
import json; d=json.load(open('$work/bc.json'))
c=d['candidates']; assert d['met_cap'] and len(c) >= 4 and {x['batch'] for x in c} == {1,2,4,8}
assert d['throughput_seq_per_s'] == max(x['throughput_seq_per_s'] for x in c if x['latency_ms']['p90'] <= 10000)" &&
   "$sparq" bench "$work/int8.sparq" --seq 16 --latency-cap 0.000001 --warmup 0 --iterations 2 --json >"$work/bc0.json" &&
   $py -c "import json; d=json.load(open('$work/bc0.json')); assert not d['met_cap'] and 'latency_ms' not in d"; then
  pass "bench --latency-cap search"; else fail "bench --latency-cap"; fi

# ---- bad model files ----------------------------------------------------------------
: >"$work/empty.onnx"
head -c 5000 /dev/urandom >"$work/random.onnx"
head -c 3000 "$m/model.onnx" >"$work/cut.onnx"
$py -c "
import onnx; mp = onnx.load('$m/model.onnx')
n = [x for x in mp.graph.node if x.op_type == 'Erf'][0]; n.op_type = 'Selu'; onnx.save(mp, '$work/selu.onnx')"
expect_error "convert: missing file" 1 "$sparq" convert "$work/none.onnx" -o "$work/x.sparq"
expect_error "convert: empty file" 1 "$sparq" convert "$work/empty.onnx" -o "$work/x.sparq"
expect_error "convert: random bytes" 1 "$sparq" convert "$work/random.onnx" -o "$work/x.sparq"
expect_error "convert: truncated" 1 "$sparq" convert "$work/cut.onnx" -o "$work/x.sparq"
expect_error "convert: unsupported op" 1 "$sparq" convert "$work/selu.onnx" -o "$work/x.sparq"
grep -q "Selu" "$work/err.txt" && grep -q "node" "$work/err.txt" && pass "unsupported op error names op and node" || fail "op/node named"
expect_error "convert: unwritable output" 1 "$sparq" convert "$m/model.onnx" -o "$work/no/such/dir/x.sparq"
if ls "$work" | grep -q '^x.sparq'; then fail "a failed convert left a file"; else pass "failed converts left no file"; fi

: >"$work/empty.sparq"
head -c 4096 /dev/urandom >"$work/random.sparq"
size=$(stat -c %s "$work/fp32.sparq")
head -c $((size / 2)) "$work/fp32.sparq" >"$work/half.sparq"
cp "$work/fp32.sparq" "$work/flip.sparq"
printf '\x55' | dd of="$work/flip.sparq" bs=1 seek=140 conv=notrunc status=none
for f in empty random half flip; do
  expect_error "run: $f .sparq" 1 "$sparq" run "$work/$f.sparq" $ins -o "$work/o-$f"
  [ -e "$work/o-$f" ] && fail "run on $f .sparq created its output dir"
  expect_error "inspect: $f .sparq" 1 "$sparq" inspect "$work/$f.sparq"
done

# ---- bad inputs -----------------------------------------------------------------------
$py - "$m" "$work" <<'PY'
import sys, numpy as np
m, w = sys.argv[1:3]
ids = np.load(m + "/input_input_ids.npy"); mask = np.load(m + "/input_attention_mask.npy")
np.save(w + "/f32ids.npy", ids.astype(np.float32))
np.save(w + "/rank3.npy", ids[None])
np.save(w + "/shortmask.npy", mask[:, :-1])
big = ids.copy(); big[0, 3] = 1000000; np.save(w + "/oov.npy", big)
neg = ids.copy(); neg[1, 0] = -5; np.save(w + "/neg.npy", neg)
tt = np.full(ids.shape, 7, dtype=np.int64); np.save(w + "/tt7.npy", tt)
np.save(w + "/long.npy", np.full((1, 70), 5, dtype=np.int64))
with open(w + "/bad.npy", "wb") as f: f.write(b"\x93NUMPY\x01\x00garbage")
PY
expect_error "unknown input name" 1 "$sparq" run "$work/fp32.sparq" -i input_ids=$m/input_input_ids.npy -i bogus=$m/input_input_ids.npy -o "$work/o1"
expect_error "missing input_ids" 1 "$sparq" run "$work/fp32.sparq" -i attention_mask=$m/input_attention_mask.npy -o "$work/o2"
expect_error "float ids" 1 "$sparq" run "$work/fp32.sparq" -i input_ids=$work/f32ids.npy -o "$work/o3"
expect_error "rank-3 ids" 1 "$sparq" run "$work/fp32.sparq" -i input_ids=$work/rank3.npy -o "$work/o4"
expect_error "mask shape mismatch" 1 "$sparq" run "$work/fp32.sparq" -i input_ids=$m/input_input_ids.npy -i attention_mask=$work/shortmask.npy -o "$work/o5"
expect_error "id outside vocabulary" 1 "$sparq" run "$work/fp32.sparq" -i input_ids=$work/oov.npy -o "$work/o6"
expect_error "negative id" 1 "$sparq" run "$work/fp32.sparq" -i input_ids=$work/neg.npy -o "$work/o7"
expect_error "token type outside its vocabulary" 1 "$sparq" run "$work/fp32.sparq" -i input_ids=$m/input_input_ids.npy -i token_type_ids=$work/tt7.npy -o "$work/o8"
expect_error "sequence longer than the position table" 1 "$sparq" run "$work/fp32.sparq" -i input_ids=$work/long.npy -o "$work/o9"
expect_error "corrupt .npy" 1 "$sparq" run "$work/fp32.sparq" -i input_ids=$work/bad.npy -o "$work/o10"
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e "$work/o$i" ] && fail "bad input $i created its output dir"; done

# ---- usage errors (exit 2) --------------------------------------------------------------
expect_error "usage: convert without -o" 2 "$sparq" convert "$m/model.onnx"
expect_error "usage: bad precision" 2 "$sparq" convert "$m/model.onnx" -o "$work/y.sparq" --precision fp16
expect_error "usage: prune 1.0" 2 "$sparq" convert "$m/model.onnx" -o "$work/y.sparq" --prune 1.0
expect_error "run without inputs names the missing one" 1 "$sparq" run "$work/fp32.sparq" -o "$work/o11"
[ -e "$work/o11" ] && fail "run without inputs created its output dir"
expect_error "usage: malformed -i" 2 "$sparq" run "$work/fp32.sparq" -i input_ids -o "$work/o12"
expect_error "usage: bench bad seq" 2 "$sparq" bench "$work/fp32.sparq" --seq 0
expect_error "usage: bench threads and threads per instance" 2 "$sparq" bench "$work/fp32.sparq" --threads 2 --threads-per-instance 1
expect_error "usage: bench bad cap" 2 "$sparq" bench "$work/fp32.sparq" --latency-cap -1

# ---- ONNX node-test models: no graph inputs, outputs in their own dtype ---------------
node=/usr/share/libonnx-testdata/data/node
if [ -d "$node/test_constant" ]; then
  if "$sparq" convert "$node/test_constant/model.onnx" -o "$work/const.sparq" >/dev/null 2>"$work/err.txt" &&
     "$sparq" run "$work/const.sparq" -o "$work/oc" >/dev/null 2>"$work/err.txt" &&
     $py -c "import numpy as np, sys; from onnx import numpy_helper, TensorProto
t = TensorProto(); t.ParseFromString(open(sys.argv[1], 'rb').read())
assert np.array_equal(np.load(sys.argv[2]), numpy_helper.to_array(t))" \
       "$node/test_constant/test_data_set_0/output_0.pb" "$work/oc/values.npy"; then
    pass "a model without graph inputs runs without -i"
  else
    fail "a model without graph inputs: $(head -c 300 "$work/err.txt")"
  fi
  d=$node/test_cast_FLOAT_to_DOUBLE
  $py -c "import numpy as np, sys; from onnx import numpy_helper, TensorProto
t = TensorProto(); t.ParseFromString(open(sys.argv[1], 'rb').read()); np.save(sys.argv[2], numpy_helper.to_array(t))" \
    "$d/test_data_set_0/input_0.pb" "$work/cast_in.npy"
  if "$sparq" convert "$d/model.onnx" -o "$work/cast.sparq" >/dev/null 2>"$work/err.txt" &&
     "$sparq" run "$work/cast.sparq" -i input=$work/cast_in.npy -o "$work/ocast" >/dev/null 2>"$work/err.txt" &&
     $py -c "import numpy as np, sys; a = np.load(sys.argv[1]); assert a.dtype == np.float64, a.dtype" "$work/ocast/output.npy"; then
    pass "a float64 output is written as float64"
  else
    fail "float64 output: $(head -c 300 "$work/err.txt")"
  fi
fi

echo "cli_test: $fails failure(s)"
[ "$fails" -eq 0 ]
