/**
 * One start or stop of a workspace at a time: `data/Users/<user>/Workspaces/<workspace>/lock`, an
 * exclusive flock(2) taken once the workspace is known to be the user's (granted, or a grant
 * cached) and held across the "is it running?" check until the VM runs (a start), or until it has
 * stopped and its undo disk is gone (a stop). Without it, two starts at once (a double click on a
 * menu entry, a start and a `--update`) both passed the check: one started the VM while the other
 * deployed a new version and its retention deleted the disk the running VM was using. The VM's own
 * run-folder lock (src/host/vmlock.ts) takes over once it runs. The lock is the kernel's: it goes
 * with the process however it ends. A wipe ordered by the administrator (workspace.ts) takes it too.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { lockExclusive } from '../block/flock.js';
import { MedvError } from '../core/errors.js';
import { ensureSafeDir, type ClientRoot } from '../repo/index.js';
import { workspaceDataDir } from './identity.js';

/** Take the workspace's lock or throw EBUSY; returns its release. */
export function lockWorkspace(c: ClientRoot, user: string, workspace: string): () => void {
  const dir = workspaceDataDir(c, user, workspace);
  ensureSafeDir(join(dir, '..'));
  ensureSafeDir(dir);
  let fd: number;
  try {
    fd = lockExclusive(join(dir, 'lock'), 'the workspace\'s lock file');
  } catch (e) {
    if (e instanceof MedvError && e.code === 'EBUSY') {
      throw new MedvError('EBUSY', `workspace ${workspace} is being started or stopped by another medv command; try again when it is done`, { holders: e.data.holders });
    }
    throw e;
  }
  let held = true;
  return () => { if (held) { held = false; fs.closeSync(fd); } };
}
