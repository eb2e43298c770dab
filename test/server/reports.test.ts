/**
 * Client reports against real `medv serve` processes on SQLite and PostgreSQL, as a hostile user
 * sends them (issue 18 item 15: any user could add rows until `medv admin clients` failed):
 * reports only from a client the user was granted keys on and only for workspaces the user is
 * entitled to, at most N clients and M rows per user, and the admin side a page at a time.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { generateClientKeyPair } from '../../src/api/keyrelease.js';
import { runMedv, tempDir } from '../helpers/cli.js';
import { type ServeProcess, startServe } from './helpers.js';
import { BACKENDS, api, dbArgs, password, stopPostgres, unique } from './accounts-helpers.js';

after(() => stopPostgres());

for (const backend of BACKENDS) {
  describe(`client reports are bounded on ${backend}`, function () {
    this.timeout(120_000);
    let dir: ReturnType<typeof tempDir>;
    let srv: ServeProcess;
    let admin: string;
    const mallory = unique('mallory');
    const zed = unique('zed');
    const ann = unique('ann');
    const tokens: Record<string, string> = {};
    const at = () => new Date().toISOString();
    const report = (user: string, client: string, workspaces: string[]) =>
      api(srv.url, 'POST', '/api/reports', { token: tokens[user], body: { client, reports: workspaces.map((workspace) => ({ workspace, version: 1, state: 'running', at: at() })) } });
    /** A grant registers the client (the images have no keys: 409 ENOKEY, the client is registered all the same). */
    const grant = async (user: string, client: string, workspace = 'desk') => {
      const pair = generateClientKeyPair();
      try {
        return await api(srv.url, 'POST', '/api/workspaces/grant', { token: tokens[user], body: { workspace, client, clientKey: pair.publicKey.toString('base64') } });
      } finally {
        pair.dispose();
      }
    };
    const rows = async () => {
      const r = await api(srv.url, 'GET', '/api/admin/clients?limit=1000', { token: admin });
      assert.equal(r.status, 200, r.text);
      return r.body.clients as { client: string; user: string; workspace: string }[];
    };

    before(async () => {
      dir = tempDir(`reports-${backend}`);
      const db = await dbArgs(backend, 'reports');
      srv = await startServe(dir.path, [...db.args, '--max-clients-per-user', '3', '--max-reports-per-user', '4']);
      admin = readFileSync(srv.adminTokenFile, 'utf8').trim();
      for (const [user, groups] of [[mallory, ['staff']], [zed, ['staff']], [ann, []]] as const) {
        const pw = password();
        assert.equal((await api(srv.url, 'POST', '/api/admin/users', { token: admin, body: { user, password: pw, groups } })).status, 201);
        tokens[user] = (await api(srv.url, 'POST', '/api/login', { body: { user, password: pw } })).body.token;
      }
      const policy = { name: unique('p'), groups: ['staff'], workspaces: ['desk', 'lab2', 'side'].map((name) => ({ name, image: `img-${name}` })) };
      assert.equal((await api(srv.url, 'POST', '/api/admin/policies', { token: admin, body: policy })).status, 201);
    });
    after(async () => {
      await srv?.stop();
      await dir?.cleanup();
    });

    it('reports are taken only from a client the user was granted keys on, and only for workspaces the user is entitled to', async () => {
      const none = await report(mallory, 'pc-x', ['desk']);
      assert.equal(none.status, 403, none.text);
      assert.equal(none.body.error.code, 'EFORBIDDEN');
      assert.match(none.body.error.message, /client pc-x has no grant for user/);
      assert.equal((await grant(mallory, 'm1')).status, 409, 'no keys, but entitled: the client is registered');
      const ok = await report(mallory, 'm1', ['desk', 'elsewhere', 'lab2']);
      assert.equal(ok.status, 200, ok.text);
      assert.deepEqual(ok.body, { stored: 2, refused: [{ index: 1, workspace: 'elsewhere', reason: 'not entitled' }] });
      // ann is entitled to nothing: no grant, and mallory's client is not hers
      assert.equal((await grant(ann, 'a1')).status, 403);
      assert.equal((await report(ann, 'm1', ['desk'])).status, 403);
      assert.deepEqual((await rows()).map((r) => [r.client, r.user, r.workspace]), [['m1', mallory, 'desk'], ['m1', mallory, 'lab2']]);
    });

    it('a flood from one user stays bounded: clients per user, rows per user, and made-up client ids are refused', async () => {
      for (const c of ['m2', 'm3', 'm4', 'm5']) assert.equal((await grant(mallory, c)).status, 409);
      // only the 3 most recently granted clients remain hers; m1's reports went with it
      assert.equal((await report(mallory, 'm1', ['desk'])).status, 403);
      for (const c of ['m3', 'm4', 'm5']) assert.equal((await report(mallory, c, ['desk', 'lab2', 'side'])).status, 200);
      for (let batch = 0; batch < 5; batch++) {
        const flood = await Promise.all(Array.from({ length: 10 }, (_, i) => report(mallory, `fake-${batch * 10 + i}`, ['desk'])));
        assert.ok(flood.every((r) => r.status === 403));
      }
      const hers = (await rows()).filter((r) => r.user === mallory);
      assert.equal(hers.length, 4, `at most 4 rows for one user: ${JSON.stringify(hers)}`);
      assert.ok(hers.every((r) => ['m3', 'm4', 'm5'].includes(r.client)));
      const audit = await api(srv.url, 'GET', `/api/admin/audit?action=reports.refused&actor=${mallory}`, { token: admin });
      assert.ok(audit.body.entries.some((e: { target: string }) => e.target === 'fake-0'), 'refusals are audited');
    });

    it('medv admin clients pages through every row: --limit, --after, --all; the API refuses a bad limit or cursor', async () => {
      for (const c of ['z1', 'z2']) {
        assert.equal((await grant(zed, c)).status, 409);
        assert.equal((await report(zed, c, ['desk', 'lab2'])).status, 200);
      }
      const all = (await rows()).map((r) => `${r.client}/${r.user}/${r.workspace}`);
      assert.equal(all.length, 8);
      assert.deepEqual(all, [...all].sort(), 'in (client, user, workspace) order');
      const medv = (args: string[]) => runMedv(['admin', 'clients', '--server', srv.url, '--token-file', srv.adminTokenFile, ...args]);
      const seen: string[] = [];
      let after: string | null = null;
      for (let page = 0; page < 10; page++) {
        const r = medv(['--json', '--limit', '3', ...(after ? ['--after', after] : [])]);
        assert.equal(r.code, 0, r.stderr);
        const out = JSON.parse(r.stdout) as { clients: { client: string; user: string; workspace: string }[]; next: string | null };
        assert.ok(out.clients.length <= 3);
        seen.push(...out.clients.map((x) => `${x.client}/${x.user}/${x.workspace}`));
        after = out.next;
        if (!after) break;
      }
      assert.deepEqual(seen, all, 'the pages hold every row once, in order');
      const every = JSON.parse(medv(['--json', '--all', '--limit', '2']).stdout);
      assert.equal(every.clients.length, 8);
      assert.equal(every.next, null);
      const text = medv(['--limit', '2']);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /^CLIENT\s+USER\s+WORKSPACE/);
      assert.match(text.stdout, /\nmore: --after [A-Za-z0-9_-]+\n$/);
      for (const q of ['limit=0', 'limit=1001', 'limit=x', 'after=not-a-cursor', `after=${Buffer.from('[1,2,3]').toString('base64url')}`]) {
        const r = await api(srv.url, 'GET', `/api/admin/clients?${q}`, { token: admin });
        assert.equal(r.status, 400, `${q}: ${r.text}`);
      }
      const bad = medv(['--limit', '0']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /limit must be a whole number from 1 to 1000/);
    });
  });
}
