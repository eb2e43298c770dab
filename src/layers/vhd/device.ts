/**
 * VhdDevice: a VHD file (fixed, dynamic or differencing) on a storage BlockDevice, seen as the
 * virtual disk it holds.
 *
 * - Fixed: the virtual disk is the first `virtualSize` bytes of the file.
 * - Dynamic: reads of an unallocated block return zeros; reads of an allocated block return the
 *   block's data area whatever its sector bitmap says (as qemu does); new blocks get an all-ones
 *   bitmap and zero-filled data (as qemu does), so every reader agrees; writes into blocks other
 *   tools left with partial bitmaps set the bits they cover.
 * - Differencing: a 0 bitmap bit reads from the parent (any BlockDevice of exactly the virtual
 *   size); writes set bits. Partial sectors are merged with the parent's data.
 *
 * The BAT and the bitmaps in use are cached in memory. Allocation is serialised per block and
 * batched (one batch at a time, see allocateBatch for the crash-safe write order); reads and writes
 * into allocated blocks run concurrently, and a read inside one allocated block (whose bitmap is
 * cached) is one storage read.
 */
import type { BlockCapabilities, BlockDevice, WriteOptions } from '../../block/device.js';
import { defaultCapabilities } from '../../block/device.js';
import { validateRequest } from '../../block/validate.js';
import { readInto } from '../../block/emulate.js';
import { MedvError, isMedvError } from '../../core/errors.js';
import {
  FOOTER_SIZE, SECTOR, UNALLOCATED, allSet, bitRuns, roundUp, serializeBatEntry, setBits, testBit, vhdChecksum,
} from '../../formats/vhd/index.js';
import { KeyedLocks } from '../../block/lock.js';
import { type VhdInfo, type VhdMeta, metaToInfo } from './metadata.js';

/** New blocks are placed so that their data area starts on this boundary in the file. */
export const DATA_ALIGNMENT = 4096;
/** Upper bound of one allocation batch (new blocks written in one append, one flush). */
const MAX_BATCH_BYTES = 64 * 1024 * 1024;

interface PendingAllocation {
  b: number;
  inOff: number;
  piece: Buffer;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class VhdDevice implements BlockDevice {
  readonly capabilities: BlockCapabilities;
  readonly readOnly: boolean;
  readonly description: string;
  private closed = false;
  private readonly bat?: Uint32Array;
  private readonly bs: number;
  private readonly bmSize: number;
  private footerOffset: number;
  private allocated: number;
  private readonly bitmaps = new Map<number, Promise<Buffer>>();
  /** The same bitmaps once loaded (the same Buffers, updated in place), for readIntoNow. */
  private readonly loadedBitmaps = new Map<number, Buffer>();
  private readonly pending: PendingAllocation[] = [];
  private allocating = false;
  private readonly blockLocks = new KeyedLocks();

  /** @internal use openVhd() */
  constructor(
    private readonly storage: BlockDevice,
    /** @internal */ readonly meta: VhdMeta,
    readonly parent: BlockDevice | undefined,
    readOnly: boolean,
  ) {
    this.readOnly = readOnly;
    this.description = meta.name;
    this.bat = meta.bat;
    this.bs = meta.blockSize ?? 0;
    this.bmSize = meta.bitmapSize ?? 0;
    this.footerOffset = meta.footerOffset;
    this.allocated = meta.allocatedBlocks;
    this.capabilities = defaultCapabilities({
      // discard keeps the data (deallocating could not be made crash-safe cheaply).
      trim: 'emulate',
      // unallocated blocks of a dynamic disk stay unallocated; elsewhere zeros are written.
      zero: 'native',
      fua: 'native',
      resizable: false,
      minBlockSize: SECTOR,
      preferredBlockSize: 4096,
      maxRequestSize: 32 * 1024 * 1024,
    });
  }

  get size(): number { return this.meta.virtualSize; }

  get info(): VhdInfo { return metaToInfo(this.meta, this.storage.size, this.allocated); }

  get type(): VhdInfo['type'] { return this.meta.type; }

  // ------------------------------------------------------------------ reads

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, offset);
    return buf;
  }

  /** Each block's piece is read straight into its place in `buf` (from this file, the parent, or zeros). */
  async readInto(buf: Buffer, offset: number): Promise<void> {
    this.assertOpen();
    const length = buf.length;
    validateRequest(this, offset, length, false);
    if (length === 0) return;
    if (this.meta.type === 'fixed') return readInto(this.storage, buf, offset);
    const bs = this.bs;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    if (first === last) return this.readInBlock(first, offset - first * bs, buf);
    const parts: Promise<void>[] = [];
    for (let b = first; b <= last; b++) {
      const start = Math.max(offset, b * bs);
      const end = Math.min(offset + length, (b + 1) * bs);
      parts.push(this.readInBlock(b, start - b * bs, buf.subarray(start - offset, end - offset)));
    }
    await Promise.all(parts);
  }

  /**
   * See BlockDevice.readIntoNow: a read inside one block, all from this file or all from the
   * parent (by a bitmap already loaded), when the storage (or parent) has it at hand.
   */
  readIntoNow(buf: Buffer, offset: number): boolean {
    const length = buf.length;
    if (this.closed || length === 0 || offset < 0 || offset + length > this.meta.virtualSize) return false;
    if (this.meta.type === 'fixed') return this.storage.readIntoNow?.(buf, offset) ?? false;
    const b = Math.floor(offset / this.bs);
    if (b !== Math.floor((offset + length - 1) / this.bs)) return false;
    const e = this.bat![b];
    if (e === UNALLOCATED) {
      if (this.parent) return this.parent.readIntoNow?.(buf, offset) ?? false;
      buf.fill(0);
      return true;
    }
    const inOff = offset - b * this.bs;
    const here = () => this.storage.readIntoNow?.(buf, e * SECTOR + this.bmSize + inOff) ?? false;
    if (this.meta.type === 'dynamic') return here();
    // Differencing: when every sector is in this file, or every one in the parent, by the loaded bitmap.
    const bm = this.loadedBitmaps.get(b);
    if (!bm) return false;
    const s0 = Math.floor(inOff / SECTOR);
    const runs = bitRuns(bm, s0, Math.ceil((inOff + length) / SECTOR) - s0);
    if (runs.length !== 1) return false;
    return runs[0].set ? here() : this.parent?.readIntoNow?.(buf, offset) ?? false;
  }

  /** Fills `out` with block b's bytes from `inOff` on. */
  private async readInBlock(b: number, inOff: number, out: Buffer): Promise<void> {
    const len = out.length;
    const e = this.bat![b];
    const virt = b * this.bs + inOff;
    if (e === UNALLOCATED) {
      if (this.parent) return readInto(this.parent, out, virt);
      out.fill(0);
      return;
    }
    const dataPos = e * SECTOR + this.bmSize;
    if (this.meta.type === 'dynamic') return readInto(this.storage, out, dataPos + inOff);
    const bm = await this.bitmap(b);
    const s0 = Math.floor(inOff / SECTOR);
    const s1 = Math.ceil((inOff + len) / SECTOR);
    await Promise.all(bitRuns(bm, s0, s1 - s0).map((run) => {
      const a = Math.max(inOff, run.first * SECTOR);
      const z = Math.min(inOff + len, (run.first + run.count) * SECTOR);
      const piece = out.subarray(a - inOff, z - inOff);
      return run.set ? readInto(this.storage, piece, dataPos + a) : readInto(this.parent!, piece, b * this.bs + a);
    }));
  }

  /** The cached sector bitmap of allocated block b (loaded on first use). */
  private bitmap(b: number): Promise<Buffer> {
    let p = this.bitmaps.get(b);
    if (!p) {
      const loading = this.storage.read(this.bat![b] * SECTOR, this.bmSize);
      this.bitmaps.set(b, loading);
      loading.then((bm) => { if (this.bitmaps.get(b) === loading) this.loadedBitmaps.set(b, bm); }, () => this.bitmaps.delete(b));
      p = loading;
    }
    return p;
  }

  // ------------------------------------------------------------------ writes

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.assertWritable();
    validateRequest(this, offset, data.length, true);
    if (data.length === 0) return;
    if (this.meta.type === 'fixed') {
      await this.storage.write(offset, data, options);
      return;
    }
    await this.forEachBlock(offset, data.length, (b, inOff, at, len) => this.writeInBlock(b, inOff, data.subarray(at, at + len)));
    if (options?.fua) await this.storage.flush();
  }

  private async forEachBlock(offset: number, length: number, fn: (b: number, inOff: number, at: number, len: number) => Promise<void>): Promise<void> {
    const bs = this.bs;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    const ops: Promise<void>[] = [];
    for (let b = first; b <= last; b++) {
      const start = Math.max(offset, b * bs);
      const end = Math.min(offset + length, (b + 1) * bs);
      ops.push(fn(b, start - b * bs, start - offset, end - start));
    }
    await Promise.all(ops);
  }

  private async writeInBlock(b: number, inOff: number, piece: Buffer): Promise<void> {
    const e = this.bat![b];
    if (e !== UNALLOCATED) {
      const bm = await this.bitmap(b);
      const s0 = Math.floor(inOff / SECTOR);
      const s1 = Math.ceil((inOff + piece.length) / SECTOR);
      if (allSet(bm, s0, s1 - s0)) {
        // Every sector already lives in this file: a plain data write, no metadata.
        await this.storage.write(e * SECTOR + this.bmSize + inOff, piece);
        return;
      }
    }
    await this.blockLocks.run(b, async () => {
      if (this.bat![b] !== UNALLOCATED) {
        await this.writeAllocatedLocked(b, inOff, piece);
        return;
      }
      await this.allocate(b, inOff, piece);
    });
  }

  /**
   * Write into an allocated block whose bitmap lacks some of the sectors, under the block's lock:
   * data first, then the bitmap, with no flush in between: a power cut may keep either one
   * without the other, in any sector. Data without bitmap: the sector still reads the parent (its
   * old value). Bitmap without data: the sector reads the data area as it was, which in a block
   * medv allocated is the parent's copy (copyParentAround), again its old value. In a dynamic disk this happens only in blocks made by other
   * tools with partial bitmaps: medv reads the data area whatever the bitmap says (as qemu), and
   * sets the bits so readers that honour the bitmap (Virtual PC, libvhdi) see the data too.
   */
  private async writeAllocatedLocked(b: number, inOff: number, piece: Buffer): Promise<void> {
    const bm = await this.bitmap(b);
    const dataPos = this.bat![b] * SECTOR + this.bmSize;
    const s0 = Math.floor(inOff / SECTOR);
    const s1 = Math.ceil((inOff + piece.length) / SECTOR);
    const diff = this.meta.type === 'differencing';
    const headPartial = diff && inOff % SECTOR !== 0 && !testBit(bm, s0);
    const tailPartial = diff && (inOff + piece.length) % SECTOR !== 0 && !testBit(bm, s1 - 1);
    if (headPartial || tailPartial) {
      // A sector still in the parent is only partly covered: build whole sectors.
      const buf = Buffer.alloc((s1 - s0) * SECTOR);
      await this.fillEdges(b, bm, s0, s1, buf, dataPos);
      piece.copy(buf, inOff - s0 * SECTOR);
      await this.storage.write(dataPos + s0 * SECTOR, buf);
    } else {
      await this.storage.write(dataPos + inOff, piece);
    }
    if (setBits(bm, s0, s1 - s0)) await this.storage.write(this.bat![b] * SECTOR, Buffer.from(bm));
  }

  /** Fill the first and last sector of `buf` (covering sectors [s0, s1) of block b) with their
   *  current contents: from this file when the bit is set (bm given), else from the parent. */
  private async fillEdges(b: number, bm: Buffer | undefined, s0: number, s1: number, buf: Buffer, dataPos: number): Promise<void> {
    const edges = s1 - 1 > s0 ? [s0, s1 - 1] : [s0];
    await Promise.all(edges.map(async (s) => {
      const virt = b * this.bs + s * SECTOR;
      const len = Math.min(SECTOR, this.size - virt);
      if (len <= 0) return;
      const src = bm && testBit(bm, s) ? await this.storage.read(dataPos + s * SECTOR, len)
        : this.parent ? await this.parent.read(virt, len) : Buffer.alloc(len);
      src.copy(buf, (s - s0) * SECTOR);
    }));
  }

  /** Queue an allocation of block b (the caller holds b's lock) and wait for its batch. */
  private allocate(b: number, inOff: number, piece: Buffer): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ b, inOff, piece, resolve, reject });
      if (!this.allocating) {
        this.allocating = true;
        setImmediate(() => void this.runAllocations());
      }
    });
  }

  /** One allocator at a time; requests that arrive while a batch is being made durable form the
   *  next batch (group commit: one flush for many new blocks). */
  private async runAllocations(): Promise<void> {
    while (this.pending.length > 0) {
      const batch: PendingAllocation[] = [];
      let bytes = 0;
      while (this.pending.length > 0 && (batch.length === 0 || bytes + this.bs <= MAX_BATCH_BYTES)) {
        batch.push(this.pending.shift()!);
        bytes += this.bs + DATA_ALIGNMENT;
      }
      try {
        await this.allocateBatch(batch);
        for (const r of batch) r.resolve();
      } catch (e) {
        for (const r of batch) r.reject(e);
      }
    }
    this.allocating = false;
  }

  /**
   * Allocate the blocks of `batch` (distinct blocks, each caller holding its block's lock) and
   * write each request's data into its new block.
   *
   * Crash safety — the order of writes. Invariant: at every point the file ends with a valid
   * footer and every BAT entry points at a fully written block inside the file, so a crash at any
   * point leaves a file that opens and passes checkVhd (at worst with leaked space, a warning):
   *   (1) append, in ONE write starting right after the current footer: for each new block the
   *       zero gap up to its 4 KiB-aligned data area, its bitmap and its data (unwritten sectors
   *       zero), then the NEW footer. This is the spec's "write the new footer at the new end,
   *       then the block where the old footer was", done as one append: the old footer stays
   *       valid until the new one lands, and with storage that zero-fills gaps (EVHD) nothing is
   *       written twice;
   *   (2) zero the old footer, which now sits inside the first block's gap;
   *   (3) flush, so (1) and (2) are durable before anything points at them;
   *   (4) write the BAT entries. A crash before (4) leaves the new blocks unreferenced.
   * A torn footer write at the end of the file is covered by the footer copy at offset 0 (dynamic
   * and differencing disks always have it). Every structure written here is whole 512-byte
   * sectors (footer, bitmap) or lies inside one (a BAT entry), so a sector-atomic medium never
   * tears one. A differencing block's data area holds the parent's data wherever the request does
   * not write (see copyParentAround). test/layers/powercut.test.ts cuts power at every point of
   * this sequence, keeping any subset of what was not flushed.
   */
  private async allocateBatch(batch: PendingAllocation[]): Promise<void> {
    const F = this.footerOffset;
    const appendAt = F + FOOTER_SIZE;
    const layout: Array<{ req: PendingAllocation; bitmapPos: number; dataPos: number }> = [];
    let cursor = appendAt;
    for (const req of batch) {
      const dataPos = roundUp(cursor + this.bmSize, DATA_ALIGNMENT);
      layout.push({ req, bitmapPos: dataPos - this.bmSize, dataPos });
      cursor = dataPos + this.bs;
    }
    const newFooter = cursor;
    if ((newFooter - this.bs - this.bmSize) / SECTOR >= UNALLOCATED) {
      throw new MedvError('ENOSPACE', 'VHD file would grow past what a BAT entry can address', { file: this.description, offset: newFooter });
    }
    const append = Buffer.alloc(newFooter + FOOTER_SIZE - appendAt);
    const bitmaps: Buffer[] = [];
    const copies: Promise<void>[] = [];
    for (const { req, bitmapPos, dataPos } of layout) {
      const { b, inOff, piece } = req;
      const bm = append.subarray(bitmapPos - appendAt, dataPos - appendAt);
      const s0 = Math.floor(inOff / SECTOR);
      const s1 = Math.ceil((inOff + piece.length) / SECTOR);
      if (this.meta.type === 'dynamic') {
        bm.fill(0xff);
      } else {
        setBits(bm, s0, s1 - s0);
        copies.push(this.copyParentAround(b, inOff, piece.length, append.subarray(dataPos - appendAt, dataPos - appendAt + this.bs)));
      }
      piece.copy(append, dataPos - appendAt + inOff);
      bitmaps.push(bm);
    }
    await Promise.all(copies);
    this.meta.footerRaw.copy(append, newFooter - appendAt);
    try {
      await this.writeAppend(appendAt, append);                  // (1)
      await this.storage.write(F, Buffer.alloc(FOOTER_SIZE));    // (2)
      await this.storage.flush();                                // (3)
      // (4) BAT entries, one write per run of consecutive block numbers.
      const sorted = [...layout].sort((x, y) => x.req.b - y.req.b);
      for (let i = 0; i < sorted.length;) {
        let j = i + 1;
        while (j < sorted.length && sorted[j].req.b === sorted[j - 1].req.b + 1) j++;
        const run = Buffer.concat(sorted.slice(i, j).map((x) => serializeBatEntry(x.bitmapPos / SECTOR)));
        await this.storage.write(this.meta.batOffset! + 4 * sorted[i].req.b, run);
        i = j;
      }
    } catch (e) {
      // Whatever reached the file stays unreferenced; never reuse that space.
      this.footerOffset = Math.max(this.footerOffset, newFooter);
      throw e;
    }
    this.footerOffset = newFooter;
    layout.forEach(({ req, bitmapPos }, i) => {
      this.bat![req.b] = bitmapPos / SECTOR;
      this.allocated++;
      const bm = Buffer.from(bitmaps[i]);
      this.bitmaps.set(req.b, Promise.resolve(bm));
      this.loadedBitmaps.set(req.b, bm);
    });
  }

  /**
   * Differencing disks: fill the data area of a new block (`area`) with the parent's data, except
   * [inOff, inOff + len), which the request writes (copy-on-write of the whole block, as qcow2
   * does for clusters over a backing file). Relied on by writeAllocatedLocked: a later write into
   * a sector whose bit is still 0 writes the data, then the bitmap, with no flush in between; if
   * a power cut keeps the bitmap but not the data, the sector reads this copy, i.e. its old value
   * (found by test/layers/powercut.test.ts, vhd-diff and undo seed 1002: with a
   * zero-filled area such a sector read zeros, neither old nor new).
   */
  private async copyParentAround(b: number, inOff: number, len: number, area: Buffer): Promise<void> {
    const virt = b * this.bs;
    const blockEnd = Math.min(this.bs, this.size - virt);
    const parts: Array<[number, number]> = [[0, Math.min(inOff, blockEnd)], [inOff + len, blockEnd]];
    await Promise.all(parts.filter(([a, z]) => z > a).map(async ([a, z]) => {
      (await this.parent!.read(virt + a, z - a)).copy(area, a);
    }));
  }

  /** Files and EVHD containers accept a write past their end (the gap reads as zeros); storage
   *  that refuses one (ERANGE, e.g. memory) is grown first. Only a file whose end was damaged
   *  (footer taken from the copy at offset 0) ever needs a gap here. */
  private async writeAppend(at: number, data: Buffer): Promise<void> {
    try {
      await this.storage.write(at, data);
    } catch (e) {
      const s = this.storage;
      if (!isMedvError(e, 'ERANGE') || !s.resize || !s.capabilities.resizable || s.size >= at) throw e;
      await s.resize(at);
      await s.write(at, data);
    }
  }

  async flush(): Promise<void> {
    this.assertOpen();
    if (!this.readOnly) await this.storage.flush();
  }

  /** The footer's saved-state flag (byte 84). */
  get savedState(): boolean { return this.meta.footer.savedState; }

  /**
   * Set or clear the footer's saved-state flag, durably: set when the VM using this disk is
   * suspended, cleared once its resume has the state. Every other byte of the footer is kept as it
   * is (a footer written by another tool stays that tool's); the checksum is recomputed.
   *
   * Write order: the footer at the end of the file, then (dynamic and differencing) the copy at
   * offset 0, then a flush. Each is one sector, never torn on a sector-atomic medium, so after a
   * crash each holds the old or the new flag with a valid checksum; the end one is what an open
   * reads. Waits for a block allocation in progress (which rewrites the footer) to finish first.
   */
  async setSavedState(flag: boolean): Promise<void> {
    this.assertWritable();
    while (this.allocating) await new Promise((r) => setImmediate(r));
    if (this.meta.footer.savedState === flag) return;
    const raw = Buffer.from(this.meta.footerRaw);
    raw[84] = flag ? 1 : 0;
    raw.writeUInt32BE(vhdChecksum(raw, 64), 64);
    await this.storage.write(this.footerOffset, raw);
    if (this.meta.type !== 'fixed') await this.storage.write(0, raw);
    await this.storage.flush();
    this.meta.footerRaw = raw;
    this.meta.footer = { ...this.meta.footer, savedState: flag, checksum: raw.readUInt32BE(64) };
  }

  /** A hint only: contents are unspecified afterwards; this layer keeps them (no deallocation,
   *  which could not be made crash-safe cheaply). */
  async discard(offset: number, length: number): Promise<void> {
    this.assertWritable();
    validateRequest(this, offset, length, true);
  }

  /** Reads back zeros afterwards. Unallocated blocks of a dynamic disk already read as zeros and
   *  stay unallocated; a differencing disk writes zeros into this layer (hiding the parent). */
  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.assertWritable();
    validateRequest(this, offset, length, true);
    if (length === 0) return;
    if (this.meta.type === 'fixed') {
      await this.storage.writeZeroes(offset, length);
    } else {
      let zeros: Buffer | undefined;
      await this.forEachBlock(offset, length, async (b, inOff, _at, len) => {
        if (this.meta.type === 'dynamic' && this.bat![b] === UNALLOCATED) {
          // A concurrent allocation of this block zero-fills it; nothing to do either way.
          return;
        }
        if (!zeros || zeros.length < len) zeros = Buffer.alloc(Math.max(len, zeros?.length ?? 0));
        await this.writeInBlock(b, inOff, zeros.subarray(0, len));
      });
    }
    if (options?.fua) await this.storage.flush();
  }

  /**
   * Allocation of [offset, offset + length) (BlockDevice.extents): a fixed disk is all data; an
   * unallocated block of a dynamic disk is a hole that reads as zeros; in a differencing disk the
   * sectors this file holds are data and the others are what the parent reports (data when it
   * cannot tell). One call walks at most 4096 blocks or stops where the parent answered only a first
   * part; the caller asks again for the rest.
   */
  async extents(offset: number, length: number): Promise<Array<import('../../block/device.js').Extent>> {
    this.assertOpen();
    validateRequest(this, offset, length, false);
    if (length === 0) return [];
    if (this.meta.type === 'fixed') return [{ length, hole: false, zero: false }];
    const out: Array<import('../../block/device.js').Extent> = [];
    const add = (len: number, hole: boolean, zero: boolean): void => {
      if (len <= 0) return;
      const last = out[out.length - 1];
      if (last && last.hole === hole && last.zero === zero) last.length += len;
      else out.push({ length: len, hole, zero });
    };
    /** The parent's extents for [at, at + len); false when it covered only a first part. */
    const fromParent = async (at: number, len: number): Promise<boolean> => {
      if (!this.parent?.extents) { add(len, false, false); return true; }
      let covered = 0;
      for (const e of await this.parent.extents(at, len)) {
        const n = Math.min(e.length, len - covered);
        if (!(n > 0)) break;
        add(n, e.hole, e.zero);
        covered += n;
      }
      return covered >= len;
    };
    const bs = this.bs;
    const end = offset + length;
    let pos = offset;
    for (let walked = 0; pos < end && walked < 4096; walked++) {
      const b = Math.floor(pos / bs);
      const base = b * bs;
      const blockEnd = Math.min(end, base + bs);
      if (this.bat![b] === UNALLOCATED) {
        if (this.meta.type === 'dynamic') add(blockEnd - pos, true, true);
        else if (!(await fromParent(pos, blockEnd - pos))) return out;
      } else if (this.meta.type === 'dynamic') {
        add(blockEnd - pos, false, false);
      } else {
        const bm = await this.bitmap(b);
        const s0 = Math.floor((pos - base) / SECTOR);
        const s1 = Math.ceil((blockEnd - base) / SECTOR);
        for (const run of bitRuns(bm, s0, s1 - s0)) {
          const a = Math.max(pos, base + run.first * SECTOR);
          const z = Math.min(blockEnd, base + (run.first + run.count) * SECTOR);
          if (run.set) add(z - a, false, false);
          else if (!(await fromParent(a, z - a))) return out;
        }
      }
      pos = blockEnd;
    }
    return out;
  }

  /** Byte ranges of the virtual disk stored in THIS file (allocated blocks of a dynamic disk,
   *  set bitmap bits of a differencing disk, everything for a fixed disk), ascending and merged. */
  async allocatedRanges(): Promise<Array<{ offset: number; length: number }>> {
    this.assertOpen();
    if (this.meta.type === 'fixed') return this.size > 0 ? [{ offset: 0, length: this.size }] : [];
    const out: Array<{ offset: number; length: number }> = [];
    const add = (start: number, end: number): void => {
      end = Math.min(end, this.size);
      if (end <= start) return;
      const lastR = out[out.length - 1];
      if (lastR && lastR.offset + lastR.length === start) lastR.length += end - start;
      else out.push({ offset: start, length: end - start });
    };
    const spb = this.bs / SECTOR;
    for (let b = 0; b < this.bat!.length; b++) {
      if (this.bat![b] === UNALLOCATED) continue;
      const base = b * this.bs;
      if (this.meta.type === 'dynamic') { add(base, base + this.bs); continue; }
      const bm = await this.bitmap(b);
      for (const run of bitRuns(bm, 0, spb)) if (run.set) add(base + run.first * SECTOR, base + (run.first + run.count) * SECTOR);
    }
    return out;
  }

  /** @internal For compaction: the raw bitmap and data area of block b, or undefined if unallocated. */
  async rawBlock(b: number): Promise<{ bitmap: Buffer; data: Buffer } | undefined> {
    this.assertOpen();
    if (!this.bat || b >= this.bat.length || this.bat[b] === UNALLOCATED) return undefined;
    const pos = this.bat[b] * SECTOR;
    const data = await this.storage.read(pos + this.bmSize, this.bs);
    const bitmap = this.meta.type === 'differencing' ? Buffer.from(await this.bitmap(b)) : Buffer.alloc(this.bmSize, 0xff);
    return { bitmap, data };
  }

  /** @internal */
  get blockCount(): number { return this.bat?.length ?? 0; }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let first: unknown;
    try { await this.storage.close(); } catch (e) { first = e; }
    if (this.parent) { try { await this.parent.close(); } catch (e) { first ??= e; } }
    if (first) throw first;
  }

  private assertOpen(): void {
    if (this.closed) throw new MedvError('ECLOSED', 'VHD is closed', { file: this.description });
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.readOnly) throw new MedvError('EREADONLY', 'VHD is open read-only', { file: this.description });
  }
}
