/**
 * Paginated, filtered reads of accounts, policies and the audit log, for the admin API and the
 * console (which show the same pages). Filters arrive validated (src/server/listing.ts); here
 * they become SQL, the same for SQLite and PostgreSQL: a text filter is a case-insensitive
 * substring match with LIKE's wildcards escaped, so `%` and `_` match themselves.
 */
import { type Expression, type Kysely, type SqlBool, sql } from 'kysely';
import type { Database, Role } from './schema.js';

export interface PageQuery { offset: number; limit: number }
export interface PageOf<T> { rows: T[]; total: number; offset: number; limit: number }

export interface UserRow { user: string; groups: string[]; created: string; disabled: boolean; role: Role }
export interface GroupRow { group: string; members: number; created: string }
export interface PolicySummary { name: string; versions: number; latest: number; published: string; publisher: string; unpublished: boolean }
export interface PolicyVersionRow { name: string; version: number; published: string; publisher: string; unpublished: boolean }

export interface UserFilter { q?: string; group?: string; status?: 'active' | 'disabled'; role?: Role }

const iso = (ms: number) => new Date(Number(ms)).toISOString();

/** `lower(col) LIKE '%text%'` with `\`, `%` and `_` in `text` taken literally. */
export function contains(col: string, text: string): Expression<SqlBool> {
  const pattern = `%${text.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  return sql<SqlBool>`lower(${sql.ref(col)}) like ${pattern} escape '\\'`;
}


export class ListingQueries {
  constructor(private readonly db: Kysely<Database>) {}

  async users(f: UserFilter, p: PageQuery): Promise<PageOf<UserRow>> {
    let q = this.db.selectFrom('users');
    if (f.q) q = q.where(contains('name', f.q));
    if (f.status) q = q.where('disabled', '=', f.status === 'disabled' ? 1 : 0);
    if (f.role) q = q.where('role', '=', f.role);
    if (f.group) {
      const g = f.group;
      q = q.where((eb) => eb.exists(eb.selectFrom('membership').select('user_name').whereRef('membership.user_name', '=', 'users.name').where('group_name', '=', g)));
    }
    const [count, rows] = await Promise.all([
      q.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst(),
      q.select(['name', 'created', 'disabled', 'role']).orderBy('name').limit(p.limit).offset(p.offset).execute(),
    ]);
    const groups = new Map<string, string[]>();
    if (rows.length) {
      const members = await this.db.selectFrom('membership').select(['user_name', 'group_name'])
        .where('user_name', 'in', rows.map((r) => r.name)).orderBy('group_name').execute();
      for (const m of members) groups.set(m.user_name, [...(groups.get(m.user_name) ?? []), m.group_name]);
    }
    return {
      rows: rows.map((u) => ({ user: u.name, groups: groups.get(u.name) ?? [], created: iso(u.created), disabled: u.disabled !== 0, role: u.role })),
      total: Number(count?.n ?? 0), ...p,
    };
  }

  async groups(text: string | undefined, p: PageQuery): Promise<PageOf<GroupRow>> {
    let q = this.db.selectFrom('groups');
    if (text) q = q.where(contains('groups.name', text));
    const [count, rows] = await Promise.all([
      q.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst(),
      q.leftJoin('membership', 'membership.group_name', 'groups.name')
        .select((eb) => ['groups.name', 'groups.created', eb.fn.count<number>('membership.user_name').as('members')])
        .groupBy(['groups.name', 'groups.created'])
        .orderBy('groups.name').limit(p.limit).offset(p.offset).execute(),
    ]);
    return { rows: rows.map((g) => ({ group: g.name, members: Number(g.members), created: iso(g.created) })), total: Number(count?.n ?? 0), ...p };
  }

  /** One row per policy name: how many versions, and the newest one's publication. */
  async policies(text: string | undefined, p: PageQuery): Promise<PageOf<PolicySummary>> {
    let q = this.db.selectFrom('policies');
    if (text) q = q.where(contains('name', text));
    const [count, rows] = await Promise.all([
      q.select((eb) => eb.fn.count<number>('name').distinct().as('n')).executeTakeFirst(),
      q.select((eb) => ['name', eb.fn.max<number>('version').as('latest'), eb.fn.countAll<number>().as('versions')])
        .groupBy('name').orderBy('name').limit(p.limit).offset(p.offset).execute(),
    ]);
    const newest = rows.length
      ? await this.db.selectFrom('policies').select(['name', 'version', 'published', 'publisher', 'unpublished'])
        .where((eb) => eb.or(rows.map((r) => eb.and([eb('name', '=', r.name), eb('version', '=', Number(r.latest))]))))
        .execute()
      : [];
    const by = new Map(newest.map((n) => [n.name, n]));
    return {
      rows: rows.map((r) => ({ name: r.name, versions: Number(r.versions), latest: Number(r.latest), published: iso(by.get(r.name)?.published ?? 0), publisher: by.get(r.name)?.publisher ?? '', unpublished: !!by.get(r.name)?.unpublished })),
      total: Number(count?.n ?? 0), ...p,
    };
  }

  async policyVersions(name: string): Promise<PolicyVersionRow[]> {
    const rows = await this.db.selectFrom('policies').select(['name', 'version', 'published', 'publisher', 'unpublished']).where('name', '=', name).orderBy('version', 'desc').execute();
    return rows.map((r) => ({ name: r.name, version: r.version, published: iso(r.published), publisher: r.publisher, unpublished: r.unpublished !== 0 }));
  }

  async policyDocument(name: string, version: number): Promise<(PolicyVersionRow & { document: unknown }) | undefined> {
    const r = await this.db.selectFrom('policies').select(['name', 'version', 'published', 'publisher', 'document', 'unpublished'])
      .where('name', '=', name).where('version', '=', version).executeTakeFirst();
    return r && { name: r.name, version: r.version, published: iso(r.published), publisher: r.publisher, unpublished: r.unpublished !== 0, document: JSON.parse(r.document) };
  }

  async count(table: 'users' | 'groups' | 'image_keys'): Promise<number> {
    const r = await this.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst();
    return Number(r?.n ?? 0);
  }

  /** Images with published keys, and when they were last published. */
  async imageKeys(): Promise<{ image: string; updated: string }[]> {
    const rows = await this.db.selectFrom('image_keys').select(['image', 'updated_at']).orderBy('image').execute();
    return rows.map((r) => ({ image: r.image, updated: iso(r.updated_at) }));
  }

  /** The newest version of every policy in force (not unpublished), with its document. */
  async newestPolicies(): Promise<{ name: string; version: number; document: unknown }[]> {
    const rows = await this.db.selectFrom('policies as p').select(['p.name', 'p.version', 'p.document'])
      .where('p.version', '=', (eb) => eb.selectFrom('policies as q').select((q) => q.fn.max('q.version').as('v')).whereRef('q.name', '=', 'p.name'))
      .where('p.unpublished', '=', 0)
      .orderBy('p.name').execute();
    return rows.map((r) => ({ name: r.name, version: r.version, document: JSON.parse(r.document) }));
  }
}
