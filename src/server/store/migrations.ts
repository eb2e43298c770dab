/**
 * Migrations, in code (no files read at run time). Applied at start by kysely's Migrator: on
 * PostgreSQL it holds a session advisory lock for the whole run (several `medv serve` instances
 * starting at once: one migrates, the others wait, then find nothing to do); on SQLite the
 * migration runs in one transaction on the one connection. Never edit a migration once released:
 * add the next one.
 */
import { type Kysely, type Migration, type MigrationProvider, PostgresAdapter, sql } from 'kysely';
import { LIMITS } from './schema.js';

type Db = Kysely<unknown>;
const len = (col: string, max: number) => sql`length(${sql.ref(col)}) <= ${sql.lit(max)}`;

const m0001: Migration = {
  async up(db: Db) {
    await db.schema.createTable('users')
      .addColumn('name', 'varchar(64)', (c) => c.primaryKey().check(len('name', LIMITS.name)))
      .addColumn('password_hash', 'varchar(256)', (c) => c.notNull().check(len('password_hash', LIMITS.passwordHash)))
      .addColumn('created', 'bigint', (c) => c.notNull())
      .addColumn('disabled', 'integer', (c) => c.notNull().defaultTo(0))
      .execute();
    await db.schema.createTable('groups')
      .addColumn('name', 'varchar(64)', (c) => c.primaryKey().check(len('name', LIMITS.name)))
      .addColumn('created', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.createTable('membership')
      .addColumn('user_name', 'varchar(64)', (c) => c.notNull().references('users.name').onDelete('cascade'))
      .addColumn('group_name', 'varchar(64)', (c) => c.notNull().references('groups.name').onDelete('cascade'))
      .addPrimaryKeyConstraint('membership_pk', ['user_name', 'group_name'])
      .execute();
    await db.schema.createIndex('membership_group').on('membership').column('group_name').execute();
    await db.schema.createTable('tokens')
      .addColumn('hash', 'varchar(64)', (c) => c.primaryKey().check(len('hash', LIMITS.tokenHash)))
      .addColumn('user_name', 'varchar(64)', (c) => c.notNull().references('users.name').onDelete('cascade'))
      .addColumn('created', 'bigint', (c) => c.notNull())
      .addColumn('expires', 'bigint', (c) => c.notNull())
      .addColumn('revoked', 'integer', (c) => c.notNull().defaultTo(0))
      .execute();
    await db.schema.createIndex('tokens_expires').on('tokens').column('expires').execute();
    await db.schema.createTable('policies')
      .addColumn('name', 'varchar(64)', (c) => c.notNull().check(len('name', LIMITS.name)))
      .addColumn('version', 'integer', (c) => c.notNull())
      .addColumn('document', 'text', (c) => c.notNull().check(len('document', LIMITS.document)))
      .addColumn('published', 'bigint', (c) => c.notNull())
      .addColumn('publisher', 'varchar(64)', (c) => c.notNull().check(len('publisher', LIMITS.name)))
      .addPrimaryKeyConstraint('policies_pk', ['name', 'version'])
      .execute();
    await db.schema.createTable('entitlements')
      .addColumn('policy_name', 'varchar(64)', (c) => c.notNull())
      .addColumn('version', 'integer', (c) => c.notNull())
      .addColumn('kind', 'varchar(8)', (c) => c.notNull().check(sql`kind in ('user', 'group')`))
      .addColumn('subject', 'varchar(64)', (c) => c.notNull().check(len('subject', LIMITS.name)))
      .addPrimaryKeyConstraint('entitlements_pk', ['policy_name', 'version', 'kind', 'subject'])
      .addForeignKeyConstraint('entitlements_policy', ['policy_name', 'version'], 'policies', ['name', 'version'], (c) => c.onDelete('cascade'))
      .execute();
    await db.schema.createIndex('entitlements_subject').on('entitlements').columns(['kind', 'subject']).execute();
    await db.schema.createTable('audit')
      .addColumn('id', 'varchar(32)', (c) => c.primaryKey())
      .addColumn('time', 'bigint', (c) => c.notNull())
      .addColumn('actor', 'varchar(64)', (c) => c.notNull().check(len('actor', LIMITS.name)))
      .addColumn('action', 'varchar(40)', (c) => c.notNull().check(len('action', LIMITS.action)))
      .addColumn('target', 'varchar(200)', (c) => c.notNull().check(len('target', LIMITS.target)))
      .addColumn('detail', 'text', (c) => c.notNull().check(len('detail', LIMITS.detail)))
      .execute();
    await db.schema.createIndex('audit_time').on('audit').column('time').execute();
    await db.schema.createTable('login_failures')
      .addColumn('key', 'varchar(200)', (c) => c.primaryKey().check(len('key', LIMITS.limiterKey)))
      .addColumn('count', 'integer', (c) => c.notNull())
      .addColumn('first', 'bigint', (c) => c.notNull())
      .addColumn('last', 'bigint', (c) => c.notNull())
      .addColumn('locked_until', 'bigint', (c) => c.notNull())
      .execute();
  },
};

/** Image keys (wrapped under the server key) and client status reports. */
const m0002: Migration = {
  async up(db: Db) {
    await db.schema.createTable('image_keys')
      .addColumn('image', 'varchar(64)', (c) => c.primaryKey().check(len('image', LIMITS.name)))
      .addColumn('wrapped', 'varchar(1024)', (c) => c.notNull().check(len('wrapped', LIMITS.wrappedKeys)))
      .addColumn('updated_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.createTable('client_reports')
      .addColumn('client', 'varchar(64)', (c) => c.notNull().check(len('client', LIMITS.clientId)))
      .addColumn('user_name', 'varchar(64)', (c) => c.notNull().check(len('user_name', LIMITS.name)))
      .addColumn('workspace', 'varchar(64)', (c) => c.notNull().check(len('workspace', LIMITS.name)))
      .addColumn('version', 'integer')
      .addColumn('state', 'varchar(16)', (c) => c.notNull().check(sql`state in ('running', 'stopped', 'suspended', 'updating', 'failed', 'offline')`))
      .addColumn('last_error', 'varchar(1024)', (c) => c.check(len('last_error', LIMITS.lastError)))
      .addColumn('reported_at', 'bigint', (c) => c.notNull())
      .addColumn('received_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('client_reports_pk', ['client', 'user_name', 'workspace'])
      .execute();
  },
};

/** A byte-string column: BLOB on SQLite, bytea on PostgreSQL. */
const bytes = (db: Db) => sql.raw(db.getExecutor().adapter instanceof PostgresAdapter ? 'bytea' : 'blob');

/** Account roles (issue 20's console signs in `admin` accounts; `user` is everyone else). */
const m0003: Migration = {
  async up(db: Db) {
    await db.schema.alterTable('users')
      .addColumn('role', 'varchar(8)', (c) => c.notNull().defaultTo('user').check(sql`role in ('admin', 'user')`))
      .execute();
  },
};

/**
 * The audit log, bounded: repeated failures of one kind from one address within a window are one
 * row with a count (`agg` is the key of that window, unique), and the row's last occurrence.
 */
const m0004: Migration = {
  async up(db: Db) {
    await db.schema.alterTable('audit').addColumn('count', 'integer', (c) => c.notNull().defaultTo(1)).execute();
    await db.schema.alterTable('audit').addColumn('last', 'bigint').execute();
    await db.schema.alterTable('audit').addColumn('address', 'varchar(64)', (c) => c.notNull().defaultTo('').check(len('address', LIMITS.address))).execute();
    await db.schema.alterTable('audit').addColumn('agg', 'varchar(32)').execute();
    await db.schema.createIndex('audit_agg').on('audit').column('agg').unique().execute();
  },
};

/** Which clients belong to which user (registered by a grant): reports are taken only from them. */
const m0005: Migration = {
  async up(db: Db) {
    await db.schema.createTable('clients')
      .addColumn('client', 'varchar(64)', (c) => c.notNull().check(len('client', LIMITS.clientId)))
      .addColumn('user_name', 'varchar(64)', (c) => c.notNull().references('users.name').onDelete('cascade'))
      .addColumn('client_key', 'varchar(64)', (c) => c.notNull().check(len('client_key', 64)))
      .addColumn('first_seen', 'bigint', (c) => c.notNull())
      .addColumn('last_seen', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('clients_pk', ['client', 'user_name'])
      .execute();
    await db.schema.createIndex('clients_user').on('clients').columns(['user_name', 'last_seen']).execute();
    await db.schema.createIndex('client_reports_user').on('client_reports').columns(['user_name', 'received_at']).execute();
  },
};

/** Wrapped image keys as bytes (they were base64 text): no key-sized strings in the server's heap. */
const m0006: Migration = {
  async up(db: Db) {
    await db.schema.createTable('image_keys_bytes')
      .addColumn('image', 'varchar(64)', (c) => c.primaryKey().check(len('image', LIMITS.name)))
      .addColumn('wrapped', bytes(db), (c) => c.notNull().check(sql`length(wrapped) <= ${sql.lit(LIMITS.wrappedKeyBytes)}`))
      .addColumn('updated_at', 'bigint', (c) => c.notNull())
      .execute();
    const old = await (db as Kysely<{ image_keys: { image: string; wrapped: string; updated_at: number } }>)
      .selectFrom('image_keys').selectAll().execute();
    for (const r of old) {
      await (db as Kysely<{ image_keys_bytes: { image: string; wrapped: Buffer; updated_at: number } }>)
        .insertInto('image_keys_bytes').values({ image: r.image, wrapped: Buffer.from(r.wrapped, 'base64'), updated_at: r.updated_at }).execute();
    }
    await db.schema.dropTable('image_keys').execute();
    await db.schema.alterTable('image_keys_bytes').renameTo('image_keys').execute();
  },
};

/**
 * The console: its sign-in sessions (hashed ids, idle and absolute expiry), the history of client
 * reports (client_reports keeps only the latest of each client, user and workspace), and what the
 * server last granted each client (image, policy, offline allowance: the console's "which clients
 * run this image" and "offline allowance left").
 */
const m0007: Migration = {
  async up(db: Db) {
    await db.schema.createTable('console_sessions')
      .addColumn('hash', 'varchar(64)', (c) => c.primaryKey().check(len('hash', LIMITS.tokenHash)))
      .addColumn('user_name', 'varchar(64)', (c) => c.notNull().references('users.name').onDelete('cascade'))
      .addColumn('created', 'bigint', (c) => c.notNull())
      .addColumn('last_seen', 'bigint', (c) => c.notNull())
      .addColumn('expires', 'bigint', (c) => c.notNull())
      .addColumn('address', 'varchar(64)', (c) => c.notNull().check(len('address', LIMITS.address)))
      .execute();
    await db.schema.createIndex('console_sessions_user').on('console_sessions').column('user_name').execute();
    await db.schema.createTable('client_report_history')
      .addColumn('id', 'varchar(32)', (c) => c.primaryKey())
      .addColumn('client', 'varchar(64)', (c) => c.notNull().check(len('client', LIMITS.clientId)))
      .addColumn('user_name', 'varchar(64)', (c) => c.notNull().check(len('user_name', LIMITS.name)))
      .addColumn('workspace', 'varchar(64)', (c) => c.notNull().check(len('workspace', LIMITS.name)))
      .addColumn('version', 'integer')
      .addColumn('state', 'varchar(16)', (c) => c.notNull().check(len('state', LIMITS.state)))
      .addColumn('last_error', 'varchar(1024)', (c) => c.check(len('last_error', LIMITS.lastError)))
      .addColumn('reported_at', 'bigint', (c) => c.notNull())
      .addColumn('received_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('client_report_history_key').on('client_report_history').columns(['client', 'user_name', 'workspace', 'reported_at']).execute();
    await db.schema.createIndex('client_report_history_time').on('client_report_history').column('reported_at').execute();
    await db.schema.createTable('client_grants')
      .addColumn('client', 'varchar(64)', (c) => c.notNull().check(len('client', LIMITS.clientId)))
      .addColumn('user_name', 'varchar(64)', (c) => c.notNull().check(len('user_name', LIMITS.name)))
      .addColumn('workspace', 'varchar(64)', (c) => c.notNull().check(len('workspace', LIMITS.name)))
      .addColumn('image', 'varchar(64)', (c) => c.notNull().check(len('image', LIMITS.name)))
      .addColumn('policy_name', 'varchar(64)', (c) => c.notNull().check(len('policy_name', LIMITS.name)))
      .addColumn('policy_version', 'integer', (c) => c.notNull())
      .addColumn('offline_days', 'integer', (c) => c.notNull())
      .addColumn('granted_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('client_grants_pk', ['client', 'user_name', 'workspace'])
      .execute();
    await db.schema.createIndex('client_grants_image').on('client_grants').column('image').execute();
    // an unpublished policy is a last version that entitles nobody (no entitlement rows), marked so
    await db.schema.alterTable('policies').addColumn('unpublished', 'integer', (c) => c.notNull().defaultTo(0)).execute();
    // the administrator's standing orders (lock, wipe, revoke) per client or user, and the wipes clients confirmed
    await db.schema.createTable('client_controls')
      .addColumn('scope', 'varchar(8)', (c) => c.notNull().check(sql`scope in ('client', 'user')`))
      .addColumn('subject', 'varchar(64)', (c) => c.notNull().check(len('subject', LIMITS.name)))
      .addColumn('workspace', 'varchar(64)', (c) => c.notNull().check(len('workspace', LIMITS.name)))
      .addColumn('action', 'varchar(8)', (c) => c.notNull().check(sql`action in ('lock', 'wipe', 'revoke')`))
      .addColumn('reason', 'varchar(512)', (c) => c.notNull().check(len('reason', LIMITS.reason)))
      .addColumn('actor', 'varchar(64)', (c) => c.notNull().check(len('actor', LIMITS.name)))
      .addColumn('at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('client_controls_pk', ['scope', 'subject', 'workspace', 'action'])
      .execute();
    await db.schema.createTable('client_wipes')
      .addColumn('client', 'varchar(64)', (c) => c.notNull().check(len('client', LIMITS.clientId)))
      .addColumn('user_name', 'varchar(64)', (c) => c.notNull().check(len('user_name', LIMITS.name)))
      .addColumn('workspace', 'varchar(64)', (c) => c.notNull().check(len('workspace', LIMITS.name)))
      .addColumn('at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('client_wipes_pk', ['client', 'user_name', 'workspace'])
      .execute();
    // the console's audit filters (by user: actor or target; by action) and its per-user page
    await db.schema.createIndex('audit_actor').on('audit').columns(['actor', 'time']).execute();
    await db.schema.createIndex('audit_target').on('audit').columns(['target', 'time']).execute();
    await db.schema.createIndex('audit_action').on('audit').columns(['action', 'time']).execute();
    await db.schema.createIndex('client_reports_received').on('client_reports').column('received_at').execute();
  },
};

export const MIGRATIONS: Record<string, Migration> = {
  '0001_accounts_policies': m0001,
  '0002_image_keys_client_reports': m0002,
  '0003_user_roles': m0003,
  '0004_audit_aggregate': m0004,
  '0005_clients': m0005,
  '0006_image_keys_bytes': m0006,
  '0007_console': m0007,
};

export const migrationProvider: MigrationProvider = {
  async getMigrations() { return MIGRATIONS; },
};
