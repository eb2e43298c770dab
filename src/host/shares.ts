/**
 * Shared folders (virtio-9p): host folders the device policy lets a guest see, each under a mount
 * tag. The folder is a path the user named, so it is opened here once, component by component from
 * `/` without following any link (a symlink anywhere on the way is EUNSAFE), checked on its
 * descriptor to be a folder, and held: QEMU gets that descriptor (it inherits it) and the path
 * `/proc/self/fd/<n>`, never the name again, so nothing swapped in after the check is exported.
 * QEMU's 9p server itself never follows a link out of the folder (its `local` backend walks with
 * O_NOFOLLOW below the root it opened).
 */
import * as fs from 'node:fs';
import { isAbsolute, normalize, sep } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { fdPath } from '../core/fsio.js';
import { SHARE_TAG_RE } from '../hypervisor/qemu.js';

export { SHARE_TAG_RE };
/** Shared folders one VM may have. */
export const MAX_SHARES = 8;

export interface SharedFolder {
  tag: string;
  /** Absolute path of a host folder (no link on the way). */
  path: string;
  /** The guest may write (default: read-only, QEMU's `readonly=on`). */
  writable?: boolean;
}

/** A shared folder held open. */
export interface OpenShare { tag: string; path: string; readOnly: boolean; fd: number; close(): void }

const O_DIR_NOFOLLOW = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;

/** The shared folders of a VM config, checked: tags by SHARE_TAG_RE and unique, paths absolute, at most MAX_SHARES. */
export function checkShares(shares: unknown): SharedFolder[] {
  if (shares === undefined) return [];
  if (!Array.isArray(shares) || shares.length > MAX_SHARES) throw new MedvError('EINVAL_ARG', `at most ${MAX_SHARES} shared folders`);
  const tags = new Set<string>();
  return shares.map((s: SharedFolder) => {
    if (!s || typeof s.tag !== 'string' || !SHARE_TAG_RE.test(s.tag)) throw new MedvError('EINVAL_ARG', `a shared folder's tag must be 1 to 31 letters, digits, '.', '_' or '-' (starting with a letter or digit), not ${JSON.stringify(s?.tag)?.slice(0, 40)}`);
    if (tags.has(s.tag)) throw new MedvError('EINVAL_ARG', `shared folder tag ${s.tag} is given twice`);
    tags.add(s.tag);
    if (typeof s.path !== 'string' || !isAbsolute(s.path) || s.path.includes('\0')) throw new MedvError('EINVAL_ARG', `shared folder ${s.tag}: the folder must be an absolute path`);
    return { tag: s.tag, path: s.path, ...(s.writable === true ? { writable: true } : {}) };
  });
}

/** Open `path` (absolute) from `/` one component at a time, never following a link; EUNSAFE on a link, EINVAL_ARG when not a folder. */
export function openSharedFolder(share: SharedFolder): OpenShare {
  const path = normalize(share.path);
  const parts = path.split(sep).filter(Boolean);
  if (parts.includes('..')) throw new MedvError('EINVAL_ARG', `shared folder ${share.tag}: ${share.path} must not contain '..'`);
  let fd = fs.openSync('/', O_DIR_NOFOLLOW);
  let where = '';
  for (const part of parts) {
    where = `${where}/${part}`;
    let next: number;
    try {
      next = fs.openSync(`${fdPath(fd)}/${part}`, O_DIR_NOFOLLOW);
    } catch (e) {
      let code = (e as NodeJS.ErrnoException).code;
      // O_DIRECTORY on a link reports ENOTDIR: which one it was, from the entry itself
      if (code === 'ENOTDIR' || code === 'ELOOP') {
        try { if (fs.lstatSync(`${fdPath(fd)}/${part}`).isSymbolicLink()) code = 'ELOOP'; } catch { /* gone meanwhile */ }
      }
      fs.closeSync(fd);
      if (code === 'ELOOP') throw new MedvError('EUNSAFE', `shared folder ${share.tag}: ${where} is a symbolic link; a shared folder is named without links`, { file: where });
      if (code === 'ENOTDIR') throw new MedvError('EINVAL_ARG', `shared folder ${share.tag}: ${where} is not a folder`, { file: where });
      throw fromSystemError(e, where);
    }
    fs.closeSync(fd);
    fd = next;
  }
  let open = true;
  return {
    tag: share.tag, path, readOnly: share.writable !== true, fd,
    close: () => { if (open) { open = false; try { fs.closeSync(fd); } catch { /* closed */ } } },
  };
}
