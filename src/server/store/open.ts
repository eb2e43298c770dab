/**
 * Open the server store: SQLite in DIR/medv.db (the default; one file, mode 0600, WAL) or
 * PostgreSQL (`postgres://…`, for several `medv serve` instances behind a load balancer), then
 * apply the migrations. Both through kysely, so the queries (store.ts) are written once.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { Kysely, Migrator, PostgresDialect, SqliteDialect } from 'kysely';
import { MedvError, fromSystemError } from '../../core/errors.js';
import { migrationProvider } from './migrations.js';
import type { Database } from './schema.js';

export const SQLITE_FILE = 'medv.db';

export interface OpenedDatabase {
  kind: 'sqlite' | 'postgres';
  /** Where the data is, without any password: the SQLite file or the redacted URL. */
  where: string;
  db: Kysely<Database>;
}

/** A database URL with its password replaced (for logs and messages). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.href;
  } catch {
    return '(unparsable database URL)';
  }
}

async function sqliteDialect(file: string): Promise<SqliteDialect> {
  const { default: BetterSqlite3 } = await import('better-sqlite3');
  // created 0600 before SQLite opens it (it holds password hashes; SQLite gives -wal and -shm the
  // database's mode), and refused when group or others can reach it
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600);
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'the database is not a regular file', { file });
    if (st.size === 0 && (st.mode & 0o777) !== 0o600) fs.fchmodSync(fd, 0o600);
    const mode = fs.fstatSync(fd).mode & 0o777;
    if (mode & 0o077) throw new MedvError('EINSECURE', `the database's permissions ${mode.toString(8)} are too open: it holds password hashes (chmod 600 ${file})`, { file });
  } catch (e) {
    throw fromSystemError(e, file);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  let sqlite: InstanceType<typeof BetterSqlite3>;
  try {
    sqlite = new BetterSqlite3(file, { timeout: 10_000 });
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('foreign_keys = ON');
    sqlite.pragma('synchronous = FULL');
  } catch (e) {
    throw new MedvError('EFORMAT', `cannot open the database: ${(e as Error).message}`, { file }, { cause: e });
  }
  return new SqliteDialect({ database: sqlite });
}

async function postgresDialect(url: string): Promise<PostgresDialect> {
  const { default: pg } = await import('pg');
  const bigintAsNumber = (v: string) => Number(v);
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    // int8 (our bigint times, count(*)) as numbers: times in ms stay far below 2^53
    types: { getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === 20 ? bigintAsNumber : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser },
  });
  pool.on('error', () => undefined); // an idle client's connection broke: the pool drops it
  return new PostgresDialect({ pool });
}

/** `url` undefined or `sqlite:` → DIR/medv.db; `postgres://` or `postgresql://` → PostgreSQL. */
export async function openDatabase(root: string, url?: string): Promise<OpenedDatabase> {
  let kind: OpenedDatabase['kind'];
  let where: string;
  let dialect: SqliteDialect | PostgresDialect;
  if (url === undefined || url === '' || url === 'sqlite:') {
    kind = 'sqlite';
    where = join(root, SQLITE_FILE);
    dialect = await sqliteDialect(where);
  } else if (/^postgres(ql)?:\/\//i.test(url)) {
    kind = 'postgres';
    where = redactUrl(url);
    dialect = await postgresDialect(url);
  } else {
    throw new MedvError('EINVAL_ARG', `--db must be a postgres:// or postgresql:// URL (or omitted for SQLite in the root folder), not ${JSON.stringify(redactUrl(url)).slice(0, 120)}`);
  }
  const db = new Kysely<Database>({ dialect });
  try {
    const migrator = new Migrator({ db, provider: migrationProvider });
    const r = await migrator.migrateToLatest();
    if (r.error) throw r.error;
  } catch (e) {
    await db.destroy().catch(() => undefined);
    const msg = (e as Error)?.message ?? String(e);
    throw new MedvError('EIO', `cannot prepare the database ${where}: ${msg.replaceAll(url ?? '\0', where)}`, {}, { cause: e });
  }
  return { kind, where, db };
}
