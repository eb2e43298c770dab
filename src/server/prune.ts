/**
 * Version retention of a repository folder (a console's PackedImages, or a server's DIR/images):
 * keep the `keep` highest versions of one image, delete older indexes and the packs no kept index
 * needs. Touches only files named `<NAME>_<N>.ckm[.index]` whose header parses as a file of that
 * image; everything else is left as it is (and reported).
 *
 * Order (relied on: a client never finds an index whose packs are gone): old indexes are deleted
 * first and the folder fsynced, then the packs. A pack newer than the highest kept index is never
 * deleted (its index may be on its way: uploads send packs first). Do not prune an image while a
 * version of it is being uploaded.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { fsyncDir } from '../core/fsio.js';
import { checkImageName } from '../formats/ckm/index.js';
import { type InspectedFile, inspectRepoFile } from './inspect.js';
import { isFileOfImage } from '../api/names.js';

export interface PruneOptions {
  name: string;
  keep: number;
  dryRun?: boolean;
}

export interface PruneResult {
  dir: string;
  name: string;
  dryRun: boolean;
  /** Versions whose index is kept, highest first. */
  keptVersions: number[];
  /** Files kept (indexes kept and the packs they name). */
  kept: string[];
  /** Files deleted (or, with dryRun, that would be). */
  deleted: string[];
  bytesFreed: number;
  /** Files with the image's name that were left alone, and why. */
  skipped: { file: string; reason: string }[];
}

export async function pruneImages(dir: string, o: PruneOptions): Promise<PruneResult> {
  checkImageName(o.name);
  if (!Number.isSafeInteger(o.keep) || o.keep < 1) throw new MedvError('EINVAL_ARG', `--keep must be 1 or more (the newest version always stays), not ${o.keep}`);
  let entries: string[];
  try {
    const st = await fs.promises.stat(dir);
    if (!st.isDirectory()) throw new MedvError('EINVAL_ARG', 'not a folder', { file: dir });
    entries = (await fs.promises.readdir(dir)).sort();
  } catch (e) {
    throw fromSystemError(e, dir);
  }
  const skipped: PruneResult['skipped'] = [];
  const indexes: InspectedFile[] = [];
  const packs: InspectedFile[] = [];
  for (const file of entries) {
    if (!isFileOfImage(file, o.name)) continue;
    try {
      const f = await inspectRepoFile(join(dir, file), file);
      (f.kind === 'index' ? indexes : packs).push(f);
    } catch (e) {
      skipped.push({ file, reason: e instanceof MedvError ? `${e.message} [${e.code}]` : String(e) });
    }
  }
  indexes.sort((a, b) => b.version - a.version);
  const kept = indexes.slice(0, o.keep);
  const old = indexes.slice(o.keep);
  const needed = new Map<number, Buffer[]>();
  for (const idx of kept) for (const p of idx.packs!) needed.set(p.version, [...(needed.get(p.version) ?? []), p.salt]);
  const imageIds = indexes.map((i) => i.imageId);
  const newest = kept.length ? kept[0].version : Infinity;
  const keptPacks: InspectedFile[] = [];
  const oldPacks: InspectedFile[] = [];
  for (const p of packs) {
    if (needed.get(p.version)?.some((s) => s.equals(p.salt!))) keptPacks.push(p);
    else if (!imageIds.some((id) => id.equals(p.imageId))) skipped.push({ file: p.file, reason: 'its image id is not that of any index of this image' });
    else if (p.version > newest) skipped.push({ file: p.file, reason: `newer than the newest index (version ${newest}): its index may still be on its way` });
    else oldPacks.push(p);
  }
  const result: PruneResult = {
    dir,
    name: o.name,
    dryRun: !!o.dryRun,
    keptVersions: kept.map((i) => i.version),
    kept: [...kept, ...keptPacks].map((f) => f.file).sort(),
    deleted: [...old, ...oldPacks].map((f) => f.file),
    bytesFreed: [...old, ...oldPacks].reduce((n, f) => n + f.size, 0),
    skipped,
  };
  if (o.dryRun) return result;
  for (const group of [old, oldPacks]) {
    for (const f of group) {
      try {
        await fs.promises.unlink(join(dir, f.file));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(e, join(dir, f.file));
      }
    }
    if (group.length) await fsyncDir(dir);
  }
  return result;
}
