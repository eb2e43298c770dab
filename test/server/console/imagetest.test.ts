/**
 * The image test in a real browser against a real `medv serve`: the test guest (vm/build/guest.img)
 * is packed as an image with its keys published; the administrator starts a test of it from the
 * image's page; the server fetches it into an encrypted disk, boots it read-only under the VM host
 * (TCG here), and the page shows a live view of its screen (noVNC over the console's WebSocket to
 * the VM's VNC unix socket) that is not blank, the serial output, and the screenshot taken when the
 * guest said "ready", kept with the version. Stopped, nothing of the disk or its keys is left.
 * The WebSocket refuses another origin, no session and a wrong token.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { REPO_ROOT, runMedv } from '../../helpers/cli.js';
import { readPng } from '../../helpers/image.js';
import { api } from '../accounts-helpers.js';
import { consoleSuite } from './fixture.js';
import { startServe } from '../helpers.js';

/** Share of pixels that are not (nearly) black. */
function litShare(rgb: { pixels: Buffer }, stride = 3): number {
  let lit = 0;
  const n = rgb.pixels.length / stride;
  for (let i = 0; i < rgb.pixels.length; i += stride) if (rgb.pixels[i] + rgb.pixels[i + 1] + rgb.pixels[i + 2] > 60) lit++;
  return lit / n;
}

describe('console: image test with a live view', function () {
  this.timeout(300_000);
  const s = consoleSuite('imagetest', { serveArgs: ['--image-test-hold', '3m', '--image-test-timeout', '3m'], height: 1000 });

  before(async () => {
    // the test guest as image "guest", packed with the same console keys into the server's repository
    const pack = runMedv(['image', 'pack', join(REPO_ROOT, 'vm/build/guest.img'), '--name', 'guest', '--version', '1', '--out', join(s.w.srv.root, 'images'), '--keys', s.packed.keys, '--host-key', s.packed.hostKey], { MEDV_PASSPHRASE: '' });
    assert.equal(pack.code, 0, pack.stderr);
    const pub = runMedv(['admin', 'image-keys', 'publish', 'guest', '--keys', s.packed.keys, '--host-key', s.packed.hostKey, '--server', s.w.srv.url, '--token-file', s.w.srv.adminTokenFile], { MEDV_PASSPHRASE: '' });
    assert.equal(pub.code, 0, pub.stderr);
  });

  it('boots the version read-only, shows a live view that is not blank and the serial output, keeps the screenshot; stopping leaves no disk or key', async () => {
    await s.page.goto(`${s.w.srv.url}/console/images/guest`);
    await s.page.getByRole('link', { name: /^Test of version 1/ }).click();
    await s.check('test-none');
    await s.page.getByRole('button', { name: 'Start the test' }).click();
    // the page reloads itself until the VM runs, then connects its live view
    const screen = s.page.locator('#vnc-screen[data-connected="true"]');
    await screen.waitFor({ timeout: 240_000 });
    await s.page.locator('#test-status[data-phase="shown"]').waitFor({ timeout: 240_000 });
    assert.match((await s.page.locator('pre.serial').textContent())!, /MEDV-GUEST ready/);
    // the canvas noVNC draws the guest's screen on: the guest's text is there
    const lit = await s.page.locator('#vnc-screen canvas').evaluate((c: HTMLCanvasElement) => {
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let on = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) on++;
      return { on, of: d.length / 4, w: c.width, h: c.height };
    });
    assert.ok(lit.w >= 640 && lit.on > 200, `live view ${lit.w}x${lit.h}: ${lit.on} lit pixels`);
    await s.check('test-live');
    const png = await s.page.request.get(`${s.w.srv.url}/console/images/guest/v/1/screen.png`);
    assert.equal(png.status(), 200);
    const file = join(s.work, 'screen.png');
    writeFileSync(file, await png.body());
    const shot = readPng(file);
    assert.ok(litShare(shot) > 0.002, 'the kept screenshot shows the guest\'s text');

    await s.page.getByRole('button', { name: 'Stop the test now' }).click();
    await s.page.locator('#test-status[data-phase="done"]').waitFor({ timeout: 120_000 });
    assert.match((await s.page.locator('#test-status').textContent())!, /done/);
    assert.equal(await s.page.locator('img.shot').count(), 1, 'the screenshot is shown with the result');
    await s.check('test-done');
    const dir = join(s.w.srv.root, 'tests', 'guest_1');
    assert.deepEqual(readdirSync(dir).sort(), ['result.json', 'screen.png', 'serial.log'], 'no disk, key file, key folder or host key is left');
    const api1 = await api(s.w.srv.url, 'GET', '/api/admin/images/test?name=guest&version=1', { token: s.w.adminToken });
    assert.equal(api1.body.test.phase, 'done');
    assert.equal(api1.body.test.outcome, 'ready');
    assert.match(api1.body.serial, /MEDV-GUEST ready/);
    assert.ok(existsSync(join(dir, 'screen.png')));
  });

  it('the live view\'s WebSocket refuses another origin, no session, a wrong token, and a test that is not running', async () => {
    const url = new URL(s.w.srv.url);
    const cookie = (await s.ctx.cookies()).find((c) => c.name === 'medv_console')!;
    const token = await s.page.evaluate(() => (document.querySelector('input[name="_csrf"]') as HTMLInputElement).value);
    const status = (path: string, headers: Record<string, string>) => new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://${url.host}${path}`, { headers });
      ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode ?? 0); ws.terminate(); });
      ws.on('open', () => { resolve(101); ws.close(); });
      ws.on('error', () => resolve(-1));
    });
    const good = { Origin: s.w.srv.url, Cookie: `medv_console=${cookie.value}` };
    const path = `/console/images/guest/v/1/vnc?t=${token}`;
    assert.equal(await status(path, { ...good, Origin: 'http://evil.example' }), 403);
    assert.equal(await status(path, { Origin: s.w.srv.url }), 403);
    assert.equal(await status(`/console/images/guest/v/1/vnc?t=${randomBytes(32).toString('base64url')}`, good), 403);
    assert.equal(await status(path, { ...good, Authorization: `Bearer ${s.w.adminToken}`, Cookie: '' }), 403, 'the admin token opens no live view');
    assert.equal(await status(path, good), 409, 'right in every way, but no test of it runs now');
    assert.equal(await status('/console/images/guest/v/1/nope', good), 404);
  });

  it('one test at a time (two starts at once: one runs, one is 503 EBUSY); a server killed mid-test leaves no disk or key after its restart', async () => {
    const start = () => api(s.w.srv.url, 'POST', '/api/admin/images/test', { token: s.w.adminToken, body: { name: 'guest', version: 1 } });
    const both = await Promise.all([start(), start()]);
    assert.deepEqual(both.map((r) => r.status).sort(), [202, 503], both.map((r) => r.text).join(' | '));
    const dir = join(s.w.srv.root, 'tests', 'guest_1');
    // kill the server while the test holds its disk and keys
    for (;;) {
      const t = await api(s.w.srv.url, 'GET', '/api/admin/images/test?name=guest&version=1', { token: s.w.adminToken });
      if (['booting', 'running', 'shown'].includes(t.body.test?.phase)) break;
      assert.ok(!['done', 'failed'].includes(t.body.test?.phase), JSON.stringify(t.body.test));
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(readdirSync(dir).includes('host.key') && readdirSync(dir).includes('disk.evhd'), 'mid-test the disk and its key are there');
    await s.w.srv.stop('SIGKILL');
    const again = await startServe(s.w.srv.root);
    try {
      assert.deepEqual(readdirSync(dir).filter((f) => /host\.key|disk\.|keys|Test/.test(f)), [], 'the restarted server removed what the killed test left');
      // and no supervisor or QEMU of the killed test runs on (one spawned just before the kill had
      // not written its state yet, and went on to boot the guest on files that were gone)
      const run = join(s.w.srv.root, 'tests', '.run');
      const left = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
        try { return readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(`${run}/`); } catch { return false; }
      });
      assert.deepEqual(left, [], 'no process of the killed test is left');
    } finally {
      await again.stop();
    }
  });

  it('with --image-test-on-upload, a version an upload completes is tested at once (by "(upload)"), its screenshot kept', async () => {
    const root = join(s.work, 'auto-root');
    mkdirSync(join(root, 'images'), { recursive: true });
    const srv = await startServe(root, ['--image-test-on-upload', '--image-test-hold', '1s']);
    try {
      const token = readFileSync(srv.adminTokenFile, 'utf8').trim();
      const pub = runMedv(['admin', 'image-keys', 'publish', 'guest', '--keys', s.packed.keys, '--host-key', s.packed.hostKey, '--server', srv.url, '--token-file', srv.adminTokenFile], { MEDV_PASSPHRASE: '' });
      assert.equal(pub.code, 0, pub.stderr);
      const none = await api(srv.url, 'GET', '/api/admin/images/test?name=guest&version=1', { token });
      assert.equal(none.body.test, null, 'nothing is tested before the upload');
      const files = ['guest_1.ckm', 'guest_1.ckm.index'].map((f) => join(s.w.srv.root, 'images', f));
      const up = runMedv(['image', 'upload', ...files, '--server', srv.url, '--token-file', srv.adminTokenFile, '--state-dir', join(s.work, 'upload-state')]);
      assert.equal(up.code, 0, up.stderr);
      let t;
      for (;;) {
        t = (await api(srv.url, 'GET', '/api/admin/images/test?name=guest&version=1', { token })).body.test;
        if (t && ['done', 'failed'].includes(t.phase)) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.deepEqual([t.phase, t.outcome, t.screenshot, t.by, t.error], ['done', 'ready', true, '(upload)', undefined], JSON.stringify(t));
      const png = await fetch(`${srv.url}/api/admin/images/test/screenshot?name=guest&version=1`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(png.status, 200);
      const shot = join(s.work, 'upload-test.png');
      writeFileSync(shot, Buffer.from(await png.arrayBuffer()));
      assert.ok(litShare(readPng(shot)) > 0.002, 'the kept screenshot shows the guest\'s text');
      const audit = await api(srv.url, 'GET', '/api/admin/audit?action=image.test', { token });
      assert.deepEqual(audit.body.entries.map((e: { actor: string; target: string }) => [e.actor, e.target]), [['(upload)', 'guest']]);
    } finally {
      await srv.stop();
    }
  });
});
