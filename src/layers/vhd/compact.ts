import type { BlockDevice } from '../../block/device.js';
import { MedvError } from '../../core/errors.js';
import {
  FOOTER_SIZE, SECTOR, UNALLOCATED, anySet, emptyLocators, roundUp, serializeBat, type DynamicHeader,
} from '../../formats/vhd/index.js';
import { DATA_ALIGNMENT, type VhdDevice } from './device.js';
import { writeDynamicSkeleton } from './create.js';

/**
 * Write a compacted copy of `src` into `dst` (not in place: `dst` is emptied first and receives a
 * complete VHD; the caller swaps the files afterwards, which is the crash-safe way). Same footer
 * (unique id, size, creator), same block size and parent fields; blocks are written densely in
 * block order, each data area 4 KiB-aligned.
 * - dynamic: blocks whose data is all zeros are dropped;
 * - differencing: blocks with no bitmap bit set are dropped (zero data still hides the parent,
 *   so it is kept).
 * `src` must not be written to meanwhile (open it read-only). Fixed disks: EUNSUPPORTED.
 *
 * Write order relied on: `dst` is flushed before this returns, so everything it holds is durable
 * then; a caller publishes it (rename over the source, then fsync the folder) only after that.
 * Until then a power cut leaves the source as it was and `dst` as scratch to delete
 * (test/layers/powercut.test.ts checks every cut taken after the return).
 */
export async function compactVhd(src: VhdDevice, dst: BlockDevice): Promise<void> {
  const meta = src.meta;
  if (meta.type === 'fixed' || !meta.header || !meta.blockSize || !meta.bitmapSize) {
    throw new MedvError('EUNSUPPORTED', 'only dynamic and differencing VHDs can be compacted', { file: src.description });
  }
  const bs = meta.blockSize;
  const bmSize = meta.bitmapSize;
  const locators = emptyLocators();
  const locatorData: Buffer[] = [];
  for (const l of meta.locators) {
    locators[locatorData.length] = { platform: l.platform, dataSpace: 0, dataLength: 0, dataOffset: 0n };
    locatorData.push(l.raw);
  }
  const header: DynamicHeader = { ...meta.header, locators };
  const footer = { ...meta.footer };
  const { batOffset, footerOffset, footerRaw } = await writeDynamicSkeleton(dst, { footer, header, locatorData });
  const bat = new Uint32Array(header.maxTableEntries).fill(UNALLOCATED);
  let F = footerOffset;
  const sectorsPerBlock = bs / SECTOR;
  for (let b = 0; b < src.blockCount; b++) {
    const raw = await src.rawBlock(b);
    if (!raw) continue;
    if (meta.type === 'dynamic' ? isZero(raw.data) : !anySet(raw.bitmap, sectorsPerBlock)) continue;
    const dataPos = roundUp(F + bmSize, DATA_ALIGNMENT);
    const region = Buffer.alloc(dataPos + bs - F);
    raw.bitmap.copy(region, dataPos - bmSize - F);
    raw.data.copy(region, dataPos - F);
    await dst.write(F, region);
    bat[b] = (dataPos - bmSize) / SECTOR;
    F = dataPos + bs;
  }
  await dst.write(F, footerRaw);
  await dst.write(batOffset, serializeBat(bat));
  if (dst.size > F + FOOTER_SIZE && dst.resize) await dst.resize(F + FOOTER_SIZE);
  await dst.flush();
}

const ZEROS = Buffer.alloc(1 << 20);

function isZero(buf: Buffer): boolean {
  for (let at = 0; at < buf.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, buf.length - at);
    if (!buf.subarray(at, at + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}
