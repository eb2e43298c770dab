/**
 * The client repositories' root and its folders (layout in ./README.md). Every folder is created
 * 0700 and checked before use: a symlink in its place, a folder owned by another user, or one that
 * group or others can write is refused (EUNSAFE), never "fixed".
 */
import { homedir } from 'node:os';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { MedvError } from '../core/errors.js';
import { checkDir, ensureDir } from '../core/fsio.js';

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

/** `explicit`, else $MEDV_CLIENT_ROOT, else /var/lib/medv for root, else $XDG_DATA_HOME/medv (~/.local/share/medv). */
export function clientRootPath(explicit?: string): string {
  if (explicit !== undefined && explicit !== '') return resolve(explicit);
  const env = process.env.MEDV_CLIENT_ROOT;
  if (env) return resolve(env);
  if ((process.getuid?.() ?? 0) === 0) return '/var/lib/medv';
  return join(xdgDataHome(), 'medv');
}

/** $XDG_DATA_HOME when it is an absolute path (the spec ignores a relative one), else ~/.local/share. */
export function xdgDataHome(): string {
  const x = process.env.XDG_DATA_HOME;
  return x && isAbsolute(x) ? x : join(homedir(), '.local', 'share');
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

/** Open (creating what is missing) and check the client root and every folder of the layout. */
export function openClientRoot(root: string): ClientRoot {
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
  ensureSafeDir(r, true);
  for (const d of [images, c.packed, c.prestaged, data, c.profile, c.users, local, c.config, c.logs]) ensureSafeDir(d);
  return c;
}

const USER_RE = /^[A-Za-z0-9_@][A-Za-z0-9._@-]{0,63}$/;

/** Throws EINVAL_ARG unless `user` is 1-64 of [A-Za-z0-9._@-], not starting with '.' or '-'. */
export function checkUserName(user: string): void {
  if (typeof user !== 'string' || !USER_RE.test(user)) {
    throw new MedvError('EINVAL_ARG', `user name ${JSON.stringify(String(user).slice(0, 80))} must be 1-64 of A-Z a-z 0-9 . _ @ - and not start with . or -`);
  }
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
  const rel = relative(c.root, abs);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
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
