/**
 * The lock of a VM's run folder: `<root>/<name>/lock`, an exclusive flock(2) (src/block/flock.ts:
 * the addon, or /usr/bin/flock on the same open file description without it) that the VM's
 * supervisor takes before it looks at or touches anything in the folder, and holds until its run
 * has ended and been recorded (everything closed, state.json final: Supervisor.cleanup), or until
 * it exits (the kernel drops it when the process dies, however it dies). Two starts of one name at once:
 * exactly one supervisor gets it; the other is refused with EBUSY before it has removed, bound or
 * written anything, so the running VM's sockets, state and logs stay as they are.
 */
import { join } from 'node:path';
import { lockExclusive } from '../block/flock.js';
import { MedvError } from '../core/errors.js';

/** Take the lock of run folder `dir` (VM `name`) or throw EBUSY naming the supervisor that holds it. Returns the descriptor (keep it open). */
export function lockRunDir(dir: string, name: string): number {
  try {
    return lockExclusive(join(dir, 'lock'), 'the VM\'s lock file');
  } catch (e) {
    if (e instanceof MedvError && e.code === 'EBUSY') {
      const holders = (e.data.holders as Array<{ pid: number }> | undefined) ?? [];
      const who = holders.length ? ` (supervisor pid ${holders.map((h) => h.pid).join(', ')})` : '';
      throw new MedvError('EBUSY', `VM ${name} is already running or starting${who}`, { holders });
    }
    throw e;
  }
}
