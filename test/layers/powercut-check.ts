/**
 * Power-loss safety, model-checked. Each layer stack runs a seeded random workload (aligned and
 * unaligned writes, allocating and overwriting, concurrent batches, writeZeroes, FUA writes,
 * flushes) over a PowerCutDevice (test/helpers/powercut.ts: durable image + log of what is not
 * durable yet). Before a seeded random subset of the storage mutations and flushes, a power cut is
 * taken: the image the medium would hold, with an arbitrary subset of the pending writes, torn at
 * 512-byte sectors. The stack is reopened over every cut image and must:
 *   - pass checkVhd (leaked space is a warning, allowed);
 *   - read, for every virtual sector, the value it had at the last completed flush, or the value
 *     of a write issued since (old or new per sector; nothing else: no zeros, no garbage);
 *   - keep working: an allocating write and a flush after recovery read back and check clean.
 * Stacks: dynamic VHD; differencing VHD over a parent; EVHD with a dynamic VHD inside; an undo disk
 * (EVHD, differencing) over an encrypted parent; undo merge (parent and undo disk on two devices,
 * cut together); compaction into a new file, then that file in use.
 *
 * This module is the checker; powercut.test.ts runs it (spread over worker threads,
 * powercut-worker.ts), and says how to replay one seed.
 */
import assert from 'node:assert/strict';
import type { BlockDevice } from '../../src/block/device.js';
import { FilterDevice } from '../../src/block/filter.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { DataKey } from '../../src/crypto/index.js';
import { createEvhd, openEvhd } from '../../src/layers/evhd/index.js';
import { commitUndo } from '../../src/layers/undo/index.js';
import { type VhdDevice, checkVhd, compactVhd, createDifferencingVhd, createVhd, openVhd } from '../../src/layers/vhd/index.js';
import { roundedDiskSize } from '../../src/formats/vhd/index.js';
import { prng } from '../conformance/blockdevice.js';
import { type CutResult, PowerCutDevice, ScratchDevice } from '../helpers/powercut.js';

const SECTOR = 512;
const BLOCK = 16 * 1024;
/** 768 KiB rounded up to CHS geometry, as createVhd does (so every stack has this exact size). */
const DISK = roundedDiskSize(768 * 1024).size;
const PARENT_UID = Buffer.from('00112233445566778899aabbccddeeff', 'hex');

// ------------------------------------------------------------------------------- the model

/** What the virtual disk may read after a cut: per sector, its value at the last completed
 *  flush or any value written since. */
interface Expect { flushed: Buffer; versions: Map<number, Buffer[]> }

class Model {
  /** Replaced, never mutated, at each flush: snapshots share it. */
  flushed: Buffer;
  readonly current: Buffer;
  private versions = new Map<number, Buffer[]>();

  constructor(initial: Buffer) {
    this.flushed = Buffer.from(initial);
    this.current = Buffer.from(initial);
  }

  /** Call when the write is ISSUED (a cut during it may show it). */
  write(off: number, data: Buffer): void {
    data.copy(this.current, off);
    for (let s = Math.floor(off / SECTOR); s * SECTOR < off + data.length; s++) {
      const v = Buffer.from(this.current.subarray(s * SECTOR, (s + 1) * SECTOR));
      const list = this.versions.get(s);
      if (list) list.push(v); else this.versions.set(s, [v]);
    }
  }

  /** Call when a flush COMPLETED (nothing else in flight). */
  flush(): void {
    this.flushed = Buffer.from(this.current);
    this.versions = new Map();
  }

  /** An acknowledged FUA write: the sectors it covered whole are durable now. */
  fua(off: number, len: number): void {
    const next = Buffer.from(this.flushed);
    for (let s = Math.ceil(off / SECTOR); (s + 1) * SECTOR <= off + len; s++) {
      this.current.copy(next, s * SECTOR, s * SECTOR, (s + 1) * SECTOR);
      this.versions.delete(s);
    }
    this.flushed = next;
  }

  snapshot(): Expect {
    return { flushed: this.flushed, versions: new Map([...this.versions].map(([k, v]) => [k, [...v]])) };
  }
}

function mismatch(e: Expect, seen: Buffer): string | undefined {
  if (seen.length !== e.flushed.length) return `disk reads ${seen.length} bytes, expected ${e.flushed.length}`;
  if (seen.equals(e.flushed)) return undefined;
  for (let a = 0; a < seen.length; a += SECTOR) {
    if (seen.compare(e.flushed, a, a + SECTOR, a, a + SECTOR) === 0) continue;
    const s = a / SECTOR;
    if (e.versions.get(s)?.some((v) => seen.compare(v, 0, SECTOR, a, a + SECTOR) === 0)) continue;
    const wasWritten = e.versions.has(s) ? 'written since the last flush, reads neither old nor new' : 'flushed, reads something else';
    return `sector ${s} (byte ${a}) ${wasWritten}: got ${seen.subarray(a, a + 16).toString('hex')}…, flushed ${e.flushed.subarray(a, a + 16).toString('hex')}…`;
  }
  return undefined;
}

// ------------------------------------------------------------------------------- workloads

function randomBuffer(rng: () => number, len: number): Buffer {
  const b = Buffer.alloc(len);
  const seed = (rng() * 2 ** 32) >>> 0;
  let x = seed || 1;
  for (let i = 0; i + 4 <= len; i += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  for (let i = len - (len % 4); i < len; i++) b[i] = (x >>> (8 * (i % 4))) & 0xff;
  return b;
}

/** A write request: 4 KiB-aligned, sector-aligned or byte-unaligned; often near earlier ones. */
function genRange(rng: () => number, size: number, hot: number[]): { off: number; len: number } {
  const m = rng();
  let off: number;
  let len: number;
  const base = hot.length > 0 && rng() < 0.4 ? hot[Math.floor(rng() * hot.length)] : Math.floor(rng() * size);
  if (m < 0.4) { off = Math.floor(base / 4096) * 4096; len = 4096 * (1 + Math.floor(rng() * (rng() < 0.2 ? 24 : 4))); }
  else if (m < 0.7) { off = Math.floor(base / SECTOR) * SECTOR; len = SECTOR * (1 + Math.floor(rng() * 24)); }
  else { off = base; len = 1 + Math.floor(rng() * 12000); }
  off = Math.min(off, size - 1);
  len = Math.max(1, Math.min(len, size - off));
  if (hot.length < 12) hot.push(off);
  return { off, len };
}

function sectorsOverlap(a: { off: number; len: number }, b: { off: number; len: number }): boolean {
  const a0 = Math.floor(a.off / SECTOR), a1 = Math.ceil((a.off + a.len) / SECTOR);
  const b0 = Math.floor(b.off / SECTOR), b1 = Math.ceil((b.off + b.len) / SECTOR);
  return a0 < b1 && b0 < a1;
}

/** One step of the workload against `dev`, recorded in `model` at issue and completion. */
async function step(dev: BlockDevice, model: Model, rng: () => number, hot: number[]): Promise<string> {
  const r = rng();
  if (r < 0.42) {
    const { off, len } = genRange(rng, dev.size, hot);
    const data = randomBuffer(rng, len);
    model.write(off, data);
    await dev.write(off, data);
    return `write ${off}+${len}`;
  }
  if (r < 0.57) {
    const reqs: Array<{ off: number; len: number }> = [];
    const n = 2 + Math.floor(rng() * 3);
    for (let tries = 0; reqs.length < n && tries < 20; tries++) {
      const q = genRange(rng, dev.size, hot);
      if (!reqs.some((x) => sectorsOverlap(x, q))) reqs.push(q);
    }
    const datas = reqs.map((q) => randomBuffer(rng, q.len));
    reqs.forEach((q, i) => model.write(q.off, datas[i]));
    await Promise.all(reqs.map((q, i) => dev.write(q.off, datas[i])));
    return `batch ${reqs.map((q) => `${q.off}+${q.len}`).join(',')}`;
  }
  if (r < 0.64) {
    const { off, len } = genRange(rng, dev.size, hot);
    model.write(off, Buffer.alloc(len));
    await dev.writeZeroes(off, len);
    return `zero ${off}+${len}`;
  }
  if (r < 0.69) {
    const { off, len } = genRange(rng, dev.size, hot);
    const data = randomBuffer(rng, len);
    model.write(off, data);
    await dev.write(off, data, { fua: true });
    model.fua(off, len);
    return `fua ${off}+${len}`;
  }
  await dev.flush();
  model.flush();
  return 'flush';
}

// ------------------------------------------------------------------------------- stacks

interface Reopened {
  dev: BlockDevice;
  /** checkVhd of the file as it is now. */
  check(): Promise<string[]>;
  close(): Promise<void>;
}

interface Target {
  storage: PowerCutDevice;
  dev: BlockDevice;
  /** The stack over a cut image of `storage` (checked first), writable. */
  reopen(image: Buffer): Promise<Reopened>;
}

/** A VHD stack on some storage: plain, or inside an EVHD (key cloned per reopen). */
class Layout {
  constructor(readonly encrypted: boolean, readonly key?: DataKey) {}

  async storageOver(mem: BlockDevice, readOnly = false): Promise<BlockDevice> {
    return this.encrypted ? openEvhd(mem, this.key!.clone(), { readOnly }) : mem;
  }
}

async function reopenVhd(layout: Layout, image: Buffer, parent?: () => Promise<BlockDevice>): Promise<Reopened> {
  const storage = await layout.storageOver(new ScratchDevice(image));
  const check = async (): Promise<string[]> => (await checkVhd(storage, 'cut image')).errors;
  const errors = await check();
  if (errors.length > 0) {
    await storage.close();
    throw new Error(`checkVhd: ${errors.join('; ')}`);
  }
  const dev = await openVhd(storage, parent ? { parent: await parent() } : {});
  return { dev, check, close: () => dev.close() };
}

function parentImage(seed: number): Buffer { return randomBuffer(prng(seed ^ 0x5eed), DISK); }

/** An encrypted dynamic VHD holding `content`, as an image (the parent of undo disks). */
async function encryptedParentImage(key: DataKey, content: Buffer, uniqueId: Buffer): Promise<Buffer> {
  const mem = new MemoryDevice(0);
  const evhd = await createEvhd(mem, key.clone());
  await createVhd(evhd, { type: 'dynamic', size: DISK, blockSize: BLOCK, uniqueId });
  const vhd = await openVhd(evhd);
  assert.equal(vhd.size, DISK);
  for (let off = 0; off < DISK; off += 5 * BLOCK) await vhd.write(off, content.subarray(off, Math.min(DISK, off + 3 * BLOCK)));
  await vhd.flush();
  const image = mem.snapshot();
  await vhd.close();
  return image;
}

/** One read-only copy of `image`, handed out as devices whose close() leaves it open (parents are
 *  reopened at every cut; copying them each time would cost more than the check). */
function sharedReadOnly(image: Buffer): () => BlockDevice {
  const mem = MemoryDevice.from(image, true);
  return () => new KeepOpen(mem);
}

class KeepOpen extends FilterDevice {
  override async close(): Promise<void> { /* shared */ }
}

async function openEncryptedParent(key: DataKey, storage: BlockDevice): Promise<VhdDevice> {
  const evhd = await openEvhd(storage, key.clone(), { readOnly: true });
  return openVhd(evhd, { readOnly: true });
}

interface Session { target: Target; initial: Buffer; close(): Promise<void> }

/** Make a fresh stack on a PowerCutDevice whose durable image is the freshly created file. */
async function makeSession(kind: 'vhd' | 'vhd-diff' | 'evhd' | 'undo', seed: number): Promise<Session> {
  const key = kind === 'evhd' || kind === 'undo' ? DataKey.generate() : undefined;
  const layout = new Layout(key !== undefined, key);
  const mem = new MemoryDevice(0);
  const base = key ? await createEvhd(mem, key.clone()) : mem;
  let parentImg: Buffer | undefined;
  let parent: (() => Promise<BlockDevice>) | undefined;
  if (kind === 'vhd' || kind === 'evhd') {
    await createVhd(base, { type: 'dynamic', size: DISK, blockSize: BLOCK });
  } else {
    await createDifferencingVhd(base, { size: DISK, uniqueId: PARENT_UID, blockSize: BLOCK });
    const content = parentImage(seed);
    if (kind === 'vhd-diff') {
      parentImg = content;
      const shared = sharedReadOnly(parentImg);
      parent = async () => shared();
    } else {
      const shared = sharedReadOnly(await encryptedParentImage(key!, content, PARENT_UID));
      parent = () => openEncryptedParent(key!, shared());
    }
  }
  const created = mem.snapshot();
  await base.close();
  const storage = new PowerCutDevice(created, { description: `${kind} storage` });
  const dev = await openVhd(await layout.storageOver(storage), parent ? { parent: await parent() } : {});
  assert.equal(dev.size, DISK);
  const initial = await dev.read(0, DISK);
  return {
    target: { storage, dev, reopen: (image) => reopenVhd(layout, image, parent) },
    initial,
    close: async () => { await dev.close(); key?.dispose(); },
  };
}

// ------------------------------------------------------------------------------- the runner

export interface Stats { cuts: number; steps: number; mutations: number; flushes: number; failures: string[] }

function repro(stack: string, seed: number): string {
  return `reproduce: POWERCUT_STACK=${stack} POWERCUT_SEED=${seed} npx mocha dist/test/layers/powercut.test.js`;
}

interface PendingCut { cut: CutResult; expect: Expect; at: string }

/** Reopen a cut image and hold it to the model; then keep using it. */
async function verifyCut(target: Target, c: PendingCut, rng: () => number): Promise<string | undefined> {
  let r: Reopened;
  try {
    r = await target.reopen(c.cut.image);
  } catch (e) {
    return `does not reopen: ${(e as Error).message}`;
  }
  try {
    const seen = await r.dev.read(0, r.dev.size);
    const bad = mismatch(c.expect, seen);
    if (bad) return bad;
    // Recovery leaves a working disk (every other cut): write two places (one likely
    // allocating), flush, read back.
    if (rng() < 0.5) return undefined;
    const a = Math.floor(rng() * Math.floor(r.dev.size / 4096)) * 4096;
    const b = Math.floor(rng() * (r.dev.size - 5000));
    const da = randomBuffer(rng, 4096);
    const db = randomBuffer(rng, 3000);
    await r.dev.write(a, da);
    await r.dev.write(b, db);
    await r.dev.flush();
    const exp = Buffer.from(seen);
    da.copy(exp, a);
    db.copy(exp, b);
    if (!(await r.dev.read(a, 4096)).equals(exp.subarray(a, a + 4096))) return 'after recovery, a new write does not read back';
    if (!(await r.dev.read(b, 3000)).equals(exp.subarray(b, b + 3000))) return 'after recovery, a new unaligned write does not read back';
    const errors = await r.check();
    if (errors.length > 0) return `after recovery and new writes, checkVhd: ${errors.join('; ')}`;
    return undefined;
  } catch (e) {
    return `after the cut: ${(e as Error).stack ?? e}`;
  } finally {
    await r.close().catch(() => undefined);
  }
}

/**
 * Drive `steps` workload steps against target.dev; before each storage mutation or flush, with
 * probability `q`, take a cut (with the model's expectation at that instant); verify the cuts
 * after each step.
 */
async function workload(stack: string, seed: number, target: Target, model: Model, steps: number, q: number, stats: Stats): Promise<void> {
  const rng = prng(seed);
  const cutter = prng(seed ^ 0x9e3779b9);
  const hot: number[] = [];
  const pending: PendingCut[] = [];
  let label = 'start';
  const history: string[] = [];
  target.storage.onIssue = (what) => {
    if (cutter() < q) pending.push({ cut: target.storage.cut(cutter), expect: model.snapshot(), at: `during "${label}", before a storage ${what}` });
  };
  try {
    for (let i = 0; i < steps; i++) {
      label = `step ${i}`;
      label = `step ${i}: ${await step(target.dev, model, rng, hot)}`;
      history.push(label);
      stats.steps++;
      for (const c of pending.splice(0)) {
        stats.cuts++;
        const bad = await verifyCut(target, c, cutter);
        if (bad) {
          stats.failures.push(`${stack} seed ${seed}: cut ${stats.cuts} ${c.at} (strategy ${c.cut.strategy}, ${c.cut.persisted}/${c.cut.pieces} pending pieces kept): ${bad}\n  steps so far: ${history.slice(-8).join(' | ')}\n  ${repro(stack, seed)}`);
          return;
        }
      }
    }
  } finally {
    target.storage.onIssue = undefined;
    stats.mutations += target.storage.mutations;
    stats.flushes += target.storage.flushes;
  }
}

async function runStackSeed(stack: 'vhd' | 'vhd-diff' | 'evhd' | 'undo', seed: number, stats: Stats): Promise<void> {
  const s = await makeSession(stack, seed);
  try {
    await workload(stack, seed, s.target, new Model(s.initial), 40, 0.2, stats);
  } finally {
    await s.close();
  }
}

/**
 * Undo merge: an encrypted parent and an encrypted undo disk over it, each on its own
 * PowerCutDevice. The guest writes into the undo disk (cuts checked as for 'undo'), flushes; then
 * commitUndo copies into the parent and flushes it; then the undo disk is deleted. A cut takes
 * both devices at the same instant. After it: if the undo disk was not yet deleted, it still reads
 * the guest's view, and running the merge again leaves the parent reading that view; if it was
 * deleted, the parent reads that view.
 */
async function runMergeSeed(seed: number, stats: Stats): Promise<void> {
  const stack = 'merge';
  const key = DataKey.generate();
  try {
    const layout = new Layout(true, key);
    const parentUid = Buffer.from(PARENT_UID);
    const pimg = await encryptedParentImage(key, parentImage(seed), parentUid);
    const umem = new MemoryDevice(0);
    const uevhd = await createEvhd(umem, key.clone());
    await createDifferencingVhd(uevhd, { size: DISK, uniqueId: parentUid, blockSize: BLOCK });
    const uimg0 = umem.snapshot();
    await uevhd.close();

    const pStore = new PowerCutDevice(pimg, { description: 'parent storage' });
    const uStore = new PowerCutDevice(uimg0, { description: 'undo storage' });
    const parentDev = await openVhd(await layout.storageOver(pStore));
    const undo = await openVhd(await layout.storageOver(uStore), { parent: parentDev });
    const model = new Model(await undo.read(0, DISK));
    // Phase 1: the guest uses the undo disk (the parent is read-only meanwhile: a separate open).
    const sharedParent = sharedReadOnly(pStore.durableImage());
    const guestTarget: Target = {
      storage: uStore, dev: undo,
      reopen: (image) => reopenVhd(layout, image, () => openEncryptedParent(key, sharedParent())),
    };
    await workload(stack, seed, guestTarget, model, 25, 0.2, stats);
    if (stats.failures.length > 0) { await undo.close(); return; }
    await undo.flush();
    model.flush();
    const view = Buffer.from(model.flushed);

    // Phase 2: merge, with cuts of both devices before any mutation or flush of either.
    const cutter = prng(seed ^ 0x51ced);
    let deleted = false;
    const cuts: Array<{ p: CutResult; u: CutResult; deleted: boolean; at: string }> = [];
    let n = 0;
    const hook = (dev: string) => (what: string) => {
      n++;
      if (cutter() < 0.35) cuts.push({ p: pStore.cut(cutter), u: uStore.cut(cutter), deleted, at: `merge: before ${dev} ${what} #${n}` });
    };
    pStore.onIssue = hook('parent');
    uStore.onIssue = hook('undo');
    await commitUndo(undo);
    cuts.push({ p: pStore.cut(cutter), u: uStore.cut(cutter), deleted, at: 'merge: copied and flushed, undo disk not yet deleted' });
    deleted = true;
    cuts.push({ p: pStore.cut(cutter), u: uStore.cut(cutter), deleted, at: 'merge: undo disk deleted' });
    pStore.onIssue = undefined;
    uStore.onIssue = undefined;
    stats.mutations += pStore.mutations;
    stats.flushes += pStore.flushes;
    await undo.close();

    for (const c of cuts) {
      stats.cuts++;
      const bad = await verifyMergeCut(layout, key, c, view);
      if (bad) {
        stats.failures.push(`merge seed ${seed}: cut ${stats.cuts} ${c.at} (parent ${c.p.strategy} ${c.p.persisted}/${c.p.pieces}, undo ${c.u.strategy} ${c.u.persisted}/${c.u.pieces}): ${bad}\n  ${repro(stack, seed)}`);
        return;
      }
    }
  } finally {
    key.dispose();
  }
}

async function verifyMergeCut(layout: Layout, key: DataKey, c: { p: CutResult; u: CutResult; deleted: boolean }, view: Buffer): Promise<string | undefined> {
  const pStorage = await layout.storageOver(new ScratchDevice(c.p.image));
  const pchk = await checkVhd(pStorage, 'parent');
  if (pchk.errors.length > 0) return `parent checkVhd: ${pchk.errors.join('; ')}`;
  const parent = await openVhd(pStorage);
  if (c.deleted) {
    try {
      return (await parent.read(0, DISK)).equals(view) ? undefined : `parent does not read the merged view: ${mismatch({ flushed: view, versions: new Map() }, await parent.read(0, DISK))}`;
    } finally { await parent.close(); }
  }
  const uStorage = await layout.storageOver(new ScratchDevice(c.u.image));
  const uchk = await checkVhd(uStorage, 'undo');
  if (uchk.errors.length > 0) { await parent.close(); await uStorage.close(); return `undo checkVhd: ${uchk.errors.join('; ')}`; }
  const undo = await openVhd(uStorage, { parent });
  try {
    const before = await undo.read(0, DISK);
    if (!before.equals(view)) return `undo disk no longer reads the guest's view: ${mismatch({ flushed: view, versions: new Map() }, before)}`;
    await commitUndo(undo);
    const after = await parent.read(0, DISK);
    if (!after.equals(view)) return `merge re-run: parent differs: ${mismatch({ flushed: view, versions: new Map() }, after)}`;
    return undefined;
  } finally { await undo.close(); void key; }
}

/**
 * Compaction: a used disk (dynamic, or differencing over a parent; plain or encrypted) is
 * compacted into a new PowerCutDevice. compactVhd's contract: the output is complete and durable
 * when it returns (the caller then swaps the files), so every cut taken after it returns must be a
 * clean copy reading exactly like the source. Then the compacted file is used (a workload with
 * cuts, as for the other stacks), which exercises allocation after a dense, compacted layout.
 */
async function runCompactSeed(seed: number, stats: Stats): Promise<void> {
  const stack = 'compact';
  const rng = prng(seed ^ 0xc0);
  const diff = rng() < 0.5;
  const encrypted = rng() < 0.5;
  const key = encrypted ? DataKey.generate() : undefined;
  const layout = new Layout(encrypted, key);
  try {
    const parentImg = diff ? parentImage(seed) : undefined;
    const shared = parentImg ? sharedReadOnly(parentImg) : undefined;
    const parent = shared ? async () => shared() : undefined;
    const smem = new MemoryDevice(0);
    const sbase = key ? await createEvhd(smem, key.clone()) : smem;
    if (diff) await createDifferencingVhd(sbase, { size: DISK, uniqueId: PARENT_UID, blockSize: BLOCK });
    else await createVhd(sbase, { type: 'dynamic', size: DISK, blockSize: BLOCK });
    const src = await openVhd(sbase, parent ? { parent: await parent() } : {});
    const srcModel = new Model(await src.read(0, DISK));
    const hot: number[] = [];
    for (let i = 0; i < 30; i++) await step(src, srcModel, rng, hot);
    // Some blocks all zeros again, so compaction has something to drop.
    await src.writeZeroes(Math.floor(rng() * 8) * BLOCK, BLOCK);
    await src.flush();
    const view = await src.read(0, DISK);

    const dstStore = new PowerCutDevice(Buffer.alloc(0), { description: 'compaction output' });
    const dst = key ? await createEvhd(dstStore, key.clone()) : dstStore;
    await compactVhd(src, dst);
    await src.close();
    const target: Target = { storage: dstStore, dev: dst, reopen: (image) => reopenVhd(layout, image, parent) };
    const cutter = prng(seed ^ 0xc1);
    for (let k = 0; k < 4; k++) {
      stats.cuts++;
      const c: PendingCut = { cut: dstStore.cut(cutter), expect: { flushed: view, versions: new Map() }, at: 'after compactVhd returned' };
      const bad = await verifyCut(target, c, cutter);
      if (bad) {
        stats.failures.push(`compact seed ${seed} (${diff ? 'differencing' : 'dynamic'}${encrypted ? ', in EVHD' : ''}): cut ${stats.cuts} ${c.at} (strategy ${c.cut.strategy}): ${bad}\n  ${repro(stack, seed)}`);
        return;
      }
    }
    // The compacted file in use.
    const used = await openVhd(dst, parent ? { parent: await parent() } : {});
    try {
      await workload(stack, seed, { storage: dstStore, dev: used, reopen: target.reopen }, new Model(view), 20, 0.2, stats);
    } finally {
      await used.close();
    }
  } finally {
    key?.dispose();
  }
}

// ------------------------------------------------------------------------------- entry

export const STACKS = ['vhd', 'vhd-diff', 'evhd', 'undo', 'merge', 'compact'] as const;
export type StackName = typeof STACKS[number];
/** Seeds per stack in CI (tuned for >= 2,000 cuts in well under a minute on 2 cores). */
export const SEEDS: Record<StackName, number> = { 'vhd': 14, 'vhd-diff': 14, 'evhd': 12, 'undo': 12, 'merge': 14, 'compact': 14 };

export async function runSeed(stack: StackName, seed: number, stats: Stats): Promise<void> {
  if (stack === 'merge') await runMergeSeed(seed, stats);
  else if (stack === 'compact') await runCompactSeed(seed, stats);
  else await runStackSeed(stack, seed, stats);
}

export function newStats(): Stats { return { cuts: 0, steps: 0, mutations: 0, flushes: 0, failures: [] }; }
