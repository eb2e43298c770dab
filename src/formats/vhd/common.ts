/**
 * Shared pieces of the VHD 1.0 format: the checksum, timestamps, constants and the error helper
 * every parser uses. Pure: no I/O.
 */
import { type ErrorCode, MedvError } from '../../core/errors.js';

export const SECTOR = 512;
/** Seconds between 1970-01-01 and 2000-01-01 (UTC): VHD timestamps count from 2000. */
export const VHD_EPOCH = 946684800;
/** VHD 1.0 format version, in the footer and the dynamic disk header. */
export const VHD_VERSION = 0x00010000;
/** qemu's (and the spec's) ceiling: 2040 GiB, i.e. 0xff000000 sectors. */
export const VHD_MAX_SECTORS = 0xff000000;
export const VHD_MAX_SIZE = VHD_MAX_SECTORS * SECTOR;
export const UNALLOCATED = 0xffffffff;

/** Where a structure sits, for error messages. */
export interface ParseContext {
  /** File (or device description) the bytes came from. */
  file?: string;
  /** Byte offset of the buffer's first byte in that file. */
  offset?: number;
}

export function formatError(code: ErrorCode, message: string, ctx: ParseContext | undefined, rel = 0): MedvError {
  return new MedvError(code, message, { file: ctx?.file, offset: (ctx?.offset ?? 0) + rel });
}

/** Ones' complement of the byte sum of `buf`, skipping the 4-byte checksum field at `checksumAt`. */
export function vhdChecksum(buf: Buffer, checksumAt: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) {
    if (i >= checksumAt && i < checksumAt + 4) continue;
    sum = (sum + buf[i]) >>> 0;
  }
  return ~sum >>> 0;
}

export function vhdTimestampNow(): number {
  return Math.max(0, Math.floor(Date.now() / 1000) - VHD_EPOCH) >>> 0;
}

/** Four ASCII bytes as a string (latin1, nothing trimmed). */
export function fourCC(buf: Buffer, at: number): string {
  return buf.toString('latin1', at, at + 4);
}

export function writeFourCC(buf: Buffer, at: number, code: string): void {
  const b = Buffer.alloc(4);
  b.write(code.slice(0, 4), 'latin1');
  b.copy(buf, at);
}

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && Number.isInteger(Math.log2(n));
}

/** A bigint that must fit a JS number safely, else EFORMAT. */
export function toSafeNumber(v: bigint, what: string, ctx: ParseContext | undefined, rel: number): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw formatError('EFORMAT', `${what} ${v} is out of range`, ctx, rel);
  return Number(v);
}
