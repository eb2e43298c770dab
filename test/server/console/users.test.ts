/**
 * Accounts changed in the console, in a real browser against a real `medv serve`: add a user, then
 * disable them (their token stops working, they cannot log in), enable, reset the password, set
 * groups and role (a new administrator signs in), revoke every token, delete; each audited with the
 * administrator's name. The signed-in administrator cannot disable, demote or delete themselves.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { tempDir } from '../../helpers/cli.js';
import { launchBrowser, seriousViolations, shotsDir } from '../../helpers/browser.js';
import { api } from '../accounts-helpers.js';
import { type World, makeWorld, packLab, signIn } from './fixture.js';

describe('console: users', function () {
  this.timeout(180_000);
  let browser: Browser;
  let w: World;
  let ctx: BrowserContext;
  let page: Page;
  const work = tempDir('console-users');
  const shots = shotsDir('users');
  let n = 0;
  const check = async (name: string) => {
    const bad = await seriousViolations(page);
    assert.deepEqual(bad, [], `${name}: ${JSON.stringify(bad, null, 1)}`);
    await page.screenshot({ path: join(shots, `${String(++n).padStart(2, '0')}-${name}.png`), fullPage: true });
  };
  const login = (user: string, password: string) => api(w.srv.url, 'POST', '/api/login', { body: { user, password } });
  const submit = async (name: string | RegExp) => {
    page.once('dialog', (d) => { void d.accept(); });
    await Promise.all([page.waitForURL(/\?(done|deleted)=/), page.getByRole('button', { name }).click()]);
  };

  before(async () => {
    browser = await launchBrowser();
    w = await makeWorld('sqlite', packLab(work.path), 'users');
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

  it('adds a user, then disables them: their token stops working and they cannot log in; enabled, they can', async () => {
    await page.goto(`${w.srv.url}/console/users`);
    await page.getByText('Add a user').click();
    await page.getByLabel('User name').fill('dora');
    await page.getByLabel('Password (8 to 1024 bytes)').fill('dora-password-1');
    await page.getByLabel('Groups (space or comma separated)').fill('finance lab-team');
    await check('add');
    await submit('Add the user');
    assert.equal(new URL(page.url()).pathname, '/console/users/dora');
    assert.equal(await page.getByRole('status').textContent(), 'User added.');
    const first = await login('dora', 'dora-password-1');
    assert.equal(first.status, 200);
    await submit('Disable');
    assert.match((await page.getByRole('status').textContent())!, /^Disabled/);
    await check('disabled');
    assert.equal((await api(w.srv.url, 'GET', '/api/whoami', { token: first.body.token })).status, 401, 'her token stopped working');
    assert.equal((await login('dora', 'dora-password-1')).status, 401);
    await submit('Enable');
    assert.equal((await login('dora', 'dora-password-1')).status, 200);
  });

  it('resets the password, sets groups and role (the new administrator signs in), revokes tokens, deletes', async () => {
    await page.goto(`${w.srv.url}/console/users/dora`);
    const old = (await login('dora', 'dora-password-1')).body.token;
    await page.getByLabel('New password').fill('dora-password-2');
    await submit('Reset the password');
    assert.equal((await api(w.srv.url, 'GET', '/api/whoami', { token: old })).status, 401, 'a reset revokes every token');
    assert.equal((await login('dora', 'dora-password-2')).status, 200);
    await page.getByLabel('Groups (space or comma separated)').fill('ops');
    await submit('Set the groups');
    assert.deepEqual((await api(w.srv.url, 'GET', '/api/admin/users/dora', { token: w.adminToken })).body.groups, ['ops']);
    await page.getByLabel('Role', { exact: true }).selectOption('admin');
    await submit('Set the role');
    const other = await browser.newContext();
    const p2 = await other.newPage();
    await signIn(p2, w.srv.url, 'dora', 'dora-password-2');
    assert.equal(new URL(p2.url()).pathname, '/console/', 'dora may use the console now');
    await other.close();
    const t = (await login('dora', 'dora-password-2')).body.token;
    await submit('Revoke all tokens');
    assert.equal((await api(w.srv.url, 'GET', '/api/whoami', { token: t })).status, 401);
    await submit('Delete');
    assert.equal(new URL(page.url()).pathname, '/console/users');
    assert.equal((await api(w.srv.url, 'GET', '/api/admin/users/dora', { token: w.adminToken })).status, 404);
    const audit = await api(w.srv.url, 'GET', '/api/admin/audit?action=user.*&actor=ada.admin', { token: w.adminToken });
    assert.deepEqual(audit.body.entries.map((e: { action: string }) => e.action).reverse(),
      ['user.add', 'user.disable', 'user.enable', 'user.passwd', 'user.groups', 'user.role', 'user.revoke', 'user.delete']);
  });

  it('the administrator signed in cannot disable, demote or delete their own account', async () => {
    await page.goto(`${w.srv.url}/console/users/${w.admin.user}`);
    for (const name of ['Disable', 'Delete', 'Set the role']) assert.equal(await page.getByRole('button', { name, exact: true }).isDisabled(), true, name);
    const csrf = await page.locator('input[name="_csrf"]').first().inputValue();
    const r = await page.request.post(`${w.srv.url}/console/users/${w.admin.user}/disable`, { form: { _csrf: csrf }, headers: { 'Sec-Fetch-Site': 'same-origin' } });
    assert.equal(r.status(), 400, 'refused on the server too');
    await check('self');
  });
});
