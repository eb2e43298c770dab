/**
 * Small-file I/O for the repositories, for files that may be hostile: reads never follow a symlink
 * (O_NOFOLLOW), never block on a FIFO (O_NONBLOCK, then a regular-file check) and never read more
 * than their bound; writes go to a 0600 temporary in the same folder, are fsynced, renamed over
 * the final name, and the folder is fsynced.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { fsyncDirSync, tempNameFor } from '../core/fsio.js';

const O_READ = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

/**
 * The bytes of regular file `path`, or undefined when it does not exist. A symlink, a folder, a
 * device or FIFO is EUNSAFE; a file larger than `max` bytes is ETOOLARGE (nothing past max+1 is read).
 */
export function readBoundedSync(path: string, max: number, what = 'file'): Buffer | undefined {
  let fd: number;
  try {
    fd = fs.openSync(path, O_READ);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw new MedvError('EUNSAFE', `${what} is a symlink; not followed`, { file: path });
    throw fromSystemError(e, path);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new MedvError('EUNSAFE', `${what} is not a regular file`, { file: path });
    if (st.size > max) throw new MedvError('ETOOLARGE', `${what} is ${st.size} bytes, more than the ${max} allowed`, { file: path });
    const buf = Buffer.alloc(Math.min(st.size, max) + 1);
    let done = 0;
    while (done < buf.length) {
      const n = fs.readSync(fd, buf, done, buf.length - done, done);
      if (n === 0) break;
      done += n;
    }
    if (done > max) throw new MedvError('ETOOLARGE', `${what} grew past the ${max} bytes allowed`, { file: path });
    return buf.subarray(0, done);
  } finally {
    fs.closeSync(fd);
  }
}

export { fsyncDirSync };

/** A temporary name beside `final`, in src/core/fsio.ts's shape (`.<name>.medv-tmp-<pid>-<token>`), so its leftover cleanup knows it. */
export function tempBeside(final: string): string {
  return tempNameFor(final, randomBytes(6).toString('hex'));
}

/** Replace `final` with `bytes` atomically: 0600 temporary (O_EXCL), fsync, rename, fsync folder. */
export function writeAtomicSync(final: string, bytes: Buffer, mode = 0o600): void {
  const tmp = tempBeside(final);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
    fs.fchmodSync(fd, mode);
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, done);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, final);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    try { fs.unlinkSync(tmp); } catch { /* not created, or already renamed */ }
    throw fromSystemError(e, final);
  }
  fsyncDirSync(dirname(final));
}

/** As writeAtomicSync, on the thread pool. */
export async function writeAtomic(final: string, bytes: Buffer, mode = 0o600): Promise<void> {
  const tmp = tempBeside(final);
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
    await fh.chmod(mode);
    await fh.writeFile(bytes);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fs.promises.rename(tmp, final);
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    await fs.promises.unlink(tmp).catch(() => undefined);
    throw fromSystemError(e, final);
  }
  fsyncDirSync(dirname(final));
}
