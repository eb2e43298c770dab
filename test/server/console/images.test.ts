/**
 * Images in the console, in a real browser against a real `medv serve`: pruning to N versions
 * shows what would go first (a dry run, with the clients still on a version that goes), then
 * deletes only that; the kept version is still complete (served and verified by `medv image verify`).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { runMedv, tempDir } from '../../helpers/cli.js';
import { launchBrowser, seriousViolations, shotsDir } from '../../helpers/browser.js';
import { curlDownload } from '../helpers.js';
import { api } from '../accounts-helpers.js';
import { type Packed, type World, makeWorld, packLab, signIn } from './fixture.js';

describe('console: images', function () {
  this.timeout(180_000);
  let browser: Browser;
  let w: World;
  let packed: Packed;
  let ctx: BrowserContext;
  let page: Page;
  const work = tempDir('console-images');
  const shots = shotsDir('images');
  let n = 0;
  const check = async (name: string) => {
    const bad = await seriousViolations(page);
    assert.deepEqual(bad, [], `${name}: ${JSON.stringify(bad, null, 1)}`);
    await page.screenshot({ path: join(shots, `${String(++n).padStart(2, '0')}-${name}.png`), fullPage: true });
  };

  before(async () => {
    browser = await launchBrowser();
    packed = packLab(work.path);
    w = await makeWorld('sqlite', packed, 'images');
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

  it('prunes to one version: a dry run first (with the clients still on version 1), then only those files go; version 2 still verifies', async () => {
    const images = join(w.srv.root, 'images');
    await page.goto(`${w.srv.url}/console/images/lab`);
    await page.getByLabel('Versions to keep').fill('1');
    await page.getByRole('button', { name: 'See what would be deleted' }).click();
    await page.waitForURL(/\/console\/images\/lab\/prune\?keep=1$/);
    assert.match((await page.getByRole('alert').textContent())!, /^1 client workspace reports a version that would be deleted/);
    assert.deepEqual(await page.locator('td.mono').allTextContents(), ['lab_1.ckm.index'], 'v2 still names v1\'s pack: only the index goes');
    assert.ok(existsSync(join(images, 'lab_1.ckm.index')), 'a dry run deletes nothing');
    await check('prune-preview');
    await page.getByRole('button', { name: 'Delete 1 file' }).click();
    await page.waitForURL(/\/console\/images\/lab\?pruned=1$/);
    assert.ok(!existsSync(join(images, 'lab_1.ckm.index')));
    for (const f of ['lab_1.ckm', 'lab_2.ckm', 'lab_2.ckm.index']) assert.ok(existsSync(join(images, f)), f);
    assert.equal(await page.locator('tbody tr').count(), 2, 'version 1 is listed as a pack without its index');
    await check('pruned');
    const dst = join(work.path, 'fetched');
    mkdirSync(dst);
    for (const f of ['lab_2.ckm.index', 'lab_1.ckm', 'lab_2.ckm']) assert.equal(curlDownload(`${w.srv.url}/images/${f}`, join(dst, f)), 200, f);
    const v = runMedv(['image', 'verify', join(dst, 'lab_2.ckm.index'), '--keys', packed.keys, '--host-key', packed.hostKey, '--json'], { MEDV_PASSPHRASE: '' });
    assert.equal(v.code, 0, v.stderr);
    const audit = await api(w.srv.url, 'GET', '/api/admin/audit?action=image.prune', { token: w.adminToken });
    assert.equal(audit.body.entries.length, 1);
    assert.equal(audit.body.entries[0].actor, w.admin.user);
  });

  it('the API prunes with the same service: a dry run and bad arguments', async () => {
    const dry = await api(w.srv.url, 'POST', '/api/admin/images/prune', { token: w.adminToken, body: { name: 'lab', keep: 1, dryRun: true } });
    assert.equal(dry.status, 200, dry.text);
    assert.deepEqual(dry.body.keptVersions, [2]);
    assert.equal(dry.body.dir, undefined, 'no server path in the answer');
    for (const body of [{ name: '../x', keep: 1 }, { name: 'lab', keep: 0 }, { name: 'lab' }]) {
      assert.equal((await api(w.srv.url, 'POST', '/api/admin/images/prune', { token: w.adminToken, body })).status, 400, JSON.stringify(body));
    }
  });
});
