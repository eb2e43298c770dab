/**
 * Lock, wipe, revoke on a real `medv serve` (controls.ts), through /api/: an order for a client or
 * a user answers that client's next grant instead of the keys (423 ELOCKED, 410 EWIPED, 403 EDENIED
 * for revoke) with the administrator's reason; the strongest order wins; a user's revoke also ends
 * their tokens; clearing lets the next grant through; orders are checked at the edge; a client's
 * confirmation of a wipe is kept; everything is audited.
 */
import assert from 'node:assert/strict';
import { generateClientKeyPair } from '../../src/api/keyrelease.js';
import { tempDir } from '../helpers/cli.js';
import { api, password } from './accounts-helpers.js';
import { type World, addUser, makeWorld, packLab } from './console/fixture.js';

describe('server: lock, wipe, revoke', function () {
  this.timeout(120_000);
  const work = tempDir('controls');
  let w: World;
  let token = '';
  const pair = generateClientKeyPair();
  const grant = (client = w.alice.client, workspace = 'desk') => api(w.srv.url, 'POST', '/api/workspaces/grant', { token, body: { workspace, client, clientKey: pair.publicKey.toString('base64') } });
  const order = (body: Record<string, unknown>) => api(w.srv.url, 'POST', '/api/admin/controls', { token: w.adminToken, body });
  const clear = (body: Record<string, unknown>) => api(w.srv.url, 'POST', '/api/admin/controls/clear', { token: w.adminToken, body });
  const login = async () => { token = (await api(w.srv.url, 'POST', '/api/login', { body: { user: w.alice.user, password: w.alice.password } })).body.token; };

  before(async () => {
    w = await makeWorld('sqlite', packLab(work.path), 'controls');
    await login();
  });
  after(async () => {
    pair.dispose();
    await w?.cleanup();
    await work.cleanup();
  });

  it('a client lock answers that client\'s grant with 423 ELOCKED and the reason, and only that client\'s', async () => {
    assert.equal((await grant()).status, 200);
    const r = await order({ action: 'lock', scope: 'client', subject: w.alice.client, reason: 'reported stolen on 2 Dec' });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual([r.body.action, r.body.scope, r.body.subject, r.body.workspace, r.body.reason], ['lock', 'client', w.alice.client, null, 'reported stolen on 2 Dec']);
    const g = await grant();
    assert.equal(g.status, 423);
    assert.equal(g.body.error.code, 'ELOCKED');
    assert.match(g.body.error.message, /locked for client alice-laptop by the administrator: reported stolen on 2 Dec$/);
    assert.equal(g.body.sealed, undefined);
    assert.equal((await grant('alice-desktop')).status, 200, 'another client of the same user is not locked');
  });

  it('the strongest order answers: wipe over lock, revoke over both; a user\'s revoke ends their tokens too', async () => {
    assert.equal((await order({ action: 'wipe', scope: 'client', subject: w.alice.client, workspace: 'desk', reason: 'wipe it' })).status, 201);
    const g = await grant();
    assert.equal(g.status, 410);
    assert.equal(g.body.error.code, 'EWIPED');
    assert.match(g.body.error.message, /: wipe it$/);
    assert.equal((await grant(w.alice.client, 'other')).status, 423, 'the wipe is for desk only; the lock is for every workspace');
    const rv = await order({ action: 'revoke', scope: 'user', subject: w.alice.user, reason: 'left the company' });
    assert.equal(rv.status, 201);
    assert.ok(rv.body.tokensRevoked >= 1, 'her live tokens');
    assert.equal((await grant()).status, 401, 'her token no longer works');
    await login();
    const g2 = await grant('alice-desktop');
    assert.equal(g2.status, 403);
    assert.match(g2.body.error.message, /revoked for user alice by the administrator: left the company$/);
  });

  it('clearing ("unlock") lets the next grant through; the console and the API list the same orders', async () => {
    const list = await api(w.srv.url, 'GET', `/api/admin/controls?scope=client&subject=${w.alice.client}`, { token: w.adminToken });
    assert.deepEqual(list.body.controls.map((c: { action: string }) => c.action).sort(), ['lock', 'wipe']);
    assert.equal((await clear({ scope: 'user', subject: w.alice.user })).body.cleared, 1);
    assert.equal((await clear({ scope: 'client', subject: w.alice.client })).body.cleared, 2);
    assert.equal((await grant()).status, 200);
  });

  it('checks orders at the edge and keeps a client\'s word that it wiped', async () => {
    for (const body of [
      { action: 'explode', scope: 'client', subject: 'c1', reason: 'x' }, { action: 'lock', scope: 'planet', subject: 'c1', reason: 'x' },
      { action: 'lock', scope: 'client', subject: '../c1', reason: 'x' }, { action: 'lock', scope: 'client', subject: 'c1', reason: '' },
      { action: 'lock', scope: 'client', subject: 'c1', reason: 'x'.repeat(513) }, { action: 'lock', scope: 'client', subject: 'c1', workspace: 'a/b', reason: 'x' },
    ]) assert.equal((await order(body)).status, 400, JSON.stringify(body).slice(0, 80));
    assert.equal((await api(w.srv.url, 'POST', '/api/admin/controls', { body: { action: 'lock', scope: 'client', subject: 'c1', reason: 'x' } })).status, 401);
    const done = await api(w.srv.url, 'POST', '/api/workspaces/wiped', { token, body: { client: w.alice.client, workspace: 'desk' } });
    assert.equal(done.status, 200, done.text);
    const list = await api(w.srv.url, 'GET', `/api/admin/controls?scope=client&subject=${w.alice.client}`, { token: w.adminToken });
    assert.deepEqual(list.body.wipes.map((x: { client: string; user: string; workspace: string }) => [x.client, x.user, x.workspace]), [[w.alice.client, 'alice', 'desk']]);
    const audit = await api(w.srv.url, 'GET', '/api/admin/audit?action=client.*', { token: w.adminToken });
    assert.deepEqual(audit.body.entries.map((e: { action: string }) => e.action).reverse(),
      ['client.lock', 'client.wipe', 'client.revoke', 'client.unlock', 'client.unlock', 'client.wiped']);
  });

  it('IDOR between users: another user can neither confirm a wipe of alice\'s client, report from it, nor read or give orders', async () => {
    const pw = password();
    await addUser(w.srv, w.adminToken, 'mallory', pw, []);
    const mallory = (await api(w.srv.url, 'POST', '/api/login', { body: { user: 'mallory', password: pw } })).body.token;
    const before = await api(w.srv.url, 'GET', `/api/admin/controls?scope=client&subject=${w.alice.client}`, { token: w.adminToken });
    const fake = await api(w.srv.url, 'POST', '/api/workspaces/wiped', { token: mallory, body: { client: w.alice.client, workspace: 'desk' } });
    assert.equal(fake.status, 403, fake.text);
    assert.equal(fake.body.error.code, 'EFORBIDDEN');
    const report = await api(w.srv.url, 'POST', '/api/reports', { token: mallory, body: { client: w.alice.client, reports: [{ workspace: 'desk', version: 1, state: 'running', at: new Date().toISOString() }] } });
    assert.equal(report.status, 403, report.text);
    for (const [method, path, body] of [
      ['GET', `/api/admin/controls?scope=client&subject=${w.alice.client}`, undefined], ['GET', `/api/admin/clients/history?client=${w.alice.client}`, undefined],
      ['GET', '/api/admin/clients?user=alice', undefined], ['GET', '/api/admin/audit?user=alice', undefined],
      ['POST', '/api/admin/controls/clear', { scope: 'client', subject: w.alice.client }], ['POST', '/api/admin/controls', { action: 'wipe', scope: 'user', subject: 'alice', reason: 'x' }],
    ] as const) assert.equal((await api(w.srv.url, method, path, { token: mallory, ...(body ? { body } : {}) })).status, 403, `${method} ${path}`);
    const after = await api(w.srv.url, 'GET', `/api/admin/controls?scope=client&subject=${w.alice.client}`, { token: w.adminToken });
    assert.deepEqual(after.body, before.body, 'no order and no confirmation changed');
  });
});
