// ONNX Runtime (npm's onnxruntime-node) on given inputs, for accuracy checks against sparq:
//   node ort_run.js MODEL.onnx OUTDIR THREADS SPIN(0|1) ITERATIONS NAME=FILE.npy [NAME=FILE.npy ...]
// Runs MODEL on the .npy inputs (int64, int32, bool or float32, C order), writes
// OUTDIR/<output>.npy (float32 outputs as float32, others as their dtype), then times
// ITERATIONS more runs on the same inputs (3 warm-up runs first; ITERATIONS 0: no timing).
// Graph optimizations on, one inter-op thread, intra-op spinning on or off.
// Prints {"threads","spin","p50","p90","iterations"} (ms).
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const kNpyTypes = {
  '<i8': ['int64', BigInt64Array], '<i4': ['int32', Int32Array], '|b1': ['bool', Uint8Array],
  '<f4': ['float32', Float32Array], '|u1': ['uint8', Uint8Array], '|i1': ['int8', Int8Array],
};

function readNpy(file) {
  const b = fs.readFileSync(file);
  if (b.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = b[6];
  const hlen = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = b.toString('latin1', start, start + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: Fortran order`);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').filter((s) => s.trim()).map(Number);
  if (!kNpyTypes[descr]) throw new Error(`${file}: dtype ${descr}`);
  const [type, Ctor] = kNpyTypes[descr];
  const bytes = b.subarray(start + hlen);
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  return new ort.Tensor(type, new Ctor(copy.buffer, 0, bytes.length / Ctor.BYTES_PER_ELEMENT), shape);
}

function writeNpy(file, tensor) {
  const descr = Object.keys(kNpyTypes).find((k) => kNpyTypes[k][0] === tensor.type);
  if (!descr) throw new Error(`output type ${tensor.type}`);
  const dims = tensor.dims.length === 1 ? `${tensor.dims[0]},` : tensor.dims.join(', ');
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const d = tensor.data;
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'),
    Buffer.from(d.buffer, d.byteOffset, d.byteLength)]));
}

async function main() {
  const [model, outdir] = [process.argv[2], process.argv[3]];
  const [threads, spin, iterations] = [+process.argv[4], process.argv[5] !== '0', +process.argv[6]];
  const feeds = {};
  for (const a of process.argv.slice(7)) {
    const eq = a.indexOf('=');
    feeds[a.slice(0, eq)] = readNpy(a.slice(eq + 1));
  }
  const s = await ort.InferenceSession.create(model, {
    graphOptimizationLevel: 'all', intraOpNumThreads: threads, interOpNumThreads: 1,
    extra: { session: { intra_op: { allow_spinning: spin ? '1' : '0' } } } });
  const out = await s.run(feeds);
  fs.mkdirSync(outdir, { recursive: true });
  for (const n of s.outputNames) writeNpy(path.join(outdir, n + '.npy'), out[n]);
  const t = [];
  if (iterations > 0) {
    for (let i = 0; i < 3; ++i) await s.run(feeds);
    for (let i = 0; i < iterations; ++i) {
      const t0 = process.hrtime.bigint();
      await s.run(feeds);
      t.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  t.sort((a, b) => a - b);
  const pct = (p) => (t.length ? t[Math.min(t.length - 1, Math.ceil(p / 100 * t.length) - 1)] : null);
  console.log(JSON.stringify({ threads, spin, p50: pct(50), p90: pct(90), iterations }));
}
main().catch((e) => { console.error(e.message); process.exit(1); });
