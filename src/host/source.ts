/**
 * A VM from what a user names: a Virtual PC `.vmc` (./vmc.ts, with ImageState.xml beside it) or a
 * disk image (raw, .vhd, .evhd), with the options of `medv vm start` (or of the host API's
 * POST /v1/vms, which has the same fields). The one place these options become a VmConfig.
 */
import * as fs from 'node:fs';
import { basename, extname, isAbsolute } from 'node:path';
import { MedvError } from '../core/errors.js';
import type { Accelerator } from '../hypervisor/qemu.js';
import { keptUndoPath, type VmConfig } from './config.js';

/** The options of a start (and of discard-state, which reads the VM the same way). */
export interface VmSourceOptions {
  name?: string;
  memoryMiB?: number;
  readOnly?: boolean;
  undo?: boolean;
  network?: 'none' | 'nat';
  mac?: string;
  allowHostPorts?: number[];
  nicModel?: 'e1000' | 'virtio';
  diskBus?: 'ide' | 'virtio';
  display?: VmConfig['display'];
  accel?: Accelerator;
  /** Windows drive letters of the .vmc's absolute paths, mapped to host folders (`{"C": "/srv/vms"}`). */
  driveMap?: Record<string, string>;
  /**
   * Host optical drives the user allows, by the .vmc's drive letter (`{"D": "/dev/sr0"}`): a .vmc's
   * CD/DVD bound to a host drive gets that device only when named here (and a block device holding
   * a disc), else an empty drive and a warning. A .vmc alone never opens a host device.
   */
  hostDrives?: Record<string, string>;
  /** A disk (not a .vmc): its undo disk with `undo` (default `<disk>.undo.vhd|evhd`), and where its saved state goes (default `<disk file name>.vsv`). */
  undoPath?: string;
  savedState?: string;
}

/**
 * The VM that `source` (an absolute path) describes, with these options applied. `onWarning` is
 * told (one line each) what starts otherwise than the .vmc says (a host CD/DVD drive left empty).
 */
export async function vmConfigFromSource(source: string, o: VmSourceOptions = {}, onWarning?: (message: string) => void): Promise<VmConfig> {
  if (typeof source !== 'string' || !isAbsolute(source)) throw new MedvError('EINVAL_ARG', `the VM's .vmc or disk must be an absolute path, not ${JSON.stringify(String(source).slice(0, 200))}`);
  if (o.readOnly && o.undo) throw new MedvError('EINVAL_ARG', 'read-only and undo exclude each other');
  const isVmc = extname(source).toLowerCase() === '.vmc';
  if (!fs.existsSync(source)) throw new MedvError('ENOENT', `no such ${isVmc ? 'file' : 'disk'}: ${source}`, { file: source });
  const display = o.display ?? 'none';
  let config: VmConfig;
  if (isVmc && (o.undoPath || o.savedState)) throw new MedvError('EINVAL_ARG', 'a .vmc names its own undo disks and saved state');
  if (!isVmc && o.hostDrives && Object.keys(o.hostDrives).length) throw new MedvError('EINVAL_ARG', 'host drives are for a .vmc\'s CD/DVD bound to a host drive; a disk has none');
  if (isVmc) {
    const { vmConfigFromVmc } = await import('./vmc.js'); // the XML parser only for a .vmc
    config = vmConfigFromVmc(source, { name: o.name, readOnly: o.readOnly, undo: o.undo, display, accel: o.accel, driveMap: o.driveMap, hostDrives: o.hostDrives, onWarning });
    if (o.memoryMiB !== undefined) config.memoryMiB = o.memoryMiB;
    if (o.network !== undefined) config.network = o.network;
    if (o.mac !== undefined) config.mac = o.mac;
  } else {
    config = {
      name: o.name ?? basename(source, extname(source)),
      memoryMiB: o.memoryMiB ?? 128,
      disks: [{ path: source, mode: o.readOnly ? 'test' : o.undo ? 'undo' : 'normal', ...(o.undo && o.undoPath ? { undoPath: o.undoPath } : {}) }],
      network: o.network ?? 'none',
      mac: o.mac,
      display,
      accel: o.accel,
      // Named after the whole file name: x.vhd and x.evhd in one folder are two VMs, with two saved states.
      savedState: o.savedState ?? `${source}.vsv`,
    };
  }
  if (o.allowHostPorts !== undefined) config.allowHostPorts = o.allowHostPorts;
  if (o.nicModel !== undefined) config.nicModel = o.nicModel;
  if (o.diskBus !== undefined) config.diskBus = o.diskBus;
  if (config.allowHostPorts?.length && config.network !== 'nat') throw new MedvError('EINVAL_ARG', 'allowed host ports need a NAT network (--network nat, or a .vmc with a network adapter)');
  // No field left undefined: the pool's rule (./shape.ts) looks at which fields are set.
  for (const k of Object.keys(config) as Array<keyof VmConfig>) if (config[k] === undefined) delete config[k];
  return config;
}

/** The key files a VM's start may read: each encrypted disk's and undo disk's `.enc`, the saved state's. */
export function keyFilesOf(config: VmConfig): string[] {
  const enc = (p: string) => `${p.slice(0, p.length - extname(p).length)}.enc`;
  const out: string[] = [];
  for (const d of config.disks) {
    const undo = keptUndoPath(d);
    for (const p of [d.path, ...(undo ? [undo] : [])]) if (extname(p).toLowerCase() === '.evhd') out.push(enc(p));
  }
  out.push(`${config.savedState}.enc`);
  return out;
}
