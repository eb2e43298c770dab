/**
 * Builds the block stack for a disk file on the host, by format:
 *   raw:  FileDevice
 *   vhd:  FileDevice -> VhdDevice                       (differencing: parent from ./parent.ts)
 *   evhd: FileDevice -> EvhdDevice (decrypt) -> VhdDevice
 * The format of the file the user names is `format` when given (`--format`), else read from its
 * name (.evhd, .vhd, .raw, .img), else guessed from its content with a warning. Parents are
 * resolved by ./parent.ts (the one resolver): VHD/EVHD through locators with unique ids checked,
 * raw only when named explicitly and fingerprinted (./rawparent.ts). Every file is locked on open
 * (writers exclusive, readers and parents shared; src/block/flock.ts).
 */
import { closeSync, constants, fstatSync, openSync, readSync, statSync } from 'node:fs';
import type { BlockDevice } from '../block/device.js';
import { FileDevice } from '../block/file.js';
import { MedvError, fromSystemError } from '../core/errors.js';
import type { KekSource } from '../crypto/index.js';
import { PLATFORM_MDVR } from '../formats/vhd/index.js';
import { openEvhdFile } from './evhd/index.js';
import { checkEncryptionOrder, findParentByLocator, nextInChain, notAVhdParent, vhdParentFormat } from './parent.js';
import { verifyRawParent } from './rawparent.js';
import { openVhd, readVhdInfo, type ParentInfo, type VhdDevice, type VhdInfo } from './vhd/index.js';

export type DiskFormat = 'raw' | 'vhd' | 'evhd';
export const DISK_FORMATS: readonly DiskFormat[] = ['raw', 'vhd', 'evhd'];

export interface OpenDiskOptions {
  readOnly?: boolean;
  /** Format of the file named (like qemu-img -f); when absent it is read from the name or guessed. */
  format?: DiskFormat;
  /** Told when the format had to be guessed from the content (the CLI prints it on stderr). */
  warn?: (message: string) => void;
  /** Supplies the key-encryption key the first time an encrypted file is met (lazy: plain disks need none). */
  kek?: () => KekSource;
  /** Open the parent of the named differencing disk writable, with an exclusive lock (undo merge). */
  writableParent?: boolean;
  /**
   * Open the named disk writable even though its VHD saved-state flag is set (the resume of the
   * suspended VM it belongs to). Without it such a disk opens only read-only (ESAVEDSTATE).
   */
  allowSavedState?: boolean;
  /**
   * The parent of the named differencing disk, named by the user instead of found through its
   * locators. Required when that parent is a raw file (checked against the disk's raw-parent record).
   */
  parent?: string;
  /**
   * Open the named file's bytes (and an EVHD's key file) through these paths instead of by name:
   * `/proc/self/fd/N` of files the caller opened without following links and checked
   * (src/core/fsio.ts). `path` still names the disk (messages, its parents' locators).
   */
  via?: DiskVia;
  /** As `via`, for the parent named with `parent`. */
  parentVia?: DiskVia;
  /** Map the files for reading (default true); false for a disk read once, in order: see FileOpenOptions.map. */
  map?: boolean;
}

export interface DiskVia { file: string; keyFile?: string }

/** One file of a disk's chain: the disk itself first, then each parent. */
export interface ChainLink {
  /** The real path it was opened at. */
  path: string;
  format: DiskFormat;
  /** The VHD's unique id (hex); absent for a raw file. */
  uniqueId?: string;
}

export interface OpenedDisk {
  path: string;
  format: DiskFormat;
  /** The virtual disk as the guest sees it. */
  device: BlockDevice;
  /** VHD metadata when format is vhd or evhd. */
  vhd?: VhdDevice;
  /** Where the parent of a differencing disk was found. */
  parent?: { path: string; format: DiskFormat };
  /** Every file the disk reads: itself, then its parents to the end of the chain. */
  chain: ChainLink[];
}

/** A disk is a regular file or a block device: a folder, FIFO, socket or character device is refused before anything opens it. */
function statOrThrow(path: string, shown = path): void {
  let st;
  try { st = statSync(path); } catch (e) { throw fromSystemError(e, shown); }
  if (st.isDirectory()) throw new MedvError('EINVAL_ARG', `is a directory, not a disk: ${shown}`, { file: shown });
  if (!st.isFile() && !st.isBlockDevice()) throw new MedvError('EINVAL_ARG', `not a regular file or block device, not a disk: ${shown}`, { file: shown });
}

/** Probe a file's format from its content: `.evhd` by name; a VHD footer (`conectix`) at the end or start; else raw. */
export function detectFormat(path: string, via?: string): DiskFormat {
  if (path.toLowerCase().endsWith('.evhd')) return 'evhd';
  const file = via ?? path;
  statOrThrow(file, path);
  let fd: number;
  // Never blocks (a FIFO swapped in after the stat); its type is checked again on the descriptor.
  try { fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY); } catch (e) { throw fromSystemError(e, path); }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() && !st.isBlockDevice()) throw new MedvError('EINVAL_ARG', `not a regular file or block device, not a disk: ${path}`, { file: path });
    const head = Buffer.alloc(8);
    const tail = Buffer.alloc(8);
    readSync(fd, head, 0, 8, 0);
    const { size } = st;
    if (size >= 512) readSync(fd, tail, 0, 8, size - 512);
    const cookie = 'conectix';
    if (tail.toString('latin1') === cookie || head.toString('latin1') === cookie) return 'vhd';
    return 'raw';
  } catch (e) {
    throw fromSystemError(e, path);
  } finally {
    closeSync(fd);
  }
}

/**
 * The format of a file the user named: `format` when given; else from the name (.evhd; .vhd and
 * Virtual PC's undo disk .vud; .raw and .img are raw); else guessed from the content, and `warn`
 * is told. ENOENT for a missing file, EINVAL_ARG for a folder, FIFO or other non-disk, whatever
 * the name says. Never used for parents (./parent.ts decides those without looking at content).
 */
export function resolveFormat(path: string, format?: DiskFormat, warn?: (message: string) => void, via?: string): DiskFormat {
  statOrThrow(via ?? path, path); // a missing file or a folder has no format, whatever its name says
  if (format !== undefined) {
    if (!DISK_FORMATS.includes(format)) throw new MedvError('EINVAL_ARG', `unknown disk format '${String(format)}' (raw, vhd or evhd)`);
    return format;
  }
  const lower = path.toLowerCase();
  if (lower.endsWith('.evhd')) return 'evhd';
  if (lower.endsWith('.vhd') || lower.endsWith('.vud')) return 'vhd';
  if (lower.endsWith('.raw') || lower.endsWith('.img')) return 'raw';
  const guessed = detectFormat(path, via);
  warn?.(`format of ${path} not given and not in its name: guessed ${guessed} from its content (say --format ${guessed})`);
  return guessed;
}

export async function openDisk(path: string, options: OpenDiskOptions = {}): Promise<OpenedDisk> {
  const format = resolveFormat(path, options.format, options.warn, options.via?.file);
  return openAt(path, format, options.readOnly ?? false, options, [], true, options.via);
}

async function openAt(path: string, format: DiskFormat, readOnly: boolean, options: OpenDiskOptions, chain: string[], top: boolean, via: DiskVia | undefined): Promise<OpenedDisk> {
  const file = via?.file ?? path;
  const real = nextInChain(file, chain);
  statOrThrow(file, path);
  if (format === 'raw') {
    if (top && options.parent) throw new MedvError('EINVAL_ARG', `${path} is a raw disk: it has no parent to name`, { file: path });
    return { path, format, device: await FileDevice.open(file, { readOnly, map: options.map }), chain: [{ path: real, format }] };
  }
  // A parent opened for writing (undo merge) must have no other name: a shared base would change under every disk over it.
  const unshared = !top && !readOnly;
  const storage: BlockDevice = format === 'evhd'
    ? await openEvhdFile(path, requireKek(options, path), { readOnly, via, unshared, map: options.map })
    : await FileDevice.open(file, { readOnly, unshared, map: options.map });
  let parentChain: ChainLink[] = [];
  let parent: OpenedDisk['parent'];
  let rawParent: BlockDevice | undefined;
  let vhd: VhdDevice;
  try {
    vhd = await openVhd(storage, {
      readOnly,
      name: path,
      allowSavedState: top && options.allowSavedState,
      openParent: async (info) => {
        const opened = await openParentOf(path, format, info, options, [...chain, real], top);
        parent = { path: opened.path, format: opened.format };
        parentChain = opened.chain;
        if (opened.format === 'raw') rawParent = opened.device;
        return opened.device;
      },
    });
  } catch (e) {
    await storage.close().catch(() => undefined);
    throw e;
  }
  try {
    if (top && options.parent && vhd.type !== 'differencing') {
      throw new MedvError('EINVAL_ARG', `${path} is a ${vhd.type} VHD: it has no parent to name`, { file: path });
    }
    // Before anyone can write: the raw parent the user named is the one this disk was made over.
    if (rawParent) await verifyRawParent(vhd, rawParent, parent!.path);
  } catch (e) {
    await vhd.close().catch(() => undefined);
    throw e;
  }
  return { path, format, device: vhd, vhd, parent, chain: [{ path: real, format, uniqueId: vhd.info.uniqueId.toString('hex') }, ...parentChain] };
}

async function openParentOf(childPath: string, childFormat: DiskFormat, info: ParentInfo, options: OpenDiskOptions, chain: string[], top: boolean): Promise<OpenedDisk> {
  const named = top ? options.parent : undefined;
  const overRaw = info.opaqueLocators.some((l) => l.platform === PLATFORM_MDVR);
  const readOnly = !(top && options.writableParent);
  let path: string;
  let format: DiskFormat;
  if (named !== undefined) {
    path = named;
    format = overRaw ? 'raw' : vhdParentFormat(named);
  } else {
    if (overRaw) {
      throw new MedvError('EPARENT', `the parent of ${childPath} is a raw disk (${info.unicodeName}): name it explicitly (undo merge --parent FILE, serve FILE --undo ${childPath})`, { file: childPath });
    }
    path = findParentByLocator(childPath, info);
    format = vhdParentFormat(path);
  }
  const via = named !== undefined ? options.parentVia : undefined;
  const file = via?.file ?? path;
  statOrThrow(file, path);
  checkEncryptionOrder(childPath, childFormat, path, format);
  if (format === 'raw') {
    const real = nextInChain(file, chain);
    return { path, format, device: await FileDevice.open(file, { readOnly, unshared: !readOnly, map: options.map }), chain: [{ path: real, format }] };
  }
  try {
    return await openAt(path, format, readOnly, options, chain, false, via);
  } catch (e) {
    throw notAVhdParent(childPath, path, e);
  }
}

function requireKek(options: { kek?: () => KekSource }, path: string): KekSource {
  if (!options.kek) throw new MedvError('ENOKEY', 'encrypted disk needs a passphrase: set MEDV_PASSPHRASE or use --passphrase-file', { file: path });
  return options.kek();
}

/** Metadata of a disk without opening a parent chain (info command). */
export async function describeDisk(path: string, kek?: () => KekSource, format?: DiskFormat, warn?: (message: string) => void): Promise<{ format: DiskFormat; size: number; vhd?: VhdInfo }> {
  statOrThrow(path);
  const fmt = resolveFormat(path, format, warn);
  if (fmt === 'raw') {
    const f = await FileDevice.open(path, { readOnly: true });
    const size = f.size;
    await f.close();
    return { format: fmt, size };
  }
  const storage = fmt === 'evhd'
    ? await openEvhdFile(path, requireKek({ kek }, path), { readOnly: true })
    : await FileDevice.open(path, { readOnly: true });
  try {
    const vhd = await readVhdInfo(storage, path);
    return { format: fmt, size: vhd.virtualSize, vhd };
  } finally {
    await storage.close();
  }
}
