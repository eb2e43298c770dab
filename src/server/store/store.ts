/**
 * The one query layer of the server store, over SQLite or PostgreSQL (open.ts). It stores what it
 * is given: password hashes (never passwords), token hashes (never tokens), validated policy
 * documents. Callers check names and lengths first (accounts.ts); the database CHECKs them again.
 */
import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { MedvError } from '../../core/errors.js';
import { type OpenedDatabase, openDatabase } from './open.js';
import { type Database, LIMITS } from './schema.js';
import { SessionQueries } from './sessions.js';
import { ListingQueries } from './listing.js';
import { ClientQueries } from './clients.js';
import { PolicyQueries } from './policies.js';
import { ControlQueries } from './controls.js';

export interface UserRecord { name: string; passwordHash: string; disabled: boolean }
export interface UserSummary { user: string; groups: string[]; created: string; disabled: boolean }
export interface TokenRecord { user: string; expires: number; revoked: boolean; disabled: boolean }
export interface PolicyVersion { name: string; version: number; published: string; publisher: string }
export interface PolicyDocument { name: string; version: number; published: string; document: unknown }
export interface AuditEntry { actor: string; action: string; target: string; detail?: Record<string, unknown> }
export interface FailureState { key: string; count: number; lockedUntil: number }
export interface ReportRow { client: string; user: string; workspace: string; version: number | null; state: string; lastError: string | null; reportedAt: number }
export interface ReportRecord { client: string; user: string; workspace: string; version: number | null; state: string; lastError: string | null; at: string; received: string }

/** A unique-key violation, from either database (a concurrent insert of the same key). */
export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}

const iso = (ms: number) => new Date(Number(ms)).toISOString();
const clip = (s: string, n: number) => (s.length > n ? s.slice(0, n) : s);

export class Store {
  readonly kind: OpenedDatabase['kind'];
  readonly where: string;
  readonly db: Kysely<Database>;
  /** Console sessions (sessions.ts), paginated lists (listing.ts), grants, reports and history (clients.ts). */
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
  async addUser(name: string, passwordHash: string, groups: string[], now = Date.now()): Promise<void> {
    try {
      await this.db.transaction().execute(async (trx) => {
        await trx.insertInto('users').values({ name, password_hash: passwordHash, created: now, disabled: 0 }).execute();
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
    const r = await this.db.selectFrom('users').select(['name', 'password_hash', 'disabled']).where('name', '=', name).executeTakeFirst();
    return r && { name: r.name, passwordHash: r.password_hash, disabled: r.disabled !== 0 };
  }

  async listUsers(): Promise<UserSummary[]> {
    const users = await this.db.selectFrom('users').select(['name', 'created', 'disabled']).orderBy('name').execute();
    const members = await this.db.selectFrom('membership').select(['user_name', 'group_name']).orderBy('group_name').execute();
    const groups = new Map<string, string[]>();
    for (const m of members) groups.set(m.user_name, [...(groups.get(m.user_name) ?? []), m.group_name]);
    return users.map((u) => ({ user: u.name, groups: groups.get(u.name) ?? [], created: iso(u.created), disabled: u.disabled !== 0 }));
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
      .select(['tokens.user_name', 'tokens.expires', 'tokens.revoked', 'users.disabled'])
      .where('tokens.hash', '=', hash)
      .executeTakeFirst();
    return r && { user: r.user_name, expires: Number(r.expires), revoked: r.revoked !== 0, disabled: r.disabled !== 0 };
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
  async putImageKeys(image: string, wrapped: string, now = Date.now()): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      const had = await trx.selectFrom('image_keys').select('image').where('image', '=', image).executeTakeFirst();
      await trx.insertInto('image_keys').values({ image, wrapped, updated_at: now })
        .onConflict((oc) => oc.column('image').doUpdateSet({ wrapped, updated_at: now }))
        .execute();
      return had !== undefined;
    });
  }

  async getImageKeys(image: string): Promise<string | undefined> {
    const r = await this.db.selectFrom('image_keys').select('wrapped').where('image', '=', image).executeTakeFirst();
    return r?.wrapped;
  }

  // --- client status reports

  /**
   * Upsert reports: one row per (client, user, workspace), and a report replaces the row only
   * when it is at least as recent (client time) as the one stored, so a late-arriving older report
   * never overwrites a newer one, whichever instance receives them.
   */
  async putReports(rows: ReportRow[], now = Date.now()): Promise<number> {
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
    });
    return rows.length;
  }

  async listReports(): Promise<ReportRecord[]> {
    const rows = await this.db.selectFrom('client_reports').selectAll().orderBy('client').orderBy('user_name').orderBy('workspace').execute();
    return rows.map((r) => ({
      client: r.client, user: r.user_name, workspace: r.workspace, version: r.version === null ? null : Number(r.version),
      state: r.state, lastError: r.last_error, at: iso(r.reported_at), received: iso(r.received_at),
    }));
  }

  // --- audit log

  async audit(e: AuditEntry, now = Date.now()): Promise<void> {
    await this.db.insertInto('audit').values({
      id: randomBytes(16).toString('hex'),
      time: now,
      actor: clip(e.actor, LIMITS.name),
      action: clip(e.action, LIMITS.action),
      target: clip(e.target, LIMITS.target),
      detail: clip(JSON.stringify(e.detail ?? {}), LIMITS.detail),
    }).execute();
  }

  async auditLog(limit = 1000): Promise<{ time: string; actor: string; action: string; target: string; detail: unknown }[]> {
    const rows = await this.db.selectFrom('audit').selectAll().orderBy('time', 'desc').limit(limit).execute();
    return rows.map((r) => ({ time: iso(r.time), actor: r.actor, action: r.action, target: r.target, detail: JSON.parse(r.detail) }));
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
