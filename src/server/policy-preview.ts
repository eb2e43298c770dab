/**
 * Before a policy is published (or unpublished): who the change reaches. For every user the
 * current or the new version entitles, the workspaces they get today and would get after (the
 * grant's own rule, entitlement.ts, over the newest version of every policy with this one
 * replaced), compared: workspaces gained, lost, or coming from another policy, image or settings;
 * users who gain their first or lose their last workspace from this policy; the clients holding a
 * grant for a workspace that is lost or changes (they learn it at their next contact).
 */
import { type PolicyDoc, type PolicyEntry, type Picked, entitles, workspacesOf } from './entitlement.js';
import type { Store } from './store/index.js';

export interface ReachPair { user: string; workspace: string; image: string | null; policy: string }
export interface ReachChange { user: string; workspace: string; before: { policy: string; image: string | null }; after: { policy: string; image: string | null } }
export interface ClientRef { client: string; user: string; workspace: string }

export interface PolicyPreview {
  name: string;
  /** The version in force now (null: none, or unpublished) and the one a publish would make. */
  current: number | null;
  next: number;
  users: { gained: string[]; lost: string[]; kept: number };
  workspaces: { gained: ReachPair[]; lost: ReachPair[]; changed: ReachChange[] };
  clients: { losing: ClientRef[]; changing: ClientRef[] };
}

/** Lists in a preview are cut at this many entries (the counts stay exact). */
export const PREVIEW_LIST_MAX = 200;

const imageOf = (p: Picked) => (typeof p.settings.image === 'string' ? p.settings.image : null);

/**
 * The reach of replacing policy `name`'s newest version by `draft` (a checked document), or of
 * unpublishing it (`draft` null).
 */
export async function previewPolicy(store: Store, name: string, draft: PolicyDoc | null): Promise<PolicyPreview> {
  const newest = await store.policies.newest(name);
  const inForce = newest && !newest.unpublished ? (newest.document as PolicyDoc) : null;
  const others: PolicyEntry[] = (await store.lists.newestPolicies()).filter((p) => p.name !== name);
  const nextVersion = (newest?.version ?? 0) + 1;
  const candidates = await store.policies.entitledUsers(
    [...new Set([...(inForce?.users ?? []), ...(draft?.users ?? [])])],
    [...new Set([...(inForce?.groups ?? []), ...(draft?.groups ?? [])])],
  );
  const groups = await store.policies.groupsOfUsers(candidates);
  const out: PolicyPreview = {
    name, current: inForce ? newest!.version : null, next: nextVersion,
    users: { gained: [], lost: [], kept: 0 }, workspaces: { gained: [], lost: [], changed: [] }, clients: { losing: [], changing: [] },
  };
  const lostOrChanged = new Set<string>();
  const changedKeys = new Set<string>();
  for (const user of candidates) {
    const g = groups.get(user) ?? [];
    const mine = others.filter((p) => entitles(p.document as PolicyDoc, user, g));
    const was = inForce && entitles(inForce, user, g);
    const will = draft && entitles(draft, user, g);
    const before = workspacesOf(was ? [...mine, { name, version: newest!.version, document: inForce }] : mine);
    const after = workspacesOf(will ? [...mine, { name, version: nextVersion, document: draft }] : mine);
    if (was && !will) out.users.lost.push(user);
    else if (!was && will) out.users.gained.push(user);
    else if (was && will) out.users.kept++;
    for (const [ws, b] of before) {
      const a = after.get(ws);
      if (!a) { out.workspaces.lost.push({ user, workspace: ws, image: imageOf(b), policy: b.policy.name }); lostOrChanged.add(`${user}\0${ws}`); continue; }
      const changed = a.policy.name !== b.policy.name || JSON.stringify(a.settings) !== JSON.stringify(b.settings);
      if (changed) {
        out.workspaces.changed.push({ user, workspace: ws, before: { policy: b.policy.name, image: imageOf(b) }, after: { policy: a.policy.name, image: imageOf(a) } });
        lostOrChanged.add(`${user}\0${ws}`);
        changedKeys.add(`${user}\0${ws}`);
      }
    }
    for (const [ws, a] of after) if (!before.has(ws)) out.workspaces.gained.push({ user, workspace: ws, image: imageOf(a), policy: a.policy.name });
  }
  const affectedUsers = [...new Set([...lostOrChanged].map((k) => k.split('\0')[0]))];
  for (const g of await store.policies.grantsOf(affectedUsers)) {
    const k = `${g.user}\0${g.workspace}`;
    if (!lostOrChanged.has(k)) continue;
    (changedKeys.has(k) ? out.clients.changing : out.clients.losing).push({ client: g.client, user: g.user, workspace: g.workspace });
  }
  return out;
}

/** Total counts of a preview (its lists may be cut for display). */
export function previewCounts(p: PolicyPreview): Record<string, number> {
  return {
    usersGained: p.users.gained.length, usersLost: p.users.lost.length, workspacesGained: p.workspaces.gained.length,
    workspacesLost: p.workspaces.lost.length, workspacesChanged: p.workspaces.changed.length, clientsLosing: p.clients.losing.length, clientsChanging: p.clients.changing.length,
  };
}
