/**
 * A Virtual PC VM (`.vmc`, optionally `ImageState.xml` beside it) as a VmConfig the supervisor
 * runs. Paths come from the file through src/formats/vmc's rules: relative paths (tried first)
 * must stay inside the .vmc's folder, and an absolute path counts only on a drive letter the
 * caller mapped (`driveMap`). Each path carries the folder it must be opened below (`confine`:
 * the .vmc's, or the mapped drive's): the supervisor opens it there without following any link
 * and only as a regular file (src/host/disks.ts), so nothing in a settings file reaches an
 * arbitrary host file, by its text or through a link. The .vmc is read without blocking on a
 * FIFO; ImageState.xml beside it without following a link.
 *
 * Mapping: memory from ImageState or the VMC; every hard disk in IDE order (primary master boots);
 * CD/DVD images as read-only IDE CD drives; a CD/DVD bound to a host drive (`<absolute>D</absolute>`,
 * Virtual PC's "use physical drive D:") gets the host's optical drive only when the caller allowed
 * that letter (`hostDrives`, from the command line) and it holds a disc, else an empty drive and one
 * warning: never a refusal, and never a device the user did not name; undo drives (Virtual PC's
 * "enable undo disks") use the `.vud` the file names, else `<disk>.undo.vhd|evhd`; any network
 * adapter means NAT (through passt, src/hypervisor/usernet.ts) with the adapter's MAC (bridged host
 * networks are mapped to NAT too); the saved state is the `.vsv` the file names, else `<vmc>.vsv`
 * beside it.
 */
import * as fs from 'node:fs';
import { basename, dirname, extname, join, posix, resolve } from 'node:path';
import { MedvError } from '../core/errors.js';
import { blockDeviceSize, nameExists, openDirBeneath, openFileIn, openNamed, preadAllSync, type PinnedFile } from '../core/fsio.js';
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
  /**
   * A folder holding the .vmc's folder that its relative paths may reach (default: the .vmc's own
   * folder): a workspace version's `Test/<image>.vmc` names `..\<image>.evhd` (src/workspace/vmfiles.ts).
   * Everything is still opened below it without following links.
   */
  confineTo?: string;
  /** Host optical drives the user allowed, by the .vmc's drive letter (`D` -> `/dev/sr0`). */
  hostDrives?: Readonly<Record<string, string>>;
  /** Told (one line) for each CD/DVD drive bound to a host drive that starts empty. */
  onWarning?: (message: string) => void;
  display?: VmConfig['display'];
  accel?: VmConfig['accel'];
}

/** The bytes of an opened settings file, at most MAX_XML_BYTES (read from its descriptor; it is closed). */
function readPinned(f: PinnedFile): Buffer {
  try {
    if (f.stat.size > MAX_XML_BYTES) throw new MedvError('EFORMAT', `${f.path} is larger than ${MAX_XML_BYTES} bytes`, { file: f.path });
    const buf = Buffer.alloc(MAX_XML_BYTES + 1);
    const n = preadAllSync(f.fd, buf);
    if (n > MAX_XML_BYTES) throw new MedvError('EFORMAT', `${f.path} grew past ${MAX_XML_BYTES} bytes`, { file: f.path });
    return buf.subarray(0, n);
  } finally {
    f.close();
  }
}

/** The host folder a drive letter is mapped to (normalised), as src/formats/vmc/paths.ts maps it. */
function driveRoot(windows: string, driveMap: Readonly<Record<string, string>> | undefined): string | undefined {
  const letter = windows[0]?.toUpperCase();
  const hit = Object.entries(driveMap ?? {}).find(([k]) => k.replace(/:$/, '').toUpperCase() === letter);
  return hit ? posix.normalize(hit[1]) : undefined;
}

/** Host drive `letter` as the CD/DVD medium if it is allowed, a block device and holds a disc; else why not. */
function hostOpticalDrive(letter: string, hostDrives: VmcStartOptions['hostDrives']): { path: string } | { why: string } {
  const dev = Object.entries(hostDrives ?? {}).find(([k]) => k.replace(/:$/, '').toUpperCase() === letter)?.[1];
  if (dev === undefined) return { why: `not allowed (give --host-drive ${letter}=/dev/sr0 to use a host drive)` };
  let f: PinnedFile;
  try { f = openNamed(dev, { blockDevice: true, what: 'host drive' }); } catch (e) { return { why: (e as Error).message }; }
  try {
    if (!f.stat.isBlockDevice()) return { why: `${dev} is not a block device` };
    if (blockDeviceSize(f.stat.rdev, dev) === 0) return { why: `${dev} holds no disc` };
    return { path: dev };
  } catch (e) {
    return { why: (e as Error).message };
  } finally {
    f.close();
  }
}

export function vmConfigFromVmc(vmcPath: string, opts: VmcStartOptions = {}): VmConfig {
  const file = resolve(vmcPath);
  const vmcDir = dirname(file);
  const base = opts.confineTo === undefined ? vmcDir : resolve(opts.confineTo);
  const inBase = (p: string) => p === base || p.startsWith(base.endsWith('/') ? base : `${base}/`);
  if (!inBase(vmcDir)) throw new MedvError('EINVAL_ARG', `${file} is not inside ${base}`, { file });
  const pathOpts = { vmcDir, driveMap: opts.driveMap, allowOutsideVmcDir: base !== vmcDir };
  /** resolvePathRef, with relative paths kept inside `base`. */
  const resolveRef = (ref: WindowsPathRef, element?: string) => {
    const r = resolvePathRef(ref, pathOpts, { file, element });
    const outside = r.candidates.filter((c) => c.from === 'relative' && !inBase(c.path));
    return {
      candidates: r.candidates.filter((c) => !outside.includes(c)),
      rejected: [...r.rejected, ...outside.map((c) => ({ windows: c.windows, error: new MedvError('EUNSAFE', `${c.windows} leads out of ${base}`, { file }) }))],
    };
  };
  // The .vmc itself the user named (a link is theirs to make); never blocks on a FIFO.
  const doc = parseVmc(readPinned(openNamed(file, { what: '.vmc' })), { file });
  // What came with it is read without following links.
  const folder = openDirBeneath(vmcDir);
  let imageState: ImageState | undefined;
  try {
    if (nameExists(join(folder.proc, 'ImageState.xml'))) {
      imageState = parseImageState(readPinned(openFileIn(folder, 'ImageState.xml', { what: 'ImageState.xml' })), { file: join(vmcDir, 'ImageState.xml') });
    }
  } finally {
    folder.close();
  }
  const eff = effectiveSettings(doc.settings, imageState, { file });
  /** A path the .vmc names, and the folder it must stay in (the .vmc's, or the mapped drive's). */
  const rooted = (c: { from: 'relative' | 'absolute'; windows: string; path: string }): { path: string; confine: string } =>
    ({ path: c.path, confine: c.from === 'relative' ? base : driveRoot(c.windows, opts.driveMap) ?? vmcDir });
  const find = (ref: WindowsPathRef, element: string): { path: string; confine: string } => {
    const r = resolveRef(ref, element);
    // Which candidate is used is decided here; the supervisor opens it without following links.
    const hit = r.candidates.find((c) => nameExists(c.path));
    if (!hit) {
      const tried = [...r.candidates.map((c) => c.path), ...r.rejected.map((x) => `${x.windows} (${x.error.message})`)];
      throw new MedvError('ENOENT', `${element}: no such file (tried ${tried.join(', ')})`, { file });
    }
    return rooted(hit);
  };
  const undoMode = !opts.readOnly && (opts.undo || eff.undoDrives);
  const disks: VmDiskConfig[] = [];
  let emptyCdDrives = 0;
  for (const d of eff.drives) {
    const where = `ide_controller ${d.controller} location ${d.location}`;
    if (d.kind === 'cd-dvd') {
      if (d.hostDrive) {
        const host = hostOpticalDrive(d.hostDrive, opts.hostDrives);
        // The device the user named on the command line: opened by the supervisor as they named it.
        if ('path' in host) disks.push({ path: host.path, mode: 'cdrom' });
        else {
          emptyCdDrives++;
          opts.onWarning?.(`${where}: host drive ${d.hostDrive}: ${host.why}; the guest gets an empty CD/DVD drive`);
        }
        continue;
      }
      if (d.path) disks.push({ ...find(d.path, `${where} pathname`), mode: 'cdrom' });
      continue;
    }
    if (!d.path) continue;
    const { path, confine } = find(d.path, `${where} pathname`);
    if (opts.readOnly) { disks.push({ path, confine, mode: 'test' }); continue; }
    if (!undoMode) { disks.push({ path, confine, mode: 'normal' }); continue; }
    let undo: { path: string; confine: string } = { path: defaultUndoPath(path), confine };
    if (d.undoPath) {
      const r = resolveRef(d.undoPath, `${where} undo_pathname`);
      const named = r.candidates[0];
      // A .vud is a plain differencing VHD: usable over a plain parent; an encrypted parent needs an .evhd undo disk.
      if (named && (extname(path).toLowerCase() !== '.evhd' || nameExists(named.path))) undo = rooted(named);
    }
    disks.push({ path, confine, mode: 'undo', undoPath: undo.path, ...(undo.confine !== confine ? { undoConfine: undo.confine } : {}) });
  }
  if (!disks.some((d) => d.mode !== 'cdrom')) throw new MedvError('EFORMAT', 'the .vmc names no hard disk', { file });
  const named = doc.settings.savedState ? resolveRef(doc.settings.savedState).candidates[0] : undefined;
  const savedState = named ? rooted(named) : { path: join(vmcDir, `${basename(file, extname(file))}.vsv`), confine: vmcDir };
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
    savedState: savedState.path,
    savedStateConfine: savedState.confine,
    ...(emptyCdDrives ? { emptyCdDrives } : {}),
    // the device allowance (ImageState.xml): what is not allowed is not in the VM at all
    ...(eff.devices.clipboard ? { clipboard: true } : {}),
  };
}
