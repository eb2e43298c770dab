/**
 * The overview of a deployment (the console's first page, GET /api/admin/overview): counts of
 * users, groups, workspaces and images; clients seen in the last 24 h; client workspaces on a
 * version older than the newest published; grants whose offline allowance ends within 48 h; the
 * latest audit entries.
 */
import type { Accounts } from './accounts.js';
import type { Audit } from './audit.js';
import type { ImageCatalog } from './catalog.js';
import type { AuditRecord, Store } from './store/index.js';

export interface Overview {
  at: string;
  users: number;
  groups: number;
  policies: number;
  /** Distinct workspace names in the newest version of every policy. */
  workspaces: number;
  images: number;
  imagesWithKeys: number;
  clientsSeen24h: number;
  /** Client workspaces whose reported version is below the newest published version of their image. */
  clientsOnOldVersion: number;
  /** Grants whose offline allowance (last grant + offlineDays) ends within the next 48 h. */
  offlineEnding48h: number;
  latestAudit: AuditRecord[];
}

const HOUR = 3600_000;

export async function overview(accounts: Accounts, audit: Audit, catalog: ImageCatalog, now = Date.now()): Promise<Overview> {
  const store: Store = accounts.store;
  const [users, groups, imagesWithKeys, policies, images, seen, ending, inUse, recent] = await Promise.all([
    store.lists.count('users'),
    store.lists.count('groups'),
    store.lists.count('image_keys'),
    store.lists.newestPolicies(),
    catalog.list(),
    store.clients.seenSince(now - 24 * HOUR),
    store.clients.offlineEnding(now, now + 48 * HOUR),
    store.clients.versionsInUse(),
    audit.list({ limit: 10 }),
  ]);
  const workspaces = new Set<string>();
  for (const p of policies) for (const w of (p.document as { workspaces?: { name?: unknown }[] }).workspaces ?? []) if (typeof w.name === 'string') workspaces.add(w.name);
  const latest = new Map(images.map((i) => [i.name, i.latest]));
  const old = inUse.filter((r) => r.version !== null && (latest.get(r.image) ?? 0) > r.version).reduce((n, r) => n + r.clients, 0);
  return {
    at: new Date(now).toISOString(),
    users, groups, policies: policies.length, workspaces: workspaces.size, images: images.length, imagesWithKeys,
    clientsSeen24h: seen, clientsOnOldVersion: old, offlineEnding48h: ending, latestAudit: recent.entries,
  };
}
