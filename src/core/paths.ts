/**
 * Every default location medv uses on a machine, computed here and nowhere else. An explicit
 * option always wins; then a MEDV_* variable; then the XDG Base Directory variables (an XDG
 * variable that is not an absolute path is ignored, as the spec says); then the spec's defaults
 * under the home folder. Libraries take a `UserDirs` to override the XDG homes without touching
 * process.env (the demo and tests pass their own folders).
 *
 *   client root      --client-root, $MEDV_CLIENT_ROOT, /var/lib/medv (root), $XDG_DATA_HOME/medv
 *   run root         $MEDV_RUN_DIR, /run/medv (root), $XDG_RUNTIME_DIR/medv, /tmp/medv-<uid>
 *   console keys     --keys, $MEDV_KEYS, $XDG_CONFIG_HOME/medv/keys
 *   upload state     --state-dir, $MEDV_STATE_DIR/uploads, $XDG_STATE_HOME/medv/uploads
 *   seed cache       $XDG_CACHE_HOME/medv/seeds
 *   user profile     $XDG_DATA_HOME/medv/profile
 *   menu entries     $XDG_DATA_HOME/applications
 */
import { realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';

/**
 * `path` relative to `root` when it is `root` itself ('') or below it; undefined when it is
 * elsewhere. Both are resolved first. A name that only starts with two dots (`..cfg`) is a name
 * below the root like any other: only `..` itself, as a whole component, leads out.
 */
export function relativeInside(root: string, path: string): string | undefined {
  const rel = relative(resolve(root), resolve(path));
  if (isAbsolute(rel) || rel === '..' || rel.startsWith(`..${sep}`)) return undefined;
  return rel;
}

/**
 * Where `path` will lead once the missing folders on its way are made: its longest existing
 * leading part with every link resolved, then the rest as written. (`realpath` alone fails on a
 * path not made yet, and the unresolved text hides a link in an existing folder on the way.)
 */
export function resolveExisting(path: string): string {
  const rest: string[] = [];
  for (let dir = resolve(path); ; dir = dirname(dir)) {
    try { return join(realpathSync(dir), ...rest); } catch { /* not there yet: one folder up */ }
    if (dirname(dir) === dir) return resolve(path);
    rest.unshift(basename(dir));
  }
}

/** How each default is chosen, for --help texts (the functions below are the rules). */
export const DEFAULT_HELP = {
  clientRoot: '$MEDV_CLIENT_ROOT, else /var/lib/medv for root, else $XDG_DATA_HOME/medv',
  keys: '$MEDV_KEYS, else $XDG_CONFIG_HOME/medv/keys',
  uploadState: '$MEDV_STATE_DIR/uploads, else $XDG_STATE_HOME/medv/uploads',
  seedCache: '$XDG_CACHE_HOME/medv/seeds',
  menu: '$XDG_DATA_HOME/applications',
} as const;

/** The user's XDG base folders, when a caller chooses them instead of the environment. */
export interface UserDirs {
  /** Instead of $XDG_DATA_HOME (~/.local/share). */
  data?: string;
  /** Instead of $XDG_CONFIG_HOME (~/.config). */
  config?: string;
  /** Instead of $XDG_STATE_HOME (~/.local/state). */
  state?: string;
  /** Instead of $XDG_CACHE_HOME (~/.cache). */
  cache?: string;
}

function xdg(variable: string, fallback: string[]): string {
  const v = process.env[variable];
  return v && isAbsolute(v) ? v : join(homedir(), ...fallback);
}

function env(variable: string): string | undefined {
  const v = process.env[variable];
  return v !== undefined && v !== '' ? v : undefined;
}

const isRoot = (): boolean => (process.getuid?.() ?? 0) === 0;

export const dataHome = (d?: UserDirs): string => d?.data ?? xdg('XDG_DATA_HOME', ['.local', 'share']);
export const configHome = (d?: UserDirs): string => d?.config ?? xdg('XDG_CONFIG_HOME', ['.config']);
export const stateHome = (d?: UserDirs): string => d?.state ?? xdg('XDG_STATE_HOME', ['.local', 'state']);
export const cacheHome = (d?: UserDirs): string => d?.cache ?? xdg('XDG_CACHE_HOME', ['.cache']);

/** The client repositories' root: `explicit`, else $MEDV_CLIENT_ROOT, else /var/lib/medv for root, else $XDG_DATA_HOME/medv. */
export function clientRootPath(explicit?: string, d?: UserDirs): string {
  if (explicit !== undefined && explicit !== '') return resolve(explicit);
  const e = env('MEDV_CLIENT_ROOT');
  if (e) return resolve(e);
  if (isRoot()) return '/var/lib/medv';
  return join(dataHome(d), 'medv');
}

/** The VM run folders' root: $MEDV_RUN_DIR, else /run/medv for root, else $XDG_RUNTIME_DIR/medv, else /tmp/medv-<uid>. */
export function runRoot(): string {
  const e = env('MEDV_RUN_DIR');
  if (e) return e;
  if (isRoot()) return '/run/medv';
  const rt = process.env.XDG_RUNTIME_DIR;
  if (rt && isAbsolute(rt)) return join(rt, 'medv');
  return `/tmp/medv-${process.getuid?.() ?? 0}`;
}

/** The console's key folder: $MEDV_KEYS, else $XDG_CONFIG_HOME/medv/keys. */
export function consoleKeyDir(d?: UserDirs): string {
  return env('MEDV_KEYS') ?? join(configHome(d), 'medv', 'keys');
}

/** Where unfinished uploads are remembered: $MEDV_STATE_DIR/uploads, else $XDG_STATE_HOME/medv/uploads. */
export function uploadStateDir(d?: UserDirs): string {
  const e = env('MEDV_STATE_DIR');
  return e ? join(e, 'uploads') : join(stateHome(d), 'medv', 'uploads');
}

/** Where disk seeds' block ids are cached: $XDG_CACHE_HOME/medv/seeds. */
export function seedCacheDir(d?: UserDirs): string {
  return join(cacheHome(d), 'medv', 'seeds');
}

/** The user's copy of the default profile: $XDG_DATA_HOME/medv/profile. */
export function profileDir(d?: UserDirs): string {
  return join(dataHome(d), 'medv', 'profile');
}

/** Desktop menu entries: $XDG_DATA_HOME/applications. */
export function desktopDir(d?: UserDirs): string {
  return join(dataHome(d), 'applications');
}
