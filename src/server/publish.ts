/**
 * Publishing a completed upload into the repository folder, so that a client never sees a file
 * that is half written, of another image, or an index whose packs are missing.
 *
 * Write order (relied on for crash safety):
 *   1. the upload is checked (inspectRepoFile; an index's packs must already be published, with
 *      the lengths and salts the index names) and fsynced in DIR/.uploads;
 *   2. it is hard-linked to its final name in DIR/images (link never replaces an existing file, so
 *      a published file is never overwritten; a concurrent upload of the same name loses the race
 *      and is compared instead; across file systems it is copied first: src/core/fsio.ts linkNew);
 *   3. DIR/images is fsynced, so the new name survives a power cut;
 *   4. only then is the upload removed from DIR/.uploads (by the caller).
 * A crash before 2 leaves nothing visible; after 2 the file is complete (fsynced in 1).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { linkNew } from '../core/fsio.js';

/** The mode of every published pack and index, whatever the umask. */
export const PUBLISHED_MODE = 0o644;
import { type InspectedFile, inspectRepoFile } from './inspect.js';

export interface PublishResult {
  file: string;
  size: number;
  /** 'published': the file is new; 'identical': the same bytes were already published. */
  status: 'published' | 'identical';
}

/** True when both files have the same bytes (read in 1 MiB pieces, never whole). */
export async function sameBytes(a: string, b: string): Promise<boolean> {
  const [fa, fb] = await Promise.all([fs.promises.open(a, 'r'), fs.promises.open(b, 'r')]);
  try {
    const [sa, sb] = await Promise.all([fa.stat(), fb.stat()]);
    if (sa.size !== sb.size) return false;
    const ba = Buffer.alloc(1 << 20);
    const bb = Buffer.alloc(1 << 20);
    for (let pos = 0; pos < sa.size; pos += ba.length) {
      const n = Math.min(ba.length, sa.size - pos);
      const [ra, rb] = await Promise.all([fa.read(ba, 0, n, pos), fb.read(bb, 0, n, pos)]);
      if (ra.bytesRead !== n || rb.bytesRead !== n || !ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
    }
    return true;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/** An index may be published only once every pack it names is, exactly as it names it. */
async function checkPacksPublished(idx: InspectedFile, imagesDir: string): Promise<void> {
  for (const ref of idx.packs ?? []) {
    const packFile = `${idx.name}_${ref.version}.ckm`;
    let pack: InspectedFile;
    try {
      pack = await inspectRepoFile(join(imagesDir, packFile), packFile);
    } catch (e) {
      if (e instanceof MedvError && e.code === 'ENOENT') throw new MedvError('EPARENT', `index ${idx.file} names pack ${packFile}, which is not published: upload the packs first`, { file: idx.file });
      throw new MedvError('EPARENT', `index ${idx.file} names pack ${packFile}, whose published copy does not check: ${(e as Error).message}`, { file: idx.file });
    }
    if (pack.size !== ref.length || !pack.salt!.equals(ref.salt) || !pack.imageId.equals(idx.imageId)) {
      throw new MedvError('EPARENT', `index ${idx.file} names pack ${packFile} of ${ref.length} bytes, the published one is another (${pack.size} bytes, other salt or image)`, { file: idx.file });
    }
  }
}

/**
 * Check the file at `src` and publish it as `imagesDir/file`. Throws typed errors: EINVAL_ARG
 * (name), EFORMAT & co (content), EPARENT (an index whose packs are not published), EEXIST (a
 * different file is already published under that name).
 */
export async function publishFile(src: string, file: string, imagesDir: string): Promise<PublishResult> {
  const info = await inspectRepoFile(src, file);
  if (info.kind === 'index') await checkPacksPublished(info, imagesDir);
  const dst = join(imagesDir, file);
  try {
    // published files are readable by all (nginx may serve the folder as another user), writable by none
    await linkNew(src, dst, { mode: PUBLISHED_MODE });
    return { file, size: info.size, status: 'published' };
  } catch (e) {
    if (e instanceof MedvError && e.code === 'EEXIST') {
      if (await sameBytes(src, dst)) return { file, size: info.size, status: 'identical' };
      throw new MedvError('EEXIST', `refusing to overwrite ${file}: a file with other bytes is published under that name`, { file });
    }
    throw fromSystemError(e, dst);
  }
}
