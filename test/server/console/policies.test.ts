/**
 * Writing policies in the console, in a real browser against a real `medv serve`: a new policy
 * through the form with a bad field (the error at that field), then a good one (the preview lists
 * the users and workspaces it reaches), published; the JSON editor's errors (not JSON; a schema
 * error by path); editing a policy in force shows the clients a change reaches; unpublishing
 * shows who loses it, then entitles nobody (the API and a grant agree). axe on every s.page.
 */
import assert from 'node:assert/strict';
import { generateClientKeyPair } from '../../../src/api/keyrelease.js';
import { api } from '../accounts-helpers.js';
import { consoleSuite } from './fixture.js';

describe('console: policy editor, preview, publish and unpublish', function () {
  this.timeout(180_000);
  const s = consoleSuite('policies');
  const userToken = async (user: string, pw: string) => (await api(s.w.srv.url, 'POST', '/api/login', { body: { user, password: pw } })).body.token as string;

  it('a new policy with a bad field shows the error at that field; fixed, the preview lists who it reaches; published, alice gets it', async () => {
    await s.page.goto(`${s.w.srv.url}/console/policies`);
    await s.page.getByRole('link', { name: 'New policy' }).click();
    await s.check('new');
    await s.page.getByLabel('Name', { exact: true }).fill('ops');
    await s.page.getByLabel('Users (one per line)').fill('alice');
    await s.page.getByLabel('Workspace name').fill('ops-desk');
    await s.page.getByLabel('Image').fill('lab');
    await s.page.getByLabel('Memory (MiB)').fill('lots');
    await s.page.getByRole('button', { name: 'Preview who this reaches' }).first().click();
    await s.page.waitForLoadState('load');
    const memory = s.page.getByLabel('Memory (MiB)');
    assert.equal(await memory.getAttribute('aria-invalid'), 'true', 'the memory field is marked');
    assert.equal(await memory.inputValue(), 'lots', 'what was typed is kept');
    assert.match((await s.page.locator('#e-ws_memory').textContent())!, /^\/workspaces\/0\/memory: /);
    assert.equal(await s.page.locator('[aria-invalid="true"]').count(), 1, 'only that field');
    assert.equal(await s.page.getByLabel('Workspace name').inputValue(), 'ops-desk', 'the rest of the form is kept');
    await s.check('field-error');
    await memory.fill('1024');
    await s.page.getByRole('button', { name: 'Preview who this reaches' }).first().click();
    await s.page.waitForLoadState('load');
    assert.equal(await s.page.getByRole('heading', { level: 1 }).textContent(), 'Publish policy ops as version 1?');
    assert.equal((await s.page.locator('h3:text("Users who gain it") + p').textContent())?.trim(), 'alice');
    const row = (await s.page.locator('tbody tr').first().locator('td').allTextContents()).map((s) => s.trim());
    assert.deepEqual(row, ['alice', 'ops-desk', 'gained', 'lab', 'ops']);
    await s.check('preview-new');
    await s.page.getByRole('button', { name: 'Publish version 1' }).click();
    await s.page.waitForURL(/\/console\/policies\/ops\?published=1$/);
    assert.match((await s.page.getByRole('status').textContent())!, /Version 1 published/);
    await s.check('published');
    const mine = await api(s.w.srv.url, 'GET', '/api/policies', { token: await userToken(s.w.alice.user, s.w.alice.password) });
    assert.ok(mine.body.policies.some((p: { name: string; version: number }) => p.name === 'ops' && p.version === 1));
  });

  it('the JSON editor names what is wrong: not JSON (with line and column), or the schema\'s JSON path', async () => {
    await s.page.goto(`${s.w.srv.url}/console/new-policy`);
    const json = s.page.getByLabel('The whole document');
    await json.fill('{\n  "name": "x",\n  oops\n}');
    await s.page.getByRole('button', { name: 'Preview who this reaches' }).nth(1).click();
    await s.page.waitForLoadState('load');
    assert.equal(await json.getAttribute('aria-invalid'), 'true');
    assert.match((await s.page.locator('#e-json').textContent())!, /not JSON: .*line 3/);
    await json.fill(JSON.stringify({ name: 'x', users: ['alice'], workspaces: [{ name: 'w', image: 'lab', mode: 'sometimes' }] }, null, 2));
    await s.page.getByRole('button', { name: 'Preview who this reaches' }).nth(1).click();
    await s.page.waitForLoadState('load');
    assert.match((await s.page.locator('#e-json').textContent())!, /^\/workspaces\/0\/mode: must be one of "persistent", "revertible"/);
    await s.check('json-error');
  });

  it('editing a policy in force previews the clients it reaches; unpublishing shows who loses it and then entitles nobody', async () => {
    await s.page.goto(`${s.w.srv.url}/console/policies/finance`);
    await s.page.getByRole('link', { name: 'Edit' }).click();
    await s.check('edit');
    await s.page.getByLabel('Users (one per line)').fill('');
    await s.page.getByLabel('Memory (MiB)').fill('2048');
    await s.page.getByRole('button', { name: 'Preview who this reaches' }).first().click();
    await s.page.waitForLoadState('load');
    assert.equal((await s.page.locator('h3:text("Users who lose it") + p').textContent())?.trim(), 'carol@example.org');
    const clients = s.page.locator('table').last().locator('tbody tr');
    assert.deepEqual((await clients.first().locator('td').allTextContents()).map((s) => s.trim()), [s.w.alice.client, 'alice', 'desk', 'gets the new settings']);
    const diff = (await s.page.locator('ul.diff li').allTextContents()).map((s) => s.replace(/\s+/g, ' ').trim());
    assert.ok(diff.includes('removed /users: ["carol@example.org"]'), diff.join('; '));
    assert.equal(diff.length, 2, `only what the form changed: ${diff.join('; ')}`);
    assert.ok(diff.includes('changed /workspaces[desk]/memory: 1024 → 2048'), diff.join('; '));
    await s.check('preview-edit');
    await s.page.getByRole('button', { name: 'Publish version 3' }).click();
    await s.page.waitForURL(/\/console\/policies\/finance\?published=3$/);

    await s.page.getByRole('link', { name: 'Unpublish…' }).click();
    assert.deepEqual((await s.page.locator('h3:text("Users who lose it") + p').textContent())?.split(', ').sort(), ['alice', 'bob']);
    assert.equal((await s.page.locator('table').last().locator('tbody tr td').last().textContent())?.trim(), 'refused (offline it may start until its allowance ends)');
    await s.check('unpublish');
    await s.page.getByRole('button', { name: 'Unpublish finance' }).click();
    await s.page.waitForURL(/\/console\/policies\/finance\?unpublished=4$/);
    assert.equal(await s.page.getByRole('link', { name: 'Edit and publish again' }).count(), 1);
    await s.check('unpublished');
    const token = await userToken(s.w.alice.user, s.w.alice.password);
    const mine = await api(s.w.srv.url, 'GET', '/api/policies', { token });
    assert.ok(!mine.body.policies.some((p: { name: string }) => p.name === 'finance'), 'finance is no longer alice\'s');
    const pair = generateClientKeyPair();
    const grant = await api(s.w.srv.url, 'POST', '/api/workspaces/grant', { token, body: { workspace: 'desk', client: s.w.alice.client, clientKey: pair.publicKey.toString('base64') } });
    pair.dispose();
    assert.equal(grant.status, 403, 'and no key is released for its workspace');
    const audit = await api(s.w.srv.url, 'GET', '/api/admin/audit?action=policy.*', { token: s.w.adminToken });
    assert.deepEqual(audit.body.entries.slice(0, 3).map((e: { action: string; actor: string; target: string }) => [e.action, e.actor, e.target]),
      [['policy.unpublish', s.w.admin.user, 'finance'], ['policy.publish', s.w.admin.user, 'finance'], ['policy.publish', s.w.admin.user, 'ops']]);
  });
});
