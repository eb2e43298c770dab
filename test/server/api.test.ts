/**
 * /api/ of real `medv serve` processes, the same suite on SQLite and on PostgreSQL: login and
 * tokens, failed-login limits, admin endpoints, policy validation and entitlement, and a scan of
 * the database files for passwords and tokens in clear.
 */
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runMedv, tempDir } from '../helpers/cli.js';
import { type ServeProcess, startServe } from './helpers.js';
import { BACKENDS, api, dbArgs, password, postgres, scan, stopPostgres, unique } from './accounts-helpers.js';

const policyDoc = (name: string, entitled: { users?: string[]; groups?: string[] }, extra: Record<string, unknown> = {}) => ({
  name,
  ...entitled,
  workspaces: [{ name: 'desk', image: 'lab', mode: 'revertible', onStop: 'suspend', memory: { byHostRam: [{ hostMiB: 0, guestMiB: 512 }, { hostMiB: 8192, guestMiB: 2048 }] }, network: 'nat', devices: { usb: false, clipboard: true }, versionsToKeep: 1, suggestUpdate: true, useTrimTransfer: true, offlineDays: 7, expires: '2030-12-31', applications: [{ name: 'Editor', argv: ['notepad.exe'], icon: 'notepad' }], ...extra }],
});

after(() => stopPostgres());

for (const backend of BACKENDS) {
  describe(`server api on ${backend}`, function () {
    this.timeout(60_000);
    let dir: ReturnType<typeof tempDir>;
    let srv: ServeProcess;
    let admin: string;
    let db: Awaited<ReturnType<typeof dbArgs>>;
    const secrets: Buffer[] = [];
    const users: Record<string, string> = {};
    const names = { alice: unique('alice'), bob: unique('bob'), carol: unique('carol'), dave: unique('dave'), fin: unique('fin') };

    async function addUser(name: string, groups: string[] = []): Promise<void> {
      users[name] = password();
      secrets.push(Buffer.from(users[name]));
      const r = await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user: name, password: users[name], groups } });
      assert.equal(r.status, 201, r.text);
      assert.deepEqual(r.body.groups, groups);
    }
    async function login(name: string, pw = users[name], lifetime?: number) {
      return api(srv.url, 'POST', '/api/login', { body: { user: name, password: pw, ...(lifetime ? { lifetime } : {}) } });
    }

    before(async () => {
      dir = tempDir(`api-${backend}`);
      db = await dbArgs(backend, 'api');
      srv = await startServe(dir.path, db.args);
      admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
      await addUser(names.alice, [names.fin]);
      await addUser(names.bob);
      await addUser(names.carol);
      await addUser(names.dave);
    });
    after(async () => {
      await srv?.stop();
      await dir?.cleanup();
    });

    it('login returns a token that expires in 12 hours and works until then', async () => {
      const t0 = Date.now();
      const r = await login(names.alice);
      assert.equal(r.status, 200, r.text);
      assert.match(r.body.token, /^[A-Za-z0-9_-]{43}$/);
      secrets.push(Buffer.from(r.body.token), Buffer.from(r.body.token, 'base64url'));
      const left = Date.parse(r.body.expires) - t0;
      assert.ok(left > 12 * 3600_000 - 60_000 && left <= 12 * 3600_000 + 60_000, `expires in ${left} ms`);
      const me = await api(srv.url, 'GET', '/api/whoami', { token: r.body.token });
      assert.equal(me.status, 200, me.text);
      assert.equal(me.body.user, names.alice);
      assert.deepEqual(me.body.groups, [names.fin]);
    });

    it('a wrong password and an unknown user get the same 401 answer', async () => {
      const wrong = await login(names.bob, 'not-the-password');
      const unknown = await login(unique('nobody'), 'not-the-password');
      assert.equal(wrong.status, 401);
      assert.equal(unknown.status, 401);
      assert.equal(wrong.text, unknown.text);
      assert.equal(wrong.body.error.code, 'EDENIED');
      assert.equal((await login(names.bob)).status, 200, 'the right password still works (the failure count is below the limit)');
    });

    it('five failed logins of a user: the sixth attempt is refused with 429 and Retry-After, even with the right password', async () => {
      for (let i = 1; i <= 5; i++) assert.equal((await login(names.dave, `wrong-${i}-password`)).status, 401, `failure ${i}`);
      const sixth = await login(names.dave, 'wrong-6-password');
      assert.equal(sixth.status, 429, sixth.text);
      const retry = Number(sixth.headers.get('retry-after'));
      assert.ok(retry >= 1 && retry <= 30, `Retry-After ${retry}`);
      assert.equal(sixth.body.error.code, 'ERATELIMIT');
      const right = await login(names.dave);
      assert.equal(right.status, 429, 'locked: the right password is not even checked');
      // other users from the same address are not locked by dave's failures
      assert.equal((await login(names.carol)).status, 200);
    });

    it('a revoked token and an expired token are refused', async () => {
      const a = await login(names.carol);
      secrets.push(Buffer.from(a.body.token));
      assert.equal((await api(srv.url, 'GET', '/api/policies', { token: a.body.token })).status, 200);
      assert.equal((await api(srv.url, 'POST', '/api/logout', { token: a.body.token })).status, 200);
      const revoked = await api(srv.url, 'GET', '/api/policies', { token: a.body.token });
      assert.equal(revoked.status, 401);
      assert.match(revoked.body.error.message, /revoked/);

      const b = await login(names.carol, users[names.carol], 1);
      secrets.push(Buffer.from(b.body.token));
      assert.equal((await api(srv.url, 'GET', '/api/whoami', { token: b.body.token })).status, 200);
      // wait for the moment the server said the token expires
      await new Promise((res) => setTimeout(res, Math.max(0, Date.parse(b.body.expires) - Date.now()) + 20));
      const expired = await api(srv.url, 'GET', '/api/whoami', { token: b.body.token });
      assert.equal(expired.status, 401);
      assert.match(expired.body.error.message, /expired/);
      assert.equal((await api(srv.url, 'GET', '/api/whoami', { token: 'A'.repeat(43) })).status, 401, 'a made-up token');
    });

    it('admin endpoints refuse no token, a wrong token and a user token', async () => {
      const user = (await login(names.bob)).body.token as string;
      for (const token of [undefined, 'x'.repeat(43), user]) {
        for (const [method, path, body] of [['GET', '/api/admin/users'], ['POST', '/api/admin/users', { user: 'mallory', password: 'mallory-password' }], ['GET', '/api/admin/policies'], ['POST', '/api/admin/policies', policyDoc('evil', { users: ['mallory'] })]] as const) {
          const r = await api(srv.url, method, path, { token, body });
          assert.equal(r.status, token === user ? 403 : 401, `${method} ${path} with ${token === user ? 'a user token' : token ? 'a wrong token' : 'no token'}: ${r.text}`);
          assert.equal(r.body.error.code, token === user ? 'EFORBIDDEN' : 'EDENIED');
        }
      }
      const list = await api(srv.url, 'GET', '/api/admin/users', { token: admin });
      assert.ok(!list.body.users.some((u: { user: string }) => u.user === 'mallory'));
      assert.ok(!(await api(srv.url, 'GET', '/api/admin/policies', { token: admin })).body.policies.some((p: { name: string }) => p.name === 'evil'));
    });

    it('a policy that fails the schema is refused with the path of the bad field', async () => {
      const cases: [unknown, string][] = [
        [policyDoc('p', {}, { memory: 'lots' }), '/workspaces/0/memory'],
        [policyDoc('p', {}, { network: 'bridged' }), '/workspaces/0/network'],
        [policyDoc('p', {}, { devices: { usb: true, floppy: true } }), '/workspaces/0/devices/floppy'],
        [policyDoc('p', {}, { expires: '2030-02-30' }), '/workspaces/0/expires'],
        [policyDoc('p', {}, { applications: [{ name: 'x' }] }), '/workspaces/0/applications/0/argv'],
        [{ name: 'p', workspaces: [{ name: 'w' }] }, '/workspaces/0/image'],
        [{ name: 'p', workspaces: [], color: 'red' }, '/color'],
        [{ name: '../p', workspaces: [{ name: 'w', image: 'lab' }] }, '/name'],
      ];
      for (const [doc, path] of cases) {
        const r = await api(srv.url, 'POST', '/api/admin/policies', { token: admin, body: doc });
        assert.equal(r.status, 400, r.text);
        assert.equal(r.body.error.code, 'EPOLICY');
        assert.equal(r.body.error.path, path, r.text);
      }
      const notJson = await api(srv.url, 'POST', '/api/admin/policies', { token: admin, raw: '{"name": ' });
      assert.equal(notJson.status, 400);
      const big = await api(srv.url, 'POST', '/api/admin/policies', { token: admin, raw: JSON.stringify({ ...policyDoc('big', {}), description: 'x'.repeat(70_000) }) });
      assert.equal(big.status, 413);
      assert.deepEqual((await api(srv.url, 'GET', '/api/admin/policies', { token: admin })).body.policies.filter((p: { name: string }) => p.name === 'p' || p.name === 'big'), []);
    });

    it('an entitled user sees the newest version of the policy (directly or through a group); another user does not', async () => {
      const name = unique('finance');
      const v1 = await api(srv.url, 'POST', '/api/admin/policies', { token: admin, body: policyDoc(name, { groups: [names.fin] }) });
      assert.equal(v1.status, 201, v1.text);
      assert.deepEqual(v1.body, { name, version: 1 });
      const v2 = await api(srv.url, 'POST', '/api/admin/policies', { token: admin, body: policyDoc(name, { groups: [names.fin], users: [names.carol] }, { versionsToKeep: 3 }) });
      assert.deepEqual(v2.body, { name, version: 2 });
      const mine = async (user: string) => {
        const t = (await login(user)).body.token as string;
        const r = await api(srv.url, 'GET', '/api/policies', { token: t });
        assert.equal(r.status, 200, r.text);
        return (r.body.policies as { name: string; version: number; document: any }[]).filter((p) => p.name === name);
      };
      const alice = await mine(names.alice);
      assert.equal(alice.length, 1);
      assert.equal(alice[0].version, 2);
      assert.equal(alice[0].document.workspaces[0].versionsToKeep, 3);
      assert.equal((await mine(names.carol))[0]?.version, 2, 'named directly in v2');
      assert.deepEqual(await mine(names.bob), [], 'bob is neither named nor in the group');
      const all = (await api(srv.url, 'GET', '/api/admin/policies', { token: admin })).body.policies.filter((p: { name: string }) => p.name === name);
      assert.deepEqual(all.map((p: { version: number; publisher: string }) => [p.version, p.publisher]), [[1, 'admin'], [2, 'admin']]);
    });

    it('the audit log records logins, failures, limits, logouts, users and policies, without secrets', async () => {
      const r = await api(srv.url, 'GET', '/api/admin/audit', { token: admin });
      assert.equal(r.status, 200);
      const actions = new Set((r.body.entries as { action: string }[]).map((e) => e.action));
      for (const a of ['login', 'login.fail', 'login.limited', 'logout', 'user.add', 'policy.publish']) assert.ok(actions.has(a), `${a} in ${[...actions]}`);
      for (const s of secrets) assert.ok(!r.text.includes(s.toString('latin1')));
      assert.equal((await api(srv.url, 'GET', '/api/admin/audit')).status, 401);
    });

    it('the database holds no password or token in clear', async () => {
      // PostgreSQL: write everything out first (the scan reads the files)
      let dirs = [dir.path];
      if (backend === 'postgres') {
        const pg = await postgres();
        pg.sql(db.db!, 'CHECKPOINT');
        dirs = [pg.dataDir, dir.path];
      }
      assert.ok(secrets.length >= 8);
      const found = scan(dirs, [...secrets, Buffer.from(names.alice)]);
      assert.ok(found.has(names.alice), 'the scan reads the database (it finds a user name)');
      found.delete(names.alice);
      assert.deepEqual([...found.entries()], []);
    });
  });
}

describe('server api: limits per client address, plain HTTP', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  let srv: ServeProcess | undefined;
  beforeEach(() => { dir = tempDir('api-limits'); });
  afterEach(async () => { await srv?.stop(); srv = undefined; await dir.cleanup(); });

  it('failures under several user names from one address lock that address', async () => {
    srv = await startServe(dir.path, ['--max-failed-logins-per-address', '3']);
    for (let i = 0; i < 3; i++) assert.equal((await api(srv.url, 'POST', '/api/login', { body: { user: unique('u'), password: 'wrong-password' } })).status, 401);
    const r = await api(srv.url, 'POST', '/api/login', { body: { user: unique('u'), password: 'wrong-password' } });
    assert.equal(r.status, 429, r.text);
    assert.ok(Number(r.headers.get('retry-after')) >= 1);
  });

  it('parallel guesses of one name are counted before the next is checked: of 9 at once, 5 are checked and 4 refused', async () => {
    srv = await startServe(dir.path);
    const user = unique('u');
    const r = await Promise.all(Array.from({ length: 9 }, (_, i) => api(srv!.url, 'POST', '/api/login', { body: { user, password: `wrong-password-${i}` } })));
    assert.deepEqual(r.map((x) => x.status).sort(), [401, 401, 401, 401, 401, 429, 429, 429, 429]);
  });

  it('credentials over plain HTTP from another address are refused, unless --allow-plain-http', async function () {
    const ext = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal);
    if (!ext) this.skip();
    for (const allow of [false, true]) {
      srv = await startServe(dir.path, ['--host', '0.0.0.0', ...(allow ? ['--allow-plain-http'] : [])]);
      const port = new URL(srv.url).port;
      const r = await api(`http://${ext!.address}:${port}`, 'POST', '/api/login', { body: { user: 'alice', password: 'some-password' } });
      assert.equal(r.status, allow ? 401 : 403, r.text);
      if (!allow) assert.equal(r.body.error.code, 'EINSECURE');
      const local = await api(`http://127.0.0.1:${port}`, 'POST', '/api/login', { body: { user: 'alice', password: 'some-password' } });
      assert.equal(local.status, 401, 'loopback is accepted (and the user is unknown)');
      await srv.stop();
      srv = undefined;
    }
  });
});

describe('server api: failed logins behind a reverse proxy (--trust-proxy)', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let srv: ServeProcess;
  let admin: string;
  const alice = unique('alice');
  const pw = password();
  /** A login through the proxy (127.0.0.1, trusted) for the client `xff` names. */
  const viaProxy = (xff: string, user: string, pass: string) => api(srv.url, 'POST', '/api/login', { body: { user, password: pass }, headers: { 'X-Forwarded-For': xff }, localAddress: '127.0.0.1' });

  before(async () => {
    dir = tempDir('api-proxy');
    srv = await startServe(dir.path, ['--trust-proxy', '127.0.0.1', '--trust-proxy', '10.0.0.0/8', '--max-failed-logins-per-name', '3']);
    admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
    assert.equal((await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user: alice, password: pw } })).status, 201);
  });
  after(async () => {
    await srv?.stop();
    await dir?.cleanup();
  });

  it('20 anonymous failures from one client lock that client only: everyone else behind the proxy still logs in', async () => {
    for (let i = 0; i < 20; i++) assert.equal((await viaProxy('203.0.113.7', unique('nobody'), 'wrong-password')).status, 401, `failure ${i + 1}`);
    const locked = await viaProxy('203.0.113.7', alice, pw);
    assert.equal(locked.status, 429, locked.text);
    // the client cannot choose another address: entries left of the one the proxy appended are its own words
    assert.equal((await viaProxy('198.51.100.9, 203.0.113.7', alice, pw)).status, 429);
    // through a second trusted proxy (10.1.2.3) it is still the same client
    assert.equal((await viaProxy('203.0.113.7, 10.1.2.3', alice, pw)).status, 429);
    // another client behind the same proxy
    const ok = await viaProxy('198.51.100.9', alice, pw);
    assert.equal(ok.status, 200, ok.text);
    // a peer that is not a trusted proxy is itself the client, whatever it sends
    const direct = await api(srv.url, 'POST', '/api/login', { body: { user: alice, password: pw }, headers: { 'X-Forwarded-For': '203.0.113.7' }, localAddress: '127.0.0.2' });
    assert.equal(direct.status, 200, direct.text);
    const audit = await api(srv.url, 'GET', `/api/admin/audit?action=login&actor=${alice}`, { token: admin });
    assert.deepEqual(audit.body.entries.map((e: { address: string }) => e.address).sort(), ['127.0.0.2', '198.51.100.9']);
  });

  it('failures of a name from one address lock that name from that address only; the right password from another address works', async () => {
    for (let i = 0; i < 5; i++) assert.equal((await viaProxy('203.0.113.20', alice, `wrong-${i}-password`)).status, 401);
    assert.equal((await viaProxy('203.0.113.20', alice, pw)).status, 429, 'locked from that address, even with the right password');
    const other = await viaProxy('198.51.100.30', alice, pw);
    assert.equal(other.status, 200, other.text);
  });

  it('failures of a name from many addresses slow its checks down but never refuse the right password from a fresh address', async () => {
    const bob = unique('bob');
    const bobPw = password();
    assert.equal((await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user: bob, password: bobPw } })).status, 201);
    for (let i = 0; i < 3; i++) assert.equal((await viaProxy(`203.0.113.${100 + i}`, bob, 'wrong-password')).status, 401);
    // past the per-name threshold: guesses from fresh addresses and the right password at once
    const answers = await Promise.all([
      viaProxy('203.0.113.110', bob, 'wrong-password'),
      viaProxy('198.51.100.50', bob, bobPw),
      viaProxy('203.0.113.111', bob, 'wrong-password'),
    ]);
    assert.deepEqual(answers.map((a) => a.status), [401, 200, 401]);
    const audit = await api(srv.url, 'GET', `/api/admin/audit?action=login.fail&actor=${bob}`, { token: admin });
    const slowed = audit.body.entries.filter((e: { detail: { slowedMs?: number } }) => (e.detail.slowedMs ?? 0) > 0);
    assert.ok(slowed.length >= 2, `failures past the threshold slow the name down: ${audit.text}`);
  });

  it('--trust-proxy refuses what is not an address or a CIDR', async () => {
    const r = runMedv(['serve', '--root', join(dir.path, 'r2'), '--port', '0', '--trust-proxy', '10.0.0.0/33']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^medv: --trust-proxy must be an IP address or a CIDR .*\[EINVAL_ARG\]\n$/);
  });
});
