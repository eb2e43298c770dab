import { realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { FileDevice } from '../../block/file.js';
import { MedvError } from '../../errors.js';
import { VhdDevice } from './device.js';
import { openVhd } from './info.js';
import type { ParentInfo } from './metadata.js';

/** Deepest parent chain we follow. */
export const MAX_CHAIN_DEPTH = 64;

/**
 * Open a VHD file. For a differencing disk the parent chain is resolved through the parent
 * locators — relative ones (W2ru, Wi2r) first, against the child's directory, then absolute ones
 * (W2ku, Wi2k, MacX) — backslashes read as slashes. Each parent must carry the unique id the child
 * records (EPARENT), a chain that comes back to a file already in it is a loop (EPARENT), and
 * parents are opened read-only.
 */
export async function openVhdFile(path: string, opts: { readOnly?: boolean } = {}): Promise<VhdDevice> {
  return openChain(path, opts.readOnly ?? false, []);
}

async function openChain(path: string, readOnly: boolean, chain: string[]): Promise<VhdDevice> {
  let real: string;
  try {
    real = await realpath(path);
  } catch {
    throw new MedvError('ENOENT', `no such VHD file: ${path}`, { file: path });
  }
  if (chain.includes(real)) {
    throw new MedvError('EPARENT', `parent chain loops back to ${real} (${[...chain, real].join(' -> ')})`, { file: chain[chain.length - 1] });
  }
  if (chain.length >= MAX_CHAIN_DEPTH) {
    throw new MedvError('EPARENT', `parent chain deeper than ${MAX_CHAIN_DEPTH}`, { file: path });
  }
  const storage = await FileDevice.open(path, { readOnly });
  try {
    return await openVhd(storage, {
      readOnly,
      name: path,
      openParent: (info) => openParentOf(path, real, info, [...chain, real]),
    });
  } catch (e) {
    await storage.close().catch(() => undefined);
    throw e;
  }
}

function candidates(childPath: string, info: ParentInfo): string[] {
  const dir = dirname(childPath);
  const rel: string[] = [];
  const abs: string[] = [];
  for (const l of info.locators) {
    let p = l.path;
    if (l.platform === 'MacX') {
      try { p = decodeURIComponent(new URL(p).pathname); } catch { continue; }
      abs.push(p);
      continue;
    }
    p = p.replace(/\\/g, '/');
    if (l.platform === 'W2ru' || l.platform === 'Wi2r') rel.push(isAbsolute(p) ? p : resolve(dir, p));
    else if (l.platform === 'W2ku' || l.platform === 'Wi2k') abs.push(p);
  }
  return [...rel, ...abs];
}

async function openParentOf(childPath: string, childReal: string, info: ParentInfo, chain: string[]): Promise<VhdDevice> {
  const tried: string[] = [];
  for (const p of candidates(childPath, info)) {
    tried.push(p);
    try {
      if (!(await stat(p)).isFile()) continue;
    } catch {
      continue;
    }
    const parent = await openChain(p, true, chain);
    if (!parent.info.uniqueId.equals(info.uniqueId)) {
      await parent.close().catch(() => undefined);
      throw new MedvError('EPARENT', `parent ${p} has unique id ${parent.info.uniqueId.toString('hex')}, ${childReal} expects ${info.uniqueId.toString('hex')}`, { file: childPath });
    }
    return parent;
  }
  throw new MedvError('EPARENT', `parent of ${childPath} not found (tried: ${tried.join(', ') || 'no usable locator'})`, { file: childPath });
}
