/** The administrator's standing orders (lock, wipe, revoke) and the wipes clients confirmed (controls.ts decides). */
import type { Kysely } from 'kysely';
import type { Database } from './schema.js';

export type ControlScope = 'client' | 'user';
export type ControlAction = 'lock' | 'wipe' | 'revoke';

export interface ControlRow { scope: ControlScope; subject: string; workspace: string | null; action: ControlAction; reason: string; by: string; at: string }
export interface WipeRow { client: string; user: string; workspace: string; at: string }

const iso = (ms: number) => new Date(Number(ms)).toISOString();
const row = (r: Database['client_controls']): ControlRow => ({ scope: r.scope, subject: r.subject, workspace: r.workspace || null, action: r.action, reason: r.reason, by: r.actor, at: iso(r.at) });

export class ControlQueries {
  constructor(private readonly db: Kysely<Database>) {}

  /** Set (or replace: a new reason) an order. */
  async set(scope: ControlScope, subject: string, workspace: string, action: ControlAction, reason: string, actor: string, now = Date.now()): Promise<void> {
    await this.db.insertInto('client_controls').values({ scope, subject, workspace, action, reason, actor, at: now })
      .onConflict((oc) => oc.columns(['scope', 'subject', 'workspace', 'action']).doUpdateSet({ reason, actor, at: now }))
      .execute();
  }

  /** Remove the orders of a subject (one workspace's, or all of them when `workspace` is undefined; one action's, or all). */
  async clear(scope: ControlScope, subject: string, workspace?: string, action?: ControlAction): Promise<number> {
    let q = this.db.deleteFrom('client_controls').where('scope', '=', scope).where('subject', '=', subject);
    if (workspace !== undefined) q = q.where('workspace', '=', workspace);
    if (action !== undefined) q = q.where('action', '=', action);
    return Number((await q.executeTakeFirst()).numDeletedRows);
  }

  /** Orders of a subject, or every order (bounded). */
  async list(scope?: ControlScope, subject?: string, limit = 1000): Promise<ControlRow[]> {
    let q = this.db.selectFrom('client_controls').selectAll();
    if (scope) q = q.where('scope', '=', scope);
    if (subject) q = q.where('subject', '=', subject);
    return (await q.orderBy('at', 'desc').limit(limit).execute()).map(row);
  }

  /** The orders that apply to `user` on `client` for `workspace`: the client's and the user's, for that workspace or for all. */
  async applying(user: string, client: string, workspace: string): Promise<ControlRow[]> {
    const rows = await this.db.selectFrom('client_controls').selectAll()
      .where((eb) => eb.or([eb.and([eb('scope', '=', 'client'), eb('subject', '=', client)]), eb.and([eb('scope', '=', 'user'), eb('subject', '=', user)])]))
      .where('workspace', 'in', ['', workspace])
      .execute();
    return rows.map(row);
  }

  async recordWipe(client: string, user: string, workspace: string, now = Date.now()): Promise<void> {
    await this.db.insertInto('client_wipes').values({ client, user_name: user, workspace, at: now })
      .onConflict((oc) => oc.columns(['client', 'user_name', 'workspace']).doUpdateSet({ at: now }))
      .execute();
  }

  async wipes(o: { client?: string; user?: string }, limit = 1000): Promise<WipeRow[]> {
    let q = this.db.selectFrom('client_wipes').selectAll();
    if (o.client) q = q.where('client', '=', o.client);
    if (o.user) q = q.where('user_name', '=', o.user);
    return (await q.orderBy('at', 'desc').limit(limit).execute()).map((r) => ({ client: r.client, user: r.user_name, workspace: r.workspace, at: iso(r.at) }));
  }

  /** Revoke every live token of `user` (a per-user revoke); the number revoked. */
  async revokeTokensOf(user: string, now = Date.now()): Promise<number> {
    const r = await this.db.updateTable('tokens').set({ revoked: 1 }).where('user_name', '=', user).where('revoked', '=', 0).where('expires', '>', now).executeTakeFirst();
    return Number(r.numUpdatedRows);
  }
}
