/**
 * Atomic outputs: new files are written under temporary names in their final folder and
 * published by hard link (which never overwrites) once complete, so a killed command leaves no
 * file under a final name, and a re-run cleans up what the killed run left.
 *
 * A temporary name is `.<final name>.medv-tmp-<pid>-<token>`: the pid of the process writing it
 * and a random token shared by every file of one run (an .evhd and its .enc are one run).
 * A temporary counts as a leftover only when its name has this shape, it is a regular file owned
 * by us, and its pid is dead (`isLeftover`, the one place that decides; it can switch to a flock
 * held on the temporary once the addon has one). A pid reused by another process only makes us
 * keep a leftover longer, never delete a live file.
 *
 * Publish order (`Staging.publish`), relied on by `removeLeftovers`:
 *   1. fsync every temporary;
 *   2. link each temporary to its final name, in the order given (callers put the key file
 *      before the .evhd, so an .evhd never appears without its key); EEXIST stops and rolls back;
 *   3. fsync the folder;
 *   4. unlink the temporary names, fsync the folder.
 * Until step 4 a published final name and its temporary are the same inode, which proves that
 * file was made by a run of this tool. A later run that stages one of the same final names looks
 * at every temporary of that dead run (same pid and token): if all, or none, of them are published, it removes the temporary
 * names only (the outputs are complete, or were never published); if some are published and some
 * not (killed inside step 2), the pair is half-published, and it removes the published final names
 * that are the same inode as a temporary, then the temporaries. Nothing else is ever deleted.
 *
 * Limits: hard links are required (every local Linux file system has them); a pid is only
 * meaningful on this host, so a folder shared between hosts may keep a dead host's temporaries
 * until removed by hand (never the reverse); a final name within ~30 bytes of NAME_MAX gives
 * ENAMETOOLONG for its temporary.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { MedvError, fromSystemError, type ErrorCode } from './errors.js';

const TEMP_RE = /^\.(.+)\.medv-tmp-(\d+)-([0-9a-f]{12})$/;

/** The temporary name for `final` in a run (same folder). */
export function tempNameFor(final: string, pid: number, token: string): string {
  return join(dirname(final), `.${basename(final)}.medv-tmp-${pid}-${token}`);
}

/** Parse a folder entry as one of our temporaries. */
export function parseTempName(name: string): { final: string; pid: number; token: string } | undefined {
  const m = TEMP_RE.exec(name);
  if (!m) return undefined;
  const pid = Number(m[2]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  return { final: m[1], pid, token: m[3] };
}

/** Is the process alive? (ESRCH: dead; EPERM: alive, someone else's.) */
export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** The one rule for "this temporary was left by a dead run of this tool". */
function isLeftover(st: fs.Stats, pid: number): boolean {
  if (!st.isFile()) return false;
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) return false;
  return !pidAlive(pid);
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try { return fs.lstatSync(p); } catch { return undefined; }
}

const sameFile = (a: fs.Stats | undefined, b: fs.Stats | undefined) => !!a && !!b && a.dev === b.dev && a.ino === b.ino;

function unlinkQuiet(p: string): void {
  try { fs.unlinkSync(p); } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(e, p);
  }
}

/**
 * Remove what dead runs left for any of `finals` (all in one folder): see the file comment.
 * Returns the paths removed.
 */
export function removeLeftovers(finals: string[]): string[] {
  if (finals.length === 0) return [];
  const dir = dirname(resolve(finals[0]));
  const wanted = new Set(finals.map((f) => basename(f)));
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return []; }
  const runs = new Map<string, Array<{ temp: string; final: string }>>();
  for (const name of names) {
    const t = parseTempName(name);
    if (!t) continue;
    const key = `${t.pid}-${t.token}`;
    const list = runs.get(key) ?? [];
    list.push({ temp: join(dir, name), final: join(dir, t.final) });
    runs.set(key, list);
  }
  const removed: string[] = [];
  for (const [key, members] of runs) {
    if (!members.some((m) => wanted.has(basename(m.final)))) continue;
    const pid = Number(key.split('-')[0]);
    const states = members.map((m) => ({ ...m, tst: lstatOrUndefined(m.temp) }));
    if (states.some((s) => !s.tst || !isLeftover(s.tst, pid))) continue;
    const published = states.map((s) => sameFile(s.tst, lstatOrUndefined(s.final)));
    const half = published.some((p) => p) && published.some((p) => !p);
    if (half) {
      states.forEach((s, i) => {
        // Re-check right before unlinking: still the dead run's inode under the final name.
        if (published[i] && sameFile(s.tst, lstatOrUndefined(s.final))) { unlinkQuiet(s.final); removed.push(s.final); }
      });
    }
    for (const s of states) { unlinkQuiet(s.temp); removed.push(s.temp); }
  }
  if (removed.length) fsyncDirSync(dir);
  return removed;
}

/** A set of new files (one folder) written under temporary names, published together. */
export interface Staging {
  readonly finals: readonly string[];
  /** The temporary path the caller writes instead of `final` (it creates the file, O_EXCL). */
  tempFor(final: string): string;
  /** fsync the temporaries, link them to their final names in order, fsync the folder, drop the temporary names. */
  publish(): Promise<void>;
  /** Remove what this run created (temporaries, final names it linked); never anything else. Idempotent. */
  abort(): Promise<void>;
}

/**
 * Begin writing `finals` (same folder, publish order). Cleans up dead runs' leftovers for these
 * names first, then refuses (EEXIST) when any final name exists.
 */
export function beginStaging(finals: string[], describe: (final: string) => string = (f) => `file exists: ${f}`): Staging {
  if (finals.length === 0) throw new MedvError('EINVAL_ARG', 'nothing to stage');
  const dir = dirname(resolve(finals[0]));
  for (const f of finals) {
    if (dirname(resolve(f)) !== dir) throw new MedvError('EINVAL_ARG', `staged files must share one folder (${f})`, { file: f });
  }
  removeLeftovers(finals);
  for (const f of finals) if (lstatOrUndefined(f)) throw new MedvError('EEXIST', describe(f), { file: f });
  const token = randomBytes(6).toString('hex');
  const temps = new Map(finals.map((f) => [f, tempNameFor(f, process.pid, token)]));
  const linked: string[] = [];
  let published = false;

  const abort = async (): Promise<void> => {
    if (published) return;
    for (const f of linked.splice(0).reverse()) {
      if (sameFile(lstatOrUndefined(temps.get(f)!), lstatOrUndefined(f))) unlinkQuiet(f);
    }
    for (const t of temps.values()) unlinkQuiet(t);
  };

  return {
    finals,
    tempFor(final: string): string {
      const t = temps.get(final);
      if (!t) throw new MedvError('EINVAL_ARG', `not a staged file: ${final}`, { file: final });
      return t;
    },
    async publish(): Promise<void> {
      try {
        for (const t of temps.values()) await fsyncFile(t);
        for (const [f, t] of temps) {
          try {
            await fs.promises.link(t, f);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new MedvError('EEXIST', describe(f), { file: f }, { cause: e });
            throw fromSystemError(e, f);
          }
          linked.push(f);
        }
        await fsyncDir(dir);
      } catch (e) {
        await abort().catch(() => undefined);
        throw e;
      }
      published = true;
      // The outputs are in place; a temporary name that cannot be removed is a leftover the
      // next run removes (it is published, so only its name goes).
      for (const t of temps.values()) { try { unlinkQuiet(t); } catch { /* left for the next run */ } }
      await fsyncDir(dir);
    },
    abort,
  };
}

async function fsyncFile(path: string): Promise<void> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(path, fs.constants.O_RDONLY);
    await fh.sync();
  } catch (e) {
    throw fromSystemError(e, path);
  } finally {
    if (fh) await fh.close().catch(() => undefined);
  }
}

/** fsync a folder (its entries); file systems that refuse it are ignored (the data is already durable). */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(dir, fs.constants.O_RDONLY);
    await fh.sync();
  } catch {
    // EINVAL on some file systems
  } finally {
    if (fh) await fh.close().catch(() => undefined);
  }
}

/** As fsyncDir, synchronously. */
export function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY);
    fs.fsyncSync(fd);
  } catch {
    // as fsyncDir
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Opening without following links: a path named by hostile input (a settings file, a request)
// is resolved one component at a time below a folder the user named, each folder opened with
// O_NOFOLLOW|O_DIRECTORY through the descriptor of the one before (/proc/self/fd/N/<name>), the
// last with O_NOFOLLOW|O_NONBLOCK (a FIFO or device never blocks the open); its type is checked
// on the descriptor. The caller then uses that descriptor, or reopens the very same file through
// `/proc/self/fd/<fd>` (a magic link: the kernel goes to the open file, no path is resolved
// again), so nothing swapped in after the check is ever reached. Linux only (/proc).

/** A folder held open: `proc` reaches it (and `${proc}/<name>` its entries) whatever happens to its path. */
export interface PinnedDir {
  readonly fd: number;
  /** `/proc/self/fd/<fd>`. */
  readonly proc: string;
  /** Its path, as the kernel resolved it when opened (for messages and records). */
  readonly path: string;
  /** Device of the file system it is on. */
  readonly dev: number;
  close(): void;
}

/** A file held open after its type was checked on the descriptor. */
export interface PinnedFile {
  readonly fd: number;
  /** `/proc/self/fd/<fd>`: reopens exactly this file (for another access mode, or by a library that wants a path). */
  readonly proc: string;
  readonly path: string;
  readonly stat: fs.Stats;
  close(): void;
}

const O_DIR_NOFOLLOW = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;
const O_FILE_PROBE = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY;

/** The path of an open descriptor (`/proc/self/fd/<fd>`), as it resolves now. */
export function fdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

function closer(fd: number): () => void {
  let open = true;
  return () => { if (open) { open = false; try { fs.closeSync(fd); } catch { /* already closed */ } } };
}

function pinnedDir(fd: number, dev: number): PinnedDir {
  const proc = fdPath(fd);
  let path: string;
  try { path = fs.readlinkSync(proc); } catch (e) { fs.closeSync(fd); throw fromSystemError(e, proc); }
  return { fd, proc, path, dev, close: closer(fd) };
}

/** A file-name component that names an entry of a folder, nothing else. */
function checkComponent(name: string, where: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new MedvError('EUNSAFE', `${JSON.stringify(name)} is not a plain file name`, { file: where });
  }
}

function describeType(st: fs.Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

/** Is there an entry at `path` (a link counts, followed or not, dangling or not)? */
export function nameExists(path: string): boolean {
  try { fs.lstatSync(path); return true; } catch { return false; }
}

/**
 * The folders leading from `root` to `path` and its last name (both absolute, normalised);
 * EUNSAFE when `path` is not strictly below `root`.
 */
export function partsBelow(root: string, path: string): { parts: string[]; name: string } {
  const rel = relative(root, path);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw new MedvError('EUNSAFE', `${path} is not inside ${root}`, { file: path });
  const parts = rel.split(sep);
  return { parts: parts.slice(0, -1), name: parts[parts.length - 1] };
}

/**
 * Open folder `root` (following links: the user named it), then each of `parts` below it
 * without following any link and staying on root's file system. With `create`, missing parts are
 * made (mode `mode`, default 0700) through the descriptor of their parent. A link, a non-folder or
 * another file system on the way is EUNSAFE.
 */
export function openDirBeneath(root: string, parts: readonly string[] = [], opts: { create?: boolean; mode?: number } = {}): PinnedDir {
  let fd: number;
  try { fd = fs.openSync(root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') throw new MedvError('EINVAL_ARG', `not a folder: ${root}`, { file: root });
    throw fromSystemError(e, root);
  }
  const dev = fs.fstatSync(fd).dev;
  let where = root;
  for (const part of parts) {
    checkComponent(part, where);
    const next = `${fdPath(fd)}/${part}`;
    const shown = `${where}/${part}`;
    let child: number;
    try {
      try {
        child = fs.openSync(next, O_DIR_NOFOLLOW);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !opts.create) throw e;
        try { fs.mkdirSync(next, { mode: opts.mode ?? 0o700 }); } catch (e2) { if ((e2 as NodeJS.ErrnoException).code !== 'EEXIST') throw e2; }
        child = fs.openSync(next, O_DIR_NOFOLLOW);
      }
    } catch (e) {
      fs.closeSync(fd);
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENOTDIR') {
        let what = 'not a folder';
        try { what = describeType(fs.lstatSync(shown)); } catch { /* gone meanwhile */ }
        throw new MedvError('EUNSAFE', `${shown} is ${what}; links are not followed below ${root}`, { file: shown });
      }
      throw fromSystemError(e, shown);
    }
    fs.closeSync(fd);
    fd = child;
    if (fs.fstatSync(fd).dev !== dev) {
      fs.closeSync(fd);
      throw new MedvError('EUNSAFE', `${shown} is on another file system than ${root}; not followed`, { file: shown });
    }
    where = shown;
  }
  return pinnedDir(fd, dev);
}

/**
 * Open entry `name` of a pinned folder without following a link and without blocking (a FIFO or
 * device), and check on the descriptor that it is a regular file (or, with `blockDevice`, a block
 * device) on the folder's file system. Anything else is `code` (default EUNSAFE). The descriptor
 * is read-only; reopen `proc` for writing.
 */
export function openFileIn(dir: PinnedDir, name: string, opts: { blockDevice?: boolean; code?: ErrorCode; what?: string } = {}): PinnedFile {
  const shown = `${dir.path}/${name}`;
  checkComponent(name, shown);
  return openChecked(`${dir.proc}/${name}`, shown, O_FILE_PROBE, { ...opts, dev: dir.dev });
}

/**
 * Open a file the user named (links followed: the user chose them) without blocking on a FIFO or
 * device, and check its type on the descriptor: a regular file, or with `blockDevice` a block
 * device; anything else is EINVAL_ARG.
 */
export function openNamed(path: string, opts: { blockDevice?: boolean; what?: string } = {}): PinnedFile {
  return openChecked(path, path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY, { ...opts, code: 'EINVAL_ARG' });
}

/**
 * Open `path` read-only without following a link in its last component and without blocking, and
 * check on the descriptor that it is a regular file (`code`, default EUNSAFE, otherwise). For
 * files that are ours by construction (a saved state), where a link in their place is never ours.
 */
export function openFileNoFollow(path: string, opts: { code?: ErrorCode; what?: string } = {}): PinnedFile {
  return openChecked(path, path, O_FILE_PROBE, opts);
}

function openChecked(open: string, shown: string, flags: number, opts: { blockDevice?: boolean; code?: ErrorCode; what?: string; dev?: number }): PinnedFile {
  const what = opts.what ?? 'file';
  let fd: number;
  try { fd = fs.openSync(open, flags); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new MedvError(opts.code ?? 'EUNSAFE', `${what} ${shown} is a symbolic link; links are not followed here`, { file: shown });
    throw fromSystemError(e, shown);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() && !(opts.blockDevice && st.isBlockDevice())) {
      throw new MedvError(opts.code ?? 'EUNSAFE', `${what} ${shown} is ${describeType(st)}, not a regular file${opts.blockDevice ? ' or block device' : ''}`, { file: shown });
    }
    if (opts.dev !== undefined && st.dev !== opts.dev) throw new MedvError(opts.code ?? 'EUNSAFE', `${what} ${shown} is on another file system than its folder; not used`, { file: shown });
    return { fd, proc: fdPath(fd), path: shown, stat: st, close: closer(fd) };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/**
 * An error raised while working through `/proc/self/fd/N` paths, with those paths written as
 * the real ones (`pins`: proc path -> shown path), so messages name files a user knows.
 */
export function withShownPaths<T>(e: T, pins: ReadonlyArray<{ proc: string; path: string }>): T {
  if (!(e instanceof Error)) return e;
  // Longest first: /proc/self/fd/12 must not be read as /proc/self/fd/1 followed by "2".
  const sorted = [...pins].sort((a, b) => b.proc.length - a.proc.length);
  const swap = (s: string) => sorted.reduce((acc, p) => acc.split(p.proc).join(p.path), s);
  e.message = swap(e.message);
  if (e instanceof MedvError && typeof e.data.file === 'string') e.data.file = swap(e.data.file);
  return e;
}
