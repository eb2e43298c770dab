/**
 * The one parent-chain resolver. A differencing disk's parent is found one of two ways:
 *
 * - through its locators: relative ones (W2ru, Wi2r) first, against the child's folder, then
 *   absolute ones (W2ku, Wi2k, MacX); backslashes read as slashes; only regular files. The first
 *   that exists is opened as a VHD (an EVHD when named .evhd), never as raw, whatever its content:
 *   a locator is hostile input and must not reach an arbitrary host file. Its unique id must be
 *   the one the child records (openVhd checks it, the one place that does), and a child that
 *   records no parent id (all zeros) is refused here.
 * - named by the user (`--parent FILE`): a VHD/EVHD (by name) is checked the same way; any other
 *   file is a raw parent, allowed only when the child carries medv's raw-parent record, and checked
 *   against it (size and fingerprint, rawparent.ts) before anything is written.
 *
 * Every parent is opened read-only (shared lock) unless the caller merges into it (exclusive). A
 * plaintext disk over an encrypted parent is refused at every open, at any depth. Chains are
 * bounded (MAX_CHAIN_DEPTH) and loops (by real path) refused.
 */
import { realpathSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { MedvError } from '../core/errors.js';
import type { DiskFormat } from './open.js';
import type { ParentInfo } from './vhd/index.js';

/** Longest parent chain we follow; deeper chains are treated as hostile. */
export const MAX_CHAIN_DEPTH = 32;

/** Candidate parent paths from the locators: relative (to the child's folder) first, then absolute. */
function parentCandidates(childPath: string, info: ParentInfo): string[] {
  const dir = dirname(childPath);
  const rel: string[] = [];
  const abs: string[] = [];
  for (const l of info.locators) {
    if (l.platform === 'MacX') {
      try { abs.push(decodeURIComponent(new URL(l.path).pathname)); } catch { /* not a file URL */ }
      continue;
    }
    const p = l.path.replace(/\\/g, '/');
    if (p === '') continue;
    if (l.platform === 'W2ru' || l.platform === 'Wi2r') rel.push(isAbsolute(p) ? p : resolve(dir, p));
    else if (l.platform === 'W2ku' || l.platform === 'Wi2k') abs.push(p);
  }
  return [...new Set([...rel, ...abs])];
}

/** The format of a VHD parent: EVHD when named .evhd, else VHD (never raw). */
export function vhdParentFormat(path: string): 'vhd' | 'evhd' {
  return path.toLowerCase().endsWith('.evhd') ? 'evhd' : 'vhd';
}

function isRegularFile(p: string): boolean {
  try { return statSync(p).isFile(); } catch { return false; }
}

/** The parent a locator names: the first candidate that is a regular file. */
export function findParentByLocator(childPath: string, info: ParentInfo): string {
  if (info.uniqueId.every((b) => b === 0)) {
    throw new MedvError('EPARENT', 'the differencing disk records no parent unique id, so no parent found through a locator can be trusted; name it explicitly (--parent)', { file: childPath });
  }
  const candidates = parentCandidates(childPath, info);
  const found = candidates.find(isRegularFile);
  if (!found) {
    throw new MedvError('EPARENT', `parent disk not found (looked for ${candidates.join(', ') || 'no usable locator'})`, { file: childPath });
  }
  return found;
}

/**
 * The real path of the next link of a chain, refusing loops and chains deeper than
 * MAX_CHAIN_DEPTH. `chain` holds the real paths opened so far, top first.
 */
export function nextInChain(path: string, chain: string[]): string {
  let real: string;
  try { real = realpathSync(path); } catch { throw new MedvError('ENOENT', `no such disk: ${path}`, { file: path }); }
  if (chain.includes(real)) throw new MedvError('EPARENT', `loop in parent chain: ${[...chain, real].join(' -> ')}`, { file: path });
  if (chain.length > MAX_CHAIN_DEPTH) throw new MedvError('EPARENT', `parent chain deeper than ${MAX_CHAIN_DEPTH}`, { file: path });
  return real;
}

/** A plaintext layer over an encrypted one would write the guest's data in the clear. */
export function checkEncryptionOrder(childPath: string, childFormat: DiskFormat, parentPath: string, parentFormat: DiskFormat): void {
  if (parentFormat === 'evhd' && childFormat !== 'evhd') {
    throw new MedvError('EPARENT', `a plaintext disk over the encrypted parent ${parentPath} would store its data unencrypted: refusing to open it`, { file: childPath, parent: parentPath });
  }
}

/** Wrap "this is not a VHD" while opening a parent as EPARENT, naming the parent. */
export function notAVhdParent(childPath: string, parentPath: string, e: unknown): unknown {
  if (!(e instanceof MedvError)) return e;
  if (!['EFORMAT', 'ECHECKSUM', 'ETRUNCATED', 'EVERSION', 'ECORRUPT'].includes(e.code)) return e;
  return new MedvError('EPARENT', `parent ${parentPath} is not a usable VHD or EVHD (${e.message}); a raw parent must be named explicitly`, { file: childPath, parent: parentPath }, { cause: e });
}
