/**
 * Where a workspace's local state lives, keyed by identity rather than by name alone:
 *
 *   instance   (client root, user, workspace): the VM's name in the run folder and the desktop
 *              entries' names. Two client roots, or two users of one root, never share a VM name,
 *              so one never sees, stops or starts the other's VM.
 *   folder     (user, workspace, image name, image id): `images/<workspace>.<hash>/`, the version
 *              folders with the disks. Another user, another image behind the same workspace
 *              name, or the same image name with another content key (a server that swapped the
 *              image) gets another folder, so no start ever boots another image's or another
 *              user's disk; each version folder also records which image it holds (Image.json,
 *              src/repo/images.ts) and is checked against it.
 *   keys       (user, workspace): `data/Users/<user>/Workspaces/<workspace>/keys`, what the last
 *              grant released; a refusal removes it (./grant.ts).
 *
 * The image id is the id of the image's content key (the server releases it with the keys; every
 * index of the image carries it, signed). The names are derived, not stored, so nothing can make
 * them disagree; hashes are SHA-256, cut to 64 bits (they separate, they do not hide).
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { checkWorkspaceName } from '../api/names.js';
import { ImageStore, checkImageId, userDir, type ClientRoot, type ImageIdentity } from '../repo/index.js';

export { checkWorkspaceName };

const hash16 = (...parts: string[]) => createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 16);

/** The first 32 characters of a workspace name (run-folder socket paths stay short). */
const readable = (workspace: string) => workspace.slice(0, 32).replace(/[._-]+$/, '') || 'w';

/** The client root as the file system knows it (symlinks resolved), so two spellings of one root agree. */
function rootIdentity(c: ClientRoot): string {
  try { return fs.realpathSync(c.root); } catch { return c.root; }
}

/**
 * The VM name of a workspace of this client root and user: `<workspace>-<16 hex>` (VM-name rules:
 * letters, digits, `.`, `_`, `-`, at most 49 characters). Also the stem of its desktop entries.
 */
export function instanceName(c: ClientRoot, user: string, workspace: string): string {
  checkWorkspaceName(workspace);
  return `${readable(workspace)}-${hash16('medv workspace instance v1', rootIdentity(c), user, workspace)}`;
}

/** `<workspace>.<16 hex>`: the image folder of (user, workspace, image, image id). */
export function imageFolderName(user: string, workspace: string, id: ImageIdentity): string {
  checkWorkspaceName(workspace);
  checkImageId(id.imageId);
  return `${readable(workspace)}.${hash16('medv workspace image folder v1', user, workspace, id.image, id.imageId)}`;
}

/** The image store of a workspace: its own folder, counting only versions that hold its image. */
export function workspaceStore(c: ClientRoot, user: string, workspace: string, id: ImageIdentity): ImageStore {
  return new ImageStore(c, id.image, { folder: imageFolderName(user, workspace, id), identity: id });
}

/**
 * `<image>@<16 hex>`: the user's read-only bases of one image (user, image, image id), shared by
 * all their workspaces of it: each version downloaded once; a workspace's version folder holds hard
 * links to the base's disk and key, and the guest's writes go to its own undo (differencing) disk.
 * (`@` is in no workspace name, so no workspace folder has this name.)
 */
export function baseStore(c: ClientRoot, user: string, id: ImageIdentity): ImageStore {
  checkImageId(id.imageId);
  return new ImageStore(c, id.image, { folder: `${id.image}@${hash16('medv image base v1', user, id.image, id.imageId)}`, identity: id });
}

/**
 * The folder an earlier medv kept a workspace's disks in (`images/<workspace>/`, named after the
 * workspace only), when one exists: its disks are used as download seeds (every block is checked
 * against the image's ids), never started (they record no image or user).
 */
export function legacyStore(c: ClientRoot, workspace: string): ImageStore | undefined {
  try {
    const s = new ImageStore(c, workspace);
    return s.versions().length ? s : undefined;
  } catch {
    return undefined;
  }
}

/** data/Users/<user>/Workspaces/<workspace>: what this client keeps for one workspace of a user. */
export function workspaceDataDir(c: ClientRoot, user: string, workspace: string): string {
  checkWorkspaceName(workspace);
  const ws = join(userDir(c, user), 'Workspaces');
  return join(ws, workspace);
}

/**
 * Every image folder of (user, workspace) on this client, whatever image it holds: a folder named
 * `<workspace>.<hash>` counts only when the identity one of its versions records (Image.json)
 * gives back exactly that name for this user and workspace. What a wipe deletes (./grant.ts), found
 * without the cached grant (a lock may have removed it before).
 */
export function workspaceStores(c: ClientRoot, user: string, workspace: string): ImageStore[] {
  checkWorkspaceName(workspace);
  let names: string[];
  try { names = fs.readdirSync(c.images); } catch { return []; }
  const out: ImageStore[] = [];
  for (const folder of names.filter((n) => n.startsWith(`${readable(workspace)}.`)).sort()) {
    let versions: string[];
    try { versions = fs.readdirSync(join(c.images, folder)).filter((v) => /^v[1-9][0-9]{0,9}$/.test(v)); } catch { continue; }
    for (const v of versions) {
      let id: ImageIdentity | undefined;
      try {
        const probe = new ImageStore(c, 'probe', { folder });
        const rec = probe.readIdentity(Number(v.slice(1)));
        if (rec) id = { image: rec.image, imageId: rec.imageId };
      } catch { /* not a store of ours */ }
      if (id && imageFolderName(user, workspace, id) === folder) { out.push(workspaceStore(c, user, workspace, id)); break; }
    }
  }
  return out;
}
