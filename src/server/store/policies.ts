/**
 * Policy writes and reads beyond publishing (store.ts): unpublishing, and what the console's
 * preview of a change needs in bulk (who a document entitles, their groups, their clients' grants).
 */
import type { Kysely } from 'kysely';
import { MedvError } from '../../core/errors.js';
import { isUniqueViolation } from './store.js';
import type { Database } from './schema.js';

/** Rows per IN (…) list: far below SQLite's and PostgreSQL's parameter limits. */
const CHUNK = 500;

function chunks<T>(xs: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += CHUNK) out.push(xs.slice(i, i + CHUNK));
  return out;
}

export interface GrantRef { client: string; user: string; workspace: string; image: string }

export class PolicyQueries {
  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Unpublish `name`: its next version repeats the last document, marked unpublished, with no
   * entitlement rows, so nobody is entitled by it any more (every version is kept). The new
   * version; ENOENT when there is no such policy, EEXIST when it is already unpublished.
   */
  async unpublish(name: string, publisher: string, now = Date.now()): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction().execute(async (trx) => {
          const top = await trx.selectFrom('policies').select(['version', 'document', 'unpublished']).where('name', '=', name).orderBy('version', 'desc').limit(1).executeTakeFirst();
          if (!top) throw new MedvError('ENOENT', `no policy ${name}`);
          if (top.unpublished) throw new MedvError('EEXIST', `policy ${name} is already unpublished (version ${top.version})`);
          const version = top.version + 1;
          await trx.insertInto('policies').values({ name, version, document: top.document, published: now, publisher, unpublished: 1 }).execute();
          return version;
        });
      } catch (e) {
        if (!isUniqueViolation(e) || attempt >= 8) throw e;
      }
    }
  }

  /** The newest version of `name` (undefined: none), with its unpublished mark. */
  async newest(name: string): Promise<{ version: number; document: unknown; unpublished: boolean } | undefined> {
    const r = await this.db.selectFrom('policies').select(['version', 'document', 'unpublished']).where('name', '=', name).orderBy('version', 'desc').limit(1).executeTakeFirst();
    return r && { version: r.version, document: JSON.parse(r.document), unpublished: r.unpublished !== 0 };
  }

  /** Existing users named in `users` or members of `groups`, sorted. */
  async entitledUsers(users: readonly string[], groups: readonly string[]): Promise<string[]> {
    const out = new Set<string>();
    for (const c of chunks(users)) for (const r of await this.db.selectFrom('users').select('name').where('name', 'in', c).execute()) out.add(r.name);
    for (const c of chunks(groups)) for (const r of await this.db.selectFrom('membership').select('user_name').where('group_name', 'in', c).execute()) out.add(r.user_name);
    return [...out].sort();
  }

  async groupsOfUsers(users: readonly string[]): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>(users.map((u) => [u, []]));
    for (const c of chunks(users)) {
      for (const r of await this.db.selectFrom('membership').select(['user_name', 'group_name']).where('user_name', 'in', c).execute()) out.get(r.user_name)!.push(r.group_name);
    }
    return out;
  }

  /** The grants the server made to clients of `users`. */
  async grantsOf(users: readonly string[]): Promise<GrantRef[]> {
    const out: GrantRef[] = [];
    for (const c of chunks(users)) {
      for (const r of await this.db.selectFrom('client_grants').select(['client', 'user_name', 'workspace', 'image']).where('user_name', 'in', c).orderBy('client').execute()) {
        out.push({ client: r.client, user: r.user_name, workspace: r.workspace, image: r.image });
      }
    }
    return out;
  }
}
