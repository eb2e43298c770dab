/**
 * A Virtual PC VM (`.vmc`, optionally `ImageState.xml` beside it) as a VmConfig the supervisor
 * runs. Paths come from the file through src/formats/vmc's rules: relative paths (tried first)
 * must stay inside the .vmc's folder, and an absolute path counts only on a drive letter the
 * caller mapped (`driveMap`); nothing in a settings file reaches an arbitrary host file.
 *
 * Mapping: memory from ImageState or the VMC; every hard disk in IDE order (primary master boots);
 * CD/DVD images as read-only IDE CD drives; undo drives (Virtual PC's "enable undo disks") use the
 * `.vud` the file names, else `<disk>.undo.vhd|evhd`; any network adapter means NAT through QEMU's
 * user-mode network with the adapter's MAC (bridged host networks are mapped to NAT too); the
 * saved state is the `.vsv` the file names, else `<vmc>.vsv` beside it.
 */
import * as fs from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { MedvError } from '../core/errors.js';
import { effectiveSettings, parseImageState, type ImageState } from '../formats/imagestate/index.js';
import { parseVmc, resolvePathRef, MAX_XML_BYTES, type WindowsPathRef } from '../formats/vmc/index.js';
import { defaultUndoPath, type VmConfig, type VmDiskConfig } from './config.js';

export interface VmcStartOptions {
  name?: string;
  /** Console test mode: writes go to a throw-away undo disk (overrides the VMC's undo setting). */
  readOnly?: boolean;
  /** Force Virtual PC undo semantics even when the VMC does not enable them. */
  undo?: boolean;
  driveMap?: Readonly<Record<string, string>>;
  display?: VmConfig['display'];
  accel?: VmConfig['accel'];
}

function readBounded(path: string): Buffer {
  let st: fs.Stats;
  try { st = fs.statSync(path); } catch { throw new MedvError('ENOENT', `no such file: ${path}`, { file: path }); }
  if (!st.isFile()) throw new MedvError('EINVAL_ARG', `not a regular file: ${path}`, { file: path });
  if (st.size > MAX_XML_BYTES) throw new MedvError('EFORMAT', `${path} is larger than ${MAX_XML_BYTES} bytes`, { file: path });
  return fs.readFileSync(path);
}

export function vmConfigFromVmc(vmcPath: string, opts: VmcStartOptions = {}): VmConfig {
  const file = resolve(vmcPath);
  const vmcDir = dirname(file);
  const doc = parseVmc(readBounded(file), { file });
  const imageStatePath = join(vmcDir, 'ImageState.xml');
  let imageState: ImageState | undefined;
  if (fs.existsSync(imageStatePath)) imageState = parseImageState(readBounded(imageStatePath), { file: imageStatePath });
  const eff = effectiveSettings(doc.settings, imageState, { file });
  const find = (ref: WindowsPathRef, element: string): string => {
    const r = resolvePathRef(ref, { vmcDir, driveMap: opts.driveMap }, { file, element });
    const hit = r.candidates.find((c) => fs.existsSync(c.path));
    if (!hit) {
      const tried = [...r.candidates.map((c) => c.path), ...r.rejected.map((x) => `${x.windows} (${x.error.message})`)];
      throw new MedvError('ENOENT', `${element}: no such file (tried ${tried.join(', ')})`, { file });
    }
    return hit.path;
  };
  const undoMode = !opts.readOnly && (opts.undo || eff.undoDrives);
  const disks: VmDiskConfig[] = [];
  for (const d of eff.drives) {
    const where = `ide_controller ${d.controller} location ${d.location}`;
    if (d.kind === 'cd-dvd') {
      if (d.hostDrive) throw new MedvError('EUNSUPPORTED', `${where}: a CD/DVD bound to host drive ${d.hostDrive}: is not supported; give an .iso`, { file });
      if (d.path) disks.push({ path: find(d.path, `${where} pathname`), mode: 'cdrom' });
      continue;
    }
    if (!d.path) continue;
    const path = find(d.path, `${where} pathname`);
    if (opts.readOnly) { disks.push({ path, mode: 'test' }); continue; }
    if (!undoMode) { disks.push({ path, mode: 'normal' }); continue; }
    let undoPath = defaultUndoPath(path);
    if (d.undoPath) {
      const r = resolvePathRef(d.undoPath, { vmcDir, driveMap: opts.driveMap }, { file, element: `${where} undo_pathname` });
      const named = r.candidates[0]?.path;
      // A .vud is a plain differencing VHD: usable over a plain parent; an encrypted parent needs an .evhd undo disk.
      if (named && (extname(path).toLowerCase() !== '.evhd' || fs.existsSync(named))) undoPath = named;
    }
    disks.push({ path, mode: 'undo', undoPath });
  }
  if (!disks.some((d) => d.mode !== 'cdrom')) throw new MedvError('EFORMAT', 'the .vmc names no hard disk', { file });
  const savedState = doc.settings.savedState ? resolvePathRef(doc.settings.savedState, { vmcDir, driveMap: opts.driveMap }, { file }).candidates[0]?.path : undefined;
  const adapter = eff.network.adapters[0];
  return {
    name: opts.name ?? basename(file, extname(file)),
    memoryMiB: eff.memoryMB,
    disks,
    network: eff.network.mode,
    mac: adapter && 'mac' in adapter ? (adapter as { mac?: string }).mac : undefined,
    display: opts.display ?? 'none',
    accel: opts.accel,
    vmc: file,
    savedState: savedState ?? join(vmcDir, `${basename(file, extname(file))}.vsv`),
  };
}
