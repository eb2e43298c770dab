/**
 * The one query layer of the server store, over SQLite or PostgreSQL (open.ts). It stores what it
 * is given: password hashes (never passwords), token hashes (never tokens), validated policy
 * documents. Callers check names and lengths first (accounts.ts); the database CHECKs them again.
 */
import { randomBytes } from 'node:crypto';
import type { Expression, ExpressionBuilder, Kysely, SqlBool } from 'kysely';
import { MedvError } from '../../core/errors.js';
import { type OpenedDatabase, openDatabase } from './open.js';
import { type Database, LIMITS, type Role } from './schema.js';
import { SessionQueries } from './sessions.js';
import { ListingQueries } from './listing.js';
import { ClientQueries } from './clients.js';
import { PolicyQueries } from './policies.js';
import { ControlQueries } from './controls.js';

export interface UserRecord { name: string; passwordHash: string; disabled: boolean; role: Role }
export interface UserSummary { user: string; groups: string[]; created: string; disabled: boolean; role: Role }
export interface TokenRecord { user: string; expires: number; revoked: boolean; disabled: boolean; role: Role }
export interface DeletedUser { user: string; groups: string[]; tokens: number; clients: number; reports: number }
export interface PolicyVersion { name: string; version: number; published: string; publisher: string }
export interface PolicyDocument { name: string; version: number; published: string; document: unknown }
export interface AuditEntry { actor: string; action: string; target: string; address?: string; detail?: Record<string, unknown> }
export interface AuditRecord { id: string; time: string; last: string; count: number; actor: string; action: string; target: string; address: string; detail: unknown }
/**
 * A page of the audit log: `action` is an action, or a family (`login.*`: login, login.fail…), `actor` the
 * actor, `user` the actor or the target; `since` matches an entry or its last repeat, `until` its first occurrence.
 */
export interface AuditQuery { limit: number; before?: { time: number; id: string }; since?: number; until?: number; action?: string; actor?: string; user?: string }
export interface FailureState { key: string; count: number; lockedUntil: number }
export interface ReportRow { client: string; user: string; workspace: string; version: number | null; state: string; lastError: string | null; reportedAt: number }
export interface ReportRecord { client: string; user: string; workspace: string; version: number | null; state: string; lastError: string | null; at: string; received: string }
export type ReportKey = [client: string, user: string, workspace: string];

/** A unique-key violation, from either database (a concurrent insert of the same key). */
export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}

const iso = (ms: number) => new Date(Number(ms)).toISOString();
const clip = (s: string, n: number) => (s.length > n ? s.slice(0, n) : s);

function auditColumns(e: AuditEntry): { actor: string; action: string; target: string; address: string; detail: string } {
  return {
    actor: clip(e.actor, LIMITS.name),
    action: clip(e.action, LIMITS.action),
    target: clip(e.target, LIMITS.target),
    address: clip(e.address ?? '', LIMITS.address),
    detail: clip(JSON.stringify(e.detail ?? {}), LIMITS.detail),
  };
}

export class Store {
  readonly kind: OpenedDatabase['kind'];
  readonly where: string;
  readonly db: Kysely<Database>;
  /**
   * The console's queries, each in its own file beside this one: sessions (sessions.ts), paginated
   * lists (listing.ts), grants, reports and history (clients.ts), unpublishing and preview reads
   * (policies.ts), lock/wipe/revoke orders (controls.ts).
   */
  readonly sessions: SessionQueries;
  readonly lists: ListingQueries;
  readonly clients: ClientQueries;
  readonly policies: PolicyQueries;
  readonly controls: ControlQueries;

  private constructor(o: OpenedDatabase) {
    this.kind = o.kind;
    this.where = o.where;
    this.db = o.db;
    this.sessions = new SessionQueries(o.db);
    this.lists = new ListingQueries(o.db);
    this.clients = new ClientQueries(o.db);
    this.policies = new PolicyQueries(o.db);
    this.controls = new ControlQueries(o.db);
  }

  static async open(root: string, url?: string): Promise<Store> {
    return new Store(await openDatabase(root, url));
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  // --- users and groups

  /** A new user with its groups (created when missing). EEXIST when the name is taken. */
  async addUser(name: string, passwordHash: string, groups: string[], role: Role = 'user', now = Date.now()): Promise<void> {
    try {
      await this.db.transaction().execute(async (trx) => {
        await trx.insertInto('users').values({ name, password_hash: passwordHash, created: now, disabled: 0, role }).execute();
        for (const g of new Set(groups)) {
          await trx.insertInto('groups').values({ name: g, created: now }).onConflict((oc) => oc.column('name').doNothing()).execute();
          await trx.insertInto('membership').values({ user_name: name, group_name: g }).execute();
        }
      });
    } catch (e) {
      if (isUniqueViolation(e)) throw new MedvError('EEXIST', `user ${name} already exists`, { user: name });
      throw e;
    }
  }

  async getUser(name: string): Promise<UserRecord | undefined> {
    const r = await this.db.selectFrom('users').select(['name', 'password_hash', 'disabled', 'role']).where('name', '=', name).executeTakeFirst();
    return r && { name: r.name, passwordHash: r.password_hash, disabled: r.disabled !== 0, role: r.role };
  }

  /** Every user, or the one named. */
  async listUsers(only?: string): Promise<UserSummary[]> {
    let uq = this.db.selectFrom('users').select(['name', 'created', 'disabled', 'role']).orderBy('name');
    let mq = this.db.selectFrom('membership').select(['user_name', 'group_name']).orderBy('group_name');
    if (only !== undefined) { uq = uq.where('name', '=', only); mq = mq.where('user_name', '=', only); }
    const users = await uq.execute();
    const members = await mq.execute();
    const groups = new Map<string, string[]>();
    for (const m of members) groups.set(m.user_name, [...(groups.get(m.user_name) ?? []), m.group_name]);
    return users.map((u) => ({ user: u.name, groups: groups.get(u.name) ?? [], created: iso(u.created), disabled: u.disabled !== 0, role: u.role }));
  }

  /** True when the user exists (and now has that state). */
  async setDisabled(name: string, disabled: boolean): Promise<boolean> {
    const r = await this.db.updateTable('users').set({ disabled: disabled ? 1 : 0 }).where('name', '=', name).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** A new password hash; every live token of the user is revoked in the same transaction. Undefined: no such user. */
  async setPassword(name: string, passwordHash: string): Promise<{ tokens: number } | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const r = await trx.updateTable('users').set({ password_hash: passwordHash }).where('name', '=', name).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) return undefined;
      const t = await trx.updateTable('tokens').set({ revoked: 1 }).where('user_name', '=', name).where('revoked', '=', 0).executeTakeFirst();
      return { tokens: Number(t.numUpdatedRows) };
    });
  }

  /** Revoke every live token of `name`; the number revoked, undefined when there is no such user. */
  async revokeUserTokens(name: string, now = Date.now()): Promise<number | undefined> {
    return this.db.transaction().execute(async (trx) => {
      if (!await trx.selectFrom('users').select('name').where('name', '=', name).executeTakeFirst()) return undefined;
      const t = await trx.updateTable('tokens').set({ revoked: 1 }).where('user_name', '=', name).where('revoked', '=', 0).where('expires', '>', now).executeTakeFirst();
      return Number(t.numUpdatedRows);
    });
  }

  /**
   * Delete a user with everything that is theirs: group memberships, tokens, registered clients
   * and the reports those clients made as this user. Groups stay (other members, policies name
   * them). Undefined when there is no such user.
   */
  async deleteUser(name: string): Promise<DeletedUser | undefined> {
    return this.db.transaction().execute(async (trx) => {
      if (!await trx.selectFrom('users').select('name').where('name', '=', name).executeTakeFirst()) return undefined;
      const groups = (await trx.selectFrom('membership').select('group_name').where('user_name', '=', name).orderBy('group_name').execute()).map((g) => g.group_name);
      const tokens = await trx.deleteFrom('tokens').where('user_name', '=', name).executeTakeFirst();
      const clients = await trx.deleteFrom('clients').where('user_name', '=', name).executeTakeFirst();
      const reports = await trx.deleteFrom('client_reports').where('user_name', '=', name).executeTakeFirst();
      // what the console keeps of them (console_sessions go by the foreign key's cascade)
      for (const t of ['client_grants', 'client_report_history', 'client_wipes'] as const) await trx.deleteFrom(t).where('user_name', '=', name).execute();
      await trx.deleteFrom('client_controls').where('scope', '=', 'user').where('subject', '=', name).execute();
      await trx.deleteFrom('membership').where('user_name', '=', name).execute();
      await trx.deleteFrom('users').where('name', '=', name).execute();
      return { user: name, groups, tokens: Number(tokens.numDeletedRows), clients: Number(clients.numDeletedRows), reports: Number(reports.numDeletedRows) };
    });
  }

  /** Set the role of `name`; false when there is no such user. */
  async setRole(name: string, role: Role): Promise<boolean> {
    const r = await this.db.updateTable('users').set({ role }).where('name', '=', name).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Replace the groups of `name` (groups created when missing; a group left empty stays). */
  async setGroups(name: string, groups: string[], now = Date.now()): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom('membership').where('user_name', '=', name).execute();
      for (const g of new Set(groups)) {
        await trx.insertInto('groups').values({ name: g, created: now }).onConflict((oc) => oc.column('name').doNothing()).execute();
        await trx.insertInto('membership').values({ user_name: name, group_name: g }).execute();
      }
    });
  }

  async groupsOf(user: string): Promise<string[]> {
    const rows = await this.db.selectFrom('membership').select('group_name').where('user_name', '=', user).orderBy('group_name').execute();
    return rows.map((r) => r.group_name);
  }

  // --- tokens (hashes only)

  async addToken(hash: string, user: string, created: number, expires: number): Promise<void> {
    await this.db.insertInto('tokens').values({ hash, user_name: user, created, expires, revoked: 0 }).execute();
  }

  async findToken(hash: string): Promise<TokenRecord | undefined> {
    const r = await this.db.selectFrom('tokens')
      .innerJoin('users', 'users.name', 'tokens.user_name')
      .select(['tokens.user_name', 'tokens.expires', 'tokens.revoked', 'users.disabled', 'users.role'])
      .where('tokens.hash', '=', hash)
      .executeTakeFirst();
    return r && { user: r.user_name, expires: Number(r.expires), revoked: r.revoked !== 0, disabled: r.disabled !== 0, role: r.role };
  }

  /** True when a live token was revoked by this call. */
  async revokeToken(hash: string): Promise<boolean> {
    const r = await this.db.updateTable('tokens').set({ revoked: 1 }).where('hash', '=', hash).where('revoked', '=', 0).executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /** Forget tokens that expired more than `graceMs` ago (they are refused either way). */
  async dropExpiredTokens(now = Date.now(), graceMs = 24 * 3600_000): Promise<number> {
    const r = await this.db.deleteFrom('tokens').where('expires', '<', now - graceMs).executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  // --- policies (every published version is kept)

  /**
   * Store `document` (already validated) as the next version of `name`, with the users and groups
   * it entitles. Two instances publishing the same name at once: one insert loses on the primary
   * key and is retried with the next version.
   */
  async publishPolicy(name: string, document: string, entitled: { users: string[]; groups: string[] }, publisher: string, now = Date.now()): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction().execute(async (trx) => {
          const top = await trx.selectFrom('policies').select((eb) => eb.fn.max('version').as('v')).where('name', '=', name).executeTakeFirst();
          const version = Number(top?.v ?? 0) + 1;
          await trx.insertInto('policies').values({ name, version, document, published: now, publisher }).execute();
          const rows = [
            ...[...new Set(entitled.users)].map((subject) => ({ policy_name: name, version, kind: 'user' as const, subject })),
            ...[...new Set(entitled.groups)].map((subject) => ({ policy_name: name, version, kind: 'group' as const, subject })),
          ];
          if (rows.length) await trx.insertInto('entitlements').values(rows).execute();
          return version;
        });
      } catch (e) {
        if (!isUniqueViolation(e) || attempt >= 8) throw e;
      }
    }
  }

  async listPolicies(): Promise<PolicyVersion[]> {
    const rows = await this.db.selectFrom('policies').select(['name', 'version', 'published', 'publisher']).orderBy('name').orderBy('version').execute();
    return rows.map((r) => ({ name: r.name, version: r.version, published: iso(r.published), publisher: r.publisher }));
  }

  /** The newest version of every policy whose newest version entitles `user`, directly or through a group. */
  async policiesFor(user: string): Promise<PolicyDocument[]> {
    const rows = await this.db.selectFrom('policies as p')
      .select(['p.name', 'p.version', 'p.published', 'p.document'])
      .where('p.version', '=', (eb) => eb.selectFrom('policies as q').select((q) => q.fn.max('q.version').as('v')).whereRef('q.name', '=', 'p.name'))
      .where((eb) => eb.exists(
        eb.selectFrom('entitlements as e').select('e.subject')
          .whereRef('e.policy_name', '=', 'p.name').whereRef('e.version', '=', 'p.version')
          .where((w) => w.or([
            w.and([w('e.kind', '=', 'user'), w('e.subject', '=', user)]),
            w.and([w('e.kind', '=', 'group'), w('e.subject', 'in', w.selectFrom('membership').select('group_name').where('user_name', '=', user))]),
          ])),
      ))
      .orderBy('p.name')
      .execute();
    return rows.map((r) => ({ name: r.name, version: r.version, published: iso(r.published), document: JSON.parse(r.document) }));
  }

  // --- image keys (wrapped under the server key: the store never sees them in clear)

  /** Store (or replace) the wrapped keys of `image`; true when an earlier entry was replaced. */
  async putImageKeys(image: string, wrapped: Buffer, now = Date.now()): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const had = await trx.selectFrom('image_keys').select('image').where('image', '=', image).executeTakeFirst();
      await trx.insertInto('image_keys').values({ image, wrapped, updated_at: now })
        .onConflict((oc) => oc.column('image').doUpdateSet({ wrapped, updated_at: now }))
        .execute();
      return had !== undefined;
    });
  }

  async getImageKeys(image: string): Promise<Buffer | undefined> {
    const r = await this.db.selectFrom('image_keys').select('wrapped').where('image', '=', image).executeTakeFirst();
    return r ? Buffer.from(r.wrapped) : undefined;
  }

  // --- clients (registered by grants)

  /**
   * Record that `user` was granted keys on `client` (with that client key). When the user then has
   * more than `maxPerUser` clients, the least recently seen others are dropped with their reports;
   * their ids are returned.
   */
  async registerClient(client: string, user: string, clientKey: string, maxPerUser: number, now = Date.now()): Promise<string[]> {
    return this.db.transaction().execute(async (trx) => {
      await trx.insertInto('clients').values({ client, user_name: user, client_key: clientKey, first_seen: now, last_seen: now })
        .onConflict((oc) => oc.columns(['client', 'user_name']).doUpdateSet({ client_key: clientKey, last_seen: now }))
        .execute();
      const extra = await trx.selectFrom('clients').select('client').where('user_name', '=', user).where('client', '!=', client)
        .orderBy('last_seen', 'desc').orderBy('client').offset(Math.max(0, maxPerUser - 1)).limit(1_000_000).execute();
      const gone = extra.map((r) => r.client);
      if (gone.length) {
        await trx.deleteFrom('clients').where('user_name', '=', user).where('client', 'in', gone).execute();
        await trx.deleteFrom('client_reports').where('user_name', '=', user).where('client', 'in', gone).execute();
      }
      return gone;
    });
  }

  async isClientOf(client: string, user: string): Promise<boolean> {
    return (await this.db.selectFrom('clients').select('client').where('client', '=', client).where('user_name', '=', user).executeTakeFirst()) !== undefined;
  }

  // --- client status reports

  /**
   * Upsert reports: one row per (client, user, workspace), and a report replaces the row only
   * when it is at least as recent (client time) as the one stored, so a late-arriving older report
   * never overwrites a newer one, whichever instance receives them.
   */
  async putReports(rows: ReportRow[], now = Date.now(), maxPerUser = Infinity): Promise<number> {
    if (!rows.length) return 0;
    await this.db.transaction().execute(async (trx) => {
      for (const r of rows) {
        await trx.insertInto('client_reports').values({
          client: r.client, user_name: r.user, workspace: r.workspace, version: r.version, state: r.state,
          last_error: r.lastError, reported_at: r.reportedAt, received_at: now,
        }).onConflict((oc) => oc.columns(['client', 'user_name', 'workspace'])
          .doUpdateSet((eb) => ({
            version: eb.ref('excluded.version'),
            state: eb.ref('excluded.state'),
            last_error: eb.ref('excluded.last_error'),
            reported_at: eb.ref('excluded.reported_at'),
            received_at: eb.ref('excluded.received_at'),
          }))
          .where('client_reports.reported_at', '<=', r.reportedAt))
          .execute();
      }
      await this.clients.appendHistory(trx, rows, now);
      // a user's rows beyond the cap: the least recently received go
      if (Number.isFinite(maxPerUser)) {
        for (const user of new Set(rows.map((r) => r.user))) {
          const extra = await trx.selectFrom('client_reports').select(['client', 'workspace']).where('user_name', '=', user)
            .orderBy('received_at', 'desc').orderBy('client').orderBy('workspace').offset(maxPerUser).limit(1_000_000).execute();
          for (const e of extra) await trx.deleteFrom('client_reports').where('user_name', '=', user).where('client', '=', e.client).where('workspace', '=', e.workspace).execute();
        }
      }
    });
    return rows.length;
  }

  // --- audit log (audit.ts decides what is aggregated and when it is pruned)

  async audit(e: AuditEntry, now = Date.now()): Promise<void> {
    await this.db.insertInto('audit').values({ id: randomBytes(16).toString('hex'), time: now, last: null, agg: null, ...auditColumns(e) }).execute();
  }

  /** One more occurrence of the aggregated entry `agg` (a new row the first time), atomically. */
  async auditRepeated(e: AuditEntry, agg: string, now = Date.now()): Promise<void> {
    await this.db.insertInto('audit').values({ id: randomBytes(16).toString('hex'), time: now, last: now, agg, ...auditColumns(e) })
      .onConflict((oc) => oc.column('agg').doUpdateSet((eb) => ({ count: eb(eb.ref('audit.count'), '+', 1), last: now })))
      .execute();
  }

  /** Newest first (by first occurrence), `limit` rows before the cursor, filtered. */
  async auditLog(q: AuditQuery): Promise<AuditRecord[]> {
    let sel = this.db.selectFrom('audit').selectAll();
    if (q.before) sel = sel.where((eb) => eb(eb.refTuple('time', 'id'), '<', eb.tuple(q.before!.time, q.before!.id)));
    if (q.since !== undefined) sel = sel.where((eb) => eb.or([eb('time', '>=', q.since!), eb('last', '>=', q.since!)]));
    if (q.until !== undefined) sel = sel.where('time', '<', q.until);
    // an action, or a family `a.*`: a itself and `a.` <= action < `a/` ('/' follows '.'), which the action index serves
    if (q.action !== undefined && q.action.endsWith('.*')) {
      const a = q.action.slice(0, -2);
      sel = sel.where((eb) => eb.or([eb('action', '=', a), eb.and([eb('action', '>=', `${a}.`), eb('action', '<', `${a}/`)])]));
    } else if (q.action !== undefined) sel = sel.where('action', '=', q.action);
    if (q.actor !== undefined) sel = sel.where('actor', '=', q.actor);
    if (q.user !== undefined) { const u = q.user; sel = sel.where((eb) => eb.or([eb('actor', '=', u), eb('target', '=', u)])); }
    const rows = await sel.orderBy('time', 'desc').orderBy('id', 'desc').limit(q.limit).execute();
    return rows.map((r) => ({
      id: r.id, time: iso(r.time), last: iso(r.last ?? r.time), count: Number(r.count), actor: r.actor, action: r.action, target: r.target, address: r.address, detail: JSON.parse(r.detail),
    }));
  }

  /**
   * Delete rows whose last occurrence is before `before`; then, beyond `maxRows`, the oldest rows
   * of the first class that has any, in this order: refusals (aggregated rows), then `routine`
   * actions (what any account may repeat at will: logins, key releases), then the rest (what
   * administrators did). So no flood, anonymous or of an ordinary account's own actions, pushes
   * what administrators did out of the log while other rows are left to go.
   */
  async pruneAudit(before: number, maxRows: number, routine: readonly string[] = []): Promise<number> {
    const old = await this.db.deleteFrom('audit').where((eb) => eb.fn.coalesce('last', 'time'), '<', before).executeTakeFirst();
    let n = Number(old.numDeletedRows);
    let excess = (await this.auditRows()) - maxRows;
    const classes: Array<(eb: ExpressionBuilder<Database, 'audit'>) => Expression<SqlBool>> = [
      (eb) => eb('agg', 'is not', null),
      ...(routine.length ? [(eb: ExpressionBuilder<Database, 'audit'>) => eb.and([eb('agg', 'is', null), eb('action', 'in', [...routine])])] : []),
      (eb) => eb('id', 'is not', null),
    ];
    for (const only of classes) {
      if (excess <= 0) break;
      // the time of the excess-th oldest row of this class (none: the class has fewer, all of it goes)
      const edge = await this.db.selectFrom('audit').select('time').where(only).orderBy('time', 'asc').offset(excess - 1).limit(1).executeTakeFirst();
      let del = this.db.deleteFrom('audit').where(only);
      if (edge) del = del.where('time', '<=', Number(edge.time));
      const r = Number((await del.executeTakeFirst()).numDeletedRows);
      n += r;
      excess -= r;
    }
    return n;
  }

  async auditRows(): Promise<number> {
    const r = await this.db.selectFrom('audit').select((eb) => eb.fn.countAll().as('n')).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  // --- failed logins (shared by every instance on the database)

  async failures(keys: string[], now = Date.now(), windowMs: number): Promise<FailureState[]> {
    if (!keys.length) return [];
    const rows = await this.db.selectFrom('login_failures').selectAll().where('key', 'in', keys).execute();
    return rows.filter((r) => Number(r.last) >= now - windowMs || Number(r.locked_until) > now).map((r) => ({ key: r.key, count: r.count, lockedUntil: Number(r.locked_until) }));
  }

  /**
   * One more failure for `key`, atomically (two instances counting at once both count). A count
   * whose last failure is older than `windowMs` starts again. Returns the new count.
   */
  async recordFailure(key: string, now: number, windowMs: number): Promise<number> {
    const k = clip(key, LIMITS.limiterKey);
    await this.db.insertInto('login_failures').values({ key: k, count: 1, first: now, last: now, locked_until: 0 })
      .onConflict((oc) => oc.column('key').doUpdateSet((eb) => ({
        count: eb.case().when('login_failures.last', '<', now - windowMs).then(1).else(eb('login_failures.count', '+', 1)).end(),
        first: eb.case().when('login_failures.last', '<', now - windowMs).then(now).else(eb.ref('login_failures.first')).end(),
        last: now,
      })))
      .execute();
    const r = await this.db.selectFrom('login_failures').select('count').where('key', '=', k).executeTakeFirst();
    return r?.count ?? 1;
  }

  async lockUntil(key: string, until: number): Promise<void> {
    await this.db.updateTable('login_failures').set({ locked_until: until }).where('key', '=', clip(key, LIMITS.limiterKey)).execute();
  }

  /** Forget counts that no longer matter (window over, no lock in force). */
  async dropStaleFailures(now: number, windowMs: number): Promise<number> {
    const r = await this.db.deleteFrom('login_failures').where('last', '<', now - windowMs).where('locked_until', '<', now).executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  async clearFailures(key: string): Promise<void> {
    await this.db.deleteFrom('login_failures').where('key', '=', clip(key, LIMITS.limiterKey)).execute();
  }
}
