/**
 * Accounts changed in the console, in a real browser against a real `medv serve`: add a user, then
 * disable them (their token stops working, they cannot log in), enable, reset the password, set
 * groups and role (a new administrator signs in), revoke every token, delete; each audited with the
 * administrator's name. The signed-in administrator cannot disable, demote or delete themselves.
 */
import assert from 'node:assert/strict';
import { api } from '../accounts-helpers.js';
import { consoleSuite, signIn } from './fixture.js';

describe('console: users', function () {
  this.timeout(180_000);
  const s = consoleSuite('users');
  const login = (user: string, password: string) => api(s.w.srv.url, 'POST', '/api/login', { body: { user, password } });
  const submit = async (name: string | RegExp) => {
    s.page.once('dialog', (d) => { void d.accept(); });
    await Promise.all([s.page.waitForURL(/\?(done|deleted)=/), s.page.getByRole('button', { name }).click()]);
  };

  it('adds a user, then disables them: their token stops working and they cannot log in; enabled, they can', async () => {
    await s.page.goto(`${s.w.srv.url}/console/users`);
    await s.page.getByText('Add a user').click();
    await s.page.getByLabel('User name').fill('dora');
    await s.page.getByLabel('Password (8 to 1024 bytes)').fill('dora-password-1');
    await s.page.getByLabel('Groups (space or comma separated)').fill('finance lab-team');
    await s.check('add');
    await submit('Add the user');
    assert.equal(new URL(s.page.url()).pathname, '/console/users/dora');
    assert.equal(await s.page.getByRole('status').textContent(), 'User added.');
    const first = await login('dora', 'dora-password-1');
    assert.equal(first.status, 200);
    await submit('Disable');
    assert.match((await s.page.getByRole('status').textContent())!, /^Disabled/);
    await s.check('disabled');
    const refused = await api(s.w.srv.url, 'GET', '/api/whoami', { token: first.body.token });
    assert.equal(refused.status, 403, 'her token stopped working (403: a client ends its cached grants on it)');
    assert.match(refused.body.error.message, /the account dora is disabled/);
    assert.equal((await login('dora', 'dora-password-1')).status, 401);
    await submit('Enable');
    assert.equal((await login('dora', 'dora-password-1')).status, 200);
  });

  it('resets the password, sets groups and role (the new administrator signs in), revokes tokens, deletes', async () => {
    await s.page.goto(`${s.w.srv.url}/console/users/dora`);
    const old = (await login('dora', 'dora-password-1')).body.token;
    await s.page.getByLabel('New password').fill('dora-password-2');
    await submit('Reset the password');
    assert.equal((await api(s.w.srv.url, 'GET', '/api/whoami', { token: old })).status, 401, 'a reset revokes every token');
    assert.equal((await login('dora', 'dora-password-2')).status, 200);
    await s.page.getByLabel('Groups (space or comma separated)').fill('ops');
    await submit('Set the groups');
    assert.deepEqual((await api(s.w.srv.url, 'GET', '/api/admin/users/dora', { token: s.w.adminToken })).body.groups, ['ops']);
    await s.page.getByLabel('Role', { exact: true }).selectOption('admin');
    await submit('Set the role');
    const other = await s.browser.newContext();
    const p2 = await other.newPage();
    await signIn(p2, s.w.srv.url, 'dora', 'dora-password-2');
    assert.equal(new URL(p2.url()).pathname, '/console/', 'dora may use the console now');
    await other.close();
    const t = (await login('dora', 'dora-password-2')).body.token;
    await submit('Revoke all tokens');
    assert.equal((await api(s.w.srv.url, 'GET', '/api/whoami', { token: t })).status, 401);
    await submit('Delete');
    assert.equal(new URL(s.page.url()).pathname, '/console/users');
    assert.equal((await api(s.w.srv.url, 'GET', '/api/admin/users/dora', { token: s.w.adminToken })).status, 404);
    const audit = await api(s.w.srv.url, 'GET', '/api/admin/audit?action=user.*&actor=ada.admin', { token: s.w.adminToken });
    assert.deepEqual(audit.body.entries.map((e: { action: string }) => e.action).reverse(),
      ['user.add', 'user.disable', 'user.enable', 'user.passwd', 'user.groups', 'user.role', 'user.revoke', 'user.delete']);
  });

  it('the administrator signed in cannot disable, demote or delete their own account', async () => {
    await s.page.goto(`${s.w.srv.url}/console/users/${s.w.admin.user}`);
    for (const name of ['Disable', 'Delete', 'Set the role']) assert.equal(await s.page.getByRole('button', { name, exact: true }).isDisabled(), true, name);
    const csrf = await s.page.locator('input[name="_csrf"]').first().inputValue();
    const r = await s.page.request.post(`${s.w.srv.url}/console/users/${s.w.admin.user}/disable`, { form: { _csrf: csrf }, headers: { 'Sec-Fetch-Site': 'same-origin' } });
    assert.equal(r.status(), 400, 'refused on the server too');
    await s.check('self');
  });
});
