/**
 * Disk assembly for one VM: each disk of its config opened as a block stack (holding its kernel
 * locks) and later served over NBD on its socket in the run folder.
 *
 * - normal: the disk itself, writable;
 * - test:   a fresh undo disk in `Test/` beside the image over the base opened read-only, discarded
 *           when the VM stops;
 * - undo:   Virtual PC undo disks, kept (`.vud` when the .vmc names one, else `<image>.undo.*`);
 * - cdrom:  the image read-only, as raw bytes.
 * A VHD whose saved-state flag is set opens writable only for the resume of its saved state.
 *
 * Every file is opened once, then used through its descriptor (src/core/fsio.ts): a file a .vmc
 * named (`confine`) is reached one component at a time below the .vmc's folder (or mapped drive)
 * without following any link and must be a regular file there; a file named on the command line
 * may be a link or a block device (a host optical drive as a CD); a FIFO, socket or character device is refused
 * without ever blocking. The stack then opens `/proc/self/fd/N` of the checked file, never the
 * name again, so nothing swapped in after the check is reached.
 *
 * A test run's undo disk is deleted only when this VM created it: created by this run, or recorded
 * as created by an earlier run of this VM (state.json's `testUndo`: its device, inode and VHD unique
 * id, and its parent's device and inode), with this image as its parent. Any other file at `Test/<image>.undo.*` (another VM's
 * unmerged undo disk) is refused and kept.
 */
import * as fs from 'node:fs';
import { basename, dirname, extname } from 'node:path';
import type { BlockDevice } from '../block/device.js';
import type { KekSource } from '../crypto/index.js';
import { MedvError } from '../core/errors.js';
import { openDirBeneath, openFileIn, openNamed, partsBelow, withShownPaths, type PinnedDir, type PinnedFile } from '../core/fsio.js';
import type { ChainLink, DiskVia } from '../layers/open.js';
import type { VhdDevice } from '../layers/vhd/index.js';
import type { NbdListener, NbdServer } from '../nbd/server.js';
import type { BoundDisk } from './binding.js';
import { defaultUndoPath, testUndoPath, type VmDiskConfig } from './config.js';
import type { Layers } from './layers.js';
import type { TestUndoRecord, VmDiskState } from './rundir.js';

export interface OpenedVmDisk {
  config: VmDiskConfig;
  device: BlockDevice;
  server?: NbdServer;
  state: VmDiskState;
  /** The VHD the guest writes into (the disk, or its undo disk), whose footer carries the saved-state flag. */
  top?: VhdDevice;
  /** What a saved state of this disk records (./binding.ts). */
  bound: BoundDisk;
  /** A test run's undo disk: where it is (through its pinned folder) and what it was when created. */
  testUndo?: { dir: PinnedDir; at: string; record: TestUndoRecord };
}

/**
 * A disk file opened once and checked: its folder (pinned), its descriptor, and how the stack
 * reaches it and its key file (an EVHD's `.enc` is read through the pinned folder: the key file
 * reader itself refuses a link or anything but a regular file, src/crypto/keyfile.ts).
 */
interface PinnedDisk {
  /** The path shown to the user and recorded (real folder + name for a confined file). */
  shown: string;
  dir?: PinnedDir;
  file: PinnedFile;
  via: DiskVia;
  close(): void;
}

function isEncrypted(path: string): boolean { return extname(path).toLowerCase() === '.evhd'; }

function encName(name: string): string { return `${basename(name, extname(name))}.enc`; }

/**
 * Open a disk file of the VM once (see the file comment). `blockDevice`: a block device is
 * accepted when the user named it on the command line.
 */
function pinDisk(path: string, confine: string | undefined, opts: { blockDevice: boolean; what: string }): PinnedDisk {
  if (confine !== undefined) {
    const { parts, name } = partsBelow(confine, path);
    const dir = openDirBeneath(confine, parts);
    try {
      const pinned = pinIn(dir, name, opts.what);
      return { ...pinned, dir, close: () => { pinned.close(); dir.close(); } };
    } catch (e) {
      dir.close();
      throw e;
    }
  }
  // Named on the command line: links followed (the user chose them); its key file by its name.
  const file = openNamed(path, { blockDevice: opts.blockDevice, what: opts.what });
  return { shown: path, file, via: { file: file.proc }, close: () => file.close() };
}

/** Entry `name` of a pinned folder, opened once and checked; an EVHD's key file is read through the folder. */
function pinIn(dir: PinnedDir, name: string, what: string): PinnedDisk {
  const file = openFileIn(dir, name, { what });
  return { shown: `${dir.path}/${name}`, file, via: { file: file.proc, ...(isEncrypted(name) ? { keyFile: `${dir.proc}/${encName(name)}` } : {}) }, close: () => file.close() };
}

/** The files a disk reads as a binding records them: its chain, then the key files of the encrypted links. */
function boundFiles(chain: readonly ChainLink[], encPathFor: (p: string) => string): BoundDisk['files'] {
  return [
    ...chain.map((l) => ({ path: l.path, uniqueId: l.uniqueId })),
    ...chain.filter((l) => l.format === 'evhd').map((l) => ({ path: encPathFor(l.path) })),
  ];
}

function identity(st: fs.BigIntStats): { dev: string; ino: string } {
  return { dev: st.dev.toString(), ino: st.ino.toString() };
}

export interface VmDisksOptions {
  /** The saved state a suspended disk needs (named in the error when it is missing). */
  savedState: string;
  /** Test undo disks earlier runs of this VM created and did not remove (state.json). */
  testUndo?: readonly TestUndoRecord[];
  /** Told whenever the set of test undo disks this VM owns changes (written to state.json at once). */
  onTestUndo?: (records: TestUndoRecord[]) => void;
  /** Create a missing undo disk (default true; discard-state only opens what is there). */
  create?: boolean;
}

/** The disks of one VM, in boot order. */
export class VmDisks {
  readonly list: OpenedVmDisk[] = [];
  private readonly records: TestUndoRecord[];

  constructor(private readonly layers: Layers, private readonly kek: KekSource | undefined, private readonly opts: VmDisksOptions) {
    this.records = [...(opts.testUndo ?? [])];
  }

  private get kekFn(): (() => KekSource) | undefined {
    const kek = this.kek;
    return kek ? () => kek : undefined;
  }

  /** Test undo disks this VM owns and has not removed yet. */
  get testUndoRecords(): TestUndoRecord[] { return [...this.records]; }

  private setRecords(change: () => void): void {
    change();
    this.opts.onTestUndo?.(this.testUndoRecords);
  }

  /**
   * Open one disk (appended to `list`). A VHD whose saved-state flag is set opens writable only
   * when `resuming` (its saved state is there); otherwise ESAVEDSTATE says what is missing. The
   * base of an undo or test run must not carry the flag either: its guest would boot from a disk
   * caught mid-session.
   */
  async open(cfg: VmDiskConfig, resuming: boolean): Promise<void> {
    try {
      await this.openAs(cfg, resuming);
    } catch (e) {
      if (!(e instanceof MedvError) || e.code !== 'ESAVEDSTATE' || resuming) throw e;
      const vsv = this.opts.savedState;
      throw new MedvError('ESAVEDSTATE', `${e.data.file ?? cfg.path} belongs to a suspended VM (its VHD saved-state flag is set) but there is no saved state ${vsv} to resume` +
        ' (suspended by Virtual PC, or the .vsv was moved or deleted); medv will not boot it as if nothing happened:' +
        ' put the .vsv back, or clear the flag with `medv vm discard-state` (the guest then starts as after a power cut)', { file: String(e.data.file ?? cfg.path) });
    }
  }

  private async openAs(cfg: VmDiskConfig, resuming: boolean): Promise<void> {
    const { open: { openDisk }, crypto: { encPathFor } } = this.layers;
    const kek = this.kekFn;
    // A CD/DVD no .vmc folder confines is a host optical drive the user named (--host-drive): a block device, checked on the fd.
    const hostDrive = cfg.mode === 'cdrom' && cfg.confine === undefined;
    const base = pinDisk(cfg.path, cfg.confine, { blockDevice: cfg.confine === undefined, what: hostDrive ? 'host drive' : cfg.mode === 'cdrom' ? 'CD/DVD image' : 'disk' });
    const pins: Array<{ proc: string; path: string }> = [base.file, ...(base.dir ? [base.dir] : [])];
    try {
      if (hostDrive && !base.file.stat.isBlockDevice()) throw new MedvError('EUNSAFE', `host drive ${cfg.path} is not a block device`, { file: cfg.path });
      if (cfg.mode === 'cdrom') {
        // CD/DVD images are read-only media: exported read-only like any disk (raw bytes).
        const opened = await openDisk(base.shown, { readOnly: true, format: 'raw', via: base.via });
        this.list.push({ config: cfg, device: opened.device, state: { path: base.shown, format: 'iso', readOnly: true }, bound: { mode: cfg.mode, path: opened.chain[0].path, files: boundFiles(opened.chain, encPathFor) } });
        return;
      }
      if (cfg.mode === 'normal') {
        const opened = await openDisk(base.shown, { kek, allowSavedState: resuming, via: base.via });
        this.list.push({ config: cfg, device: opened.device, top: opened.vhd, state: { path: base.shown, format: opened.format, readOnly: false }, bound: { mode: cfg.mode, path: opened.chain[0].path, files: boundFiles(opened.chain, encPathFor) } });
        return;
      }
      if (cfg.mode === 'test') await this.openTest(cfg, base, pins);
      else await this.openUndo(cfg, base, pins, resuming);
    } catch (e) {
      throw withShownPaths(e, pins);
    } finally {
      base.close();
    }
  }

  /** Virtual PC undo disks: the undo disk (made when missing) over the base, kept at stop. */
  private async openUndo(cfg: VmDiskConfig, base: PinnedDisk, pins: Array<{ proc: string; path: string }>, resuming: boolean): Promise<void> {
    const { undo: { createUndoDisk }, crypto: { encPathFor } } = this.layers;
    const kek = this.kekFn;
    const undoPath = cfg.undoPath ?? defaultUndoPath(cfg.path);
    const confine = cfg.undoConfine ?? cfg.confine;
    let undo: PinnedDisk;
    try {
      undo = pinDisk(undoPath, confine, { blockDevice: false, what: 'undo disk' });
    } catch (e) {
      if (!(e instanceof MedvError) || e.code !== 'ENOENT' || this.opts.create === false) throw e;
      // Made where it belongs, through its folder opened without following links.
      const dir = confine !== undefined ? openDirBeneath(confine, partsBelow(confine, undoPath).parts) : openDirBeneath(dirname(undoPath));
      try {
        pins.push(dir);
        const shown = confine !== undefined ? `${dir.path}/${basename(undoPath)}` : undoPath;
        await createUndoDisk(shown, base.shown, { kek, at: `${dir.proc}/${basename(undoPath)}`, parentVia: base.via });
      } finally { dir.close(); }
      undo = pinDisk(undoPath, confine, { blockDevice: false, what: 'undo disk' });
    }
    pins.push(undo.file, ...(undo.dir ? [undo.dir] : []));
    try {
      await this.pushUndo(cfg, base, undo.shown, { via: undo.via, allowSavedState: resuming }, encPathFor);
    } finally {
      undo.close();
    }
  }

  /** The console's test: a fresh undo disk in Test/ beside the image, deleted at stop. */
  private async openTest(cfg: VmDiskConfig, base: PinnedDisk, pins: Array<{ proc: string; path: string }>): Promise<void> {
    const { undo: { createUndoDisk, discardUndoDisk }, crypto: { encPathFor } } = this.layers;
    const kek = this.kekFn;
    const name = basename(testUndoPath(cfg.path));
    const dir = cfg.confine !== undefined
      ? openDirBeneath(cfg.confine, [...partsBelow(cfg.confine, cfg.path).parts, 'Test'], { create: true })
      : openDirBeneath(dirname(cfg.path), ['Test'], { create: true });
    pins.push(dir);
    const at = `${dir.proc}/${name}`;
    const shown = `${dir.path}/${name}`;
    const parent = identity(fs.fstatSync(base.file.fd, { bigint: true }));
    let record: TestUndoRecord | undefined;
    try {
      const existing = lstatBig(at);
      if (existing) {
        const id = await this.uniqueIdAt(at);
        const ours = this.records.find((r) => r.dev === existing.dev.toString() && r.ino === existing.ino.toString()
          && r.parent.dev === parent.dev && r.parent.ino === parent.ino && id !== '' && r.uniqueId === id);
        if (!ours) {
          throw new MedvError('EEXIST', `${shown} exists and is not a test undo disk this VM created over ${base.shown} (another VM's unmerged undo disk?);` +
            ' it is kept: merge or discard it with `medv disk undo`, or move it away', { file: shown });
        }
        // Left by a crashed test run of this VM: a test run always starts from the base.
        await discardUndoDisk(shown, { kek, at });
        this.setRecords(() => this.records.splice(this.records.indexOf(ours), 1));
      }
      await createUndoDisk(shown, base.shown, { kek, at, parentVia: base.via });
      const made = lstatBig(at);
      if (!made) throw new MedvError('EIO', `the test undo disk vanished as it was made: ${shown}`, { file: shown });
      record = { path: shown, ...identity(made), parent, uniqueId: await this.uniqueIdAt(at) };
      const rec = record;
      this.setRecords(() => this.records.push(rec));
      const undo = pinIn(dir, name, 'undo disk');
      pins.push(undo.file);
      try {
        await this.pushUndo(cfg, base, shown, { via: undo.via, allowSavedState: false }, encPathFor, { dir, at, record: rec });
      } finally {
        undo.close();
      }
    } catch (e) {
      // What this run made is removed again; anything else stays.
      if (record && sameIdentity(lstatBig(at), record)) {
        await discardUndoDisk(shown, { kek, at }).then(() => this.setRecords(() => this.records.splice(this.records.indexOf(record!), 1)), () => undefined);
      }
      dir.close();
      throw e;
    }
  }

  /** The VHD unique id of the undo disk at `at` (hex; '' when it is not a VHD that opens). */
  private async uniqueIdAt(at: string): Promise<string> {
    try {
      return (await this.layers.open.describeDisk(at, this.kekFn)).vhd?.uniqueId.toString('hex') ?? '';
    } catch {
      return '';
    }
  }

  private async pushUndo(cfg: VmDiskConfig, base: PinnedDisk, undoShown: string, how: { via: DiskVia; allowSavedState: boolean }, encPathFor: (p: string) => string,
    testUndo?: OpenedVmDisk['testUndo']): Promise<void> {
    const { undo: { openUndoDisk }, vhd: { savedStateError } } = this.layers;
    const undo = await openUndoDisk(undoShown, { kek: this.kekFn, parent: base.shown, parentVia: base.via, via: how.via, allowSavedState: how.allowSavedState });
    if ((undo.vhd.parent as Partial<VhdDevice> | undefined)?.savedState === true) {
      await undo.device.close();
      throw savedStateError(base.shown);
    }
    this.list.push({
      config: cfg, device: undo.device, top: undo.vhd, testUndo,
      state: { path: base.shown, format: extname(base.shown).slice(1).toLowerCase() || 'raw', undo: undoShown, undoPolicy: cfg.mode === 'test' ? 'discard' : 'keep', readOnly: false },
      bound: { mode: cfg.mode, path: undo.chain[1]?.path ?? base.shown, undo: undo.chain[0].path, files: boundFiles(undo.chain, encPathFor) },
    });
  }

  /** Serve disk i on listener i: only now can QEMU read or write a block. */
  serve(listeners: NbdListener[]): void {
    this.list.forEach((d, i) => { d.server = listeners[i].serve(d.device, { readOnly: d.state.readOnly, description: d.state.path }); });
  }

  get serving(): boolean { return this.list.some((d) => d.server); }

  /** Set or clear the saved-state flag of every VHD the guest writes into. */
  async setSavedState(flag: boolean): Promise<void> {
    for (const d of this.list) await d.top?.setSavedState(flag);
  }

  /** What a saved state of these disks records (./binding.ts). */
  get bound(): BoundDisk[] { return this.list.map((d) => d.bound); }

  /**
   * Close everything: NBD servers, then each disk flushed and closed; a test run's undo disk is
   * deleted (only while it is still the file this run made). Returns the errors met (each disk is
   * closed whatever the others did).
   */
  async close(): Promise<string[]> {
    const errors: string[] = [];
    for (const d of this.list) {
      try {
        if (d.server) await d.server.close();
        await d.device.flush().catch(() => undefined);
        await d.device.close();
        const t = d.testUndo;
        if (t) {
          try {
            if (sameIdentity(lstatBig(t.at), t.record)) await this.layers.undo.discardUndoDisk(t.record.path, { kek: this.kekFn, at: t.at });
            this.setRecords(() => { const i = this.records.indexOf(t.record); if (i >= 0) this.records.splice(i, 1); });
          } finally {
            t.dir.close();
          }
        }
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    return errors;
  }
}

function lstatBig(path: string): fs.BigIntStats | undefined {
  try { return fs.lstatSync(path, { bigint: true }); } catch { return undefined; }
}

function sameIdentity(st: fs.BigIntStats | undefined, r: { dev: string; ino: string }): boolean {
  return !!st && st.dev.toString() === r.dev && st.ino.toString() === r.ino;
}
