/**
 * The fingerprint of a raw parent (an undo disk over a raw file): its size and keyed hashes of
 * RAW_REGIONS sampled regions (first, last and evenly between), recorded in the undo disk's own
 * "MdvR" locator (formats/vhd/rawparent.ts); the header's parent unique id holds a digest of the
 * record. A raw parent is never found through a locator: the user names it (serve RAW --undo U,
 * undo merge U --parent RAW), and it is checked here before anything is written.
 *
 * Hashes are HMAC-SHA-256 keyed with the undo disk's own unique id (inside the encrypted container
 * for an .evhd undo disk), truncated to 16 bytes. A region also passes when the parent holds there
 * exactly what the undo disk reads there: that is the state after (part of) a merge, so an
 * interrupted merge can be re-run. This relies on the merge writing every 4 KiB-aligned unit it
 * touches whole, in one write call (mergeUndoDisk), so a region is never left half merged.
 */
import { createHmac } from 'node:crypto';
import type { BlockDevice } from '../block/device.js';
import { MedvError } from '../core/errors.js';
import {
  PLATFORM_MDVR, RAW_PARENT_HASH, parseRawParent, serializeRawParent, type RawParentRecord,
} from '../formats/vhd/index.js';
import type { VhdDevice } from './vhd/index.js';

export const RAW_REGIONS = 16;
export const RAW_REGION_LENGTH = 4096;

function regionHash(key: Buffer, size: number, offset: number, data: Buffer): Buffer {
  const head = Buffer.alloc(16);
  head.writeBigUInt64BE(BigInt(size), 0);
  head.writeBigUInt64BE(BigInt(offset), 8);
  return createHmac('sha256', key).update('medv raw parent region v1\0').update(head).update(data).digest().subarray(0, RAW_PARENT_HASH);
}

/** Digest of a record, for the child's parent unique id field. */
function rawParentId(key: Buffer, record: Buffer): Buffer {
  return createHmac('sha256', key).update('medv raw parent id v1\0').update(record).digest().subarray(0, 16);
}

/** Region starts, aligned to RAW_REGION_LENGTH so that a merge writes each region in one call (see mergeUndoDisk). */
function regionOffsets(size: number, length: number): number[] {
  const span = size - length;
  const out = new Set<number>();
  for (let i = 0; i < RAW_REGIONS; i++) out.add(Math.floor(Math.floor((span * i) / (RAW_REGIONS - 1)) / RAW_REGION_LENGTH) * RAW_REGION_LENGTH);
  return [...out].filter((o) => o + length <= size).sort((a, b) => a - b);
}

/** Fingerprint `parent` for an undo disk whose unique id is `key`: the locator data and the parent id. */
export async function fingerprintRawParent(parent: BlockDevice, key: Buffer): Promise<{ locator: { platform: string; data: Buffer }; parentId: Buffer }> {
  const size = parent.size;
  const regionLength = Math.min(RAW_REGION_LENGTH, size);
  const regions: RawParentRecord['regions'] = [];
  for (const offset of regionOffsets(size, regionLength)) {
    regions.push({ offset, hash: regionHash(key, size, offset, await parent.read(offset, regionLength)) });
  }
  const data = serializeRawParent({ size, regionLength, regions });
  return { locator: { platform: PLATFORM_MDVR, data }, parentId: rawParentId(key, data) };
}

/** The raw-parent record of a differencing disk, or undefined when its parent is a VHD. */
function rawParentRecord(child: VhdDevice): { record: RawParentRecord; data: Buffer } | undefined {
  const l = child.info.parent?.opaqueLocators.find((x) => x.platform === PLATFORM_MDVR);
  if (!l) return undefined;
  return { record: parseRawParent(l.data, { file: child.description }), data: l.data };
}

/**
 * Check that `parent` (a raw file the user named) is the one `child` was made over: the same size,
 * the record's digest in the parent id field, and every sampled region as recorded (or, where the
 * child holds data over it, as the child reads it: merged). EPARENT otherwise.
 */
export async function verifyRawParent(child: VhdDevice, parent: BlockDevice, parentName: string): Promise<void> {
  const found = rawParentRecord(child);
  const file = child.description;
  if (!found) throw new MedvError('EPARENT', `${file} was not made over a raw disk: its parent is a VHD, found through its locators`, { file });
  const { record, data } = found;
  const key = child.info.uniqueId;
  if (!rawParentId(key, data).equals(child.info.parent!.uniqueId)) {
    throw new MedvError('EPARENT', 'the raw-parent record does not match the parent id in the header', { file });
  }
  if (parent.size !== record.size || parent.size !== child.size) {
    throw new MedvError('EPARENT', `${parentName} has ${parent.size} bytes, the undo disk was made over a raw disk of ${record.size}`, { file });
  }
  const allocated = await child.allocatedRanges();
  for (const g of record.regions) {
    const bytes = await parent.read(g.offset, record.regionLength);
    if (regionHash(key, record.size, g.offset, bytes).equals(g.hash)) continue;
    const end = g.offset + record.regionLength;
    const covered = allocated.some((r) => r.offset < end && g.offset < r.offset + r.length);
    if (covered && (await child.read(g.offset, record.regionLength)).equals(bytes)) continue;
    throw new MedvError('EPARENT', `${parentName} is not the raw disk the undo disk was made over (it differs at offset ${g.offset})`, { file, parent: parentName });
  }
}
