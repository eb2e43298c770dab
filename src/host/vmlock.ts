/**
 * The lock of a VM's run folder: `<root>/<name>/lock`, an exclusive flock(2) (src/block/flock.ts:
 * the addon, or /usr/bin/flock on the same open file description without it) that the VM's
 * supervisor takes before it looks at or touches anything in the folder, and holds until it exits
 * (the kernel drops it when the process dies, however it dies). Two starts of one name at once:
 * exactly one supervisor gets it; the other is refused with EBUSY before it has removed, bound or
 * written anything, so the running VM's sockets, state and logs stay as they are.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { lockFile } from '../block/flock.js';
import { MedvError, fromSystemError } from '../core/errors.js';

/** Take the lock of run folder `dir` (VM `name`) or throw EBUSY naming the supervisor that holds it. Returns the descriptor (keep it open). */
export function lockRunDir(dir: string, name: string): number {
  const file = join(dir, 'lock');
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600);
  } catch (e) {
    throw fromSystemError(e, file);
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new MedvError('EUNSAFE', 'the VM\'s lock file is not a regular file', { file });
    lockFile(fd, file, 'exclusive');
  } catch (e) {
    fs.closeSync(fd);
    if (e instanceof MedvError && e.code === 'EBUSY') {
      const holders = (e.data.holders as Array<{ pid: number }> | undefined) ?? [];
      const who = holders.length ? ` (supervisor pid ${holders.map((h) => h.pid).join(', ')})` : '';
      throw new MedvError('EBUSY', `VM ${name} is already running or starting${who}`, { holders });
    }
    throw e;
  }
  return fd;
}
