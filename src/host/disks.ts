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
 */
import * as fs from 'node:fs';
import { dirname, extname } from 'node:path';
import type { BlockDevice } from '../block/device.js';
import type { KekSource } from '../crypto/index.js';
import { MedvError } from '../core/errors.js';
import type { DiskFingerprint } from '../hypervisor/savedstate.js';
import type { VhdDevice } from '../layers/vhd/index.js';
import type { NbdListener, NbdServer } from '../nbd/server.js';
import { defaultUndoPath, testUndoPath, type VmDiskConfig } from './config.js';
import type { Layers } from './layers.js';
import type { VmDiskState } from './rundir.js';

export interface OpenedVmDisk {
  config: VmDiskConfig;
  device: BlockDevice;
  server?: NbdServer;
  state: VmDiskState;
  /** The VHD the guest writes into (the disk, or its undo disk), whose footer carries the saved-state flag. */
  top?: VhdDevice;
}

/** The disks of one VM, in boot order. */
export class VmDisks {
  readonly list: OpenedVmDisk[] = [];

  constructor(private readonly layers: Layers, private readonly kek: KekSource | undefined, private readonly savedState: string) {}

  private get kekFn(): (() => KekSource) | undefined {
    const kek = this.kek;
    return kek ? () => kek : undefined;
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
      const vsv = this.savedState;
      throw new MedvError('ESAVEDSTATE', `${e.data.file ?? cfg.path} belongs to a suspended VM (its VHD saved-state flag is set) but there is no saved state ${vsv} to resume` +
        ' (suspended by Virtual PC, or the .vsv was moved or deleted); medv will not boot it as if nothing happened:' +
        ' put the .vsv back, or clear the flag with `medv vm discard-state` (the guest then starts as after a power cut)', { file: String(e.data.file ?? cfg.path) });
    }
  }

  private async openAs(cfg: VmDiskConfig, resuming: boolean): Promise<void> {
    const { open: { openDisk }, undo: { createUndoDisk, discardUndoDisk, openUndoDisk }, vhd: { savedStateError } } = this.layers;
    const kek = this.kekFn;
    if (cfg.mode === 'cdrom') {
      // CD/DVD images are read-only media: exported read-only like any disk (raw bytes).
      const opened = await openDisk(cfg.path, { readOnly: true, format: 'raw' });
      this.list.push({ config: cfg, device: opened.device, state: { path: cfg.path, format: 'iso', readOnly: true } });
      return;
    }
    if (cfg.mode === 'normal') {
      const opened = await openDisk(cfg.path, { kek, allowSavedState: resuming });
      this.list.push({ config: cfg, device: opened.device, top: opened.vhd, state: { path: cfg.path, format: opened.format, readOnly: false } });
      return;
    }
    const undoPath = cfg.undoPath ?? (cfg.mode === 'test' ? testUndoPath(cfg.path) : defaultUndoPath(cfg.path));
    if (cfg.mode === 'test') {
      fs.mkdirSync(dirname(undoPath), { recursive: true, mode: 0o700 });
      // A test run always starts from the base: an undo disk left by a crashed test run is ours to replace.
      if (fs.existsSync(undoPath)) await discardUndoDisk(undoPath, { kek });
    }
    if (!fs.existsSync(undoPath)) {
      await createUndoDisk(undoPath, cfg.path, { kek });
    }
    const undo = await openUndoDisk(undoPath, { kek, parent: cfg.path, allowSavedState: resuming && cfg.mode === 'undo' });
    if ((undo.vhd.parent as Partial<VhdDevice> | undefined)?.savedState === true) {
      await undo.device.close();
      throw savedStateError(cfg.path);
    }
    this.list.push({
      config: cfg, device: undo.device, top: undo.vhd,
      state: { path: cfg.path, format: extname(cfg.path).slice(1).toLowerCase() || 'raw', undo: undoPath, undoPolicy: cfg.mode === 'test' ? 'discard' : 'keep', readOnly: false },
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

  /**
   * Close everything: NBD servers, then each disk flushed and closed; a test run's undo disk is
   * discarded. Returns the errors met (each disk is closed whatever the others did).
   */
  async close(): Promise<string[]> {
    const errors: string[] = [];
    for (const d of this.list) {
      try {
        if (d.server) await d.server.close();
        await d.device.flush().catch(() => undefined);
        await d.device.close();
        if (d.config.mode === 'test' && d.state.undo) await this.layers.undo.discardUndoDisk(d.state.undo, { kek: this.kekFn });
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    return errors;
  }

  /** Every file whose content a saved state of these disks depends on, as it is now (disks closed). */
  fingerprints(): DiskFingerprint[] {
    const { saved: format, crypto } = this.layers;
    const files: DiskFingerprint[] = [];
    for (const d of this.list) {
      for (const f of [d.state.path, d.state.undo]) {
        if (!f) continue;
        files.push(format.fingerprint(f));
        if (f.toLowerCase().endsWith('.evhd')) files.push(format.fingerprint(crypto.encPathFor(f)));
      }
    }
    return files;
  }
}
