/**
 * Console sessions in the store (console/session.ts decides the rules; this only reads and
 * writes). Rows hold the BLAKE2b-256 of a session id, never the id.
 */
import type { Kysely } from 'kysely';
import type { Database } from './schema.js';

export interface SessionRecord {
  user: string;
  created: number;
  lastSeen: number;
  expires: number;
  /** The account is disabled (its sessions stop working at once). */
  disabled: boolean;
}

export interface SessionSummary { created: number; lastSeen: number; expires: number; address: string }

export class SessionQueries {
  constructor(private readonly db: Kysely<Database>) {}

  async add(hash: string, user: string, address: string, now: number, expires: number): Promise<void> {
    await this.db.insertInto('console_sessions').values({ hash, user_name: user, created: now, last_seen: now, expires, address }).execute();
  }

  async find(hash: string): Promise<SessionRecord | undefined> {
    const r = await this.db.selectFrom('console_sessions as s')
      .innerJoin('users as u', 'u.name', 's.user_name')
      .select(['s.user_name', 's.created', 's.last_seen', 's.expires', 'u.disabled'])
      .where('s.hash', '=', hash)
      .executeTakeFirst();
    return r && { user: r.user_name, created: Number(r.created), lastSeen: Number(r.last_seen), expires: Number(r.expires), disabled: r.disabled !== 0 };
  }

  async touch(hash: string, now: number): Promise<void> {
    await this.db.updateTable('console_sessions').set({ last_seen: now }).where('hash', '=', hash).execute();
  }

  async remove(hash: string): Promise<boolean> {
    const r = await this.db.deleteFrom('console_sessions').where('hash', '=', hash).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /** Every session of `user`; the number removed. */
  async removeAllOf(user: string): Promise<number> {
    const r = await this.db.deleteFrom('console_sessions').where('user_name', '=', user).executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  async listOf(user: string): Promise<SessionSummary[]> {
    const rows = await this.db.selectFrom('console_sessions').select(['created', 'last_seen', 'expires', 'address'])
      .where('user_name', '=', user).orderBy('last_seen', 'desc').execute();
    return rows.map((r) => ({ created: Number(r.created), lastSeen: Number(r.last_seen), expires: Number(r.expires), address: r.address }));
  }

  /** Keep the `keep` most recently used sessions of `user`, remove the rest (a bound on rows per account). */
  async trim(user: string, keep: number): Promise<number> {
    const old = await this.db.selectFrom('console_sessions').select('hash').where('user_name', '=', user)
      .orderBy('last_seen', 'desc').orderBy('hash').offset(keep).limit(1000).execute();
    if (!old.length) return 0;
    const r = await this.db.deleteFrom('console_sessions').where('hash', 'in', old.map((o) => o.hash)).executeTakeFirst();
    return Number(r.numDeletedRows);
  }

  /** Remove sessions past their absolute expiry or idle for longer than `idleMs`. */
  async dropExpired(now: number, idleMs: number): Promise<number> {
    const r = await this.db.deleteFrom('console_sessions')
      .where((eb) => eb.or([eb('expires', '<=', now), eb('last_seen', '<=', now - idleMs)]))
      .executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}
