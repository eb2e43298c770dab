/**
 * The server store: migrations (idempotent, and safe when two `medv serve` start at once on one
 * PostgreSQL), what the database itself refuses (string bounds), persistence across restarts, and
 * two instances on one PostgreSQL serving the same users, tokens, policies and failure counts.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, SqliteDialect } from 'kysely';
import pg from 'pg';
import { MIGRATIONS, Store } from '../../src/server/store/index.js';
import { runMedv, tempDir } from '../helpers/cli.js';
import { type ServeProcess, startServe } from './helpers.js';
import { BACKENDS, api, dbArgs, password, postgres, stopPostgres, unique } from './accounts-helpers.js';

after(() => stopPostgres());

const doc = (name: string, users: string[]) => ({ name, users, workspaces: [{ name: 'w', image: 'lab', memory: 1024 }] });

for (const backend of BACKENDS) {
  describe(`server store on ${backend}`, function () {
    this.timeout(60_000);
    let dir: ReturnType<typeof tempDir>;
    beforeEach(() => { dir = tempDir(`store-${backend}`); });
    afterEach(() => dir.cleanup());

    it('migrations apply once; a restart finds nothing to do and keeps the data', async () => {
      const db = await dbArgs(backend, 'restart');
      let srv = await startServe(dir.path, db.args);
      const admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
      const user = unique('u');
      const pw = password();
      try {
        assert.equal((await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user, password: pw, groups: ['g'] } })).status, 201);
      } finally {
        assert.equal(await srv.stop(), 0);
      }
      srv = await startServe(dir.path, db.args);
      try {
        assert.equal((await api(srv.url, 'POST', '/api/login', { body: { user, password: pw } })).status, 200);
      } finally {
        await srv.stop();
      }
      const store = await Store.open(dir.path, db.url);
      try {
        const rows = await store.db.selectFrom('kysely_migration' as never).select('name' as never).execute();
        assert.deepEqual(rows.map((r) => (r as { name: string }).name), Object.keys(MIGRATIONS).sort());
      } finally {
        await store.close();
      }
      if (backend === 'sqlite') assert.equal(statSync(join(dir.path, 'medv.db')).mode & 0o777, 0o600, 'the database file is 0600');
    });

    it('a database of the first release migrates: wrapped keys (base64 text) become the same bytes, users get the user role, audit rows a count', async () => {
      const db = await dbArgs(backend, 'upgrade');
      if (backend === 'sqlite') writeFileSync(join(dir.path, 'medv.db'), '', { mode: 0o600 });
      const old = backend === 'sqlite'
        ? new Kysely<any>({ dialect: new SqliteDialect({ database: new BetterSqlite3(join(dir.path, 'medv.db')) }) })
        : new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: db.url }) }) });
      const wrapped = randomBytes(700);
      try {
        const r = await new Migrator({ db: old, provider: { getMigrations: async () => MIGRATIONS } }).migrateTo('0002_image_keys_client_reports');
        assert.equal(r.error, undefined);
        await old.insertInto('image_keys').values({ image: 'lab', wrapped: wrapped.toString('base64'), updated_at: 1 }).execute();
        await old.insertInto('users').values({ name: 'old', password_hash: 'h', created: 0, disabled: 0 }).execute();
        await old.insertInto('audit').values({ id: 'a'.repeat(32), time: 5, actor: 'admin', action: 'user.add', target: 'old', detail: '{}' }).execute();
      } finally {
        await old.destroy();
      }
      const store = await Store.open(dir.path, db.url);
      try {
        assert.ok((await store.getImageKeys('lab'))!.equals(wrapped));
        assert.equal((await store.getUser('old'))!.role, 'user');
        const [entry] = await store.auditLog({ limit: 10 });
        assert.deepEqual([entry.count, entry.last, entry.address], [1, new Date(5).toISOString(), '']);
      } finally {
        await store.close();
      }
    });

    it('the database refuses strings past their bounds, whoever writes them', async () => {
      const db = await dbArgs(backend, 'bounds');
      const store = await Store.open(dir.path, db.url);
      try {
        await assert.rejects(store.db.insertInto('users').values({ name: 'x'.repeat(65), password_hash: 'h', created: 0, disabled: 0 }).execute());
        await assert.rejects(store.db.insertInto('policies').values({ name: 'p', version: 1, document: 'x'.repeat(65537), published: 0, publisher: 'a' }).execute());
        await store.db.insertInto('users').values({ name: 'x'.repeat(64), password_hash: 'h', created: 0, disabled: 0 }).execute();
        assert.equal((await store.listUsers()).length, 1);
      } finally {
        await store.close();
      }
    });
  });
}

describe('server store: a database that cannot be used', () => {
  it('is one line on stderr that names the URL without its password', () => {
    const dir = tempDir('store-bad');
    try {
      const r = runMedv(['serve', '--root', dir.path, '--port', '0', '--db', 'postgres://medv:secret-db-password@127.0.0.1:1/medv']);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'medv: cannot prepare the database postgres://medv:***@127.0.0.1:1/medv: connect ECONNREFUSED 127.0.0.1:1 [EIO]\n');
      const other = runMedv(['serve', '--root', dir.path, '--port', '0', '--db', 'mysql://medv:secret-db-password@db/medv']);
      assert.equal(other.code, 2);
      assert.ok(!other.stderr.includes('secret-db-password'), other.stderr);
    } finally {
      dir.cleanup();
    }
  });
});

describe('two medv serve instances on one PostgreSQL', function () {
  this.timeout(60_000);
  let dirA: ReturnType<typeof tempDir>;
  let dirB: ReturnType<typeof tempDir>;
  let a: ServeProcess;
  let b: ServeProcess;
  let admin: string;
  let db: Awaited<ReturnType<typeof dbArgs>>;

  before(async () => {
    dirA = tempDir('pg-a');
    dirB = tempDir('pg-b');
    db = await dbArgs('postgres', 'two');
    // the same admin token for both, as behind a load balancer; both start (and migrate) at once
    [a, b] = await Promise.all([startServe(dirA.path, db.args), startServe(dirB.path, db.args)]);
    admin = readFileSync(a.adminTokenFile, 'utf8').trim();
    await b.stop();
    b = await startServe(dirB.path, [...db.args, '--admin-token-file', a.adminTokenFile]);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await dirA?.cleanup();
    await dirB?.cleanup();
  });

  it('started at once, they applied the migrations exactly once', async () => {
    const pg = await postgres();
    assert.equal(pg.sql(db.db!, 'select count(*) from kysely_migration').trim(), String(Object.keys(MIGRATIONS).length));
    assert.equal(pg.sql(db.db!, "select count(*) from information_schema.tables where table_name in ('users','groups','membership','tokens','policies','entitlements','audit','login_failures','image_keys','client_reports','clients')").trim(), '11');
  });

  it('a user added through one logs in through the other; a policy published through one is seen through the other; logout anywhere revokes everywhere', async () => {
    const user = unique('ann');
    const pw = password();
    assert.equal((await api(a.url, 'POST', '/api/admin/users', { token: admin, body: { user, password: pw } })).status, 201);
    assert.ok((await api(b.url, 'GET', '/api/admin/users', { token: admin })).body.users.some((u: { user: string }) => u.user === user));
    const login = await api(b.url, 'POST', '/api/login', { body: { user, password: pw } });
    assert.equal(login.status, 200, login.text);
    const name = unique('pol');
    assert.equal((await api(b.url, 'POST', '/api/admin/policies', { token: admin, body: doc(name, [user]) })).status, 201);
    const seen = await api(a.url, 'GET', '/api/policies', { token: login.body.token });
    assert.deepEqual(seen.body.policies.map((p: { name: string; version: number }) => [p.name, p.version]), [[name, 1]]);
    assert.equal((await api(a.url, 'POST', '/api/logout', { token: login.body.token })).status, 200);
    assert.equal((await api(b.url, 'GET', '/api/policies', { token: login.body.token })).status, 401);
  });

  it('publishing one policy through both at once gives every publish its own version', async () => {
    const name = unique('race');
    const r = await Promise.all([a, b, a, b, a, b].map((s) => api(s.url, 'POST', '/api/admin/policies', { token: admin, body: doc(name, []) })));
    assert.ok(r.every((x) => x.status === 201), r.map((x) => x.text).join(' '));
    assert.deepEqual(r.map((x) => x.body.version).sort(), [1, 2, 3, 4, 5, 6]);
  });

  it('failed logins count across instances: 3 through one and 2 through the other, the 6th is refused', async () => {
    const user = unique('bea');
    assert.equal((await api(a.url, 'POST', '/api/admin/users', { token: admin, body: { user, password: password() } })).status, 201);
    for (const s of [a, a, a, b, b]) assert.equal((await api(s.url, 'POST', '/api/login', { body: { user, password: 'wrong-password' } })).status, 401);
    assert.equal((await api(a.url, 'POST', '/api/login', { body: { user, password: 'wrong-password' } })).status, 429);
    assert.equal((await api(b.url, 'POST', '/api/login', { body: { user, password: 'wrong-password' } })).status, 429);
  });
});
