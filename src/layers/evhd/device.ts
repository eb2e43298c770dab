/**
 * EvhdDevice: the logical bytes of the VHD file inside an .evhd container, as a resizable
 * BlockDevice over a storage device (format: src/formats/evhd.ts).
 *
 * - Reads: one storage read of the whole units covering the request, one batch XTS decrypt.
 * - Writes: whole units are encrypted from a bounce buffer (plaintext never reaches storage, the
 *   caller's buffer is never modified); a partly covered head or tail unit is read-modify-written
 *   under that unit's lock, so concurrent small writes into one unit never lose each other. A whole
 *   request is one storage write and one xtsCrypt call. Whole units need no lock: two requests
 *   that do not overlap in bytes cannot both cover the same unit completely.
 * - Growth (a write past the end, or resize up), serialised by one mutex. Crash-safety order:
 *     1. write the data units: encrypted zeros for the gap [old end, write offset), then the data;
 *     2. fdatasync the storage;
 *     3. rewrite the header with the new logical length (one 512-byte sector; see formats/evhd.ts).
 *   A crash before 3 leaves the old length and some unreferenced units past it, which the next
 *   growth overwrites (every byte that becomes logical is written explicitly in step 1, so stale
 *   ciphertext past the end is never exposed). flush() makes the header durable.
 * - Shrink: rewrite the header, fdatasync, then truncate the storage (a crash between leaves
 *   unreferenced units only).
 * - The bytes of the last unit past the logical length are unspecified on disk and never read.
 * - Power cuts (test/layers/powercut.test.ts): the storage is assumed to write 512-byte sectors
 *   atomically, not 4 KiB units. That is enough: XTS encrypts each 16-byte block of a unit on its
 *   own (tweak i, block position j), so a unit torn at a sector boundary decrypts to the old
 *   plaintext in its old sectors and the new plaintext in its new ones, the same outcome as a torn
 *   write to an unencrypted disk; the VHD inside keeps its structures in whole sectors. A header
 *   rewrite changes only its first sector (formats/evhd.ts), so it is old or new, never torn, and
 *   it is written only after the units it makes visible are durable (growth order above).
 */
import { type BlockCapabilities, type BlockDevice, type FileRange, type WriteOptions, defaultCapabilities } from '../../block/device.js';
import type { DataKey } from '../../crypto/datakey.js';
import { MedvError, fromSystemError } from '../../core/errors.js';
import { EVHD_HEADER_SIZE, EVHD_MAX_LOGICAL_LENGTH, EVHD_UNIT_SIZE, type EvhdHeader, parseEvhdHeader } from '../../formats/evhd.js';
import { sealEvhdHeader } from './keycheck.js';
import { native } from '../../native.js';
import { KeyedLocks, Mutex } from '../../block/lock.js';
import { forEachChunk } from '../../block/copy.js';
import { readInto } from '../../block/emulate.js';
import { BufferPool } from '../../block/pool.js';

const U = EVHD_UNIT_SIZE;
const H = EVHD_HEADER_SIZE;
/** Batches from this size are encrypted on the thread pool (below it, the hop costs more than it saves). */
const XTS_ASYNC_MIN = 64 * 1024;
/** Whole-unit reads from this size decrypt straight from the storage's file where it has one. */
const MAPPED = { mapped: true } as const;
/** Largest single storage transfer for zero-fill, import and export. */
const CHUNK = 4 * 1024 * 1024;
const MAX_LOGICAL = Number(EVHD_MAX_LOGICAL_LENGTH);

export class EvhdDevice implements BlockDevice {
  readonly capabilities: BlockCapabilities;
  readonly readOnly: boolean;
  private readonly name: string;
  private logical: number;
  private closed = false;
  private readonly unitLocks = new KeyedLocks();
  private readonly growth = new Mutex();
  /** Bounce buffers of whole-unit writes, reused (a fresh one costs more in page faults than the encryption). */
  private readonly bounces = new BufferPool(16 * 1024 * 1024);
  private readonly inflight = new Set<Promise<unknown>>();
  /** Units of an unaligned readIntoNow(), decrypted here and then copied out. */
  private scratch: Buffer | undefined;

  /** Use createEvhd / openEvhd. Takes ownership of `storage` and `key`. */
  constructor(private readonly storage: BlockDevice, private readonly dataKey: DataKey, private hdr: EvhdHeader,
    options: { readOnly?: boolean; name?: string } = {}) {
    this.readOnly = (options.readOnly ?? false) || storage.readOnly;
    this.logical = Number(hdr.logicalLength);
    this.name = options.name ?? storage.description;
    this.capabilities = defaultCapabilities({
      // discard is accepted and does nothing (contents of a discarded range are unspecified);
      // deallocating would need holes in the ciphertext, which decrypt to garbage.
      trim: 'emulate',
      // zeros are encrypted and written like any data.
      zero: 'emulate',
      fua: 'native',
      resizable: !this.readOnly,
      minBlockSize: 1,
      preferredBlockSize: U,
      maxRequestSize: Math.min(storage.capabilities.maxRequestSize, 32 * 1024 * 1024),
    });
  }

  get size(): number { return this.logical; }
  get description(): string { return `evhd ${this.name}`; }
  /** A copy of the current header. */
  get header(): EvhdHeader { return { ...this.hdr, keyId: Buffer.from(this.hdr.keyId), keyCheck: Buffer.from(this.hdr.keyCheck), mac: Buffer.from(this.hdr.mac), logicalLength: BigInt(this.logical) }; }
  get keyId(): Buffer { return Buffer.from(this.hdr.keyId); }

  // -------------------------------------------------------------------------------------------
  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length, false);
    if (length === 0) return Buffer.alloc(0);
    return this.track(this.readUnchecked(offset, length));
  }

  /** Whole units are read and decrypted in the caller's buffer; a partial unit goes through read(). */
  async readInto(buf: Buffer, offset: number): Promise<void> {
    const length = buf.length;
    this.checkRange(offset, length, false);
    if (length === 0) return;
    if (offset % U !== 0 || length % U !== 0) {
      const data = await this.track(this.readUnchecked(offset, length));
      data.copy(buf);
      return;
    }
    await this.track((async () => {
      const range = length >= XTS_ASYNC_MIN ? this.storage.fileRange?.(H + offset, length, MAPPED) : undefined;
      if (range) return this.decryptFromFile(range, buf, offset / U);
      await readInto(this.storage, buf, H + offset);
      await this.xts(buf, offset / U, false);
    })());
  }

  /**
   * Units straight from the storage's file into `buf`, decrypted, in one thread-pool job: the
   * cipher reads the file's mapping (the page cache itself, no copy first; a page the kernel cannot
   * give is EIO, not a crash) or, without one, pread and cipher run in the same job. The event loop
   * copies nothing.
   */
  private async decryptFromFile(range: FileRange, buf: Buffer, firstUnit: number): Promise<void> {
    try {
      if (range.map) await native.xtsFromMapAsync(range.map, range.position, buf, this.dataKey.key, firstUnit, U);
      else await native.preadXtsAsync(range.fd, buf, range.position, this.dataKey.key, firstUnit, U);
    } catch (e) {
      throw fromSystemError(e, this.storage.description);
    }
  }

  /**
   * See BlockDevice.readIntoNow: reads below the thread-pool size, when the storage has their units
   * at hand. Whole units are read and decrypted in `buf`; others through a scratch buffer.
   */
  readIntoNow(buf: Buffer, offset: number): boolean {
    const length = buf.length;
    if (this.closed || length === 0 || length >= XTS_ASYNC_MIN || offset < 0 || offset + length > this.logical) return false;
    const u0 = Math.floor(offset / U);
    const u1 = Math.ceil((offset + length) / U);
    const whole = offset === u0 * U && offset + length === u1 * U;
    const units = whole ? buf : (this.scratch ??= Buffer.allocUnsafeSlow(XTS_ASYNC_MIN + U)).subarray(0, (u1 - u0) * U);
    if (!this.storage.readIntoNow?.(units, H + u0 * U)) return false;
    try {
      native.xtsCrypt(this.dataKey.key, units, units, u0, U, false);
    } catch {
      return false;
    }
    if (!whole) {
      units.copy(buf, 0, offset - u0 * U, offset - u0 * U + length);
      units.fill(0); // no plaintext left behind in it
    }
    return true;
  }

  private async readUnchecked(offset: number, length: number): Promise<Buffer> {
    const u0 = Math.floor(offset / U);
    const u1 = Math.ceil((offset + length) / U);
    const buf = await this.storage.read(H + u0 * U, (u1 - u0) * U);
    native.xtsCrypt(this.dataKey.key, buf, buf, u0, U, false);
    const start = offset - u0 * U;
    return start === 0 && length === buf.length ? buf : buf.subarray(start, start + length);
  }

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.checkRange(offset, data?.length ?? -1, true);
    if (!Buffer.isBuffer(data) && !((data as unknown) instanceof Uint8Array)) throw new MedvError('EINVAL_ARG', 'write data must be a Buffer', { file: this.name });
    if (data.length === 0) return;
    await this.track((async () => {
      if (offset + data.length > this.logical) await this.growth.run(() => this.growTo(offset + data.length, offset, data));
      else await this.writeUnits(offset, data);
      if (options?.fua) await this.storage.flush();
    })());
  }

  async flush(): Promise<void> {
    this.assertOpen();
    if (this.readOnly) return;
    await this.track(this.storage.flush());
  }

  /** Accepted and ignored: a discarded range's contents are unspecified (see capabilities). */
  async discard(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length, true);
    if (offset + length > this.logical) {
      throw new MedvError('ERANGE', `discard [${offset}, +${length}) is past the end (size ${this.logical})`, { file: this.name, offset });
    }
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.checkRange(offset, length, true);
    if (length === 0) return;
    const zero = Buffer.alloc(Math.min(length, CHUNK));
    await this.track((async () => {
      // Aligned chunks after the first, so the body goes through the lock-free whole-unit path.
      let off = offset;
      while (off < offset + length) {
        const next = Math.min(offset + length, Math.floor(off / CHUNK) * CHUNK + CHUNK);
        const piece = zero.subarray(0, next - off);
        if (next > this.logical) await this.growth.run(() => this.growTo(next, off, piece));
        else await this.writeUnits(off, piece);
        off = next;
      }
      if (options?.fua) await this.storage.flush();
    })());
  }

  async resize(newSize: number): Promise<void> {
    this.assertWritable();
    if (!Number.isSafeInteger(newSize) || newSize < 0 || newSize > MAX_LOGICAL) {
      throw new MedvError('EINVAL_ARG', `invalid EVHD size ${newSize}`, { file: this.name });
    }
    await this.track(this.growth.run(async () => {
      if (newSize > this.logical) await this.growTo(newSize, newSize, undefined);
      else if (newSize < this.logical) await this.shrinkTo(newSize);
    }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await Promise.allSettled([...this.inflight]);
      await this.storage.close();
    } finally {
      this.dataKey.dispose();
    }
  }

  // -------------------------------------------------------------------------------------------
  /**
   * Write `data` at `offset` inside units that exist in storage or lie past the logical end
   * (whose old plaintext counts as zeros). One bounce buffer, one xtsCrypt, one storage write.
   */
  private async writeUnits(offset: number, data: Buffer): Promise<void> {
    const end = offset + data.length;
    const u0 = Math.floor(offset / U);
    const u1 = Math.ceil(end / U);
    const partial: number[] = [];
    if (offset % U !== 0 || end < (u0 + 1) * U) partial.push(u0);
    if (end % U !== 0 && u1 - 1 !== u0) partial.push(u1 - 1);
    const fill = async (): Promise<void> => {
      const bounce = this.bounces.get((u1 - u0) * U);
      await Promise.all(partial.map(async (u) => {
        const plain = await this.readUnitPlain(u);
        plain.copy(bounce, (u - u0) * U);
      }));
      data.copy(bounce, offset - u0 * U);
      await this.xts(bounce, u0, true);
      await this.storage.write(H + u0 * U, bounce);
      this.bounces.put(bounce);
    };
    if (partial.length === 0) await fill();
    else await this.unitLocks.run(partial, fill);
  }

  /** The plaintext of one unit: decrypted from storage, or zeros when it lies past the logical end. */
  private async readUnitPlain(u: number): Promise<Buffer> {
    if (u * U >= this.logical) return Buffer.alloc(U);
    const buf = await this.storage.read(H + u * U, U);
    native.xtsCrypt(this.dataKey.key, buf, buf, u, U, false);
    return buf;
  }

  /**
   * Grow to `newEnd` (under the growth mutex): zero-fill [old end, dataOffset), write `data` at
   * dataOffset when given, fdatasync, then the header. See the order in the file comment.
   */
  private async growTo(newEnd: number, dataOffset: number, data: Buffer | undefined): Promise<void> {
    if (newEnd > MAX_LOGICAL) throw new MedvError('ENOSPACE', `EVHD cannot grow past ${MAX_LOGICAL} bytes`, { file: this.name, offset: newEnd });
    if (newEnd <= this.logical) { // another request grew it meanwhile
      if (data) await this.writeUnits(dataOffset, data);
      return;
    }
    const old = this.logical;
    if (dataOffset > old) {
      const zero = Buffer.alloc(Math.min(CHUNK, dataOffset - old));
      for (let off = old; off < dataOffset;) {
        const next = Math.min(dataOffset, Math.floor(off / CHUNK) * CHUNK + CHUNK);
        await this.writeUnits(off, zero.subarray(0, next - off));
        off = next;
      }
    }
    if (data) await this.writeUnits(dataOffset, data);
    await this.storage.flush();
    await this.writeHeader(newEnd);
    this.logical = newEnd;
  }

  private async shrinkTo(newEnd: number): Promise<void> {
    await this.writeHeader(newEnd);
    await this.storage.flush();
    this.logical = newEnd;
    if (this.storage.capabilities.resizable && this.storage.resize) {
      const keep = H + Math.ceil(newEnd / U) * U;
      if (this.storage.size > keep) await this.storage.resize(keep);
    }
  }

  private async writeHeader(logicalLength: number): Promise<void> {
    const next: EvhdHeader = { ...this.hdr, logicalLength: BigInt(logicalLength) };
    const bytes = sealEvhdHeader(next, this.dataKey);
    await this.storage.write(0, bytes);
    this.hdr = parseEvhdHeader(bytes, this.name);
  }

  /**
   * Fill an empty container (logical length 0) from `source`, sequentially: units are written
   * straight to storage in CHUNK pieces, then fdatasync, then the header (same order as growth,
   * but one header write for the whole import). Used by encryptFile.
   */
  async importFrom(source: BlockDevice, onProgress?: (done: number, total: number) => void): Promise<void> {
    this.assertWritable();
    await this.track(this.growth.run(async () => {
      if (this.logical !== 0) throw new MedvError('EINVAL_ARG', 'importFrom needs an empty EVHD', { file: this.name });
      const total = source.size;
      if (total > MAX_LOGICAL) throw new MedvError('ENOSPACE', `source is larger than an EVHD can hold`, { file: source.description });
      await forEachChunk(source, total, CHUNK, async (off, plain) => {
        const bounce = Buffer.alloc(Math.ceil(plain.length / U) * U);
        plain.copy(bounce);
        native.xtsCrypt(this.dataKey.key, bounce, bounce, off / U, U, true);
        await this.storage.write(H + off, bounce);
        onProgress?.(off + plain.length, total);
      });
      await this.storage.flush();
      await this.writeHeader(total);
      await this.storage.flush();
      this.logical = total;
    }));
  }

  // -------------------------------------------------------------------------------------------
  /** XTS in place; a large batch on the thread pool, so it runs on another core than the event loop. */
  private xts(buf: Buffer, firstUnit: number, encrypt: boolean): Promise<void> | void {
    if (buf.length >= XTS_ASYNC_MIN) return native.xtsCryptAsync(this.dataKey.key, buf, buf, firstUnit, U, encrypt);
    native.xtsCrypt(this.dataKey.key, buf, buf, firstUnit, U, encrypt);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    const done = () => { this.inflight.delete(p); };
    p.then(done, done);
    return p;
  }

  private assertOpen(): void {
    if (this.closed) throw new MedvError('ECLOSED', 'device is closed', { file: this.name });
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.readOnly) throw new MedvError('EREADONLY', 'EVHD is open read-only', { file: this.name });
  }

  private checkRange(offset: number, length: number, write: boolean): void {
    if (write) this.assertWritable(); else this.assertOpen();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new MedvError('EINVAL_ARG', `invalid request offset=${offset} length=${length}`, { file: this.name });
    }
    if (!write && offset + length > this.logical) {
      throw new MedvError('ERANGE', `read [${offset}, +${length}) is past the end (size ${this.logical})`, { file: this.name, offset });
    }
    if (write && offset + length > MAX_LOGICAL) {
      throw new MedvError('ENOSPACE', `EVHD cannot grow past ${MAX_LOGICAL} bytes`, { file: this.name, offset });
    }
  }
}
