/**
 * The one file-I/O module: every file medv writes, every folder it creates and every small or
 * secret file it reads goes through here. Nothing else renames or links files (scripts/check-layers.js
 * checks that).
 *
 *   writeFileAtomic[Sync]   replace a file: temporary (O_CREAT|O_EXCL|O_NOFOLLOW, mode set at
 *                           creation whatever the umask), write, fsync, rename over the final
 *                           name, fsync the folder. Readers see the old or the new bytes, never a mix.
 *   createFileAtomic[Sync]  a new file that never replaces another: as above, but published by
 *                           hard link (EEXIST when the name exists). Host key, admin token, server key.
 *   linkNew                 a complete file (an upload) published under a new name in another
 *                           folder, never over another (hard link; a copy across file systems).
 *   openAtomicSync          the streaming form of writeFileAtomicSync (saved states).
 *   beginStaging            several new files published together, in order (an .evhd and its .enc).
 *   readBoundedSync         a file that may be hostile: O_NOFOLLOW|O_NONBLOCK, checked on the fd
 *                           (a regular file), never more than its bound read.
 *   readSecretSync          as readBoundedSync, and the file must be ours with no group or other
 *                           access (as ssh refuses such a private key); optionally straight into
 *                           secure memory, so key bytes never become a JavaScript string.
 *   ensureDir / checkDir    a folder created with a mode (exact, whatever the umask) and checked on
 *                           its fd: not a symlink, ours, no forbidden mode bits (private: 0700).
 *   fsyncDir[Sync]          make a folder's entries durable.
 *   renameSync / rename     moving a name that is not a file's content being published (log
 *                           rotation, a socket node): kept here so renames stay in one place.
 *   processStartTime / processAlive   a process identity that survives pid reuse.
 *
 * Temporary names. One shape for every temporary this module makes:
 *
 *     .<final name>.medv-tmp-<pid>-<start>-<token>
 *
 * the pid of the writing process, its start time (clock ticks since boot, /proc/<pid>/stat field
 * 22) and a random token shared by every file of one run (an .evhd and its .enc are one run).
 * A pid alone is not an identity (pids are reused): with the start time, a temporary of a dead
 * run is recognised even when its pid now belongs to another process, and a live run's
 * temporaries are never taken for leftovers. (Names without `-<start>` were written by older
 * versions; for them only the pid is checked, so a reused pid only keeps them longer.)
 * A temporary counts as a leftover only when its name has this shape, it is a regular file owned
 * by us, and its process is gone (`isLeftover`, the one place that decides). Every writer here
 * removes the leftovers for the names it writes before it writes (`removeLeftovers`).
 *
 * Publish order (`Staging.publish`), relied on by `removeLeftovers`:
 *   1. fsync every temporary;
 *   2. link each temporary to its final name, in the order given (callers put the key file
 *      before the .evhd, so an .evhd never appears without its key); EEXIST stops and rolls back;
 *   3. fsync the folder;
 *   4. unlink the temporary names, fsync the folder.
 * Until step 4 a published final name and its temporary are the same inode, which proves that
 * file was made by a run of this tool. A later run that stages one of the same final names looks
 * at every temporary of that dead run (same process and token): if all, or none, of them are published, it removes the temporary
 * names only (the outputs are complete, or were never published); if some are published and some
 * not (killed inside step 2), the pair is half-published, and it removes the published final names
 * that are the same inode as a temporary, then the temporaries. Nothing else is ever deleted.
 * A write-then-rename temporary is never the same inode as its final name (rename moves the
 * name), so a leftover of one is always "never published": only its temporary name goes.
 *
 * Limits: hard links are required (every local Linux file system has them); a process identity
 * is only meaningful on this host, so a folder shared between hosts may keep a dead host's
 * temporaries until removed by hand (never the reverse); a final name within ~40 bytes of NAME_MAX
 * gives ENAMETOOLONG for its temporary.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { MedvError, fromSystemError, type ErrorCode } from './errors.js';
import { relativeInside } from './paths.js';

// --- processes

/** A process, as far as this host can tell it from another: pid and start time. */
export interface ProcessIdentity {
  pid: number;
  /** Clock ticks since boot (/proc/<pid>/stat field 22); undefined when unknown. */
  start?: number;
}

/** Start time of a process (field 22 of /proc/<pid>/stat), or undefined when it does not exist (or is a zombie). */
export function processStartTime(pid: number): number | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  let stat: string;
  try { stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1'); } catch { return undefined; }
  // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (rest[0] === 'Z' || rest[0] === 'X') return undefined; // a zombie is dead for our purpose
  const start = Number(rest[19]);
  return Number.isSafeInteger(start) ? start : undefined;
}

let self: ProcessIdentity | undefined;
/** This process's identity. */
export function thisProcess(): ProcessIdentity {
  if (!self || self.pid !== process.pid) self = { pid: process.pid, start: processStartTime(process.pid) };
  return self;
}

/**
 * Is this process alive? With a start time: alive only while the pid runs with that start time
 * (a reused pid is not the same process). Without one: the pid exists (ESRCH: dead; EPERM: alive,
 * someone else's).
 */
export function processAlive(pid: number, start?: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (start !== undefined) return processStartTime(pid) === start;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

// --- temporary names

const TEMP_RE = /^\.(.+)\.medv-tmp-(\d+)(?:-(\d+))?-([0-9a-f]{12})$/;

/** A new random run token (12 hex digits). */
export function newToken(): string {
  return randomBytes(6).toString('hex');
}

/** The temporary name for `final` written by `proc` in run `token` (same folder). */
export function tempNameFor(final: string, token: string, proc: ProcessIdentity = thisProcess()): string {
  const who = proc.start === undefined ? `${proc.pid}` : `${proc.pid}-${proc.start}`;
  return join(dirname(final), `.${basename(final)}.medv-tmp-${who}-${token}`);
}

/** Parse a folder entry as one of our temporaries. */
export function parseTempName(name: string): { final: string; pid: number; start?: number; token: string } | undefined {
  const m = TEMP_RE.exec(name);
  if (!m) return undefined;
  const pid = Number(m[2]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  if (m[3] === undefined) return { final: m[1], pid, token: m[4] };
  const start = Number(m[3]);
  if (!Number.isSafeInteger(start)) return undefined;
  return { final: m[1], pid, start, token: m[4] };
}

/** The one rule for "this temporary was left by a dead run of this tool". */
function isLeftover(st: fs.Stats, pid: number, start: number | undefined): boolean {
  if (!st.isFile()) return false;
  if (st.uid !== myUid()) return false;
  return !processAlive(pid, start);
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
  const runs = new Map<string, { pid: number; start?: number; members: Array<{ temp: string; final: string }> }>();
  for (const name of names) {
    const t = parseTempName(name);
    if (!t) continue;
    const key = `${t.pid}-${t.start ?? ''}-${t.token}`;
    const run = runs.get(key) ?? { pid: t.pid, start: t.start, members: [] };
    run.members.push({ temp: join(dir, name), final: join(dir, t.final) });
    runs.set(key, run);
  }
  const removed: string[] = [];
  for (const { pid, start, members } of runs.values()) {
    if (!members.some((m) => wanted.has(basename(m.final)))) continue;
    const states = members.map((m) => ({ ...m, tst: lstatOrUndefined(m.temp) }));
    if (states.some((s) => !s.tst || !isLeftover(s.tst, pid, start))) continue;
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

// --- writing

const O_NEW = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

export interface WriteOptions {
  /** Mode of the new file, set exactly (not reduced by the umask). Default 0600. */
  mode?: number;
}

/** Create `path` (O_EXCL, no symlink followed) with exactly `mode`; returns the fd. */
function createSync(path: string, mode: number): number {
  const fd = fs.openSync(path, O_NEW, mode);
  try {
    fs.fchmodSync(fd, mode);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

function writeAllSync(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, done);
}

const toBytes = (data: Uint8Array | string): Uint8Array => (typeof data === 'string' ? Buffer.from(data, 'utf8') : data);

/** A new file under a temporary name, written and fsynced by the caller, then committed. */
export interface AtomicFile {
  readonly final: string;
  /** The temporary path (mode set, O_EXCL). */
  readonly temp: string;
  /** The open fd of the temporary (write to it; do not close it). */
  readonly fd: number;
  /** fsync, close, rename over `final`, fsync the folder. */
  commit(): void;
  /** fsync, close, link to `final` (EEXIST when it exists: nothing replaced), fsync the folder. */
  commitNew(): void;
  /** Close and remove the temporary. Idempotent; a no-op after commit. */
  abort(): void;
}

/**
 * Open a temporary beside `final` for a write-then-rename (or write-then-link) of content the
 * caller streams into `fd`. Cleans up dead runs' leftovers for `final` first.
 */
export function openAtomicSync(final: string, opts: WriteOptions = {}): AtomicFile {
  const mode = opts.mode ?? 0o600;
  removeLeftovers([final]);
  const temp = tempNameFor(final, newToken());
  let fd: number;
  try { fd = createSync(temp, mode); } catch (e) { throw fromSystemError(e, final); }
  let open = true;
  let done = false;
  const close = () => { if (open) { open = false; fs.closeSync(fd); } };
  const finish = (publish: () => void) => {
    if (done) throw new MedvError('EINTERNAL', `already committed: ${final}`, { file: final });
    try {
      fs.fsyncSync(fd);
      close();
      publish();
    } catch (e) {
      abort();
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new MedvError('EEXIST', `file exists: ${final}`, { file: final }, { cause: e });
      throw fromSystemError(e, final);
    }
    done = true;
    fsyncDirSync(dirname(final));
  };
  const abort = () => {
    if (done) return;
    try { close(); } catch { /* already closed */ }
    try { unlinkQuiet(temp); } catch { /* a leftover the next run removes */ }
  };
  return {
    final,
    temp,
    fd,
    commit: () => finish(() => fs.renameSync(temp, final)),
    commitNew: () => finish(() => {
      fs.linkSync(temp, final);
      try { fs.unlinkSync(temp); } catch { /* published: only the temporary name is left, for the next run */ }
    }),
    abort,
  };
}

/** Replace `final` with `data` atomically: temporary (mode set), fsync, rename, fsync folder. */
export function writeFileAtomicSync(final: string, data: Uint8Array | string, opts: WriteOptions = {}): void {
  writeWholeSync(final, data, opts, false);
}

/**
 * Write a new file `final` with `data`, never over an existing one (EEXIST, nothing changed):
 * temporary (mode set), fsync, link, fsync folder. Secrets (host key, tokens) are written this way.
 */
export function createFileAtomicSync(final: string, data: Uint8Array | string, opts: WriteOptions = {}): void {
  writeWholeSync(final, data, opts, true);
}

function writeWholeSync(final: string, data: Uint8Array | string, opts: WriteOptions, exclusive: boolean): void {
  const f = openAtomicSync(final, opts);
  try {
    writeAllSync(f.fd, toBytes(data));
  } catch (e) {
    f.abort();
    throw fromSystemError(e, final);
  }
  if (exclusive) f.commitNew();
  else f.commit();
}

/** As writeFileAtomicSync, with the writes and fsyncs on the thread pool. */
export async function writeFileAtomic(final: string, data: Uint8Array | string, opts: WriteOptions = {}): Promise<void> {
  await atomicAsync(final, toBytes(data), opts.mode ?? 0o600, false);
}

/** As createFileAtomicSync, with the writes and fsyncs on the thread pool. */
export async function createFileAtomic(final: string, data: Uint8Array | string, opts: WriteOptions = {}): Promise<void> {
  await atomicAsync(final, toBytes(data), opts.mode ?? 0o600, true);
}

async function atomicAsync(final: string, bytes: Uint8Array, mode: number, exclusive: boolean): Promise<void> {
  removeLeftovers([final]);
  const temp = tempNameFor(final, newToken());
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(temp, O_NEW, mode);
    await fh.chmod(mode);
    await fh.writeFile(bytes);
    await fh.sync();
    await fh.close();
    fh = undefined;
    if (exclusive) {
      await fs.promises.link(temp, final);
      await fs.promises.unlink(temp).catch(() => undefined);
    } else {
      await fs.promises.rename(temp, final);
    }
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    await fs.promises.unlink(temp).catch(() => undefined);
    if ((e as NodeJS.ErrnoException).code === 'EEXIST' && exclusive) throw new MedvError('EEXIST', `file exists: ${final}`, { file: final }, { cause: e });
    throw fromSystemError(e, final);
  }
  await fsyncDir(dirname(final));
}

/**
 * Publish the complete file `src` also under the new name `dst` (another folder of this host),
 * never over an existing file: fsync `src`, hard-link, fsync `dst`'s folder. With `opts.mode`,
 * `src` gets exactly that mode first (on its fd, checked: a link shares the inode, so the umask
 * under which `src` was made never decides what `dst` allows). On another file system (EXDEV)
 * `src` is copied to a temporary beside `dst` (mode `opts.mode`, else src's), fsynced and linked.
 * EEXIST (a MedvError) when `dst` exists: nothing is replaced.
 */
export async function linkNew(src: string, dst: string, opts: WriteOptions = {}): Promise<void> {
  try {
    await fsyncFile(src, opts.mode);
    try {
      await fs.promises.link(src, dst);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
      removeLeftovers([dst]);
      const temp = tempNameFor(dst, newToken());
      try {
        await fs.promises.copyFile(src, temp, fs.constants.COPYFILE_EXCL);
        if (opts.mode !== undefined) await fs.promises.chmod(temp, opts.mode);
        await fsyncFile(temp);
        await fs.promises.link(temp, dst);
      } finally {
        await fs.promises.rm(temp, { force: true });
      }
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new MedvError('EEXIST', `file exists: ${dst}`, { file: dst }, { cause: e });
    throw fromSystemError(e, dst);
  }
  await fsyncDir(dirname(dst));
}

/** Rename `from` to `to` (same file system), typed errors. For names that are not published content: log rotation, socket nodes. */
export function renameSync(from: string, to: string): void {
  try { fs.renameSync(from, to); } catch (e) { throw fromSystemError(e, to); }
}

/**
 * A second name `to` for the file `from` (a hard link: the same inode, no copy; `from` itself is not
 * followed when it is a symbolic link). Returns false, changing nothing, when `to` exists already.
 */
export function hardLinkSync(from: string, to: string): boolean {
  try { fs.linkSync(from, to); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw fromSystemError(e, to);
  }
  return true;
}

/** As renameSync, on the thread pool. */
export async function rename(from: string, to: string): Promise<void> {
  try { await fs.promises.rename(from, to); } catch (e) { throw fromSystemError(e, to); }
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
  const token = newToken();
  const temps = new Map(finals.map((f) => [f, tempNameFor(f, token)]));
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

/** fsync a file; with `mode`, set that mode on the fd first and check it took. */
async function fsyncFile(path: string, mode?: number): Promise<void> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    if (mode !== undefined) {
      await fh.chmod(mode);
      const st = await fh.stat();
      if ((st.mode & 0o7777) !== mode) throw new MedvError('EUNSAFE', `${path} kept mode ${(st.mode & 0o7777).toString(8)} instead of ${mode.toString(8)}`, { file: path });
    }
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
    fh = await fs.promises.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
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
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    fs.fsyncSync(fd);
  } catch {
    // as fsyncDir
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

// --- reading

const O_READ = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

const myUid = (): number => process.getuid?.() ?? 0;
/** `0600`-style text of a file mode, for messages. */
const modeString = (mode: number): string => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;

/** Open for reading without following a symlink or blocking on a FIFO; ELOOP becomes EUNSAFE. */
function openForRead(path: string, what: string, symlinkCode: ErrorCode): number {
  try {
    return fs.openSync(path, O_READ);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new MedvError(symlinkCode, `${what} is a symbolic link; not followed (give the real file)`, { file: path });
    throw fromSystemError(e, path);
  }
}

/** Read up to `buf.length` bytes of `fd` from `position` on (short only at the end of the file); returns how many were read. */
export function preadAllSync(fd: number, buf: Buffer, position = 0): number {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/**
 * The bytes of regular file `path`, or undefined when it does not exist. A symlink, a folder, a
 * device or FIFO is EUNSAFE; a file larger than `max` bytes is ETOOLARGE (nothing past max+1 is read).
 */
export function readBoundedSync(path: string, max: number, what = 'file'): Buffer | undefined {
  let fd: number;
  try {
    fd = openForRead(path, what, 'EUNSAFE');
  } catch (e) {
    if (e instanceof MedvError && e.code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new MedvError('EUNSAFE', `${what} is not a regular file`, { file: path });
    if (st.size > max) throw new MedvError('ETOOLARGE', `${what} is ${st.size} bytes, more than the ${max} allowed`, { file: path });
    const buf = Buffer.alloc(Math.min(st.size, max) + 1);
    const done = preadAllSync(fd, buf);
    if (done > max) throw new MedvError('ETOOLARGE', `${what} grew past the ${max} bytes allowed`, { file: path });
    return buf.subarray(0, done);
  } catch (e) {
    throw fromSystemError(e, path);
  } finally {
    fs.closeSync(fd);
  }
}

export interface SecretReadOptions {
  /** What the file is, for messages ("host key file"). */
  what: string;
  /** Exactly this many bytes (EFORMAT otherwise), read into `into` when given. */
  size?: number;
  /** At most this many bytes (EFORMAT beyond); default 64 KiB. Ignored with `size`. */
  max?: number;
  /** Read into this buffer (secure memory), which must be `size` bytes long. */
  into?: Buffer;
  /**
   * A file that is not ours or that group or others may access is refused (EINSECURE) unless
   * `warn` is given: then it is read and `warn` gets one line (passphrase files).
   */
  warn?: (line: string) => void;
}

/**
 * Read a secret file: opened once without following a symlink or blocking on a FIFO, checked on
 * the fd (a regular file, owned by us, no group or other access), bounded. Returns `into` (or a
 * new buffer the caller wipes). A missing file is ENOENT.
 */
export function readSecretSync(path: string, opts: SecretReadOptions): Buffer {
  const { what } = opts;
  const fd = openForRead(path, what, 'EINSECURE');
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new MedvError('EINVAL_ARG', `${what} is not a regular file`, { file: path });
    const max = opts.max ?? 64 * 1024;
    if (opts.size !== undefined && st.size !== opts.size) throw new MedvError('EFORMAT', `${what} is ${st.size} bytes, expected ${opts.size}`, { file: path, offset: 0 });
    if (opts.size === undefined && st.size > max) throw new MedvError('EFORMAT', `${what} is larger than ${max} bytes`, { file: path });
    const problem = st.uid !== myUid()
      ? `${what} belongs to uid ${st.uid}, not to us (${myUid()})`
      : (st.mode & 0o077) !== 0
        ? `${what} permissions ${(st.mode & 0o777).toString(8)} are too open: it must not be accessible by group or others (chmod 600 ${path})`
        : undefined;
    if (problem !== undefined) {
      if (!opts.warn) throw new MedvError('EINSECURE', problem, { file: path });
      opts.warn(`medv: warning: ${problem}`);
    }
    if (opts.size !== undefined) {
      const buf = opts.into ?? Buffer.alloc(opts.size);
      if (buf.length !== opts.size) throw new MedvError('EINTERNAL', `${what}: buffer of ${buf.length} bytes for ${opts.size}`);
      const n = preadAllSync(fd, buf);
      if (n !== opts.size) throw new MedvError('ETRUNCATED', `${what} shrank while being read`, { file: path, offset: n });
      return buf;
    }
    const buf = Buffer.alloc(st.size);
    const n = preadAllSync(fd, buf);
    return buf.subarray(0, n);
  } catch (e) {
    throw fromSystemError(e, path);
  } finally {
    fs.closeSync(fd);
  }
}

// --- folders

export interface DirOptions {
  /** Mode of a folder this call creates, set exactly (not reduced by the umask). Default 0700. */
  mode?: number;
  /** Create missing parents too (with `mode`; they are not checked: they are above what we guard). */
  parents?: boolean;
  /**
   * Mode bits the folder must not have: default 0o077 (private: nobody else may enter). 0o022
   * for "nobody else may write" (a client root an administrator made 0755).
   */
  forbid?: number;
}

/**
 * Check that `path` is a real folder (not a symlink: checked on the fd opened with O_NOFOLLOW),
 * ours, without the `forbid` mode bits. EUNSAFE naming the folder; ENOENT when missing.
 */
export function checkDir(path: string, forbid = 0o077): void {
  closeDir(openDirChecked(path, forbid), path);
}

function closeDir(fd: number, path: string): void {
  try { fs.closeSync(fd); } catch (e) { throw fromSystemError(e, path); }
}

function openDirChecked(path: string, forbid: number, fix?: number): number {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new MedvError('ENOENT', `no such folder: ${path}`, { file: path });
    if (code === 'ELOOP') throw new MedvError('EUNSAFE', `${path} is a symlink; medv does not follow symlinks to its folders`, { file: path });
    if (code === 'ENOTDIR') {
      // O_DIRECTORY wins over O_NOFOLLOW: a symlink (to anything) also gives ENOTDIR.
      const link = lstatOrUndefined(path)?.isSymbolicLink();
      throw new MedvError('EUNSAFE', link ? `${path} is a symlink; medv does not follow symlinks to its folders` : `${path} is not a folder`, { file: path });
    }
    throw new MedvError('EIO', `cannot open ${path}: ${(e as Error).message}`, { file: path });
  }
  try {
    let st = fs.fstatSync(fd);
    if (!st.isDirectory()) throw new MedvError('EUNSAFE', `${path} is not a folder`, { file: path });
    if (st.uid !== myUid()) throw new MedvError('EUNSAFE', `${path} belongs to uid ${st.uid}, not to us (${myUid()})`, { file: path });
    if (fix !== undefined && (st.mode & 0o7777) !== fix) {
      fs.fchmodSync(fd, fix);
      st = fs.fstatSync(fd);
    }
    if (st.mode & forbid) {
      const how = (forbid & 0o044) ? 'is accessible to' : 'can be written by';
      throw new MedvError('EUNSAFE', `${path} ${how} group or others (mode ${modeString(st.mode)}); chmod ${(st.mode & 0o777 & ~forbid).toString(8)} it`, { file: path });
    }
    return fd;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/**
 * Create `path` with `mode` when missing (exactly that mode), then check it as checkDir does (a
 * folder that exists is refused, never "fixed"). Returns `path`.
 */
export function ensureDir(path: string, opts: DirOptions = {}): string {
  const mode = opts.mode ?? 0o700;
  const forbid = opts.forbid ?? 0o077;
  let created = false;
  try {
    fs.mkdirSync(path, { mode });
    created = true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && opts.parents) {
      try {
        fs.mkdirSync(dirname(resolve(path)), { mode, recursive: true });
        fs.mkdirSync(path, { mode });
        created = true;
      } catch (e2) {
        if ((e2 as NodeJS.ErrnoException).code !== 'EEXIST') throw new MedvError('EIO', `cannot create ${path}: ${(e2 as Error).message}`, { file: path });
      }
    } else if (code !== 'EEXIST') {
      throw new MedvError(code === 'ENOENT' ? 'ENOENT' : 'EIO', `cannot create ${path}: ${(e as Error).message}`, { file: path });
    }
  }
  // A folder we just made gets its mode whatever the umask (on the fd: no symlink is followed).
  closeDir(openDirChecked(path, forbid, created ? mode : undefined), path);
  return path;
}

/** As ensureDir, for a private folder (0700, nothing for group or others). */
export function ensurePrivateDir(path: string, parents = false): string {
  return ensureDir(path, { mode: 0o700, forbid: 0o077, parents });
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
  const rel = relativeInside(root, path);
  if (!rel) throw new MedvError('EUNSAFE', `${path} is not inside ${root}`, { file: path });
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

/** Size in bytes of the block device `rdev` (/sys/dev/block/MAJOR:MINOR/size counts 512-byte sectors). */
export function blockDeviceSize(rdev: number, path: string): number {
  const major = Number((BigInt(rdev) >> 8n) & 0xfffn | (BigInt(rdev) >> 32n) & ~0xfffn);
  const minor = Number(BigInt(rdev) & 0xffn | (BigInt(rdev) >> 12n) & ~0xffn);
  let text: string;
  try { text = fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'latin1'); } catch (e) { throw fromSystemError(e, path); }
  const sectors = Number(text.trim());
  if (!Number.isSafeInteger(sectors) || sectors < 0) throw new MedvError('EIO', `cannot tell the size of block device ${path}`, { file: path });
  return sectors * 512;
}
