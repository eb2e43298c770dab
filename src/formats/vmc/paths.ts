/**
 * Windows paths of a .vmc file -> host paths, and back. Pure functions of their arguments: no
 * file is looked at, so the caller decides which candidate exists.
 *
 * The rule (documented in README.md):
 * - A relative path (`.\disk.vhd`, `disks\disk.vhd`, `..\x.vhd`) is resolved against the folder of
 *   the .vmc. By default it must stay inside that folder (`allowOutsideVmcDir` lifts this): a
 *   settings file that came with an image must not make the guest read arbitrary host files.
 * - An absolute path `X:\a\b.vhd` is mapped through the drive map: `{ X: '/srv/x' }` gives
 *   `/srv/x/a/b.vhd`. A drive letter with no entry is a typed error (EUNSUPPORTED, reason
 *   `unmapped-drive`), never silently a host path. `..` may not climb above the mapped root.
 * - UNC paths (`\\server\share\...`, `\\?\...`), drive-relative paths (`C:x`), paths rooted without a
 *   drive (`\x`) are refused; so are characters Windows forbids in names (`<>:"|?*`, controls).
 * - Both separators are accepted; case is kept as written (Linux file names are case-sensitive).
 */
import { posix } from 'node:path';
import { MedvError } from '../../core/errors.js';
import { relativeInside } from '../../core/paths.js';

export interface WindowsPathRef {
  /** `pathname/absolute` as written, e.g. `C:\VMs\xp\xp.vhd`. */
  absolute?: string;
  /** `pathname/relative` as written, e.g. `.\xp.vhd`. */
  relative?: string;
}

export interface PathResolveOptions {
  /** Absolute host folder that holds the .vmc. */
  vmcDir: string;
  /** Drive letter -> absolute host folder (`{ C: '/mnt/c' }`); letters are case-insensitive. */
  driveMap?: Readonly<Record<string, string>>;
  /** Let relative paths climb out of vmcDir with `..` (default false). */
  allowOutsideVmcDir?: boolean;
}

/** Where a path came from, for error messages. */
export interface PathWhere {
  file?: string;
  element?: string;
  offset?: number;
}

export interface PathCandidate {
  from: 'relative' | 'absolute';
  windows: string;
  path: string;
}

export interface ResolvedPathRef {
  /** Host paths to try in order: relative first (it survives moving the VM), then absolute. */
  candidates: PathCandidate[];
  /** Paths that could not be mapped, with the reason (e.g. an absolute path on an unmapped drive). */
  rejected: Array<{ from: 'relative' | 'absolute'; windows: string; error: MedvError }>;
}

const MAX_PATH_CHARS = 32767;
const FORBIDDEN = /[<>:"|?*\u0000-\u001f]/;

function fail(code: 'EFORMAT' | 'EUNSUPPORTED' | 'EINVAL_ARG', msg: string, where: PathWhere, extra: Record<string, unknown> = {}): MedvError {
  return new MedvError(code, where.element ? `${where.element}: ${msg}` : msg, { file: where.file, offset: where.offset, element: where.element, ...extra });
}

function components(rest: string, win: string, where: PathWhere): string[] {
  const parts = rest.split(/[\\/]+/).filter((p) => p !== '' && p !== '.');
  for (const p of parts) {
    if (p !== '..' && FORBIDDEN.test(p)) throw fail('EFORMAT', `Windows path ${JSON.stringify(win)} has a character Windows does not allow in a name`, where);
  }
  return parts;
}

/** Apply components to a base, `..` popping; returns undefined if `..` would climb above the base. */
function walk(base: string, parts: string[]): { path: string; escaped: boolean } {
  const stack: string[] = [];
  let escaped = false;
  for (const p of parts) {
    if (p === '..') { if (stack.length) stack.pop(); else escaped = true; }
    else stack.push(p);
  }
  return { path: escaped ? posix.normalize(posix.join(base, ...parts)) : posix.join(base, ...stack), escaped };
}

function normaliseMap(map: Readonly<Record<string, string>> | undefined, where: PathWhere): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(map ?? {})) {
    const letter = k.replace(/:$/, '').toUpperCase();
    if (!/^[A-Z]$/.test(letter)) throw fail('EINVAL_ARG', `drive map key ${JSON.stringify(k)} is not a drive letter`, where);
    if (typeof v !== 'string' || !posix.isAbsolute(v)) throw fail('EINVAL_ARG', `drive map entry ${letter}: must be an absolute host path`, where);
    out.set(letter, posix.normalize(v));
  }
  return out;
}

/** Resolve one Windows path from a .vmc to a host path (see the rule at the top of this file). */
export function resolveWindowsPath(win: string, opts: PathResolveOptions, where: PathWhere = {}): string {
  if (!posix.isAbsolute(opts.vmcDir)) throw fail('EINVAL_ARG', 'vmcDir must be an absolute host path', where);
  if (win === '') throw fail('EFORMAT', 'empty path', where);
  if (win.length > MAX_PATH_CHARS) throw fail('EFORMAT', `path longer than ${MAX_PATH_CHARS} characters`, where);
  if (/\u0000/.test(win)) throw fail('EFORMAT', 'path contains a NUL character', where);
  if (/^[\\/]{2}/.test(win)) throw fail('EUNSUPPORTED', `UNC or device path ${JSON.stringify(win)} is not supported`, where, { reason: 'unc' });
  const drive = /^([A-Za-z]):(.*)$/s.exec(win);
  if (drive) {
    const rest = drive[2];
    if (!/^[\\/]/.test(rest)) throw fail('EFORMAT', `drive-relative path ${JSON.stringify(win)} is not supported`, where);
    const letter = drive[1].toUpperCase();
    const root = normaliseMap(opts.driveMap, where).get(letter);
    if (root === undefined) {
      throw fail('EUNSUPPORTED', `drive ${letter}: of ${JSON.stringify(win)} is not mapped to a host folder (give a drive map, e.g. ${letter}=/path)`, where, { reason: 'unmapped-drive', drive: letter });
    }
    const r = walk(root, components(rest, win, where));
    if (r.escaped) throw fail('EFORMAT', `path ${JSON.stringify(win)} climbs above its drive's root`, where);
    return r.path;
  }
  if (/^[\\/]/.test(win)) throw fail('EUNSUPPORTED', `path ${JSON.stringify(win)} is rooted but names no drive`, where, { reason: 'no-drive' });
  const base = posix.normalize(opts.vmcDir);
  const r = walk(base, components(win, win, where));
  if (r.escaped && !opts.allowOutsideVmcDir) {
    throw fail('EUNSUPPORTED', `relative path ${JSON.stringify(win)} leaves the folder of the .vmc`, where, { reason: 'outside-vmc-folder' });
  }
  return r.path;
}

/**
 * Resolve a `pathname` pair. Every path that maps is a candidate (relative first); a path that
 * does not map is listed in `rejected`. When nothing maps, the first error is thrown (or EFORMAT
 * when both paths are empty).
 */
export function resolvePathRef(ref: WindowsPathRef, opts: PathResolveOptions, where: PathWhere = {}): ResolvedPathRef {
  const out: ResolvedPathRef = { candidates: [], rejected: [] };
  for (const from of ['relative', 'absolute'] as const) {
    const win = ref[from];
    if (win === undefined || win === '') continue;
    try {
      const path = resolveWindowsPath(win, opts, { ...where, element: where.element ? `${where.element}/${from}` : from });
      if (!out.candidates.some((c) => c.path === path)) out.candidates.push({ from, windows: win, path });
    } catch (e) {
      if (!(e instanceof MedvError)) throw e;
      if (e.code === 'EINVAL_ARG') throw e;
      out.rejected.push({ from, windows: win, error: e });
    }
  }
  if (out.candidates.length === 0) {
    if (out.rejected.length) throw out.rejected[0].error;
    throw fail('EFORMAT', 'neither an absolute nor a relative path is given', where);
  }
  return out;
}

/**
 * A host path as a `pathname` pair for writing: relative to the .vmc's folder (`.\x.vhd`) when it
 * lies inside it, and absolute when a drive map entry covers it.
 */
export function toWindowsPathRef(hostPath: string, opts: PathResolveOptions): WindowsPathRef {
  if (!posix.isAbsolute(hostPath)) throw new MedvError('EINVAL_ARG', `host path must be absolute: ${hostPath}`);
  const p = posix.normalize(hostPath);
  const ref: WindowsPathRef = {};
  const rel = relativeInside(opts.vmcDir, p);
  if (rel) ref.relative = `.\\${rel.split('/').join('\\')}`;
  let best: [string, string] | undefined;
  for (const [letter, root] of normaliseMap(opts.driveMap, {})) {
    if (relativeInside(root, p) === undefined) continue;
    if (!best || root.length > best[1].length) best = [letter, root];
  }
  if (best) ref.absolute = `${best[0]}:\\${posix.relative(best[1], p).split('/').join('\\')}`;
  for (const w of [ref.relative, ref.absolute]) {
    if (w !== undefined && w.split('\\').slice(1).some((c) => FORBIDDEN.test(c))) {
      throw new MedvError('EINVAL_ARG', `host path ${hostPath} has a character Windows does not allow in a name`);
    }
  }
  return ref;
}
