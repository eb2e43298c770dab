/**
 * Shared pieces of the packed-image formats (.ckm pack, .ckm.index): constants, the bounds-checked
 * reader every parser uses, LEB128 varints, image names. Pure: no I/O.
 */
import { type ErrorCode, MedvError } from '../../core/errors.js';

/** Bytes of one block of the virtual disk (the unit of dedup and transfer). */
export const CKM_BLOCK_SIZE = 4096;
/** Blocks per run: a run is 1 MiB of the virtual disk, the unit of the index table. */
export const CKM_RUN_BLOCKS = 256;
export const CKM_RUN_BYTES = CKM_BLOCK_SIZE * CKM_RUN_BLOCKS;
/** Block ids: keyed BLAKE2b-128 of the 4 KiB plaintext block. */
export const CKM_ID_BYTES = 16;
export const CKM_IMAGE_ID_BYTES = 16;
/** XChaCha20-Poly1305 tag appended to every stored block. */
export const CKM_TAG_BYTES = 16;
/** Largest stored block: a raw (uncompressed) 4 KiB block plus its tag. */
export const CKM_MAX_STORED = CKM_BLOCK_SIZE + CKM_TAG_BYTES;
/** Smallest stored block: one byte of payload plus the tag. */
export const CKM_MIN_STORED = 1 + CKM_TAG_BYTES;
/** Largest virtual disk an index may describe (64 TiB). */
export const CKM_MAX_VIRTUAL_SIZE = 2 ** 46;
/** Largest image version number. */
export const CKM_MAX_VERSION = 0x7fffffff;

/** How a block is stored in a pack. */
export type BlockKind = 'zstd' | 'raw' | 'delta';
export const KIND_CODE: Record<BlockKind, number> = { zstd: 0, raw: 1, delta: 2 };
export const KIND_BY_CODE: readonly BlockKind[] = ['zstd', 'raw', 'delta'];

/** Where a structure sits, for error messages. */
export interface CkmContext {
  file?: string;
  /** Byte offset of the buffer's first byte in that file. */
  offset?: number;
}

export function ckmError(code: ErrorCode, message: string, ctx: CkmContext | undefined, rel = 0): MedvError {
  return new MedvError(code, message, { file: ctx?.file, offset: (ctx?.offset ?? 0) + rel });
}

/** Image names: what `<NAME>_<VERSION>.ckm` is built from, so nothing that could escape a folder. */
export const IMAGE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** EINVAL_ARG unless `name` is an image name (`what` names it in the message). */
export function checkImageName(name: unknown, what = 'image name'): string {
  if (typeof name !== 'string' || !IMAGE_NAME_RE.test(name)) {
    throw new MedvError('EINVAL_ARG', `${what} must be 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or digit), not ${(JSON.stringify(name) ?? String(name)).slice(0, 80)}`);
  }
  return name;
}

export function checkImageVersion(version: number): void {
  if (!Number.isSafeInteger(version) || version < 1 || version > CKM_MAX_VERSION) {
    throw new MedvError('EINVAL_ARG', `image version ${version} must be an integer from 1 to ${CKM_MAX_VERSION}`);
  }
}

/** `<NAME>_<VERSION>.ckm` */
export function packFileName(name: string, version: number): string {
  checkImageName(name);
  checkImageVersion(version);
  return `${name}_${version}.ckm`;
}

/** `<NAME>_<VERSION>.ckm.index` */
export function indexFileName(name: string, version: number): string {
  return `${packFileName(name, version)}.index`;
}

/**
 * A read cursor over a buffer: every read checks the bytes are there first and fails with
 * ETRUNCATED naming the file and offset otherwise.
 */
export class Reader {
  pos = 0;
  constructor(readonly buf: Buffer, readonly ctx: CkmContext | undefined, readonly what: string) {}

  get remaining(): number { return this.buf.length - this.pos; }

  need(n: number): void {
    if (n > this.remaining) {
      throw ckmError('ETRUNCATED', `${this.what} ends after ${this.buf.length} bytes, ${n} more needed at ${this.pos}`, this.ctx, this.pos);
    }
  }

  bytes(n: number): Buffer {
    this.need(n);
    const b = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return b;
  }

  u8(): number { this.need(1); return this.buf[this.pos++]; }
  u16(): number { this.need(2); const v = this.buf.readUInt16LE(this.pos); this.pos += 2; return v; }
  u32(): number { this.need(4); const v = this.buf.readUInt32LE(this.pos); this.pos += 4; return v; }
  u64(): bigint { this.need(8); const v = this.buf.readBigUInt64LE(this.pos); this.pos += 8; return v; }

  /** A u64 that must fit a JS number safely (else EFORMAT). */
  u64n(field: string): number {
    const at = this.pos;
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw ckmError('EFORMAT', `${field} ${v} is out of range`, this.ctx, at);
    return Number(v);
  }

  /** Unsigned LEB128, at most 8 bytes (values below 2^53). */
  varint(field: string): number {
    const at = this.pos;
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      v += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) {
        if (i > 0 && b === 0) throw ckmError('EFORMAT', `${field}: varint is not minimal`, this.ctx, at);
        if (!Number.isSafeInteger(v)) throw ckmError('EFORMAT', `${field} is out of range`, this.ctx, at);
        return v;
      }
      mul *= 128;
    }
    throw ckmError('EFORMAT', `${field}: varint longer than 8 bytes`, this.ctx, at);
  }
}

/** A growable byte writer (serialisers only). */
export class Writer {
  private buf = Buffer.alloc(256);
  len = 0;

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = Buffer.alloc(size);
    this.buf.copy(b, 0, 0, this.len);
    this.buf = b;
  }

  bytes(b: Buffer): void { this.room(b.length); b.copy(this.buf, this.len); this.len += b.length; }
  u8(v: number): void { this.room(1); this.buf[this.len++] = v; }
  u16(v: number): void { this.room(2); this.buf.writeUInt16LE(v, this.len); this.len += 2; }
  u32(v: number): void { this.room(4); this.buf.writeUInt32LE(v, this.len); this.len += 4; }
  u64(v: number | bigint): void { this.room(8); this.buf.writeBigUInt64LE(BigInt(v), this.len); this.len += 8; }

  varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new MedvError('EINTERNAL', `varint value ${v} out of range`);
    let x = v;
    do {
      let b = x % 128;
      x = Math.floor(x / 128);
      if (x > 0) b |= 0x80;
      this.u8(b);
    } while (x > 0);
  }

  done(): Buffer { return Buffer.from(this.buf.subarray(0, this.len)); }
}

export function checkLength(name: string, b: Buffer, n: number): void {
  if (!Buffer.isBuffer(b) || b.length !== n) throw new MedvError('EINVAL_ARG', `${name} must be ${n} bytes`);
}
