/**
 * Account administration through /api/ of real `medv serve` processes on SQLite and PostgreSQL
 * (issue 18 item 19): disable/enable, password reset, revoke, delete, and the admin role (an
 * administrator's own login works where the admin token does; a user's does not).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { generateClientKeyPair } from '../../src/api/keyrelease.js';
import { tempDir } from '../helpers/cli.js';
import { type ServeProcess, startServe } from './helpers.js';
import { BACKENDS, api, dbArgs, password, stopPostgres, unique } from './accounts-helpers.js';

after(() => stopPostgres());

for (const backend of BACKENDS) {
  describe(`account administration on ${backend}`, function () {
    this.timeout(120_000);
    let dir: ReturnType<typeof tempDir>;
    let srv: ServeProcess;
    let admin: string;
    const pws: Record<string, string> = {};
    const login = (user: string, pw = pws[user]) => api(srv.url, 'POST', '/api/login', { body: { user, password: pw } });
    const whoami = (token: string) => api(srv.url, 'GET', '/api/whoami', { token });
    async function add(user: string, o: { groups?: string[]; role?: string } = {}): Promise<void> {
      pws[user] = password();
      const r = await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user, password: pws[user], groups: o.groups ?? [], ...(o.role ? { role: o.role } : {}) } });
      assert.equal(r.status, 201, r.text);
    }

    before(async () => {
      dir = tempDir(`accounts-${backend}`);
      const db = await dbArgs(backend, 'accounts');
      srv = await startServe(dir.path, db.args);
      admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
    });
    after(async () => {
      await srv?.stop();
      await dir?.cleanup();
    });

    it('the admin role: an administrator\'s login works on admin routes (and is named in the audit); a user\'s is 403; the admin token still works', async () => {
      const boss = unique('boss');
      const eve = unique('eve');
      await add(boss, { role: 'admin' });
      await add(eve);
      const bossToken = (await login(boss)).body.token;
      const eveToken = (await login(eve)).body.token;
      assert.equal((await whoami(bossToken)).body.role, 'admin');
      assert.equal((await whoami(eveToken)).body.role, 'user');
      const made = unique('made');
      const r = await api(srv.url, 'POST', '/api/admin/users', { token: bossToken, body: { user: made, password: password() } });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.role, 'user');
      const refused = await api(srv.url, 'GET', '/api/admin/users', { token: eveToken });
      assert.equal(refused.status, 403);
      assert.equal(refused.body.error.code, 'EFORBIDDEN');
      assert.match(refused.body.error.message, new RegExp(`user ${eve} is not an administrator`));
      assert.equal((await api(srv.url, 'GET', '/api/admin/users', { token: admin })).status, 200);
      const audit = await api(srv.url, 'GET', `/api/admin/audit?action=user.add`, { token: admin });
      const entry = audit.body.entries.find((e: { target: string }) => e.target === made);
      assert.equal(entry.actor, boss);
      assert.equal((await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user: unique('x'), password: password(), role: 'root' } })).status, 400);
    });

    it('disable: the user\'s tokens stop working at once and logins fail; enable: both work again', async () => {
      const u = unique('dana');
      await add(u);
      const token = (await login(u)).body.token;
      assert.equal((await whoami(token)).status, 200);
      const d = await api(srv.url, 'POST', `/api/admin/users/${u}/disable`, { token: admin });
      assert.equal(d.status, 200, d.text);
      assert.equal(d.body.disabled, true);
      const gone = await whoami(token);
      assert.equal(gone.status, 403);
      assert.equal(gone.body.error.code, 'EFORBIDDEN');
      assert.match(gone.body.error.message, /disabled/);
      assert.equal((await login(u)).status, 401);
      const e = await api(srv.url, 'POST', `/api/admin/users/${u}/enable`, { token: admin });
      assert.equal(e.body.disabled, false);
      assert.equal((await whoami(token)).status, 200, 'a token that has not expired works again');
      assert.equal((await login(u)).status, 200);
    });

    it('a new password revokes every token; the old password fails, the new one works; revoke alone keeps the account', async () => {
      const u = unique('pat');
      await add(u);
      const t1 = (await login(u)).body.token;
      const t2 = (await login(u)).body.token;
      const old = pws[u];
      pws[u] = password();
      const r = await api(srv.url, 'POST', `/api/admin/users/${u}/password`, { token: admin, body: { password: pws[u] } });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body, { user: u, tokensRevoked: 2 });
      for (const t of [t1, t2]) assert.match((await whoami(t)).body.error.message, /revoked/);
      assert.equal((await login(u, old)).status, 401);
      const t3 = (await login(u)).body.token;
      assert.equal((await api(srv.url, 'POST', `/api/admin/users/${u}/password`, { token: admin, body: { password: 'short' } })).status, 400);
      const rv = await api(srv.url, 'POST', `/api/admin/users/${u}/revoke`, { token: admin });
      assert.deepEqual(rv.body, { user: u, tokensRevoked: 1 });
      assert.equal((await whoami(t3)).status, 401);
      assert.equal((await login(u)).status, 200, 'still enabled: the user logs in again');
    });

    it('delete removes the account, its memberships, tokens, clients and their reports; the group stays; the name can be added again', async () => {
      const u = unique('del');
      const other = unique('keep');
      const group = unique('grp');
      await add(u, { groups: [group] });
      await add(other, { groups: [group] });
      const policy = { name: unique('p'), groups: [group], workspaces: [{ name: 'desk', image: 'noimg' }] };
      assert.equal((await api(srv.url, 'POST', '/api/admin/policies', { token: admin, body: policy })).status, 201);
      const token = (await login(u)).body.token;
      const pair = generateClientKeyPair();
      try {
        assert.equal((await api(srv.url, 'POST', '/api/workspaces/grant', { token, body: { workspace: 'desk', client: 'pc-del', clientKey: pair.publicKey.toString('base64') } })).status, 409);
      } finally {
        pair.dispose();
      }
      assert.equal((await api(srv.url, 'POST', '/api/reports', { token, body: { client: 'pc-del', reports: [{ workspace: 'desk', version: null, state: 'failed', at: new Date().toISOString() }] } })).status, 200);
      const r = await api(srv.url, 'DELETE', `/api/admin/users/${u}`, { token: admin });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body, { user: u, groups: [group], tokens: 1, clients: 1, reports: 1 });
      assert.equal((await whoami(token)).status, 401);
      const users = (await api(srv.url, 'GET', '/api/admin/users', { token: admin })).body.users as { user: string; groups: string[] }[];
      assert.ok(!users.some((x) => x.user === u));
      assert.deepEqual(users.find((x) => x.user === other)!.groups, [group], 'the group stays for its other members');
      const clients = (await api(srv.url, 'GET', '/api/admin/clients', { token: admin })).body.clients as { client: string }[];
      assert.ok(!clients.some((c) => c.client === 'pc-del'));
      for (const [method, path] of [['DELETE', `/api/admin/users/${u}`], ['POST', `/api/admin/users/${u}/disable`], ['POST', `/api/admin/users/${u}/revoke`], ['GET', `/api/admin/users/${u}`]] as const) {
        const x = await api(srv.url, method, path, { token: admin });
        assert.equal(x.status, 404, `${method} ${path}`);
        assert.equal(x.body.error.code, 'ENOENT');
      }
      await add(u);
      assert.deepEqual((await api(srv.url, 'GET', `/api/admin/users/${u}`, { token: admin })).body.groups, []);
    });

    it('every change is audited with its actor; a bad name is 400; a user token is 403 on each route', async () => {
      const u = unique('aud');
      await add(u);
      for (const verb of ['disable', 'enable', 'revoke']) assert.equal((await api(srv.url, 'POST', `/api/admin/users/${u}/${verb}`, { token: admin })).status, 200);
      const entries = (await api(srv.url, 'GET', `/api/admin/audit?actor=admin`, { token: admin })).body.entries as { action: string; target: string }[];
      for (const a of ['user.add', 'user.disable', 'user.enable', 'user.revoke']) assert.ok(entries.some((e) => e.action === a && e.target === u), a);
      assert.equal((await api(srv.url, 'POST', '/api/admin/users/bad%2Fname/disable', { token: admin })).status, 400);
      const userToken = (await login(u)).body.token;
      for (const [method, path] of [['DELETE', `/api/admin/users/${u}`], ['POST', `/api/admin/users/${u}/disable`], ['POST', `/api/admin/users/${u}/password`]] as const) {
        assert.equal((await api(srv.url, method, path, { token: userToken, body: method === 'POST' ? { password: password() } : undefined })).status, 403);
      }
      assert.equal((await whoami(userToken)).status, 200, 'nothing happened');
    });
  });
}
