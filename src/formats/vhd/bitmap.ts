/**
 * Sector bitmaps of dynamic and differencing VHD blocks: one bit per 512-byte sector of the block,
 * most significant bit first (bit 7 of byte 0 is sector 0), padded to whole 512-byte sectors.
 * In a differencing disk a 0 bit means "read this sector from the parent".
 */
import { SECTOR, roundUp } from './common.js';

/** Bytes of the bitmap in front of each block: ceil(sectors / 8) rounded up to whole sectors. */
export function bitmapSize(blockSize: number): number {
  return roundUp(Math.ceil(blockSize / SECTOR / 8), SECTOR);
}

export function testBit(bitmap: Buffer, sector: number): boolean {
  return (bitmap[sector >>> 3] & (0x80 >>> (sector & 7))) !== 0;
}

/** Set bits [first, first + count). Returns true if any bit changed. */
export function setBits(bitmap: Buffer, first: number, count: number): boolean {
  let changed = false;
  let s = first;
  const end = first + count;
  // leading bits up to a byte boundary
  while (s < end && (s & 7) !== 0) {
    const m = 0x80 >>> (s & 7);
    if (!(bitmap[s >>> 3] & m)) { bitmap[s >>> 3] |= m; changed = true; }
    s++;
  }
  while (s + 8 <= end) {
    if (bitmap[s >>> 3] !== 0xff) { bitmap[s >>> 3] = 0xff; changed = true; }
    s += 8;
  }
  while (s < end) {
    const m = 0x80 >>> (s & 7);
    if (!(bitmap[s >>> 3] & m)) { bitmap[s >>> 3] |= m; changed = true; }
    s++;
  }
  return changed;
}

/** True when all bits [first, first + count) are set. */
export function allSet(bitmap: Buffer, first: number, count: number): boolean {
  let s = first;
  const end = first + count;
  while (s < end) {
    if ((s & 7) === 0 && s + 8 <= end) {
      if (bitmap[s >>> 3] !== 0xff) return false;
      s += 8;
    } else {
      if (!testBit(bitmap, s)) return false;
      s++;
    }
  }
  return true;
}

/** Runs of equal bits over [first, first + count): [{ set, first, count }], in order. */
export function bitRuns(bitmap: Buffer, first: number, count: number): Array<{ set: boolean; first: number; count: number }> {
  const runs: Array<{ set: boolean; first: number; count: number }> = [];
  const end = first + count;
  let s = first;
  while (s < end) {
    const set = testBit(bitmap, s);
    let e = s + 1;
    while (e < end) {
      if ((e & 7) === 0 && e + 8 <= end && bitmap[e >>> 3] === (set ? 0xff : 0)) { e += 8; continue; }
      if (testBit(bitmap, e) !== set) break;
      e++;
    }
    runs.push({ set, first: s, count: e - s });
    s = e;
  }
  return runs;
}

export function anySet(bitmap: Buffer, sectors: number): boolean {
  const full = sectors >>> 3;
  for (let i = 0; i < full; i++) if (bitmap[i] !== 0) return true;
  for (let s = full * 8; s < sectors; s++) if (testBit(bitmap, s)) return true;
  return false;
}
