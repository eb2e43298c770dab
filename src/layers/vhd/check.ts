import type { BlockDevice } from '../../block/device.js';
import { isMedvError } from '../../core/errors.js';
import { SECTOR, UNALLOCATED } from '../../formats/vhd/index.js';
import { type Issues, loadVhdMeta } from './metadata.js';

/**
 * Structural check of a VHD file: footer (and its copy), dynamic header, BAT entries inside the
 * file and clear of metadata and of each other, parent locators, bitmaps readable. Leaked space
 * (file regions nothing references, e.g. after a crash during block allocation) is a warning.
 * Never throws for a damaged file: problems come back as `errors`.
 */
export async function checkVhd(storage: BlockDevice, name?: string): Promise<{ ok: boolean; errors: string[]; warnings: string[] }> {
  const issues: Issues = { errors: [], warnings: [] };
  const file = name ?? storage.description;
  try {
    const meta = await loadVhdMeta(storage, file, issues);
    if (meta?.bat && meta.bitmapSize) {
      for (let b = 0; b < meta.bat.length; b++) {
        const e = meta.bat[b];
        if (e === UNALLOCATED) continue;
        try {
          const bm = await storage.read(e * SECTOR, meta.bitmapSize);
          if (bm.length !== meta.bitmapSize) issues.errors.push(`ECORRUPT: bitmap of block ${b} is short (${file}, offset ${e * SECTOR})`);
        } catch (err) {
          if (!isMedvError(err)) throw err;
          issues.errors.push(`${err.code}: bitmap of block ${b} unreadable: ${err.message}`);
        }
      }
    }
  } catch (e) {
    if (!isMedvError(e)) throw e;
    issues.errors.push(`${e.code}: ${e.message}`);
  }
  return { ok: issues.errors.length === 0, errors: issues.errors, warnings: issues.warnings };
}
