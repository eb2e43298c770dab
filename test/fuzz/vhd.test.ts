/**
 * Fuzzing the VHD parsers and layer: 20,400 mutated images (footers, dynamic headers, BATs,
 * parent locators; bit flips, forged offsets and lengths, truncation, extension), seeded so any
 * failure reproduces, through readVhdInfo / openVhd (+ reads and a write) / checkVhd on
 * MemoryDevice storage. Every failure must be a MedvError, and every case finishes in bounded time.
 */
import assert from 'node:assert/strict';
import type { BlockDevice } from '../../src/block/device.js';
import { defaultCapabilities } from '../../src/block/device.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { MedvError } from '../../src/core/errors.js';
import { vhdChecksum } from '../../src/formats/vhd/index.js';
import { checkVhd, createDifferencingVhd, createVhd, openVhd, readVhdInfo } from '../../src/layers/vhd/index.js';
import { prng } from '../conformance/blockdevice.js';

/** A read-only parent of any size that reads zeros (no memory behind it). */
class ZeroDevice implements BlockDevice {
  readonly readOnly = true;
  readonly capabilities = defaultCapabilities();
  readonly description = 'zeros';
  constructor(readonly size: number) {}
  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || offset + length > this.size) throw new MedvError('ERANGE', 'past end', { file: 'zeros', offset });
    return Buffer.alloc(length);
  }
  async write(): Promise<void> { throw new MedvError('EREADONLY', 'read-only'); }
  async flush(): Promise<void> {}
  async discard(): Promise<void> { throw new MedvError('EREADONLY', 'read-only'); }
  async writeZeroes(): Promise<void> { throw new MedvError('EREADONLY', 'read-only'); }
  async close(): Promise<void> {}
}

interface Seed { name: string; image: Buffer; headerAt?: number; batAt?: number; batLen?: number; locAt?: number }

async function seeds(): Promise<Seed[]> {
  const out: Seed[] = [];
  {
    const s = new MemoryDevice(0);
    await createVhd(s, { type: 'dynamic', size: 256 * 1024, blockSize: 4096 });
    const d = await openVhd(s);
    for (const o of [0, 8192, 100000, 200704]) await d.write(o, Buffer.alloc(3000, o & 0xff));
    await d.close();
    out.push({ name: 'dynamic', image: s.snapshot(), headerAt: 512, batAt: 1536, batLen: 512 });
  }
  {
    const s = new MemoryDevice(0);
    await createDifferencingVhd(s, { size: 256 * 1024, uniqueId: Buffer.alloc(16, 3), blockSize: 8192, relativePath: '.\\p.vhd', absolutePath: 'C:\\x\\p.vhd' });
    const d = await openVhd(s, { parent: new ZeroDevice(256 * 1024) });
    for (const o of [512, 9000, 65536, 130000]) await d.write(o, Buffer.alloc(2500, 1 + (o & 0x7f)));
    await d.close();
    out.push({ name: 'differencing', image: s.snapshot(), headerAt: 512, locAt: 1536, batAt: 2560, batLen: 512 });
  }
  {
    const s = new MemoryDevice(0);
    await createVhd(s, { type: 'fixed', size: 40000 });
    out.push({ name: 'fixed', image: s.snapshot() });
  }
  return out;
}

const INTERESTING = [0, 1, 511, 512, 513, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const INTERESTING64 = [0n, 1n, 512n, 1535n, 1536n, 0x7fffffffffffffffn, 0xffffffffffffffffn, 1n << 41n, 1n << 53n];

function fixChecksums(img: Buffer, seed: Seed): void {
  for (const at of seed.headerAt !== undefined ? [0, img.length - 512] : [img.length - 512]) {
    if (at < 0 || at + 512 > img.length) continue;
    img.writeUInt32BE(vhdChecksum(img.subarray(at, at + 512), 64), at + 64);
  }
  if (seed.headerAt !== undefined && img.length >= seed.headerAt + 1024) {
    const h = img.subarray(seed.headerAt, seed.headerAt + 1024);
    h.writeUInt32BE(vhdChecksum(h, 36), 36);
  }
}

function mutate(seed: Seed, rnd: () => number): Buffer {
  const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)];
  const img = Buffer.from(seed.image);
  const footerAt = img.length - 512;
  const regions: Array<[number, number]> = [[footerAt, 512]];
  if (seed.headerAt !== undefined) regions.push([0, 512], [seed.headerAt, 1024]);
  if (seed.batAt !== undefined) regions.push([seed.batAt, seed.batLen!]);
  if (seed.locAt !== undefined) regions.push([seed.locAt, 1024]);
  const n = 1 + Math.floor(rnd() * 4);
  let out = img;
  const put32 = (at: number, v: number): void => { if (at >= 0 && at + 4 <= out.length) out.writeUInt32BE(v >>> 0, at); };
  for (let i = 0; i < n; i++) {
    const kind = Math.floor(rnd() * 6);
    const [start, len] = pick(regions);
    if (kind <= 1) {                                     // bit flips
      const at = start + Math.floor(rnd() * len);
      if (at < out.length) out[at] ^= 1 << Math.floor(rnd() * 8);
    } else if (kind === 2) {                             // forged 32-bit field
      const at = start + Math.floor(rnd() * (len / 4)) * 4;
      put32(at, rnd() < 0.6 ? pick(INTERESTING) : Math.floor(rnd() * 2 ** 32));
    } else if (kind === 3) {                             // forged 64-bit offset/size fields
      const fields = start === footerAt || start === 0 ? [16, 40, 48] : start === seed.headerAt ? [8, 16, 576 + 16, 600 + 16] : [0];
      const at = start + pick(fields);
      if (at >= 0 && at + 8 <= out.length) out.writeBigUInt64BE(rnd() < 0.5 ? pick(INTERESTING64) : BigInt(Math.floor(rnd() * out.length * 2)), at);
    } else if (kind === 4) {                             // forged header fields: entries, block size, geometry, type
      const targets = seed.headerAt !== undefined
        ? [[seed.headerAt + 28, 4], [seed.headerAt + 32, 4], [footerAt + 56, 4], [footerAt + 60, 4], [seed.headerAt + 576 + 4, 4], [seed.headerAt + 576 + 8, 4]]
        : [[footerAt + 56, 4], [footerAt + 60, 4], [footerAt + 48, 4]];
      const [at] = pick(targets);
      put32(at, rnd() < 0.5 ? pick(INTERESTING) : Math.floor(rnd() * 2 ** 32));
    } else {                                             // truncate or extend
      if (rnd() < 0.7) out = out.subarray(0, Math.floor(rnd() * out.length));
      else out = Buffer.concat([out, Buffer.alloc(Math.floor(rnd() * 5000), Math.floor(rnd() * 256))]);
    }
  }
  if (rnd() < 0.7) fixChecksums(out, seed);              // get past the checksums most of the time
  return out;
}

async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, rej) => { timer = setTimeout(() => rej(new Error(`case took more than ${ms} ms: ${what}`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs one mutated image through every reader; returns whether disk check passed it. */
async function runCase(img: Buffer, rnd: () => number): Promise<boolean> {
  const only = async (f: () => Promise<unknown>): Promise<void> => {
    try { await f(); } catch (e) { if (!(e instanceof MedvError)) throw e; }
  };
  await only(() => readVhdInfo(MemoryDevice.from(img), 'fuzz.vhd'));
  await only(async () => {
    const dev = await openVhd(MemoryDevice.from(img), { name: 'fuzz.vhd', openParent: async (info) => { void info; return new ZeroDevice(0); } });
    await dev.close();
  });
  await only(async () => {
    const storage = MemoryDevice.from(img);
    const dev = await openVhd(storage, { name: 'fuzz.vhd', openParent: async () => new ZeroDevice(await sizeOf(img)) });
    try {
      for (let i = 0; i < 3; i++) {
        const off = Math.floor(rnd() * dev.size);
        await dev.read(off, Math.min(dev.size - off, 1 + Math.floor(rnd() * 20000)));
      }
      if ((dev.info.blockSize ?? 0) <= 1024 * 1024) {
        const off = Math.floor(rnd() * Math.max(1, dev.size - 3000));
        await dev.write(off, Buffer.alloc(Math.min(3000, dev.size - off), 0x99));
      }
      await dev.allocatedRanges();
    } finally {
      await dev.close();
    }
  });
  // check's verdict must agree with what a reader sees: a disk that check passes opens and every
  // byte it stores reads back; one that does not open is never passed.
  const chk = await checkVhd(MemoryDevice.from(img), 'fuzz.vhd');
  let opens = true;
  try {
    const dev = await openVhd(MemoryDevice.from(img), { name: 'fuzz.vhd', readOnly: true, openParent: async () => new ZeroDevice(await sizeOf(img)) });
    try {
      for (const r of await dev.allocatedRanges()) await dev.read(r.offset, Math.min(r.length, 1 << 20));
    } finally {
      await dev.close();
    }
  } catch (e) {
    if (!(e instanceof MedvError)) throw e;
    opens = false;
  }
  if (chk.ok) assert.ok(opens, `disk check passed an image that does not open: ${chk.warnings.join('; ')}`);
  return chk.ok;
}

/** The virtual size of a (possibly damaged) image, for the zero parent. */
async function sizeOf(img: Buffer): Promise<number> {
  return (await readVhdInfo(MemoryDevice.from(img))).virtualSize;
}

describe('fuzz: VHD metadata', function () {
  this.timeout(180_000);
  it('20,000 mutated images raise only MedvError, each in bounded time', async () => {
    const all = await seeds();
    const rnd = prng(20261124);
    const cases = 20400;
    const opened = { ok: 0, failed: 0 };
    let passedCheck = 0;
    const codes = new Set<string>();
    for (let i = 0; i < cases; i++) {
      const seed = all[i % all.length];
      const img = mutate(seed, rnd);
      const what = `case ${i} (${seed.name}, seed 20261124)`;
      if (await withDeadline(runCase(img, rnd).catch((e) => { throw new Error(`${what}: ${e instanceof Error ? e.stack : String(e)}`); }), 2000, what)) passedCheck++;
      try { await readVhdInfo(MemoryDevice.from(img)); opened.ok++; } catch (e) { opened.failed++; codes.add((e as MedvError).code); }
    }
    // The mutations must reach past the first checks a fair share of the time, and trip many different ones.
    assert.ok(opened.ok > 1000, `only ${opened.ok} of ${cases} mutated images parsed`);
    assert.ok(passedCheck > 100, `only ${passedCheck} of ${cases} mutated images passed disk check`);
    for (const c of ['EFORMAT', 'ECHECKSUM', 'ETRUNCATED', 'ECORRUPT']) assert.ok(codes.has(c), `no mutated image gave ${c} (saw ${[...codes].join(', ')})`);
  });
});
