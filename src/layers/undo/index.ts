/**
 * Undo disks: a differencing VHD (or EVHD) over a parent disk. Writes land in the undo disk; the
 * parent is opened read-only (O_RDONLY) with a shared kernel lock, so nobody can open it for
 * writing while the undo disk is in use — and the undo disk itself is held with an exclusive lock,
 * so it is never served twice nor merged or discarded while served. File modes are never changed.
 *
 * - The parent is a VHD/EVHD (found through the undo disk's locators, unique id checked) or a raw
 *   file. A raw parent is never found through a locator: the undo disk records its size and a
 *   fingerprint (../rawparent.ts), and the user names it (`serve RAW --undo U`,
 *   `undo merge U --parent RAW`); it is checked before anything is written.
 * - An encrypted parent needs an encrypted undo disk: checked at create and at every open.
 * - `discard` opens and validates the undo disk (a differencing disk, lockable) before deleting it
 *   and its .enc; anything else is refused and nothing is deleted.
 * - `merge` copies every range stored in the undo disk into the parent, flushes the parent, and only
 *   then deletes the undo disk. A parent with more than one hard link (a workspace's shared image
 *   base) is refused (EREADONLY) before anything is written: every name of it would change. An interrupted merge leaves the undo disk intact, and re-running it
 *   writes the same data again (idempotent).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, unlinkSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import type { BlockDevice } from '../../block/device.js';
import { FileDevice } from '../../block/file.js';
import { MedvError } from '../../core/errors.js';
import { encPathFor, type KekSource } from '../../crypto/index.js';
import { fsyncDir } from '../../core/fsio.js';
import { createEvhdFile, openEvhdFile } from '../evhd/index.js';
import { openDisk, type ChainLink, type DiskFormat, type DiskVia, type OpenedDisk } from '../open.js';
import { vhdParentFormat } from '../parent.js';
import { fingerprintRawParent } from '../rawparent.js';
import { createDifferencingVhd, readVhdInfo, type VhdDevice } from '../vhd/index.js';

export interface UndoOptions {
  /** Key-encryption key, asked for only when an encrypted file is met. */
  kek?: () => KekSource;
  /**
   * Where the undo disk (and its .enc) is created, opened or removed, when not at `undoPath`:
   * the same name in a folder the caller opened without following links
   * (`/proc/self/fd/N/<name>`, src/core/fsio.ts). `undoPath` still names it (locators, messages).
   */
  at?: string;
}

export interface UndoDisk {
  /** The guest-visible disk: reads fall through to the parent, writes stay in the undo disk. */
  device: BlockDevice;
  /** The same device as the undo disk's VHD (its footer, e.g. the saved-state flag). */
  vhd: VhdDevice;
  undoPath: string;
  parentPath: string;
  /** The undo disk, then every file below it (src/layers/open.ts ChainLink). */
  chain: ChainLink[];
}

const MERGE_CHUNK = 1024 * 1024;
/** Merge writes whole aligned units of this size (see mergeUndoDisk). */
const MERGE_UNIT = 4096;

/**
 * Create an undo disk over `parentPath`. `format` is the parent's format (else from its name, or
 * guessed with a warning); over a raw parent the undo disk records the parent's size and fingerprint.
 */
export async function createUndoDisk(undoPath: string, parentPath: string, options: UndoOptions & { format?: DiskFormat; warn?: (m: string) => void; parentVia?: DiskVia } = {}): Promise<void> {
  const at = options.at ?? undoPath;
  if (existsSync(at)) throw new MedvError('EEXIST', `undo disk already exists: ${undoPath}`, { file: undoPath });
  const parent = await openDisk(parentPath, { readOnly: true, kek: options.kek, format: options.format, warn: options.warn, via: options.parentVia });
  try {
    const undoEncrypted = undoPath.toLowerCase().endsWith('.evhd');
    if (parent.format === 'evhd' && !undoEncrypted) {
      throw new MedvError('EINVAL_ARG', `the parent is encrypted, so the undo disk must be an .evhd too (got ${undoPath})`, { file: undoPath });
    }
    const absParent = parent.chain[0].path;
    const childUniqueId = randomBytes(16);
    const raw = parent.vhd ? undefined : await fingerprintRawParent(parent.device, childUniqueId);
    const spec = {
      size: parent.device.size,
      uniqueId: parent.vhd ? parent.vhd.info.uniqueId : raw!.parentId,
      absolutePath: absParent,
      relativePath: relative(dirname(resolve(undoPath)), absParent) || '.',
      name: absParent,
      childUniqueId,
      extraLocators: raw ? [raw.locator] : [],
    };
    const storage: BlockDevice = undoEncrypted
      ? await createEvhdFile(at, requireKek(options, undoPath))
      : await FileDevice.open(at, { create: true });
    try {
      await createDifferencingVhd(storage, spec);
      await storage.flush();
    } catch (e) {
      await storage.close().catch(() => undefined);
      await removeUndoFiles(at);
      throw e;
    }
    await storage.close();
  } finally {
    await parent.device.close();
  }
}

/**
 * Open an undo disk for use. Its parent is `parent` when given (a raw parent must be), else found
 * through its locators; it is opened read-only with a shared lock until close.
 */
export async function openUndoDisk(undoPath: string, options: OpenUndoOptions = {}): Promise<UndoDisk> {
  const opened = await openUndo(undoPath, options, false);
  return { device: opened.device, vhd: opened.vhd!, undoPath, parentPath: opened.parent!.path, chain: opened.chain };
}

/** How an undo disk is opened: its parent named (a raw parent must be), and through which paths. */
export interface OpenUndoOptions extends Omit<UndoOptions, 'at'> {
  parent?: string;
  allowSavedState?: boolean;
  /** As OpenDiskOptions.via, for the undo disk. */
  via?: DiskVia;
  /** As OpenDiskOptions.parentVia, for the parent named with `parent`. */
  parentVia?: DiskVia;
}

async function openUndo(undoPath: string, options: OpenUndoOptions, writableParent: boolean): Promise<OpenedDisk> {
  if (!existsSync(options.via?.file ?? undoPath)) throw new MedvError('ENOENT', `no such undo disk: ${undoPath}`, { file: undoPath });
  const opened = await openDisk(undoPath, { kek: options.kek, format: vhdParentFormat(undoPath), parent: options.parent, writableParent, allowSavedState: options.allowSavedState, via: options.via, parentVia: options.parentVia });
  if (!opened.vhd || opened.vhd.type !== 'differencing' || !opened.parent) {
    await opened.device.close();
    throw new MedvError('EFORMAT', 'not an undo disk (expected a differencing VHD)', { file: undoPath });
  }
  return opened;
}

/**
 * Commit the undo disk into its parent, then delete it. Returns the number of bytes copied.
 * A raw parent must be named (`parent`); it is checked against the undo disk's record first.
 */
export async function mergeUndoDisk(undoPath: string, options: UndoOptions & { parent?: string } = {}, onProgress?: (done: number, total: number) => void): Promise<number> {
  const opened = await openUndo(undoPath, options, true);
  let copied: number;
  try {
    copied = await commitUndo(opened.vhd as VhdDevice, onProgress);
    // Only now, with the parent durable, may the undo disk go (test/layers/powercut.test.ts);
    // still holding the exclusive lock on the undo disk: nobody has it open.
    await removeUndoFiles(undoPath);
  } finally {
    await opened.device.close();
  }
  return copied;
}

/**
 * The copy step of merge: write every range stored in `undo` (a differencing VHD opened over a
 * writable parent) into the parent, then flush the parent. Returns the bytes copied.
 *
 * Write order relied on:
 * - the parent is flushed before this returns, and the caller deletes the undo disk only after
 *   that. Until then the undo disk is untouched and reads the same whatever part of the copy
 *   reached the parent (the ranges copied are exactly the ones it stores itself), so a merge cut
 *   short by a crash at any point is finished by running it again;
 * - by the raw-parent check (../rawparent.ts): every 4 KiB-aligned unit that holds undo data is
 *   written whole (the undo disk's view of it: its own sectors, the parent's elsewhere, which
 *   rewrites the parent's bytes unchanged), and no write call crosses a 1 MiB boundary, so each
 *   unit lands in one call and is never left half merged by a crash.
 */
export async function commitUndo(undo: VhdDevice, onProgress?: (done: number, total: number) => void): Promise<number> {
  const parent = undo.parent;
  if (!parent) throw new MedvError('EFORMAT', 'not an undo disk (expected a differencing VHD)', { file: undo.description });
  const spans = alignedSpans(await undo.allocatedRanges(), undo.size);
  const total = spans.reduce((n, r) => n + r.end - r.start, 0);
  let copied = 0;
  for (const span of spans) {
    for (let off = span.start; off < span.end;) {
      const next = Math.min(span.end, (Math.floor(off / MERGE_CHUNK) + 1) * MERGE_CHUNK);
      await parent.write(off, await undo.read(off, next - off));
      copied += next - off;
      onProgress?.(copied, total);
      off = next;
    }
  }
  await parent.flush();
  return copied;
}

/** Ranges widened to whole MERGE_UNITs (clipped to the disk) and coalesced. */
function alignedSpans(ranges: Array<{ offset: number; length: number }>, size: number): Array<{ start: number; end: number }> {
  const out: Array<{ start: number; end: number }> = [];
  for (const r of [...ranges].sort((a, b) => a.offset - b.offset)) {
    const start = Math.floor(r.offset / MERGE_UNIT) * MERGE_UNIT;
    const end = Math.min(size, Math.ceil((r.offset + r.length) / MERGE_UNIT) * MERGE_UNIT);
    const last = out[out.length - 1];
    if (last && start <= last.end) last.end = Math.max(last.end, end);
    else out.push({ start, end });
  }
  return out;
}

/**
 * Throw the undo disk away: the parent reads as before the undo disk existed. The file is opened
 * with an exclusive lock and must be a valid differencing VHD (an .evhd needs its key); anything
 * else is refused and nothing is deleted.
 */
export async function discardUndoDisk(undoPath: string, options: UndoOptions = {}): Promise<void> {
  const at = options.at ?? undoPath;
  if (!existsSync(at)) throw new MedvError('ENOENT', `no such undo disk: ${undoPath}`, { file: undoPath });
  const format = vhdParentFormat(undoPath);
  const storage: BlockDevice = format === 'evhd'
    ? await openEvhdFile(undoPath, requireKek(options, undoPath), { readOnly: false, via: { file: at, keyFile: encPathFor(at) } })
    : await FileDevice.open(at, { readOnly: false });
  try {
    let type: string;
    try {
      type = (await readVhdInfo(storage, undoPath)).type;
    } catch (e) {
      throw new MedvError('EFORMAT', `not an undo disk: ${(e as Error).message}`, { file: undoPath }, { cause: e });
    }
    if (type !== 'differencing') {
      throw new MedvError('EFORMAT', `not an undo disk: a ${type} VHD (only a differencing disk can be discarded)`, { file: undoPath });
    }
    // Still holding the exclusive lock: nobody has it open.
    await removeUndoFiles(at);
  } finally {
    await storage.close();
  }
}

/** Delete the undo disk (and its .enc), then fsync the folder so the deletion itself survives a
 *  power cut: a merged or discarded undo disk must not come back over a parent that moved on. */
async function removeUndoFiles(undoPath: string): Promise<void> {
  if (existsSync(undoPath)) unlinkSync(undoPath);
  if (undoPath.toLowerCase().endsWith('.evhd') && existsSync(encPathFor(undoPath))) unlinkSync(encPathFor(undoPath));
  await fsyncDir(dirname(resolve(undoPath)));
}

function requireKek(options: UndoOptions, path: string): KekSource {
  if (!options.kek) throw new MedvError('ENOKEY', 'encrypted undo disk needs a passphrase: set MEDV_PASSPHRASE or use --passphrase-file', { file: path });
  return options.kek();
}
