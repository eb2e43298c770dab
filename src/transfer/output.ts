/**
 * The output of a fetch while it is being written: a folder `.<NAME>.evhd.medv-fetch` beside the
 * final `NAME.evhd`, holding
 *
 *   disk.evhd, disk.enc   the new disk (dynamic VHD inside an EVHD, a fresh data key wrapped
 *                         under the KEK), written in place block by block
 *   state.json            which image it is for and which 4 KiB blocks are written (a bitmap),
 *                         replaced atomically after the disk is flushed: a block marked done is
 *                         on the disk
 *   index                 the local copy of the image index
 *
 * A killed fetch leaves the folder; the next fetch of the same image to the same name opens it
 * and fetches only the blocks not marked done. Publication: the key file is linked to its final
 * name, then the disk (an .evhd never appears without its key), the folder fsynced, then the
 * folder removed; nothing partial is ever visible under the final names. The folder holds only
 * ciphertext, keyed ids and the (public) index. The EVHD file is locked while open, so two
 * fetches cannot write one output.
 */
import * as fs from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { BlockDevice } from '../block/device.js';
import { fsyncDir, linkNew, parseTempName, readBoundedSync, writeFileAtomic } from '../core/fsio.js';
import { FileDevice } from '../block/file.js';
import { DataKey, type KekSource, encPathFor, writeKeyFileAt } from '../crypto/index.js';
import { MedvError, fromSystemError } from '../core/errors.js';
import { createEvhd, openEvhdFile } from '../layers/evhd/index.js';
import { createVhd, openVhd } from '../layers/vhd/index.js';

const STATE_FORMAT = 2;
/** Network data between two checkpoints, and the longest time: what a crash can lose (a killed run loses nothing: see fetch.ts, recoverUnrecorded). */
const CHECKPOINT_BYTES = 8 * 1024 * 1024;
const CHECKPOINT_MS = 2000;

/**
 * The done set of `blocks` blocks as alternating run lengths (blocks not done, then done, ...),
 * LEB128 varints: a fetch fills the disk mostly in order, so this stays a few bytes where the
 * bitmap would be one bit per block of the virtual disk (512 KiB for 16 GiB), written at every
 * checkpoint.
 */
export function encodeDone(bits: Uint8Array, blocks: number): Buffer {
  const out: number[] = [];
  let cur = 0;
  let run = 0;
  const push = (v: number) => { do { let b = v % 128; v = Math.floor(v / 128); if (v > 0) b |= 0x80; out.push(b); } while (v > 0); };
  for (let b = 0; b < blocks; b++) {
    if ((b & 7) === 0 && b + 8 <= blocks && bits[b >> 3] === (cur ? 0xff : 0)) { run += 8; b += 7; continue; } // a whole byte of the current run
    const bit = (bits[b >> 3] >> (b & 7)) & 1;
    if (bit !== cur) { push(run); cur = bit; run = 0; }
    run++;
  }
  push(run);
  return Buffer.from(out);
}

/** encodeDone's inverse: the bitmap, or undefined unless the runs add up to exactly `blocks`. */
export function decodeDone(b: Buffer, blocks: number): Uint8Array | undefined {
  const bits = new Uint8Array(Math.ceil(blocks / 8));
  let at = 0;
  let pos = 0;
  let cur = 0;
  while (at < b.length) {
    let v = 0;
    let mul = 1;
    for (let i = 0; ; i++) {
      if (at >= b.length || i >= 8) return undefined;
      const x = b[at++];
      v += (x & 0x7f) * mul;
      mul *= 128;
      if ((x & 0x80) === 0) break;
    }
    if (v > blocks - pos) return undefined;
    if (cur) for (let k = pos; k < pos + v; k++) bits[k >> 3] |= 1 << (k & 7);
    pos += v;
    cur ^= 1;
  }
  return pos === blocks ? bits : undefined;
}

/** Identity of what a partial output is being filled from: a new index means a new output. */
export interface OutputIdentity {
  /** Hex of a hash of the signed index header. */
  index: string;
  virtualSize: number;
}

export function partialDirFor(out: string): string {
  return join(dirname(out), `.${basename(out)}.medv-fetch`);
}

export class PartialOutput {
  private persisted: Uint8Array;
  private writtenSinceFlush: number[] = [];
  private checkpointing?: Promise<void>;
  private failed?: unknown;
  private lastCheckpoint = Date.now();
  private bytesSinceCheckpoint = 0;

  private constructor(
    readonly out: string,
    readonly dir: string,
    readonly device: BlockDevice,
    readonly identity: OutputIdentity,
    /** Blocks on the disk (in memory; set as writes complete). */
    readonly done: Uint8Array,
    readonly resumed: boolean,
  ) {
    this.persisted = Uint8Array.from(done);
  }

  get indexPath(): string { return join(this.dir, 'index'); }

  static blocksOf(size: number): number { return Math.ceil(size / 4096); }

  /** Open the partial output of `out` for `identity`, or start a new one (discarding a partial of another image). */
  static async open(out: string, identity: OutputIdentity, kek: () => KekSource): Promise<PartialOutput> {
    const dir = partialDirFor(out);
    const resumed = await PartialOutput.tryResume(out, dir, identity, kek);
    if (resumed) return resumed;
    await PartialOutput.discard(out);
    try { fs.mkdirSync(dir, { mode: 0o700 }); } catch (e) { throw fromSystemError(e, dir); }
    const evhd = join(dir, 'disk.evhd');
    let key: DataKey | undefined = DataKey.generate();
    let storage: FileDevice | undefined;
    let dev: BlockDevice | undefined;
    try {
      await writeKeyFileAt(encPathFor(evhd), key, kek());
      storage = await FileDevice.open(evhd, { create: true });
      const e = await createEvhd(storage, key, { name: out });
      key = undefined;
      storage = undefined;
      dev = e;
      await createVhd(e, { type: 'dynamic', size: identity.virtualSize });
      dev = await openVhd(e, { name: out });
      await dev.flush();
    } catch (err) {
      key?.dispose();
      await (dev ?? storage)?.close().catch(() => undefined);
      await PartialOutput.discard(out);
      throw err;
    }
    const p = new PartialOutput(out, dir, dev, identity, new Uint8Array(Math.ceil(PartialOutput.blocksOf(identity.virtualSize) / 8)), false);
    await p.writeState();
    return p;
  }

  private static async tryResume(out: string, dir: string, identity: OutputIdentity, kek: () => KekSource): Promise<PartialOutput | undefined> {
    let state: { format: number; index: string; virtualSize: number; done: string };
    try {
      const text = readBoundedSync(join(dir, 'state.json'), 64 * 1024 * 1024, 'fetch state');
      if (!text) return undefined;
      state = JSON.parse(text.toString('utf8'));
    } catch {
      return undefined;
    }
    if (state.format !== STATE_FORMAT || state.index !== identity.index || state.virtualSize !== identity.virtualSize || typeof state.done !== 'string') return undefined;
    const done = decodeDone(Buffer.from(state.done, 'base64'), PartialOutput.blocksOf(identity.virtualSize));
    if (!done) return undefined;
    let e;
    try {
      e = await openEvhdFile(join(dir, 'disk.evhd'), kek());
    } catch (err) {
      // another fetch writing it right now, or a wrong passphrase: say so rather than start over
      if (err instanceof MedvError && (err.code === 'EBUSY' || err.code === 'EBADKEY' || err.code === 'ENOKEY')) throw err;
      return undefined;
    }
    try {
      const dev = await openVhd(e, { name: out });
      if (dev.size < identity.virtualSize) { await dev.close(); return undefined; }
      return new PartialOutput(out, dir, dev, identity, new Uint8Array(done), true);
    } catch {
      await e.close().catch(() => undefined);
      return undefined;
    }
  }

  /** Remove the partial output folder of `out` (ours by name: only the files a fetch puts there). */
  static async discard(out: string): Promise<void> {
    const dir = partialDirFor(out);
    let st: fs.Stats;
    try { st = fs.lstatSync(dir); } catch { return; }
    if (!st.isDirectory()) throw new MedvError('EEXIST', `${dir} is in the way (not a partial fetch folder)`, { file: dir });
    const ours = (n: string) => /^(disk\.evhd|disk\.enc|state\.json|index)$/.test(n) || /^(state\.json|index)$/.test(parseTempName(n)?.final ?? '');
    for (const n of fs.readdirSync(dir)) {
      if (!ours(n)) {
        throw new MedvError('EEXIST', `${dir} holds ${n}, which a fetch did not put there; remove the folder by hand`, { file: join(dir, n) });
      }
    }
    for (const n of fs.readdirSync(dir)) fs.rmSync(join(dir, n), { force: true });
    fs.rmdirSync(dir);
  }

  isDone(block: number): boolean { return (this.done[block >> 3] & (1 << (block & 7))) !== 0; }

  clear(block: number): void {
    this.done[block >> 3] &= ~(1 << (block & 7));
    this.persisted[block >> 3] &= ~(1 << (block & 7));
  }

  /** Block `block` is on the disk already (found by reading it back): record it at the next checkpoint. */
  markDone(block: number): void {
    this.done[block >> 3] |= 1 << (block & 7);
    this.writtenSinceFlush.push(block);
  }

  /**
   * Write `data` (whole blocks, each checked against its id by the caller just before) at block
   * `block`; marks them done once written, or only the blocks listed in `done` (the others hold
   * zeros until they are written for real). Progress is recorded every 8 MiB of fetched data (or
   * 2 s; blocks from a local seed, `local`, only by time): a checkpoint costs a flush of the disk
   * and of the state file. A killed fetch loses nothing written since (the next run finds those
   * blocks on the disk); only a crash of the machine can, at most that much.
   */
  async write(block: number, data: Buffer, local = false, done?: readonly number[]): Promise<void> {
    const off = block * 4096;
    const len = Math.min(data.length, this.device.size - off);
    await this.device.write(off, len === data.length ? data : data.subarray(0, len));
    const mark = (b: number) => {
      this.done[b >> 3] |= 1 << (b & 7);
      this.writtenSinceFlush.push(b);
    };
    if (done) done.forEach(mark);
    else for (let b = block; b < block + data.length / 4096; b++) mark(b);
    if (!local) this.bytesSinceCheckpoint += data.length;
    const age = Date.now() - this.lastCheckpoint;
    if (this.failed) throw this.failed;
    if (!this.checkpointing && (this.bytesSinceCheckpoint >= CHECKPOINT_BYTES || age >= CHECKPOINT_MS)) {
      // in the background: writers go on while the disk is flushed (a failure surfaces on the next write)
      this.checkpoint().catch((e) => { this.failed ??= e; });
    }
  }

  /** Flush the disk, then record the blocks written before the flush as done (state.json). */
  async checkpoint(): Promise<void> {
    while (this.checkpointing) await this.checkpointing.catch(() => undefined);
    if (this.failed) throw this.failed;
    if (this.writtenSinceFlush.length === 0) return;
    const blocks = this.writtenSinceFlush;
    this.writtenSinceFlush = [];
    this.bytesSinceCheckpoint = 0;
    this.lastCheckpoint = Date.now();
    this.checkpointing = (async () => {
      await this.device.flush();
      for (const b of blocks) this.persisted[b >> 3] |= 1 << (b & 7);
      await this.writeState();
    })().finally(() => { this.checkpointing = undefined; });
    await this.checkpointing;
  }

  private async writeState(): Promise<void> {
    const body = JSON.stringify({ format: STATE_FORMAT, index: this.identity.index, virtualSize: this.identity.virtualSize, done: encodeDone(this.persisted, PartialOutput.blocksOf(this.identity.virtualSize)).toString('base64') });
    await writeFileAtomic(join(this.dir, 'state.json'), body, { mode: 0o600 });
  }

  /**
   * Close the disk and publish it: key file, then disk, under their final names (link: never
   * replaces), the index beside them as `NAME.evhd.index`, then the folder is removed.
   */
  async publish(): Promise<void> {
    await this.checkpoint();
    await this.device.flush();
    await this.device.close();
    const evhd = join(this.dir, 'disk.evhd');
    const finals: Array<[string, string]> = [[encPathFor(evhd), encPathFor(this.out)], [evhd, this.out]];
    const linked: string[] = [];
    try {
      // each: fsync, link (never over an existing file: EEXIST), fsync the folder
      for (const [from, to] of finals) {
        await linkNew(from, to);
        linked.push(to);
      }
    } catch (e) {
      for (const f of linked.reverse()) await fs.promises.unlink(f).catch(() => undefined);
      throw e;
    }
    // the index the disk came from: offered to the next fetch that uses this disk as a seed
    await linkNew(this.indexPath, `${this.out}.index`).catch((e) => {
      if (!(e instanceof MedvError && e.code === 'EEXIST')) throw e;
    });
    await PartialOutput.discard(this.out);
    await fsyncDir(dirname(this.out));
  }

  async close(): Promise<void> {
    await this.device.close().catch(() => undefined);
  }
}
