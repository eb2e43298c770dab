/**
 * The client repositories' root and its folders (layout in ./README.md). Every folder is created
 * 0700 and checked before use: a symlink in its place, a folder owned by another user, or one that
 * group or others can write is refused (EUNSAFE), never "fixed".
 */
import { join, resolve, sep } from 'node:path';
import { MedvError } from '../core/errors.js';
import { checkUserName } from '../api/names.js';
import { checkDir, ensureDir } from '../core/fsio.js';
import { relativeInside } from '../core/paths.js';

export interface ClientRoot {
  root: string;
  images: string;
  packed: string;
  prestaged: string;
  data: string;
  profile: string;
  users: string;
  /** data/Local (host.key lives here) */
  local: string;
  config: string;
  logs: string;
}

/**
 * The repositories' rule for a folder: a real folder (not a symlink), ours, that group and others
 * cannot write (an administrator may have made the root 0755). Checked on the folder's fd by
 * src/core/fsio.ts. Throws EUNSAFE naming the folder; ENOENT when missing.
 */
export function checkSafeDir(path: string): void {
  checkDir(path, REPO_FORBID);
}

/** Create `path` (0700) when missing, then checkSafeDir. `parents`: create missing parents too (unchecked: above the root). */
export function ensureSafeDir(path: string, parents = false): string {
  return ensureDir(path, { mode: 0o700, forbid: REPO_FORBID, parents });
}

/** Mode bits a repository folder must not have: write by group or others. */
const REPO_FORBID = 0o022;

/** The folders of the client root at `root` (nothing is created or checked: see openClientRoot). */
export function clientRootLayout(root: string): ClientRoot {
  const r = resolve(root);
  const images = join(r, 'images');
  const data = join(r, 'data');
  const local = join(data, 'Local');
  const c: ClientRoot = {
    root: r,
    images,
    packed: join(images, 'PackedImages'),
    prestaged: join(images, 'PrestagedImages'),
    data,
    profile: join(data, 'Profile'),
    users: join(data, 'Users'),
    local,
    config: join(local, 'Config'),
    logs: join(local, 'Logs'),
  };
  return c;
}

/** Open (creating what is missing) and check the client root and every folder of the layout. */
export function openClientRoot(root: string): ClientRoot {
  const c = clientRootLayout(root);
  ensureSafeDir(c.root, true);
  for (const d of [c.images, c.packed, c.prestaged, c.data, c.profile, c.users, c.local, c.config, c.logs]) ensureSafeDir(d);
  return c;
}

/** data/Users/<user>, created 0700 and checked. */
export function userDir(c: ClientRoot, user: string): string {
  checkUserName(user);
  checkSafeDir(c.users);
  return ensureSafeDir(join(c.users, user));
}

/**
 * `file` (absolute, or relative to the root) as an absolute path strictly inside the root, whose
 * every folder from the root down is a real, safe folder (checkSafeDir). EINVAL_ARG outside the root.
 */
export function pathInRoot(c: ClientRoot, file: string): string {
  const abs = resolve(c.root, file);
  const rel = relativeInside(c.root, abs);
  if (!rel) {
    throw new MedvError('EINVAL_ARG', `${file} is not inside the client root ${c.root}`, { file });
  }
  const parts = rel.split(sep);
  let dir = c.root;
  checkSafeDir(dir);
  for (const p of parts.slice(0, -1)) {
    dir = join(dir, p);
    checkSafeDir(dir);
  }
  return abs;
}
