/**
 * Kernel file locks between processes (flock(2), see native.flock): writers hold LOCK_EX, readers
 * and the parent of an undo disk LOCK_SH, always LOCK_NB. A lock belongs to the open file
 * description, so it also holds between two opens in one process, and dies with the process.
 *
 * A refused lock is EBUSY, naming who holds it: the pids /proc/locks lists for the file's
 * device:inode (with /proc/<pid>/comm), or — when that pid is gone because the lock was taken by a
 * helper that handed it to its parent (the JS fallback's /usr/bin/flock) — the processes whose
 * /proc/<pid>/fdinfo shows the lock.
 */
import { closeSync, constants, fstatSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { MedvError, fromSystemError } from '../core/errors.js';
import { native } from '../native.js';

export type LockMode = 'exclusive' | 'shared' | 'none';

export interface LockHolder { pid: number; comm?: string; mode: 'exclusive' | 'shared' }

/** Take `mode` on `fd` or throw EBUSY naming the holders. */
export function lockFile(fd: number, path: string, mode: LockMode): void {
  if (mode === 'none') return;
  let taken: boolean;
  try {
    taken = native.flock(fd, mode === 'exclusive');
  } catch (e) {
    throw fromSystemError(e, path);
  }
  if (taken) return;
  const holders = lockHolders(fd);
  const who = holders.length
    ? holders.map((h) => `pid ${h.pid}${h.comm ? ` (${h.comm})` : ''} holds it ${h.mode === 'exclusive' ? 'for writing' : 'for reading'}`).join(', ')
    : 'held by another open file';
  const want = mode === 'exclusive' ? 'to write' : 'to read';
  throw new MedvError('EBUSY', `disk is in use, cannot open it ${want}: ${who}`, { file: path, holders });
}

/**
 * A lock file: `file` opened (created 0600 when missing; never through a symlink, never blocking
 * on a FIFO), checked to be a regular file on its descriptor, and locked exclusively. Returns the
 * descriptor (the lock lasts while it is open); EBUSY (lockFile's, naming the holders) when
 * another open file holds it.
 */
export function lockExclusive(file: string, what: string): number {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  } catch (e) {
    throw fromSystemError(e, file);
  }
  try {
    if (!fstatSync(fd).isFile()) throw new MedvError('EUNSAFE', `${what} is not a regular file`, { file });
    lockFile(fd, file, 'exclusive');
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return fd;
}

/**
 * Until a lock someone else holds is free: `take` takes it (or throws EBUSY) and returns its
 * release, which is called at once. The kernel tells no one when a flock goes, so this tries every
 * `everyMs` for at most `forMs` (the monotonic clock). True once it was free, false when it was still
 * held at the end; any error but EBUSY is thrown. `onBusy` is told the first EBUSY (its holders).
 */
export async function waitUntilFree(take: () => () => void, o: { everyMs: number; forMs: number; onBusy?: (busy: MedvError) => void }): Promise<boolean> {
  const until = performance.now() + o.forMs;
  let onBusy = o.onBusy;
  for (;;) {
    try {
      take()();
      return true;
    } catch (e) {
      if (!(e instanceof MedvError && e.code === 'EBUSY')) throw e;
      onBusy?.(e);
      onBusy = undefined;
    }
    if (performance.now() >= until) return false;
    await new Promise((r) => setTimeout(r, o.everyMs));
  }
}

/** Device numbers as /proc/locks prints them: major and minor in hex (glibc's dev_t encoding). */
function procDevice(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}

interface LockLine { pid: number; mode: 'exclusive' | 'shared' }

/** FLOCK lines of a /proc/locks-format text for `key` (maj:min:ino); blocked waiters ("->") are skipped. */
export function parseLockLines(text: string, key: string): LockLine[] {
  const out: LockLine[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    // "1: FLOCK ADVISORY WRITE 1234 fe:00:2146940 0 EOF"
    if (f.length < 6 || f[1] === '->' || f[1] !== 'FLOCK') continue;
    if (f[5] !== key) continue;
    const pid = Number(f[4]);
    if (!Number.isSafeInteger(pid) || pid <= 0) continue;
    out.push({ pid, mode: f[3] === 'WRITE' ? 'exclusive' : 'shared' });
  }
  return out;
}

function comm(pid: number): string | undefined {
  try { return readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return undefined; }
}

function alive(pid: number): boolean {
  try { readFileSync(`/proc/${pid}/stat`); return true; } catch { return false; }
}

/** Who holds a flock on the file open as `fd` (best effort: what /proc lets us see). */
function lockHolders(fd: number): LockHolder[] {
  let key: string;
  try {
    const st = fstatSync(fd, { bigint: true });
    key = `${procDevice(st.dev)}:${st.ino}`;
  } catch { return []; }
  let lines: LockLine[] = [];
  try { lines = parseLockLines(readFileSync('/proc/locks', 'utf8'), key); } catch { /* no /proc */ }
  const found = new Map<number, LockHolder>();
  for (const l of lines) if (alive(l.pid)) found.set(l.pid, { pid: l.pid, comm: comm(l.pid), mode: l.mode });
  if (found.size === 0 && lines.length > 0) {
    for (const h of holdersFromFdinfo(key)) found.set(h.pid, h);
  }
  return [...found.values()];
}

/** Scan /proc/<pid>/fdinfo/* for "lock:" lines on `key` (only processes we may read). */
function holdersFromFdinfo(key: string): LockHolder[] {
  const out: LockHolder[] = [];
  let pids: string[] = [];
  try { pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n)); } catch { return out; }
  for (const p of pids) {
    let fds: string[];
    try { fds = readdirSync(`/proc/${p}/fdinfo`); } catch { continue; }
    for (const fd of fds) {
      let text: string;
      try { text = readFileSync(`/proc/${p}/fdinfo/${fd}`, 'utf8'); } catch { continue; }
      const locks = text.split('\n').filter((l) => l.startsWith('lock:')).map((l) => l.slice(5));
      const hit = parseLockLines(locks.join('\n'), key)[0];
      if (hit) { out.push({ pid: Number(p), comm: comm(Number(p)), mode: hit.mode }); break; }
    }
  }
  return out;
}
