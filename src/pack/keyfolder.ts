/**
 * A key folder from released image keys: where a client keeps the keys a server released to it
 * (opened with api/keyrelease.ts openReleasedKeys), and where the server's image test
 * (src/server/imagetest.ts) puts the keys of the version it boots, in the layout openImageKeys
 * (./keys.ts), verifyPack and src/transfer's fetchImage({keyDir}) read:
 *
 *   repository.key.enc            the repository key, wrapped under the client's KEK
 *   images/<image>.key.enc        the image's content key (its key id is the image id)
 *   trusted/<first 16 hex>.pub    each signer whose indexes the client may trust
 *
 * Folders are private (0700, ours, checked on their fd); each file is written whole under a
 * temporary name and renamed over the old one (a grant after a key change replaces it), through
 * src/core/fsio.ts. Other files in the folder are left alone. `removeKeyFolder` removes exactly
 * what this layout names (a refused grant ends its keys), nothing else.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../core/fsio.js';
import type { KekSource } from '../crypto/kekenv.js';
import { wrapDataKey } from '../crypto/keyfile.js';
import type { ImageKeySet } from '../api/keyrelease.js';
import { IMAGE_NAME_RE } from '../api/names.js';

/** Write released keys as a key folder under `dir` (created private when missing), wrapped under `kek`. */
export async function writeKeyFolder(dir: string, keys: ImageKeySet, kek: KekSource): Promise<void> {
  if (!IMAGE_NAME_RE.test(keys.image)) throw new MedvError('EINVAL_ARG', 'image name is not valid');
  ensurePrivateDir(dir, true);
  ensurePrivateDir(join(dir, 'images'));
  await writeFileAtomic(join(dir, 'repository.key.enc'), await wrapDataKey(keys.repository, kek), { mode: 0o600 });
  await writeFileAtomic(join(dir, 'images', `${keys.image}.key.enc`), await wrapDataKey(keys.content, kek), { mode: 0o600 });
  if (keys.signers.length) {
    ensurePrivateDir(join(dir, 'trusted'));
    for (const s of keys.signers) {
      const hex = s.toString('hex');
      await writeFileAtomic(join(dir, 'trusted', `${hex.slice(0, 16)}.pub`), `${hex}\n`, { mode: 0o644 });
    }
  }
}

const KEY_FILE_RE = new RegExp(`^${IMAGE_NAME_RE.source.slice(1, -1)}\\.key\\.enc$`);
const SIGNER_FILE_RE = /^[0-9a-f]{16}\.pub$/;

/**
 * Remove a key folder that writeKeyFolder wrote: only `repository.key.enc`, `images/<image>.key.enc`
 * and `trusted/<16 hex>.pub` that are regular files (a symlink is removed as a link, never
 * followed), then the folders when empty. Anything else stays. Returns the paths removed.
 */
export function removeKeyFolder(dir: string): string[] {
  const removed: string[] = [];
  const drop = (p: string) => {
    try {
      const st = fs.lstatSync(p);
      if (!st.isFile() && !st.isSymbolicLink()) return;
      fs.unlinkSync(p);
      removed.push(p);
    } catch { /* gone already */ }
  };
  const list = (d: string) => { try { return fs.readdirSync(d); } catch { return []; } };
  const rmdir = (d: string) => { try { fs.rmdirSync(d); } catch { /* not empty, or gone */ } };
  try {
    if (!fs.lstatSync(dir).isDirectory()) return removed;
  } catch {
    return removed;
  }
  for (const [sub, re] of [['images', KEY_FILE_RE], ['trusted', SIGNER_FILE_RE]] as const) {
    const d = join(dir, sub);
    try { if (!fs.lstatSync(d).isDirectory()) continue; } catch { continue; }
    for (const n of list(d)) if (re.test(n)) drop(join(d, n));
    rmdir(d);
  }
  drop(join(dir, 'repository.key.enc'));
  rmdir(dir);
  return removed;
}
