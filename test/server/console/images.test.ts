/**
 * Images in the console, in a real browser against a real `medv serve`: pruning to N versions
 * shows what would go first (a dry run, with the clients still on a version that goes), then
 * deletes only that; the kept version is still complete (served and verified by `medv image verify`).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { runMedv } from '../../helpers/cli.js';
import { curlDownload } from '../helpers.js';
import { api } from '../accounts-helpers.js';
import { consoleSuite } from './fixture.js';

describe('console: images', function () {
  this.timeout(180_000);
  const s = consoleSuite('images');

  it('prunes to one version: a dry run first (with the clients still on version 1), then only those files go; version 2 still verifies', async () => {
    const images = join(s.w.srv.root, 'images');
    await s.page.goto(`${s.w.srv.url}/console/images/lab`);
    await s.page.getByLabel('Versions to keep').fill('1');
    await s.page.getByRole('button', { name: 'See what would be deleted' }).click();
    await s.page.waitForURL(/\/console\/images\/lab\/prune\?keep=1$/);
    assert.match((await s.page.getByRole('alert').textContent())!, /^1 client workspace reports a version that would be deleted/);
    assert.deepEqual(await s.page.locator('td.mono').allTextContents(), ['lab_1.ckm.index'], 'v2 still names v1\'s pack: only the index goes');
    assert.ok(existsSync(join(images, 'lab_1.ckm.index')), 'a dry run deletes nothing');
    await s.check('prune-preview');
    await s.page.getByRole('button', { name: 'Delete 1 file' }).click();
    await s.page.waitForURL(/\/console\/images\/lab\?pruned=1$/);
    assert.ok(!existsSync(join(images, 'lab_1.ckm.index')));
    for (const f of ['lab_1.ckm', 'lab_2.ckm', 'lab_2.ckm.index']) assert.ok(existsSync(join(images, f)), f);
    assert.equal(await s.page.locator('tbody tr').count(), 2, 'version 1 is listed as a pack without its index');
    await s.check('pruned');
    const dst = join(s.work, 'fetched');
    mkdirSync(dst);
    for (const f of ['lab_2.ckm.index', 'lab_1.ckm', 'lab_2.ckm']) assert.equal(curlDownload(`${s.w.srv.url}/images/${f}`, join(dst, f)), 200, f);
    const v = runMedv(['image', 'verify', join(dst, 'lab_2.ckm.index'), '--keys', s.packed.keys, '--host-key', s.packed.hostKey, '--json'], { MEDV_PASSPHRASE: '' });
    assert.equal(v.code, 0, v.stderr);
    const audit = await api(s.w.srv.url, 'GET', '/api/admin/audit?action=image.prune', { token: s.w.adminToken });
    assert.equal(audit.body.entries.length, 1);
    assert.equal(audit.body.entries[0].actor, s.w.admin.user);
  });

  it('the API prunes with the same service: a dry run and bad arguments', async () => {
    const dry = await api(s.w.srv.url, 'POST', '/api/admin/images/prune', { token: s.w.adminToken, body: { name: 'lab', keep: 1, dryRun: true } });
    assert.equal(dry.status, 200, dry.text);
    assert.deepEqual(dry.body.keptVersions, [2]);
    assert.equal(dry.body.dir, undefined, 'no server path in the answer');
    for (const body of [{ name: '../x', keep: 1 }, { name: 'lab', keep: 0 }, { name: 'lab' }]) {
      assert.equal((await api(s.w.srv.url, 'POST', '/api/admin/images/prune', { token: s.w.adminToken, body })).status, 400, JSON.stringify(body));
    }
  });
});
