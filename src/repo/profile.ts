/**
 * The default user profile: an administrator drops files in data/Profile/; each user gets a copy in
 * $XDG_DATA_HOME/medv/profile of every file they do not have yet (their own changes are kept).
 * Only regular files at the top of data/Profile are copied (no symlinks, folders or devices), at
 * most 256 files of at most 16 MiB each and 64 MiB in all; anything else is skipped.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { fsyncDirSync, tempBeside } from './files.js';
import { type ClientRoot, checkSafeDir, ensureSafeDir, xdgDataHome } from './paths.js';

export const PROFILE_MAX_FILES = 256;
export const PROFILE_MAX_FILE = 16 * 1024 * 1024;
export const PROFILE_MAX_TOTAL = 64 * 1024 * 1024;
const NAME_RE = /^[^/\0]{1,255}$/;

/** Copy what is missing from data/Profile into the user's profile folder; returns that folder. */
export function userProfile(c: ClientRoot): string {
  checkSafeDir(c.profile);
  const base = join(xdgDataHome(), 'medv');
  fs.mkdirSync(base, { recursive: true, mode: 0o700 });
  const baseSt = fs.lstatSync(base);
  if (!baseSt.isDirectory()) throw new MedvError('EUNSAFE', `${base} is not a folder (a symlink or a file is there)`, { file: base });
  const dest = ensureSafeDir(join(base, 'profile'));
  let total = 0;
  let count = 0;
  let copied = 0;
  for (const name of fs.readdirSync(c.profile).sort()) {
    if (!NAME_RE.test(name) || name.startsWith('.')) continue;
    if (count >= PROFILE_MAX_FILES || total >= PROFILE_MAX_TOTAL) break;
    const to = join(dest, name);
    try { fs.lstatSync(to); continue; } catch { /* missing: copy */ }
    const from = join(c.profile, name);
    let fd: number;
    try { fd = fs.openSync(from, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK); } catch { continue; }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile() || st.size > PROFILE_MAX_FILE || total + st.size > PROFILE_MAX_TOTAL) continue;
      count++;
      const buf = Buffer.alloc(st.size);
      let done = 0;
      while (done < buf.length) {
        const n = fs.readSync(fd, buf, done, buf.length - done, done);
        if (n === 0) break;
        done += n;
      }
      total += done;
      copyIn(to, buf.subarray(0, done), (st.mode & 0o755) | 0o600);
      copied++;
    } finally {
      fs.closeSync(fd);
    }
  }
  if (copied) fsyncDirSync(dest);
  return dest;
}

/** A new file `to` with `bytes` (temporary, fsync, hard link: never over a file that appeared meanwhile). */
function copyIn(to: string, bytes: Buffer, mode: number): void {
  const tmp = tempBeside(to);
  try {
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    try {
      let done = 0;
      while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, done);
      fs.fchmodSync(fd, mode);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    try { fs.linkSync(tmp, to); } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  } catch (e) {
    throw fromSystemError(e, to);
  } finally {
    try { fs.unlinkSync(tmp); } catch { /* gone */ }
  }
}
