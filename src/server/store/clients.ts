/**
 * What the store knows about clients, for the admin API and the console: the grants the server
 * made (image, policy, offline allowance), the latest report of each client, user and workspace
 * with its grant beside it, the report history, and the counts of the overview.
 */
import { randomBytes } from 'node:crypto';
import { type Kysely, type Transaction, sql } from 'kysely';
import type { Database } from './schema.js';
import { type PageOf, type PageQuery, contains } from './listing.js';
import type { ReportKey } from './store.js';

/** Reports kept per client, user and workspace in the history (older ones are dropped at insert). */
export const HISTORY_PER_KEY = 200;
const DAY = 86400_000;

export interface GrantRow { client: string; user: string; workspace: string; image: string; policy: string; policyVersion: number; offlineDays: number; grantedAt: number }

export interface ClientRow {
  client: string; user: string; workspace: string; version: number | null; state: string; lastError: string | null;
  at: string; received: string;
  /** From the last grant to this client (absent when reports came without one). */
  image: string | null; policy: string | null; policyVersion: number | null;
  /** When its offline allowance ends (last grant + offlineDays), or null. */
  offlineUntil: string | null;
}
export interface HistoryRow { client: string; user: string; workspace: string; version: number | null; state: string; lastError: string | null; at: string; received: string }

export interface ClientFilter { q?: string; client?: string; user?: string; workspace?: string; state?: string; image?: string; version?: number }
/** One page of clients: the filter, at most `limit` rows after the row keyed `after` (in client, user, workspace order). */
export interface ClientQuery extends ClientFilter { limit: number; after?: ReportKey }
export interface ClientsPage { clients: ClientRow[]; total: number; next: ReportKey | null }
export interface HistoryFilter { client?: string; user?: string; workspace?: string }

const iso = (ms: number) => new Date(Number(ms)).toISOString();

export interface ReportForHistory { client: string; user: string; workspace: string; version: number | null; state: string; lastError: string | null; reportedAt: number }

export class ClientQueries {
  constructor(private readonly db: Kysely<Database>) {}

  async recordGrant(g: GrantRow): Promise<void> {
    const row = {
      client: g.client, user_name: g.user, workspace: g.workspace, image: g.image, policy_name: g.policy,
      policy_version: g.policyVersion, offline_days: g.offlineDays, granted_at: g.grantedAt,
    };
    await this.db.insertInto('client_grants').values(row)
      .onConflict((oc) => oc.columns(['client', 'user_name', 'workspace']).doUpdateSet({
        image: row.image, policy_name: row.policy_name, policy_version: row.policy_version, offline_days: row.offline_days, granted_at: row.granted_at,
      }))
      .execute();
  }

  /** Append reports to the history inside the caller's transaction, keeping HISTORY_PER_KEY per key. */
  async appendHistory(trx: Transaction<Database>, rows: ReportForHistory[], now: number): Promise<void> {
    if (!rows.length) return;
    await trx.insertInto('client_report_history').values(rows.map((r) => ({
      id: randomBytes(16).toString('hex'), client: r.client, user_name: r.user, workspace: r.workspace, version: r.version,
      state: r.state, last_error: r.lastError, reported_at: r.reportedAt, received_at: now,
    }))).execute();
    const keys = new Map(rows.map((r) => [`${r.client}\0${r.user}\0${r.workspace}`, r]));
    for (const r of keys.values()) {
      const old = await trx.selectFrom('client_report_history').select('id')
        .where('client', '=', r.client).where('user_name', '=', r.user).where('workspace', '=', r.workspace)
        .orderBy('reported_at', 'desc').orderBy('id').offset(HISTORY_PER_KEY).limit(1000).execute();
      if (old.length) await trx.deleteFrom('client_report_history').where('id', 'in', old.map((o) => o.id)).execute();
    }
  }

  private reportsQuery(f: ClientFilter) {
    let q = this.db.selectFrom('client_reports as r')
      .leftJoin('client_grants as g', (j) => j.onRef('g.client', '=', 'r.client').onRef('g.user_name', '=', 'r.user_name').onRef('g.workspace', '=', 'r.workspace'));
    if (f.q) q = q.where(contains('r.client', f.q));
    if (f.client) q = q.where('r.client', '=', f.client);
    if (f.user) q = q.where('r.user_name', '=', f.user);
    if (f.workspace) q = q.where('r.workspace', '=', f.workspace);
    if (f.state) q = q.where('r.state', '=', f.state);
    if (f.image) q = q.where('g.image', '=', f.image);
    if (f.version !== undefined) q = q.where('r.version', '=', f.version);
    return q;
  }

  /** One page of the latest reports with the grant of each, in (client, user, workspace) order, and how many match. */
  async reports(q: ClientQuery): Promise<ClientsPage> {
    const f = this.reportsQuery(q);
    let page = f;
    if (q.after) { const a = q.after; page = page.where((eb) => eb(eb.refTuple('r.client', 'r.user_name', 'r.workspace'), '>', eb.tuple(a[0], a[1], a[2]))); }
    const [count, rows] = await Promise.all([
      f.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst(),
      page.select(['r.client', 'r.user_name', 'r.workspace', 'r.version', 'r.state', 'r.last_error', 'r.reported_at', 'r.received_at', 'g.image', 'g.policy_name', 'g.policy_version', 'g.offline_days', 'g.granted_at'])
        .orderBy('r.client').orderBy('r.user_name').orderBy('r.workspace').limit(q.limit + 1).execute(),
    ]);
    const clients = rows.slice(0, q.limit).map((r) => ({
      client: r.client, user: r.user_name, workspace: r.workspace, version: r.version === null ? null : Number(r.version), state: r.state,
      lastError: r.last_error, at: iso(r.reported_at), received: iso(r.received_at),
      image: r.image ?? null, policy: r.policy_name ?? null, policyVersion: r.policy_version === null ? null : Number(r.policy_version),
      offlineUntil: r.granted_at === null || r.offline_days === null ? null : iso(Number(r.granted_at) + Number(r.offline_days) * DAY),
    }));
    const last = clients[clients.length - 1];
    return { clients, total: Number(count?.n ?? 0), next: rows.length > q.limit && last ? [last.client, last.user, last.workspace] : null };
  }

  /** Newest first. */
  async history(f: HistoryFilter, p: PageQuery): Promise<PageOf<HistoryRow>> {
    let q = this.db.selectFrom('client_report_history');
    if (f.client) q = q.where('client', '=', f.client);
    if (f.user) q = q.where('user_name', '=', f.user);
    if (f.workspace) q = q.where('workspace', '=', f.workspace);
    const [count, rows] = await Promise.all([
      q.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst(),
      q.selectAll().orderBy('reported_at', 'desc').orderBy('id').limit(p.limit).offset(p.offset).execute(),
    ]);
    return {
      rows: rows.map((r) => ({
        client: r.client, user: r.user_name, workspace: r.workspace, version: r.version === null ? null : Number(r.version), state: r.state,
        lastError: r.last_error, at: iso(r.reported_at), received: iso(r.received_at),
      })),
      total: Number(count?.n ?? 0), ...p,
    };
  }

  /** Distinct clients whose reports arrived at or after `since`. */
  async seenSince(since: number): Promise<number> {
    const r = await this.db.selectFrom('client_reports').select((eb) => eb.fn.count<number>('client').distinct().as('n')).where('received_at', '>=', since).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  /** Grants whose offline allowance ends in [from, to). */
  async offlineEnding(from: number, to: number): Promise<number> {
    const end = sql<number>`${sql.ref('granted_at')} + ${sql.ref('offline_days')} * ${sql.lit(DAY)}`;
    const r = await this.db.selectFrom('client_grants').select((eb) => eb.fn.countAll<number>().as('n'))
      .where('offline_days', '>', 0).where(end, '>=', from).where(end, '<', to)
      .executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  /** How many (client, user, workspace) report each version of each image they were granted. */
  async versionsInUse(image?: string): Promise<{ image: string; version: number | null; clients: number }[]> {
    let q = this.db.selectFrom('client_reports as r')
      .innerJoin('client_grants as g', (j) => j.onRef('g.client', '=', 'r.client').onRef('g.user_name', '=', 'r.user_name').onRef('g.workspace', '=', 'r.workspace'));
    if (image) q = q.where('g.image', '=', image);
    const rows = await q.select((eb) => ['g.image', 'r.version', eb.fn.countAll<number>().as('n')]).groupBy(['g.image', 'r.version']).execute();
    return rows.map((r) => ({ image: r.image, version: r.version === null ? null : Number(r.version), clients: Number(r.n) }));
  }
}
