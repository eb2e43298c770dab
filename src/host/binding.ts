/**
 * Which VM a saved state belongs to. A suspend records, in the saved state's authenticated
 * metadata, each disk of the VM in boot order with every file it reads: the undo disk, the disk,
 * each parent to the end of its chain (found through locators or named), and the key files of
 * the encrypted ones, each with its real path, device, inode, size, mtime and (a VHD) unique id.
 * A resume is refused unless the VM being started is made of exactly those files, unchanged:
 *
 * 1. before any disk is opened (`checkBeforeOpen`): every recorded file is where it was with the
 *    same device, inode, size and mtime (a disk or any parent changed since: ECORRUPT), and the
 *    VM's disks are the recorded ones, by real path (another VM's saved state: ESAVEDSTATE);
 * 2. once the disks are open and locked, before anything is served or resumed (`checkAfterOpen`):
 *    the files the opened stacks actually read, with their unique ids, are the recorded ones.
 * A refusal deletes nothing. Saved states written before the binding existed are checked by the
 * file list they carry (step 1, paths and fingerprints), and only when it names exactly this
 * VM's disks.
 */
import { realpathSync } from 'node:fs';
import { MedvError } from '../core/errors.js';
import { checkFingerprints, fileIdentity, type DiskFingerprint, type FileIdentity, type SavedStateMeta, type VmBinding } from '../hypervisor/savedstate.js';
import { keptUndoPath, type VmConfig, type VmDiskConfig } from './config.js';

/** What the binding records of one opened disk, gathered while it is open. */
export interface BoundDisk {
  mode: VmDiskConfig['mode'];
  /** The disk as configured and its undo disk, real paths. */
  path: string;
  undo?: string;
  /** Every file it reads, top first, with a VHD's unique id (hex); then key files (no id). */
  files: Array<{ path: string; uniqueId?: string }>;
}

/** The binding of these disks as they are now (after they were closed, at suspend). */
export function bindingOf(disks: readonly BoundDisk[]): VmBinding {
  return {
    disks: disks.map((d) => ({
      mode: d.mode, path: d.path, ...(d.undo ? { undo: d.undo } : {}),
      files: d.files.map((f) => fileIdentity(f.path, f.uniqueId)),
    })),
  };
}

/** The flat file list of earlier versions (still written: the first check reads it). */
export function fingerprintsOf(binding: VmBinding): DiskFingerprint[] {
  return binding.disks.flatMap((d) => d.files).map((f) => ({ path: f.path, size: Number(f.size), mtimeNs: f.mtimeNs, ino: Number(f.ino) }));
}

function real(path: string): string {
  try { return realpathSync(path); } catch { return path; }
}

/** The configured disks of a VM as a binding names them (real paths; the undo disk a run would use). */
function configured(config: VmConfig): Array<{ mode: string; path: string; undo?: string }> {
  return config.disks.map((d) => {
    const undo = keptUndoPath(d);
    return { mode: d.mode, path: real(d.path), ...(undo ? { undo: real(undo) } : {}) };
  });
}

function notThisVm(file: string, why: string): MedvError {
  return new MedvError('ESAVEDSTATE', `saved state ${file} does not belong to this VM (${why}); refusing to resume it and leaving it as it is`, { file });
}

/** Step 1 (see the file comment): this VM made of the recorded disks, and the recorded files unchanged. */
export function checkBeforeOpen(meta: SavedStateMeta, config: VmConfig, file: string): void {
  checkOwner(meta, config, file);
  checkFingerprints(meta, file);
}

/** The saved state was taken from this VM's disks (by real path; not whether they changed since). ESAVEDSTATE otherwise. */
export function checkOwner(meta: SavedStateMeta, config: VmConfig, file: string): void {
  const want = configured(config);
  if (meta.binding) {
    const got = meta.binding.disks;
    if (got.length !== want.length) throw notThisVm(file, `it was saved from ${got.length} disk(s), this VM has ${want.length}`);
    got.forEach((g, i) => {
      const w = want[i];
      if (g.mode !== w.mode || g.path !== w.path || (g.undo ?? '') !== (w.undo ?? '')) {
        throw notThisVm(file, `disk ${i} was ${g.path}${g.undo ? ` (writes to ${g.undo})` : ''}, this VM's is ${w.path}${w.undo ? ` (writes to ${w.undo})` : ''}`);
      }
    });
  } else {
    // Written before bindings: the files it lists (disk, undo disk, key files) must be exactly this VM's.
    const listed = new Set(meta.disks.map((d) => real(d.path)).filter((p) => !p.toLowerCase().endsWith('.enc')));
    const mine = new Set(want.flatMap((w) => [w.path, w.undo].filter((p): p is string => Boolean(p))));
    if (listed.size !== mine.size || [...mine].some((p) => !listed.has(p))) throw notThisVm(file, `it lists ${[...listed].join(', ') || 'no disk'}`);
  }
}

/** Step 2: the files the opened disks read are exactly the recorded ones (paths, unique ids, identities). */
export function checkAfterOpen(meta: SavedStateMeta, opened: readonly BoundDisk[], file: string): void {
  if (!meta.binding) return;
  const now = bindingOf(opened);
  meta.binding.disks.forEach((rec, i) => {
    const cur = now.disks[i];
    const same = (a: FileIdentity, b: FileIdentity) => a.path === b.path && (a.uniqueId ?? '') === (b.uniqueId ?? '');
    if (!cur || rec.files.length !== cur.files.length || !rec.files.every((f, j) => same(f, cur.files[j]))) {
      throw notThisVm(file, `disk ${i} now reads ${cur?.files.map((f) => f.path).join(' <- ') ?? 'nothing'}, the saved state was taken over ${rec.files.map((f) => f.path).join(' <- ')}`);
    }
    rec.files.forEach((f, j) => {
      const c = cur.files[j];
      if (f.dev !== c.dev || f.ino !== c.ino || f.size !== c.size || f.mtimeNs !== c.mtimeNs) {
        throw new MedvError('ECORRUPT', `${f.path} changed since the VM was suspended; its saved state cannot be resumed (discard it with: medv vm discard-state)`, { file });
      }
    });
  });
}
