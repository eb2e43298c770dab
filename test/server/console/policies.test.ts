/**
 * Writing policies in the console, in a real browser against a real `medv serve`: a new policy
 * through the form with a bad field (the error at that field), then a good one (the preview lists
 * the users and workspaces it reaches), published; the JSON editor's errors (not JSON; a schema
 * error by path); editing a policy in force shows the clients a change reaches; unpublishing
 * shows who loses it, then entitles nobody (the API and a grant agree). axe on every page.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { tempDir } from '../../helpers/cli.js';
import { launchBrowser, seriousViolations, shotsDir } from '../../helpers/browser.js';
import { generateClientKeyPair } from '../../../src/api/keyrelease.js';
import { api } from '../accounts-helpers.js';
import { type World, makeWorld, packLab, signIn } from './fixture.js';

describe('console: policy editor, preview, publish and unpublish', function () {
  this.timeout(180_000);
  let browser: Browser;
  let w: World;
  let ctx: BrowserContext;
  let page: Page;
  const work = tempDir('console-policies');
  const shots = shotsDir('policies');
  let n = 0;
  const check = async (name: string) => {
    const bad = await seriousViolations(page);
    assert.deepEqual(bad, [], `${name}: ${JSON.stringify(bad, null, 1)}`);
    await page.screenshot({ path: join(shots, `${String(++n).padStart(2, '0')}-${name}.png`), fullPage: true });
  };
  const userToken = async (user: string, pw: string) => (await api(w.srv.url, 'POST', '/api/login', { body: { user, password: pw } })).body.token as string;

  before(async () => {
    browser = await launchBrowser();
    w = await makeWorld('sqlite', packLab(work.path), 'policies');
    ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await ctx.newPage();
    await signIn(page, w.srv.url, w.admin.user, w.admin.password);
    console.log(`      screenshots: ${shots}`);
  });
  after(async () => {
    await ctx?.close();
    await browser?.close();
    await w?.cleanup();
    await work.cleanup();
  });

  it('a new policy with a bad field shows the error at that field; fixed, the preview lists who it reaches; published, alice gets it', async () => {
    await page.goto(`${w.srv.url}/console/policies`);
    await page.getByRole('link', { name: 'New policy' }).click();
    await check('new');
    await page.getByLabel('Name', { exact: true }).fill('ops');
    await page.getByLabel('Users (one per line)').fill('alice');
    await page.getByLabel('Workspace name').fill('ops-desk');
    await page.getByLabel('Image').fill('lab');
    await page.getByLabel('Memory (MiB)').fill('lots');
    await page.getByRole('button', { name: 'Preview who this reaches' }).first().click();
    await page.waitForLoadState('load');
    const memory = page.getByLabel('Memory (MiB)');
    assert.equal(await memory.getAttribute('aria-invalid'), 'true', 'the memory field is marked');
    assert.equal(await memory.inputValue(), 'lots', 'what was typed is kept');
    assert.match((await page.locator('#e-ws_memory').textContent())!, /^\/workspaces\/0\/memory: /);
    assert.equal(await page.locator('[aria-invalid="true"]').count(), 1, 'only that field');
    assert.equal(await page.getByLabel('Workspace name').inputValue(), 'ops-desk', 'the rest of the form is kept');
    await check('field-error');
    await memory.fill('1024');
    await page.getByRole('button', { name: 'Preview who this reaches' }).first().click();
    await page.waitForLoadState('load');
    assert.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Publish policy ops as version 1?');
    assert.equal((await page.locator('h3:text("Users who gain it") + p').textContent())?.trim(), 'alice');
    const row = (await page.locator('tbody tr').first().locator('td').allTextContents()).map((s) => s.trim());
    assert.deepEqual(row, ['alice', 'ops-desk', 'gained', 'lab', 'ops']);
    await check('preview-new');
    await page.getByRole('button', { name: 'Publish version 1' }).click();
    await page.waitForURL(/\/console\/policies\/ops\?published=1$/);
    assert.match((await page.getByRole('status').textContent())!, /Version 1 published/);
    await check('published');
    const mine = await api(w.srv.url, 'GET', '/api/policies', { token: await userToken(w.alice.user, w.alice.password) });
    assert.ok(mine.body.policies.some((p: { name: string; version: number }) => p.name === 'ops' && p.version === 1));
  });

  it('the JSON editor names what is wrong: not JSON (with line and column), or the schema\'s JSON path', async () => {
    await page.goto(`${w.srv.url}/console/new-policy`);
    const json = page.getByLabel('The whole document');
    await json.fill('{\n  "name": "x",\n  oops\n}');
    await page.getByRole('button', { name: 'Preview who this reaches' }).nth(1).click();
    await page.waitForLoadState('load');
    assert.equal(await json.getAttribute('aria-invalid'), 'true');
    assert.match((await page.locator('#e-json').textContent())!, /not JSON: .*line 3/);
    await json.fill(JSON.stringify({ name: 'x', users: ['alice'], workspaces: [{ name: 'w', image: 'lab', mode: 'sometimes' }] }, null, 2));
    await page.getByRole('button', { name: 'Preview who this reaches' }).nth(1).click();
    await page.waitForLoadState('load');
    assert.match((await page.locator('#e-json').textContent())!, /^\/workspaces\/0\/mode: must be one of "persistent", "revertible"/);
    await check('json-error');
  });

  it('editing a policy in force previews the clients it reaches; unpublishing shows who loses it and then entitles nobody', async () => {
    await page.goto(`${w.srv.url}/console/policies/finance`);
    await page.getByRole('link', { name: 'Edit' }).click();
    await check('edit');
    await page.getByLabel('Users (one per line)').fill('');
    await page.getByLabel('Memory (MiB)').fill('2048');
    await page.getByRole('button', { name: 'Preview who this reaches' }).first().click();
    await page.waitForLoadState('load');
    assert.equal((await page.locator('h3:text("Users who lose it") + p').textContent())?.trim(), 'carol@example.org');
    const clients = page.locator('table').last().locator('tbody tr');
    assert.deepEqual((await clients.first().locator('td').allTextContents()).map((s) => s.trim()), [w.alice.client, 'alice', 'desk', 'gets the new settings']);
    const diff = (await page.locator('ul.diff li').allTextContents()).map((s) => s.replace(/\s+/g, ' ').trim());
    assert.ok(diff.includes('removed /users: ["carol@example.org"]'), diff.join('; '));
    assert.equal(diff.length, 2, `only what the form changed: ${diff.join('; ')}`);
    assert.ok(diff.includes('changed /workspaces[desk]/memory: 1024 → 2048'), diff.join('; '));
    await check('preview-edit');
    await page.getByRole('button', { name: 'Publish version 3' }).click();
    await page.waitForURL(/\/console\/policies\/finance\?published=3$/);

    await page.getByRole('link', { name: 'Unpublish…' }).click();
    assert.deepEqual((await page.locator('h3:text("Users who lose it") + p').textContent())?.split(', ').sort(), ['alice', 'bob']);
    assert.equal((await page.locator('table').last().locator('tbody tr td').last().textContent())?.trim(), 'refused (offline it may start until its allowance ends)');
    await check('unpublish');
    await page.getByRole('button', { name: 'Unpublish finance' }).click();
    await page.waitForURL(/\/console\/policies\/finance\?unpublished=4$/);
    assert.equal(await page.getByRole('link', { name: 'Edit and publish again' }).count(), 1);
    await check('unpublished');
    const token = await userToken(w.alice.user, w.alice.password);
    const mine = await api(w.srv.url, 'GET', '/api/policies', { token });
    assert.ok(!mine.body.policies.some((p: { name: string }) => p.name === 'finance'), 'finance is no longer alice\'s');
    const pair = generateClientKeyPair();
    const grant = await api(w.srv.url, 'POST', '/api/workspaces/grant', { token, body: { workspace: 'desk', client: w.alice.client, clientKey: pair.publicKey.toString('base64') } });
    pair.dispose();
    assert.equal(grant.status, 403, 'and no key is released for its workspace');
    const audit = await api(w.srv.url, 'GET', '/api/admin/audit?action=policy.*', { token: w.adminToken });
    assert.deepEqual(audit.body.entries.slice(0, 3).map((e: { action: string; actor: string; target: string }) => [e.action, e.actor, e.target]),
      [['policy.unpublish', w.admin.user, 'finance'], ['policy.publish', w.admin.user, 'finance'], ['policy.publish', w.admin.user, 'ops']]);
  });
});
