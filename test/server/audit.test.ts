/**
 * The audit log of real `medv serve` processes on SQLite and PostgreSQL, under anonymous floods
 * (issue 18 item 18: every anonymous request used to add a row, without end): repeated refusals
 * are one row with a count, the table keeps at most --audit-max-rows, rows past --audit-retention
 * go, and `medv admin audit` reads it a page at a time.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Store } from '../../src/server/store/index.js';
import { runMedv, tempDir } from '../helpers/cli.js';
import { type ServeProcess, startServe } from './helpers.js';
import { BACKENDS, api, dbArgs, stopPostgres, unique } from './accounts-helpers.js';

after(() => stopPostgres());

for (const backend of BACKENDS) {
  describe(`the audit log is bounded on ${backend}`, function () {
    this.timeout(120_000);
    let dir: ReturnType<typeof tempDir>;
    let srv: ServeProcess | undefined;
    let db: Awaited<ReturnType<typeof dbArgs>>;
    const noLocks = ['--max-failed-logins', '1000', '--max-failed-logins-per-address', '1000', '--max-failed-logins-per-name', '1000'];
    const entries = async (admin: string, q = '') => (await api(srv!.url, 'GET', `/api/admin/audit?limit=1000${q}`, { token: admin })).body.entries as { actor: string; action: string; target: string; address: string; count: number; time: string; last: string }[];

    before(async () => {
      dir = tempDir(`audit-${backend}`);
      db = await dbArgs(backend, 'audit');
    });
    afterEach(async () => { await srv?.stop(); srv = undefined; });
    after(async () => { await dir?.cleanup(); });

    it('repeated failures of one name from one address are one row with a count; another address is another row', async () => {
      srv = await startServe(dir.path, [...db.args, ...noLocks]);
      const admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
      const ghost = unique('ghost');
      for (let i = 0; i < 8; i++) assert.equal((await api(srv.url, 'POST', '/api/login', { body: { user: ghost, password: `wrong-${i}-password` } })).status, 401);
      for (let i = 0; i < 3; i++) assert.equal((await api(srv.url, 'POST', '/api/login', { body: { user: ghost, password: 'wrong-password' }, localAddress: '127.0.0.2' })).status, 401);
      const rows = (await entries(admin, `&action=login.fail&actor=${ghost}`)).map((e) => [e.address, e.count]).sort();
      assert.deepEqual(rows, [['127.0.0.1', 8], ['127.0.0.2', 3]]);
      // anonymous requests to admin routes: one row per target and address
      for (let i = 0; i < 20; i++) assert.equal((await api(srv.url, 'GET', '/api/admin/users', { token: 'x'.repeat(43) })).status, 401);
      const denied = await entries(admin, '&action=admin.denied');
      assert.equal(denied.length, 1);
      assert.equal(denied[0].count, 20);
      assert.ok(Date.parse(denied[0].last) >= Date.parse(denied[0].time));
      const cli = runMedv(['admin', 'audit', '--action', 'admin.denied', '--server', srv.url, '--token-file', srv.adminTokenFile]);
      assert.equal(cli.code, 0, cli.stderr);
      assert.match(cli.stdout, /^TIME\s+COUNT\s+ACTOR\s+ACTION/);
      assert.match(cli.stdout, /\s20 \(last \S+\)\s+anonymous\s+admin\.denied\s+\/api\/admin\/users\s+127\.0\.0\.1\s/);
    });

    it('--audit-max-rows bounds the table under a flood of distinct refusals', async () => {
      srv = await startServe(dir.path, [...db.args, '--audit-max-rows', '40']);
      const admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
      // what an administrator did before the flood
      const keep = unique('kept');
      assert.equal((await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user: keep, password: 'kept-password' } })).status, 201);
      for (let i = 0; i < 150; i++) assert.equal((await api(srv.url, 'POST', `/api/admin/users/u${i}/disable`, { token: 'x'.repeat(43) })).status, 401);
      const rows = await entries(admin);
      console.log(`      150 distinct refusals: ${rows.length} rows kept`);
      // the request that adds every 4th entry (maxRows / 10) is answered after its prune: at most 3 more than the cap
      assert.ok(rows.length <= 40 + 3, `${rows.length} rows`);
      assert.ok(rows.some((r) => r.target === '/api/admin/users/u149/disable'), 'the newest are kept');
      assert.ok(!rows.some((r) => r.target === '/api/admin/users/u0/disable'), 'the oldest refusals went');
      assert.ok(rows.some((r) => r.action === 'user.add' && r.target === keep), 'a flood of refusals does not push out what the administrator did');
    });

    it('--audit-max-rows under a flood of an ordinary account\'s own actions: what the administrator did stays', async () => {
      srv = await startServe(dir.path, [...db.args, '--audit-max-rows', '40', '--max-clients-per-user', '1']);
      const admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
      const keep = unique('kept');
      const flooder = unique('flood');
      for (const u of [keep, flooder]) assert.equal((await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user: u, password: `${u}-password` } })).status, 201);
      const policy = unique('p');
      assert.equal((await api(srv.url, 'POST', '/api/admin/policies', { token: admin, body: { name: policy, users: [flooder], workspaces: [{ name: 'w', image: 'lab' }] } })).status, 201);
      const token = (await api(srv.url, 'POST', '/api/login', { body: { user: flooder, password: `${flooder}-password` } })).body.token as string;
      // every grant from a new client id drops the one before (--max-clients-per-user 1): one entry each
      const clientKey = Buffer.alloc(32, 9).toString('base64');
      for (let i = 0; i < 150; i++) {
        const r = await api(srv.url, 'POST', '/api/workspaces/grant', { token, body: { workspace: 'w', client: `c${i}`, clientKey } });
        assert.equal(r.status, 409, r.text); // no keys published for lab: refused after the client was registered
      }
      const rows = await entries(admin);
      // the request that adds every 4th entry (maxRows / 10) is answered after its prune: at most 3 more than the cap
      assert.ok(rows.length <= 40 + 3, `${rows.length} rows`);
      assert.ok(rows.some((r) => r.action === 'client.drop'), 'the flood is in the log');
      for (const u of [keep, flooder]) assert.ok(rows.some((r) => r.action === 'user.add' && r.target === u), `an account's flood pushed out the administrator's user.add ${u}`);
      assert.ok(rows.some((r) => r.action === 'policy.publish' && r.target === policy), 'an account\'s flood pushed out the administrator\'s policy.publish');
    });

    it('rows older than --audit-retention go at start; the newer stay; pages follow the cursor', async () => {
      const store = await Store.open(dir.path, db.url);
      const old = Date.now() - 100 * 86400_000;
      try {
        await store.audit({ actor: 'admin', action: 'user.add', target: 'ancient', detail: {} }, old);
        await store.audit({ actor: 'admin', action: 'user.add', target: 'recent', detail: {} }, Date.now() - 86400_000);
      } finally {
        await store.close();
      }
      srv = await startServe(dir.path, [...db.args, '--audit-retention', '30d']);
      const admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
      const adds = await entries(admin, '&action=user.add');
      assert.ok(adds.some((r) => r.target === 'recent'));
      assert.ok(!adds.some((r) => r.target === 'ancient'), 'older than 30 days: deleted');
      // a page at a time: every entry once, newest first
      const all = await entries(admin);
      const seen: string[] = [];
      let before: string | null = null;
      for (let i = 0; i < 100; i++) {
        const page = await api(srv.url, 'GET', `/api/admin/audit?limit=7${before ? `&before=${before}` : ''}`, { token: admin });
        assert.equal(page.status, 200, page.text);
        seen.push(...page.body.entries.map((e: { time: string; target: string }) => `${e.time} ${e.target}`));
        before = page.body.next;
        if (!before) break;
      }
      assert.deepEqual(seen, all.map((e) => `${e.time} ${e.target}`));
      for (const q of ['limit=0', 'before=junk', 'since=yesterday', 'action=DROP TABLE', 'actor=../x']) {
        assert.equal((await api(srv.url, 'GET', `/api/admin/audit?${q}`, { token: admin })).status, 400, q);
      }
    });
  });
}
