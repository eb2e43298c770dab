/**
 * The console as an attacker sees it, against a real `medv serve` (SQLite) with curl and a real
 * browser: CSRF (no token, another session's token, another site), session fixation (a planted
 * cookie never becomes a session; a new id at every sign-in), cookie flags (HttpOnly,
 * SameSite=Strict, Path, Secure over HTTPS, invisible to page scripts), idle and absolute expiry,
 * logout everywhere, stored and reflected XSS through every field a page shows, clickjacking
 * (headers, and a real cross-origin frame), one account's session against another's, API tokens
 * (a user's and the admin token) on console routes, a non-administrator, plain HTTP from another
 * host, and path traversal in the asset routes.
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import type { Browser } from 'playwright-core';
import { run, tempDir } from '../../helpers/cli.js';
import { launchBrowser, shotsDir } from '../../helpers/browser.js';
import { curl, header, startServe, type ServeProcess } from '../helpers.js';
import { api, password } from '../accounts-helpers.js';
import { type Packed, type World, addUser, makeWorld, packLab, parseCsv, signIn } from './fixture.js';

const HOSTILE = `<img src=x onerror="window.__xss=1">"'><script>window.__xss=2</script></code></pre></td><svg onload="window.__xss=3">`;

/** A console session made with curl: the session cookie and the CSRF token of its forms. */
interface HttpSession { cookie: string; csrf: string }

function csrfIn(html: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  assert.ok(m, 'the page has a CSRF token');
  return m![1];
}

function setCookies(h: string): string[] {
  return [...h.matchAll(/^set-cookie:\s*(.*?)\r?$/gim)].map((m) => m[1]);
}

function cookieNamed(h: string, name: string): string | undefined {
  return setCookies(h).find((c) => c.startsWith(`${name}=`))?.split(';')[0];
}

async function signInHttp(base: string, user: string, pw: string, extra: string[] = []): Promise<HttpSession & { headers: string }> {
  const form = curl([`${base}/console/login`]);
  const pre = cookieNamed(form.headers, 'medv_console_pre')!;
  const r = curl(['-b', pre, ...extra, '--data-urlencode', `_csrf=${csrfIn(form.body.toString())}`, '--data-urlencode', `user=${user}`, '--data-urlencode', `password=${pw}`, `${base}/console/login`]);
  assert.equal(r.status, 303, r.body.toString());
  const cookie = cookieNamed(r.headers, 'medv_console')!;
  const page = curl(['-b', cookie, `${base}/console/`]);
  assert.equal(page.status, 200);
  return { cookie, csrf: csrfIn(page.body.toString()), headers: r.headers };
}

const post = (base: string, path: string, s: Partial<HttpSession>, fields: Record<string, string> = {}, extra: string[] = []) =>
  curl([...(s.cookie ? ['-b', s.cookie] : []), ...extra, '--data-urlencode', `dummy=1`, ...Object.entries(fields).flatMap(([k, v]) => ['--data-urlencode', `${k}=${v}`]), `${base}${path}`]);

/** Every console page (GET), for checks that must hold on all of them. */
const PAGES = ['/console/', '/console/users', '/console/users/alice', '/console/groups', '/console/policies', '/console/policies/finance', '/console/policies/finance/v/1',
  '/console/policies/finance/diff?from=1&to=2', '/console/images', '/console/images/lab', '/console/clients', '/console/clients/alice-laptop', '/console/audit',
  '/console/clients.csv', '/console/audit.csv', '/console/clients/alice-laptop/history.csv'];

describe('console security', function () {
  this.timeout(180_000);
  let browser: Browser;
  let packed: Packed;
  let w: World;
  let base: string;
  const work = tempDir('console-security');
  const shots = shotsDir('security');
  const db = () => new BetterSqlite3(join(w.srv.root, 'medv.db'));

  before(async () => {
    browser = await launchBrowser();
    packed = packLab(work.path);
    w = await makeWorld('sqlite', packed, 'security');
    base = w.srv.url;
    console.log(`      screenshots: ${shots}`);
  });
  after(async () => {
    await browser?.close();
    await w?.cleanup();
    await work.cleanup();
  });

  describe('CSRF', () => {
    it('sign-in without the form token, or with a token of another browser, is 403 and checks no password', async () => {
      const logins = async () => (await api(base, 'GET', '/api/admin/audit?action=login.*&limit=1000', { token: w.adminToken })).body.entries.length;
      const before = await logins();
      const none = curl(['--data-urlencode', `user=${w.admin.user}`, '--data-urlencode', `password=${w.admin.password}`, `${base}/console/login`]);
      assert.equal(none.status, 403);
      assert.equal(cookieNamed(none.headers, 'medv_console'), undefined);
      const a = curl([`${base}/console/login`]);
      const b = curl([`${base}/console/login`]);
      const crossed = curl(['-b', cookieNamed(a.headers, 'medv_console_pre')!, '--data-urlencode', `_csrf=${csrfIn(b.body.toString())}`, '--data-urlencode', `user=${w.admin.user}`, '--data-urlencode', `password=${w.admin.password}`, `${base}/console/login`]);
      assert.equal(crossed.status, 403);
      assert.equal(await logins(), before, 'no login was tried');
    });

    it('a POST without the token, with another session\'s token, or from another site is 403 and changes nothing', async () => {
      const s1 = await signInHttp(base, w.admin.user, w.admin.password);
      const s2 = await signInHttp(base, w.admin.user, w.admin.password);
      assert.notEqual(s1.cookie, s2.cookie);
      assert.notEqual(s1.csrf, s2.csrf, 'tokens are per session');
      assert.equal(post(base, '/console/logout-all', s1).status, 403, 'no token');
      assert.equal(post(base, '/console/logout-all', s1, { _csrf: s2.csrf }).status, 403, 'the token of another session');
      assert.equal(post(base, '/console/logout-all', s1, { _csrf: 'x'.repeat(43) }).status, 403, 'a made-up token');
      assert.equal(post(base, '/console/logout-all', s1, { _csrf: s1.csrf }, ['-H', 'Sec-Fetch-Site: same-site']).status, 403, 'another site on the same host');
      assert.equal(post(base, '/console/logout-all', s1, { _csrf: s1.csrf }, ['-H', 'Sec-Fetch-Site: cross-site']).status, 403, 'another site');
      assert.equal(post(base, '/console/logout-all', s1, { _csrf: s1.csrf }, ['-H', 'Origin: http://evil.example']).status, 403, 'another origin');
      for (const s of [s1, s2]) assert.equal(curl(['-b', s.cookie, `${base}/console/`]).status, 200, 'both sessions still live');
      const ok = post(base, '/console/logout', s1, { _csrf: s1.csrf }, ['-H', 'Sec-Fetch-Site: same-origin']);
      assert.equal(ok.status, 303, 'the right token from this site works');
      assert.equal(curl(['-b', s1.cookie, `${base}/console/`]).status, 303, 'that session is over');
      assert.equal(curl(['-b', s2.cookie, `${base}/console/`]).status, 200, 'the other one is not');
    });

    it('a form on another site (same host, another port) submitted in the browser does not log the admin out', async () => {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      await signIn(page, base, w.admin.user, w.admin.password);
      const evil = http.createServer((_req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/html' });
        res.end(`<!doctype html><html lang="en"><title>evil</title><form method="post" action="${base}/console/logout-all"><input name="_csrf" value="${'A'.repeat(43)}"><button>win a prize</button></form></html>`);
      });
      await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
      try {
        await page.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`);
        const [answer] = await Promise.all([page.waitForResponse(`${base}/console/logout-all`), page.getByRole('button', { name: 'win a prize' }).click()]);
        assert.equal(answer.status(), 403);
        await page.goto(`${base}/console/`);
        assert.equal(new URL(page.url()).pathname, '/console/', 'still signed in');
      } finally {
        evil.close();
        await ctx.close();
      }
    });
  });

  describe('sessions and cookies', () => {
    it('the session cookie is HttpOnly, SameSite=Strict, Path=/console, not Secure over HTTP, and page scripts cannot read it', async () => {
      const s = await signInHttp(base, w.admin.user, w.admin.password);
      const c = setCookies(s.headers).find((x) => x.startsWith('medv_console='))!;
      assert.match(c, /^medv_console=[A-Za-z0-9_-]{43}; Path=\/console; HttpOnly; SameSite=Strict$/);
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      await signIn(page, base, w.admin.user, w.admin.password);
      const [cookie] = (await ctx.cookies()).filter((k) => k.name === 'medv_console');
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, 'Strict');
      assert.equal(await page.evaluate(() => document.cookie), '', 'nothing for scripts');
      await ctx.close();
    });

    it('session fixation: a planted cookie is never a session; sign-in makes a new id and ends the one the browser had', async () => {
      const ctx = await browser.newContext();
      const url = new URL(base);
      const planted = 'P'.repeat(43);
      await ctx.addCookies([{ name: 'medv_console', value: planted, domain: url.hostname, path: '/console', httpOnly: true, sameSite: 'Strict' }]);
      const page = await ctx.newPage();
      await page.goto(`${base}/console/`);
      assert.match(page.url(), /\/console\/login/, 'a made-up id signs nobody in');
      await signIn(page, base, w.admin.user, w.admin.password);
      const after1 = (await ctx.cookies()).find((k) => k.name === 'medv_console')!.value;
      assert.notEqual(after1, planted);
      assert.equal(curl(['-b', `medv_console=${planted}`, `${base}/console/`]).status, 303, 'the planted id is still nobody');
      // the sign-in form is open when an attacker plants their own live session id: submitting it
      // replaces that id with a new one and ends the planted session
      await ctx.clearCookies();
      await page.goto(`${base}/console/login`);
      const attacker = await signInHttp(base, w.admin.user, w.admin.password);
      await ctx.addCookies([{ name: 'medv_console', value: attacker.cookie.split('=')[1], domain: url.hostname, path: '/console', httpOnly: true, sameSite: 'Strict' }]);
      await page.getByLabel('User name').fill(w.admin.user);
      await page.getByLabel('Password').fill(w.admin.password);
      await Promise.all([page.waitForURL(`${base}/console/`), page.getByRole('button', { name: 'Sign in' }).click()]);
      const after2 = (await ctx.cookies()).find((k) => k.name === 'medv_console')!.value;
      assert.notEqual(`medv_console=${after2}`, attacker.cookie, 'a new id at sign-in');
      assert.notEqual(after2, after1);
      assert.equal(curl(['-b', attacker.cookie, `${base}/console/`]).status, 303, 'the planted session was ended, so its holder cannot ride along');
      await ctx.close();
    });

    it('a session ends after 30 idle minutes and 12 hours after sign-in, checked on the server', async () => {
      const idle = await signInHttp(base, w.admin.user, w.admin.password);
      const old = await signInHttp(base, w.admin.user, w.admin.password);
      const d = db();
      try {
        // the clock moves on for these two sessions: last use 31 min ago; signed in 13 h ago (used a minute ago)
        const now = Date.now();
        const { tokenHash } = await import('../../../src/server/accounts.js');
        d.prepare('update console_sessions set last_seen = ? where hash = ?').run(now - 31 * 60_000, tokenHash(idle.cookie.split('=')[1]));
        d.prepare('update console_sessions set created = ?, expires = ?, last_seen = ? where hash = ?').run(now - 13 * 3600_000, now - 3600_000, now - 60_000, tokenHash(old.cookie.split('=')[1]));
      } finally {
        d.close();
      }
      assert.equal(curl(['-b', idle.cookie, `${base}/console/`]).status, 303);
      assert.equal(curl(['-b', old.cookie, `${base}/console/`]).status, 303);
    });

    it('"log out everywhere" ends every session of the account, and only of that account', async () => {
      await addUser(w.srv, w.adminToken, 'other.admin', 'other-password-1', [], 'admin');
      const mine = [await signInHttp(base, w.admin.user, w.admin.password), await signInHttp(base, w.admin.user, w.admin.password)];
      const theirs = await signInHttp(base, 'other.admin', 'other-password-1');
      assert.equal(post(base, '/console/logout-all', mine[0], { _csrf: mine[0].csrf }).status, 303);
      for (const s of mine) assert.equal(curl(['-b', s.cookie, `${base}/console/`]).status, 303);
      assert.equal(curl(['-b', theirs.cookie, `${base}/console/`]).status, 200, 'another administrator is not signed out');
      assert.equal(post(base, '/console/logout-all', theirs, { _csrf: mine[1].csrf }).status, 403, 'a token of one account does nothing with another\'s session');
    });

    it('over HTTPS the cookies are Secure and pages carry HSTS', async () => {
      const t = tempDir('console-tls');
      const f = (n: string) => join(t.path, n);
      run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('srv.key'), '-out', f('srv.pem'), '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
      chmodSync(f('srv.key'), 0o600);
      const s: ServeProcess = await startServe(f('root'), ['--tls-cert', f('srv.pem'), '--tls-key', f('srv.key')]);
      try {
        const token = readFileSync(s.adminTokenFile, 'utf8').trim();
        const add = curl(['--cacert', f('srv.pem'), '-H', `Authorization: Bearer ${token}`, '-H', 'Content-Type: application/json', '-d', JSON.stringify({ user: 'tls.admin', password: 'tls-password-1', role: 'admin' }), `${s.url}/api/admin/users`]);
        assert.equal(add.status, 201, add.body.toString());
        const form = curl(['--cacert', f('srv.pem'), `${s.url}/console/login`]);
        assert.match(setCookies(form.headers)[0], /^medv_console_pre=[^;]+; Path=\/console; HttpOnly; SameSite=Strict; Secure; Max-Age=3600$/);
        assert.equal(header(form.headers, 'strict-transport-security'), 'max-age=31536000');
        const r = curl(['--cacert', f('srv.pem'), '-b', cookieNamed(form.headers, 'medv_console_pre')!, '--data-urlencode', `_csrf=${csrfIn(form.body.toString())}`, '--data-urlencode', 'user=tls.admin', '--data-urlencode', 'password=tls-password-1', `${s.url}/console/login`]);
        assert.equal(r.status, 303);
        assert.match(setCookies(r.headers).find((c) => c.startsWith('medv_console='))!, /; HttpOnly; SameSite=Strict; Secure$/);
      } finally {
        await s.stop();
        await t.cleanup();
      }
    });
  });

  describe('who may use the console', () => {
    it('API tokens open nothing: a user\'s token and the admin token on every console route are sent to the sign-in or refused', async () => {
      const login = await api(base, 'POST', '/api/login', { body: { user: w.alice.user, password: w.alice.password } });
      for (const token of [login.body.token, w.adminToken]) {
        for (const p of PAGES) {
          const r = curl(['-H', `Authorization: Bearer ${token}`, `${base}${p}`]);
          assert.equal(r.status, 303, `${p}: ${r.status}`);
          assert.match(header(r.headers, 'location')!, /^\/console\/login\?next=/);
        }
        for (const p of ['/console/logout', '/console/logout-all']) assert.equal(post(base, p, {}, {}, ['-H', `Authorization: Bearer ${token}`]).status, 403);
      }
    });

    it('a user who is not an administrator cannot sign in (403, no session), and an administrator who loses the role gets 403 on every page at once', async () => {
      const form = curl([`${base}/console/login`]);
      const r = curl(['-b', cookieNamed(form.headers, 'medv_console_pre')!, '--data-urlencode', `_csrf=${csrfIn(form.body.toString())}`, '--data-urlencode', `user=${w.alice.user}`, '--data-urlencode', `password=${w.alice.password}`, `${base}/console/login`]);
      assert.equal(r.status, 403);
      assert.equal(cookieNamed(r.headers, 'medv_console'), undefined);
      assert.match(r.body.toString(), /is not an administrator/);
      await addUser(w.srv, w.adminToken, 'former.admin', 'former-password-1', [], 'admin');
      const s = await signInHttp(base, 'former.admin', 'former-password-1');
      const demoted = await api(base, 'POST', '/api/admin/users/former.admin/role', { token: w.adminToken, body: { role: 'user' } });
      assert.equal(demoted.status, 200, demoted.text);
      for (const p of PAGES) {
        const page = curl(['-b', s.cookie, `${base}${p}`]);
        assert.equal(page.status, 403, p);
        assert.doesNotMatch(page.body.toString(), /alice-laptop|disk full/, `${p} shows no data`);
      }
    });

    it('over plain HTTP from another host the console refuses to sign in', async function () {
      const ext = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal);
      if (!ext) this.skip();
      const t = tempDir('console-plain');
      const s = await startServe(t.path, ['--host', '0.0.0.0']);
      try {
        const port = new URL(s.url).port;
        for (const p of ['/console/login', '/console/']) assert.equal(curl([`http://${ext!.address}:${port}${p}`]).status, 403, p);
        assert.equal(curl([`http://127.0.0.1:${port}/console/login`]).status, 200, 'from the server itself it is fine');
      } finally {
        await s.stop();
        await t.cleanup();
      }
    });
  });

  describe('XSS, clickjacking, traversal', () => {
    it('stored and reflected markup in every shown field stays text (policy text, report errors, names in forms, filters); CSV cells cannot become formulas', async () => {
      // stored: a policy whose free-text fields hold markup; a client report whose error does
      const doc = { name: 'hostile', description: HOSTILE, groups: ['finance'], workspaces: [{ name: 'desk', image: 'lab', offlineDays: 2, applications: [{ name: 'hostile', title: HOSTILE, argv: [HOSTILE], icon: HOSTILE }] }] };
      assert.equal((await api(base, 'POST', '/api/admin/policies', { token: w.adminToken, body: doc })).status, 201);
      assert.equal((await api(base, 'POST', '/api/admin/policies', { token: w.adminToken, body: { ...doc, description: `${HOSTILE} v2` } })).status, 201);
      const login = await api(base, 'POST', '/api/login', { body: { user: w.alice.user, password: w.alice.password } });
      const rep = await api(base, 'POST', '/api/reports', { token: login.body.token, body: { client: w.alice.client, reports: [{ workspace: 'desk', version: 2, state: 'failed', lastError: `=HYPERLINK("http://evil.example","x") ${HOSTILE}`, at: new Date().toISOString() }] } });
      assert.equal(rep.status, 200, rep.text);
      // names cannot carry markup at all: refused where they enter
      assert.equal((await api(base, 'POST', '/api/admin/users', { token: w.adminToken, body: { user: '<img src=x>', password: password(), groups: [] } })).status, 400);
      writeFileSync(join(w.srv.root, 'images', '<svg onload=alert(1)>_1.ckm.index'), 'not an index');

      const ctx = await browser.newContext({ bypassCSP: true, acceptDownloads: true }); // escaping must hold without the CSP's help
      const page = await ctx.newPage();
      const dialogs: string[] = [];
      page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => undefined); });
      // reflected: the sign-in form echoes a refused name and the `next` target
      await page.goto(`${base}/console/login?next=${encodeURIComponent(`/console/"><script>window.__xss=4</script>`)}`);
      await page.getByLabel('User name').fill(HOSTILE);
      await page.getByLabel('Password').fill('whatever-password');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForLoadState('load');
      assert.ok((await page.getByRole('alert').textContent())!.includes('user must be'), 'the refusal names the rule');
      assert.equal(await page.getByLabel('User name').inputValue(), HOSTILE.slice(0, 200), 'the name comes back as text');
      await signIn(page, base, w.admin.user, w.admin.password);
      const visits = [...PAGES.filter((p) => !p.endsWith('.csv')), '/console/policies/hostile/v/1', '/console/policies/hostile/diff?from=1&to=2',
        ...['users', 'groups', 'policies', 'images', 'clients', 'audit'].map((p) => `/console/${p}?q=${encodeURIComponent(HOSTILE.slice(0, 60))}`),
        `/console/audit?user=${encodeURIComponent(HOSTILE)}`, `/console/users/${encodeURIComponent(HOSTILE)}`, `/console/nope${encodeURIComponent(HOSTILE)}`];
      let n = 0;
      for (const p of visits) {
        await page.goto(`${base}${p}`);
        const found = await page.evaluate(() => ({
          xss: (window as unknown as { __xss?: number }).__xss,
          inline: document.querySelectorAll('script:not([src])').length,
          injected: document.querySelectorAll('img[src="x"], svg, [onerror], [onload]').length,
        }));
        assert.deepEqual(found, { xss: undefined, inline: 0, injected: 0 }, p);
        if (p.includes('hostile') || p === '/console/clients') await page.screenshot({ path: join(shots, `xss-${++n}.png`), fullPage: true });
      }
      await page.goto(`${base}/console/policies/hostile/v/1`);
      assert.ok((await page.locator('dl.facts').textContent())!.includes(HOSTILE), 'the description is shown, as text');
      await page.goto(`${base}/console/clients/${w.alice.client}`);
      assert.ok((await page.locator('#results').textContent())!.includes(HOSTILE), 'the report error is shown, as text');
      assert.deepEqual(dialogs, []);
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Export CSV' }).click()]);
      const csv = parseCsv(readFileSync((await download.path())!, 'utf8'));
      const err = csv[1][csv[0].indexOf('last_error')];
      assert.ok(err.startsWith(`'=HYPERLINK(`), `a formula is defused: ${err.slice(0, 40)}`);
      await page.goto(`${base}/console/images`);
      assert.deepEqual(await page.locator('#results tbody td:first-child').allTextContents(), ['lab'], 'a file that is not a repository name is not listed');
      await ctx.close();
    });

    it('clickjacking: every answer forbids framing, and a real cross-origin frame stays empty', async () => {
      const s = await signInHttp(base, w.admin.user, w.admin.password);
      for (const p of [...PAGES, '/console/login', '/console/nope', '/console']) {
        const r = curl(['-b', s.cookie, `${base}${p}`]);
        assert.match(header(r.headers, 'content-security-policy')!, /frame-ancestors 'none'/, p);
        assert.doesNotMatch(header(r.headers, 'content-security-policy')!, /unsafe-inline|unsafe-eval/, p);
        assert.equal(header(r.headers, 'x-frame-options'), 'DENY', p);
        assert.equal(header(r.headers, 'referrer-policy'), 'no-referrer', p);
        assert.equal(header(r.headers, 'x-content-type-options'), 'nosniff', p);
        assert.equal(header(r.headers, 'cache-control'), 'no-store', p);
      }
      const framer = http.createServer((_req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/html' });
        res.end(`<!doctype html><html lang="en"><title>framer</title><iframe title="victim" src="${base}/console/login" width="800" height="600"></iframe></html>`);
      });
      await new Promise<void>((r) => framer.listen(0, '127.0.0.1', r));
      const ctx = await browser.newContext();
      try {
        const page = await ctx.newPage();
        const blocked = page.waitForEvent('response', (r) => r.url().startsWith(`${base}/console/login`));
        await page.goto(`http://127.0.0.1:${(framer.address() as AddressInfo).port}/`);
        await blocked;
        const frame = page.frames().find((f) => f !== page.mainFrame())!;
        assert.equal(await frame.locator('input[name="password"]').count(), 0, 'the sign-in form is not shown inside another site');
        await page.screenshot({ path: join(shots, 'framed.png') });
      } finally {
        framer.close();
        await ctx.close();
      }
    });

    it('path traversal in the asset routes reaches no file: only the table\'s exact URLs answer', async () => {
      const html = curl([`${base}/console/login`]).body.toString();
      const css = /href="(\/console\/assets\/([0-9a-f]{16})\/console\.css)"/.exec(html)!;
      const hash = css[2];
      const ok = curl([`${base}${css[1]}`]);
      assert.equal(ok.status, 200);
      assert.equal(header(ok.headers, 'cache-control'), 'public, max-age=31536000, immutable');
      assert.match(header(ok.headers, 'etag')!, /^"[0-9a-f]{64}"$/);
      assert.equal(curl(['-H', `If-None-Match: ${header(ok.headers, 'etag')}`, `${base}${css[1]}`]).status, 304);
      const tries = [
        '/console/assets/../../../../etc/passwd', '/console/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd', '/console/assets/..%2f..%2f..%2fpackage.json',
        `/console/assets/${hash}/../../../../package.json`, `/console/assets/${hash}/..%2f..%2f..%2f..%2fpackage.json`, `/console/assets/${hash}/..%5c..%5cpackage.json`,
        `/console/assets/${hash}/console.css%00`, `/console/assets/${hash}/console.css/../../../package.json`, '/console/assets/%252e%252e/%252e%252e/package.json',
        `/console/assets/${hash}/package.json`, `/console/assets/${hash}/htmx.min.js`, '/console/assets/console.css', '/console/assets/', '/console/assets/..;/..;/package.json',
        `/console/assets/${hash}/%2e%2e/%2e%2e/src/server/console/static/console.js`, '/console/assets//etc/passwd', `/console/assets/${hash}/console.css?../../package.json`,
      ];
      for (const p of tries) {
        const r = curl([`${base}${p}`]);
        assert.ok(r.status === 400 || r.status === 404 || (p.includes('?') && r.status === 200), `${p}: ${r.status}`);
        const body = r.body.toString();
        assert.doesNotMatch(body, /root:x:0:0|"name": "medv"|medv console: the one script/, p);
      }
    });
  });
});
