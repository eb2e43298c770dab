/**
 * The default user profile: an administrator drops files in data/Profile/; each user gets a copy in
 * $XDG_DATA_HOME/medv/profile (src/core/paths.ts profileDir) of every file they do not have yet (their own changes are kept).
 * Only regular files at the top of data/Profile are copied (no symlinks, folders or devices), at
 * most 256 files of at most 16 MiB each and 64 MiB in all; anything else is skipped.
 */
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { createFileAtomicSync, ensureDir, readBoundedSync } from '../core/fsio.js';
import { type ClientRoot, checkSafeDir, ensureSafeDir } from './paths.js';
import { profileDir, type UserDirs } from '../core/paths.js';

export const PROFILE_MAX_FILES = 256;
export const PROFILE_MAX_FILE = 16 * 1024 * 1024;
export const PROFILE_MAX_TOTAL = 64 * 1024 * 1024;
const NAME_RE = /^[^/\0]{1,255}$/;

/** Copy what is missing from data/Profile into the user's profile folder; returns that folder. */
export function userProfile(c: ClientRoot, dirs?: UserDirs): string {
  checkSafeDir(c.profile);
  const profile = profileDir(dirs);
  ensureDir(dirname(profile), { parents: true, forbid: 0o022 });
  const dest = ensureSafeDir(profile);
  let total = 0;
  let count = 0;
  for (const name of fs.readdirSync(c.profile).sort()) {
    if (!NAME_RE.test(name) || name.startsWith('.')) continue;
    if (count >= PROFILE_MAX_FILES || total >= PROFILE_MAX_TOTAL) break;
    const to = join(dest, name);
    try { fs.lstatSync(to); continue; } catch { /* missing: copy */ }
    const from = join(c.profile, name);
    let bytes: Buffer | undefined;
    let mode: number;
    try {
      // Read once, without following a link or blocking on a FIFO, within what is left of the budget.
      bytes = readBoundedSync(from, Math.min(PROFILE_MAX_FILE, PROFILE_MAX_TOTAL - total), 'profile file');
      mode = fs.lstatSync(from).mode;
    } catch { continue; }
    if (!bytes) continue;
    count++;
    total += bytes.length;
    try {
      createFileAtomicSync(to, bytes, { mode: (mode & 0o755) | 0o600 });
    } catch (e) {
      if (!(e instanceof MedvError && e.code === 'EEXIST')) throw e; // the user made one meanwhile: theirs stays
    }
  }
  return dest;
}
