/**
 * The console's pages in a real browser (Debian's Chromium through playwright-core) against a
 * real `medv serve`, on SQLite and on PostgreSQL: sign-in (a wrong password refused), every page
 * shows the deployment's real data, filters and pagination work, the lists export CSV that parses,
 * everything is reachable by keyboard, and axe-core finds no serious or critical violation on any
 * page. A screenshot of every page is saved for a person to look at (the folder is printed).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { tempDir } from '../../helpers/cli.js';
import { launchBrowser, shotsDir } from '../../helpers/browser.js';
import { BACKENDS, stopPostgres } from '../accounts-helpers.js';
import { type Packed, type World, checker, makeWorld, packLab, parseCsv, signIn } from './fixture.js';

describe('console pages in a browser', function () {
  this.timeout(180_000);
  let browser: Browser;
  let packed: Packed;
  const work = tempDir('console-pages');
  before(async () => {
    browser = await launchBrowser();
    packed = packLab(work.path);
  });
  after(async () => {
    await browser?.close();
    await stopPostgres();
    await work.cleanup();
  });

  for (const backend of BACKENDS) {
    describe(`on ${backend}`, () => {
      let w: World;
      let ctx: BrowserContext;
      let page: Page;
      const shots = shotsDir(`pages-${backend}`);
      const check = checker(shots, () => page);

      before(async () => {
        w = await makeWorld(backend, packed, 'pages');
        ctx = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 800 } });
        page = await ctx.newPage();
        console.log(`      screenshots: ${shots}`);
      });
      after(async () => {
        await ctx?.close();
        await w?.cleanup();
      });

      it('refuses a wrong password on the sign-in page and stays there', async () => {
        await page.goto(`${w.srv.url}/console/`);
        assert.match(page.url(), /\/console\/login\?next=%2Fconsole%2F$/, 'a page behind the sign-in sends the browser to it');
        await check('signin');
        await signIn(page, w.srv.url, w.admin.user, 'not-the-password');
        assert.match(page.url(), /\/console\/login$/);
        assert.equal(await page.getByRole('alert').textContent(), 'Wrong user name or password.');
        assert.equal(await page.getByLabel('User name').inputValue(), w.admin.user, 'the name typed is kept');
        await check('signin-refused');
      });

      it('signs in and shows the overview with the deployment\'s counts and latest audit entries', async () => {
        await signIn(page, w.srv.url, w.admin.user, w.admin.password);
        assert.equal(new URL(page.url()).pathname, '/console/');
        const cards = new Map(await page.locator('.card').evaluateAll((els) => els.map((e) => [e.querySelector('.label')!.textContent!, e.querySelector('.n')!.textContent!] as [string, string])));
        const card = async (label: string) => cards.get(label);
        assert.equal(await card('users'), '4');
        assert.equal(await card('groups'), '2');
        assert.equal(await card('policies'), '1');
        assert.equal(await card('workspaces in policies'), '1');
        assert.equal(await card('images (1 with keys)'), '1');
        assert.equal(await card('clients seen in 24 h'), '1');
        assert.equal(await card('client workspaces on an old version'), '1', 'alice runs version 1 of lab; 2 is published');
        assert.equal(await card('offline allowances ending within 48 h'), '1', 'its policy allows one day offline from the grant');
        assert.ok(await page.getByRole('cell', { name: 'login.fail' }).count() >= 1, 'the refused sign-in is in the latest audit entries');
        await check('overview');
      });

      it('is usable with the keyboard: the skip link first, then the navigation', async () => {
        await page.goto(`${w.srv.url}/console/`);
        await page.keyboard.press('Tab');
        assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
        await page.keyboard.press('Enter');
        assert.equal(await page.evaluate(() => document.activeElement?.id), 'main');
        await page.goto(`${w.srv.url}/console/`);
        for (let i = 0; i < 30; i++) {
          await page.keyboard.press('Tab');
          if (await page.evaluate(() => document.activeElement?.textContent === 'Users')) break;
        }
        await Promise.all([page.waitForURL('**/console/users'), page.keyboard.press('Enter')]);
      });

      it('lists users, filters them by name, group and status, and shows one user', async () => {
        await page.goto(`${w.srv.url}/console/users`);
        const names = async () => (await page.locator('#results tbody tr td:first-child').allTextContents()).map((s) => s.trim());
        assert.deepEqual(await names(), ['ada.admin', 'alice', 'bob', 'carol@example.org']);
        await check('users');
        await page.goto(`${w.srv.url}/console/users?group=finance`);
        assert.deepEqual(await names(), ['alice', 'bob']);
        await page.goto(`${w.srv.url}/console/users?q=CAR&status=active`);
        assert.deepEqual(await names(), ['carol@example.org']);
        await page.goto(`${w.srv.url}/console/users?limit=2`);
        assert.deepEqual(await names(), ['ada.admin', 'alice']);
        await page.getByRole('link', { name: 'Next page' }).click();
        assert.deepEqual(await names(), ['bob', 'carol@example.org']);
        await page.getByRole('link', { name: 'carol@example.org' }).click();
        assert.equal(new URL(page.url()).pathname, '/console/users/carol%40example.org');
        assert.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'User carol@example.org');
        await page.goto(`${w.srv.url}/console/users/alice`);
        assert.ok(await page.getByRole('link', { name: w.alice.client }).count() === 1, 'her client is listed');
        await check('user');
        await page.goto(`${w.srv.url}/console/groups`);
        assert.equal((await page.locator('tr', { hasText: 'finance' }).locator('td.num').textContent())?.trim(), '2');
        await check('groups');
      });

      it('shows policies, their versions, one version and the diff of two', async () => {
        await page.goto(`${w.srv.url}/console/policies`);
        assert.equal((await page.locator('#results tbody tr td').nth(1).textContent())?.trim(), '2', 'newest version 2');
        await check('policies');
        await page.getByRole('link', { name: 'finance' }).click();
        await check('policy');
        await page.getByRole('button', { name: 'Compare' }).click();
        assert.match(page.url(), /\/console\/policies\/finance\/diff\?from=1&to=2$/);
        const changes = (await page.locator('ul.diff li').allTextContents()).map((s) => s.replace(/\s+/g, ' ').trim());
        assert.deepEqual(changes.sort(), ['added /groups: "lab-team"', 'changed /workspaces[desk]/memory: 512 → 1024'].sort());
        await check('policy-diff');
        await page.goto(`${w.srv.url}/console/policies/finance/v/1`);
        assert.ok((await page.locator('pre.doc').textContent())?.includes('"memory": 512'));
        await check('policy-version');
      });

      it('shows the image with each version\'s update size, signature and clients', async () => {
        await page.goto(`${w.srv.url}/console/images`);
        assert.ok(await page.getByRole('cell', { name: 'published' }).count() === 1, 'keys published');
        await check('images');
        await page.getByRole('link', { name: 'lab', exact: true }).click();
        const rows = page.locator('tbody tr');
        assert.equal(await rows.count(), 2);
        const v2 = await rows.nth(0).textContent();
        const v1 = await rows.nth(1).textContent();
        assert.match(v2!, /from version 1: \d+ blocks/);
        assert.match(v1!, /first version: everything/);
        const size = async (row: number) => {
          const m = /^([\d.]+) (B|KiB|MiB)$/.exec((await rows.nth(row).locator('td').nth(5).locator('strong').textContent())!)!;
          return Number(m[1]) * { B: 1, KiB: 1024, MiB: 1048576 }[m[2] as 'B'];
        };
        const update2 = await size(0);
        const update1 = await size(1);
        assert.ok(update2 > 0 && update2 < update1 / 3, `the update from 1 to 2 (${update2}) is a fraction of a first install (${update1})`);
        assert.equal(await page.getByText('signed by a published signer').count(), 2);
        assert.equal((await rows.nth(1).locator('td').nth(7).textContent())?.trim(), '1', 'alice runs version 1');
        await check('image');
      });

      it('shows clients with their latest state, history and a CSV export that parses', async () => {
        await page.goto(`${w.srv.url}/console/clients`);
        const row = page.locator('#results tbody tr').first();
        const cells = (await row.locator('td').allTextContents()).map((s) => s.trim());
        assert.deepEqual(cells.slice(0, 6), [w.alice.client, 'alice', 'desk', 'lab', '1', 'running']);
        assert.match(cells[7], /^ends in \d+/);
        await check('clients');
        const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Export CSV' }).click()]);
        const csv = parseCsv(readFileSync((await download.path())!, 'utf8'));
        assert.deepEqual(csv[0], ['client', 'user', 'workspace', 'image', 'version', 'state', 'reported', 'received', 'offline_until', 'last_error']);
        assert.equal(csv.length, 2);
        assert.deepEqual(csv[1].slice(0, 6), [w.alice.client, 'alice', 'desk', 'lab', '1', 'running']);
        await page.goto(`${w.srv.url}/console/clients?state=failed`);
        assert.equal(await page.locator('#results tbody td.empty').count(), 1, 'no client is failed now');
        await page.goto(`${w.srv.url}/console/clients/${w.alice.client}`);
        const history = page.locator('#results tbody tr');
        assert.equal(await history.count(), 2, 'both reports are kept');
        assert.match((await history.nth(1).textContent())!, /failed.*disk full while updating/);
        await check('client');
      });

      it('filters the audit log by user, action and time, and exports it as CSV', async () => {
        await page.goto(`${w.srv.url}/console/audit`);
        await check('audit');
        await page.getByLabel('Action (a family: login.*)').fill('login.fail');
        await page.getByRole('button', { name: 'Apply' }).click();
        await page.waitForURL(/action=login\.fail/);
        const actions = await page.locator('#results tbody tr td:nth-child(3)').allTextContents();
        assert.deepEqual(actions, ['login.fail']);
        await page.goto(`${w.srv.url}/console/audit?user=alice&action=keys.*`);
        assert.deepEqual(await page.locator('#results tbody tr td:nth-child(3)').allTextContents(), ['keys.release']);
        await page.goto(`${w.srv.url}/console/audit?until=2000-01-01`);
        assert.equal(await page.locator('#results tbody td.empty').count(), 1);
        await page.goto(`${w.srv.url}/console/audit?since=not-a-time`);
        assert.match((await page.getByRole('alert').textContent())!, /since must be a date or date-time/);
        await page.goto(`${w.srv.url}/console/audit?action=login.*`);
        const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Export CSV' }).click()]);
        const csv = parseCsv(readFileSync((await download.path())!, 'utf8'));
        assert.deepEqual(csv[0], ['time', 'last', 'count', 'actor', 'action', 'target', 'address', 'detail']);
        assert.ok(csv.length >= 4, 'logins of ada and alice and the refused one');
        assert.ok(csv.slice(1).every((r) => r[4].startsWith('login')));
        assert.ok(csv.slice(1).some((r) => r[4] === 'login.fail' && JSON.parse(r[7]).via === 'console'));
      });
    });
  }
});
