/**
 * Undo disks: a differencing VHD over any parent disk. Writes land in the undo disk; the parent
 * is opened read-only (O_RDONLY) and its write bits are cleared while it is in use.
 * `discard` deletes the undo disk; `merge` commits it into the parent.
 * When the parent is encrypted (.evhd), the undo disk must be an .evhd too (its own data key, .enc beside it).
 *
 * Merge is crash-safe by construction: it copies every range stored in the undo disk into the parent,
 * flushes the parent, and only then deletes the undo disk. An interrupted merge leaves the undo disk
 * intact, and re-running it writes the same data again (idempotent).
 */
import { chmodSync, existsSync, realpathSync, statSync, unlinkSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import type { BlockDevice, WriteOptions } from '../../block/device.js';
import { FileDevice } from '../../block/file.js';
import { MedvError } from '../../errors.js';
import { encPathFor, type KekSource } from '../../crypto/index.js';
import { fsyncDir } from '../../crypto/keyfile.js';
import { createEvhdFile } from '../evhd/index.js';
import { detectFormat, openDisk, type OpenedDisk } from '../open.js';
import { createDifferencingVhd, type VhdDevice } from '../vhd/index.js';

export interface UndoOptions {
  /** Key-encryption key, asked for only when an encrypted file is met. */
  kek?: () => KekSource;
}

export interface UndoDisk {
  /** The guest-visible disk: reads fall through to the parent, writes stay in the undo disk. */
  device: BlockDevice;
  undoPath: string;
  parentPath: string;
}

const MERGE_CHUNK = 1024 * 1024;

export async function createUndoDisk(undoPath: string, parentPath: string, options: UndoOptions = {}): Promise<void> {
  if (existsSync(undoPath)) throw new MedvError('EEXIST', `undo disk already exists: ${undoPath}`, { file: undoPath });
  const parent = await openDisk(parentPath, { readOnly: true, kek: options.kek });
  try {
    const parentFormat = parent.format;
    const undoEncrypted = undoPath.toLowerCase().endsWith('.evhd');
    if (parentFormat === 'evhd' && !undoEncrypted) {
      throw new MedvError('EINVAL_ARG', `the parent is encrypted, so the undo disk must be an .evhd too (got ${undoPath})`, { file: undoPath });
    }
    const absParent = realpathSync(parentPath);
    const spec = {
      size: parent.device.size,
      uniqueId: parent.vhd ? parent.vhd.info.uniqueId : Buffer.alloc(16),
      absolutePath: absParent,
      relativePath: relative(dirname(resolve(undoPath)), absParent) || '.',
      name: absParent,
    };
    const storage: BlockDevice = undoEncrypted
      ? await createEvhdFile(undoPath, requireKek(options, undoPath))
      : await FileDevice.open(undoPath, { create: true });
    try {
      await createDifferencingVhd(storage, spec);
      await storage.flush();
    } finally {
      await storage.close();
    }
  } finally {
    await parent.device.close();
  }
}

/** Open an undo disk for use: its parent read-only with write bits cleared until close. */
export async function openUndoDisk(undoPath: string, options: UndoOptions & { expectParent?: string } = {}): Promise<UndoDisk> {
  let parentPath = '';
  const opened = await openDisk(undoPath, {
    kek: options.kek,
    wrapParent: (path, device) => { parentPath = path; return new ProtectedParent(path, device); },
  });
  if (!opened.vhd || opened.vhd.info.type !== 'differencing') {
    await opened.device.close();
    throw new MedvError('EFORMAT', 'not an undo disk (expected a differencing VHD)', { file: undoPath });
  }
  if (options.expectParent && realpathSync(options.expectParent) !== realpathSync(parentPath)) {
    await opened.device.close();
    throw new MedvError('EPARENT', `undo disk belongs to ${parentPath}, not ${options.expectParent}`, { file: undoPath });
  }
  return { device: opened.device, undoPath, parentPath };
}

/** Commit the undo disk into its parent, then delete it. Returns the number of bytes copied. */
export async function mergeUndoDisk(undoPath: string, options: UndoOptions = {}, onProgress?: (done: number, total: number) => void): Promise<number> {
  const opened: OpenedDisk = await openDisk(undoPath, { kek: options.kek, writableParent: true });
  let copied: number;
  try {
    const undo = opened.vhd as VhdDevice | undefined;
    if (!undo || undo.info.type !== 'differencing' || !undo.parent) {
      throw new MedvError('EFORMAT', 'not an undo disk (expected a differencing VHD)', { file: undoPath });
    }
    copied = await commitUndo(undo, onProgress);
  } finally {
    await opened.device.close();
  }
  // Only now, with the parent durable, may the undo disk go (test/layers/powercut.test.ts).
  await removeUndoFiles(undoPath);
  return copied;
}

/**
 * The copy step of merge: write every range stored in `undo` (a differencing VHD opened over a
 * writable parent) into the parent, then flush the parent. Returns the bytes copied.
 *
 * Write order relied on: the parent is flushed before this returns, and the caller deletes the
 * undo disk only after that. Until then the undo disk is untouched and reads the same whatever
 * part of the copy reached the parent (the ranges copied are exactly the ones it stores itself),
 * so a merge cut short by a crash at any point is finished by running it again.
 */
export async function commitUndo(undo: VhdDevice, onProgress?: (done: number, total: number) => void): Promise<number> {
  const parent = undo.parent;
  if (!parent) throw new MedvError('EFORMAT', 'not an undo disk (expected a differencing VHD)', { file: undo.description });
  const ranges = await undo.allocatedRanges();
  const total = ranges.reduce((n, r) => n + r.length, 0);
  let copied = 0;
  for (const range of ranges) {
    for (let off = range.offset; off < range.offset + range.length; off += MERGE_CHUNK) {
      const len = Math.min(MERGE_CHUNK, range.offset + range.length - off);
      await parent.write(off, await undo.read(off, len));
      copied += len;
      onProgress?.(copied, total);
    }
  }
  await parent.flush();
  return copied;
}

/** Throw the undo disk away: the parent reads as before the undo disk existed. */
export async function discardUndoDisk(undoPath: string): Promise<void> {
  if (!existsSync(undoPath)) throw new MedvError('ENOENT', `no such undo disk: ${undoPath}`, { file: undoPath });
  const format = detectFormat(undoPath);
  if (format === 'raw') throw new MedvError('EFORMAT', 'not an undo disk (expected a differencing VHD)', { file: undoPath });
  await removeUndoFiles(undoPath);
}

/** Delete the undo disk (and its .enc), then fsync the folder so the deletion itself survives a
 *  power cut: a merged or discarded undo disk must not come back over a parent that moved on. */
async function removeUndoFiles(undoPath: string): Promise<void> {
  unlinkSync(undoPath);
  if (undoPath.toLowerCase().endsWith('.evhd') && existsSync(encPathFor(undoPath))) unlinkSync(encPathFor(undoPath));
  await fsyncDir(dirname(resolve(undoPath)));
}

function requireKek(options: UndoOptions, path: string): KekSource {
  if (!options.kek) throw new MedvError('ENOKEY', 'encrypted undo disk needs a passphrase: set MEDV_PASSPHRASE or use --passphrase-file', { file: path });
  return options.kek();
}

/**
 * Read-only view of an undo disk's parent that clears the parent file's write bits while open
 * and restores its mode on close, so other programs cannot change the base under the undo disk.
 */
class ProtectedParent implements BlockDevice {
  private readonly originalMode: number;

  constructor(private readonly path: string, private readonly next: BlockDevice) {
    this.originalMode = statSync(path).mode & 0o7777;
    chmodSync(path, this.originalMode & ~0o222);
  }

  get size(): number { return this.next.size; }
  get readOnly(): boolean { return true; }
  get capabilities() { return this.next.capabilities; }
  get description(): string { return this.next.description; }

  read(offset: number, length: number): Promise<Buffer> { return this.next.read(offset, length); }
  write(_offset: number, _data: Buffer, _options?: WriteOptions): Promise<void> { return this.refuse(); }
  discard(_offset: number, _length: number): Promise<void> { return this.refuse(); }
  writeZeroes(_offset: number, _length: number, _options?: WriteOptions): Promise<void> { return this.refuse(); }
  flush(): Promise<void> { return Promise.resolve(); }

  async close(): Promise<void> {
    try {
      await this.next.close();
    } finally {
      if (existsSync(this.path)) chmodSync(this.path, this.originalMode);
    }
  }

  private refuse(): Promise<never> {
    return Promise.reject(new MedvError('EREADONLY', 'the parent of an undo disk is read-only', { file: this.path }));
  }
}
