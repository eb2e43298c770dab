/**
 * The Block Allocation Table: one big-endian u32 per block, the absolute SECTOR offset of the
 * block's bitmap, or 0xFFFFFFFF when the block is not allocated. On disk it fills whole sectors
 * (padding entries are 0xFFFFFFFF).
 */
import { type ParseContext, SECTOR, UNALLOCATED, formatError, roundUp } from './common.js';

export { UNALLOCATED };

/** Bytes the BAT occupies on disk for `entries` entries (whole sectors). */
export function batBytes(entries: number): number {
  return roundUp(entries * 4, SECTOR);
}

/** Parse `entries` entries (host order). The buffer may be longer (sector padding). */
export function parseBat(buf: Buffer, entries: number, ctx?: ParseContext): Uint32Array {
  if (buf.length < entries * 4) {
    throw formatError('ETRUNCATED', `BAT needs ${entries * 4} bytes, got ${buf.length}`, ctx);
  }
  const bat = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) bat[i] = buf.readUInt32BE(i * 4);
  return bat;
}

/** Serialize to whole sectors, padding with 0xFFFFFFFF. */
export function serializeBat(bat: Uint32Array): Buffer {
  const buf = Buffer.alloc(batBytes(bat.length), 0xff);
  for (let i = 0; i < bat.length; i++) buf.writeUInt32BE(bat[i], i * 4);
  return buf;
}

/** One entry as 4 big-endian bytes (for updating a single entry in place). */
export function serializeBatEntry(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0, 0);
  return b;
}
