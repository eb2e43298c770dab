/**
 * A workspace's grant on this client: what the server released for it (the policy entry, the
 * image keys sealed to this client) and what the client keeps of that (the keys rewrapped with the
 * host key in the workspace's key folder, the entry in the sealed offline cache), and the end of
 * it: a server that refuses the workspace (403: no longer entitled, or expired) ends the cached
 * grant at once; the key folder and the offline entry are removed before the refusal is reported,
 * so the workspace cannot start offline afterwards.
 */
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { type WorkspaceGrant } from '../client/api.js';
import { openReleasedKeys, type ClientKeyPair } from '../api/keyrelease.js';
import { removeKeyFolder, writeKeyFolder } from '../client/keyfolder.js';
import { ensureSafeDir, userDir, type ClientRoot } from '../repo/index.js';
import type { ClientConfig, ClientContext } from './client.js';
import { workspaceDataDir } from './identity.js';
import { removeOfflineEntry, saveOfflineEntry, type OfflineEntry } from './offline.js';
import { checkSettings } from './settings.js';

/** The workspace's key folder (src/pack's layout): `data/Users/<user>/Workspaces/<workspace>/keys`. */
export function workspaceKeyDir(c: ClientRoot, user: string, workspace: string): string {
  return join(workspaceDataDir(c, user, workspace), 'keys');
}

/** Keep what the grant released: the keys (host-key wrapped) and the offline entry. */
export async function keepGrant(ctx: ClientContext, cfg: ClientConfig, g: WorkspaceGrant, pair: ClientKeyPair, at: Date, onWarning?: (m: string) => void): Promise<OfflineEntry> {
  const settings = checkSettings(g.settings, g.workspace, g.policy.name, onWarning);
  if (settings.name !== g.workspace) throw new MedvError('EBADREPLY', `the server's grant of workspace ${g.workspace} carries the policy entry of ${settings.name}`);
  if (settings.image !== g.image) throw new MedvError('EBADREPLY', `the server's grant names image ${g.image}, its policy entry ${settings.image}`);
  const keys = openReleasedKeys(g.sealed, pair);
  let imageId: string;
  try {
    if (keys.image !== g.image) throw new MedvError('EBADREPLY', `the released keys are for image ${keys.image}, not ${g.image}`);
    imageId = keys.content.keyId.toString('hex');
    const dir = workspaceDataDir(ctx.root, cfg.user, g.workspace);
    ensureSafeDir(join(dir, '..'));
    ensureSafeDir(dir);
    await writeKeyFolder(workspaceKeyDir(ctx.root, cfg.user, g.workspace), keys, ctx.kek);
  } finally {
    keys.dispose();
  }
  // an earlier medv kept every workspace's keys in one folder per user: not used any more
  removeKeyFolder(join(userDir(ctx.root, cfg.user), 'keys'));
  const served = g.serverTime && !Number.isNaN(g.serverTime.getTime()) ? g.serverTime : undefined;
  const entry: OfflineEntry = {
    server: cfg.server, user: cfg.user, workspace: g.workspace, image: g.image, imageId, policy: g.policy, settings,
    latestVersion: g.latestVersion, lastOnline: (served ?? at).toISOString(),
  };
  await saveOfflineEntry(ctx.root, entry);
  return entry;
}

/** Is this answer of the grant request the server refusing the workspace itself (not the login, not an outage)? */
export function isRefusal(e: unknown): boolean {
  return e instanceof MedvError && (e.code === 'EFORBIDDEN' || e.code === 'EDENIED' || e.code === 'EEXPIRED') && e.data.status === 403;
}

/** The administrator's orders at a grant (src/server/controls.ts): locked (423) or wipe (410). */
export function isLocked(e: unknown): e is MedvError {
  return e instanceof MedvError && e.code === 'ELOCKED';
}

export function isWipe(e: unknown): e is MedvError {
  return e instanceof MedvError && e.code === 'EWIPED';
}

/** End the cached grant of a workspace: its offline entry and its key folder. Returns what was removed. */
export async function forgetGrant(ctx: ClientContext, cfg: ClientConfig, workspace: string): Promise<string[]> {
  const removed: string[] = [];
  if (await removeOfflineEntry(ctx.root, { server: cfg.server, user: cfg.user, workspace })) removed.push('offline entry');
  removed.push(...removeKeyFolder(workspaceKeyDir(ctx.root, cfg.user, workspace)));
  return removed;
}
