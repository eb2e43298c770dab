/**
 * Lock and wipe, from the console to a real client: a real `medv serve`, the nasm test guest as an
 * image, a real client (its own client root and run folder) that logs in and starts the workspace
 * with `medv workspace start` (QEMU under TCG). The administrator gives orders on the client's
 * console page in Chromium:
 *   - lock: the next start fails with its own exit code (15, ELOCKED) and the administrator's
 *     reason; unlocked, it starts again (its disk was kept);
 *   - wipe: the next start fails (16, EWIPED), and afterwards the client root holds no key of the
 *     workspace (scanned for the image key's id, every .enc file gone) and no disk; a later start
 *     fails the same; the console shows the client's confirmation.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { REPO_ROOT, TEST_PASSPHRASE, runMedv, tempDir, type RunResult } from '../../helpers/cli.js';
import { launchBrowser, shotsDir } from '../../helpers/browser.js';
import { type ServeProcess, runMedvAsync, startServe } from '../helpers.js';
import { api, password, scan } from '../accounts-helpers.js';
import { openImageKeys } from '../../../src/pack/keys.js';
import { addUser, checker, signIn } from './fixture.js';

describe('console: lock and wipe reach a real client', function () {
  this.timeout(600_000);
  const dir = tempDir('console-controls');
  const f = (...p: string[]) => join(dir.path, ...p);
  let srv: ServeProcess;
  let adminToken = '';
  let browser: Browser;
  let ctx: BrowserContext;
  let page: Page;
  let client = '';
  let imageKeyId: Buffer;
  const admin = { user: 'ada.admin', password: password() };
  const shots = shotsDir('controls');
  const check = checker(shots, () => page);
  const env = { MEDV_CLIENT_ROOT: f('client'), MEDV_RUN_DIR: f('run'), XDG_DATA_HOME: f('xdg-data'), XDG_CACHE_HOME: f('xdg-cache'), XDG_CONFIG_HOME: f('xdg-config'), MEDV_PASSPHRASE: TEST_PASSPHRASE, MEDV_TEST_ACCEL: undefined };
  /** The client's medv, asynchronous (the server's log keeps flowing). */
  const medv = (args: string[]): Promise<RunResult> => runMedvAsync(args, undefined, env);
  const start = () => medv(['workspace', 'start', 'desk', '--json', '--accel', 'tcg']);
  const stop = () => medv(['workspace', 'stop', 'desk', '--json', '--force']);
  const order = async (action: 'lock' | 'wipe', reason: string) => {
    await page.goto(`${srv.url}/console/clients/${client}`);
    await page.getByLabel(new RegExp(`^${action[0].toUpperCase()}${action.slice(1)}:`)).check();
    await page.getByLabel('Reason (the user sees it)').fill(reason);
    page.once('dialog', (d) => { void d.accept(); });
    await page.getByRole('button', { name: 'Give the order' }).click();
    await page.waitForURL(new RegExp(`\\?order=${action}`));
  };

  before(async () => {
    mkdirSync(f('root', 'images'), { recursive: true });
    writeFileSync(f('console.key'), randomBytes(32), { mode: 0o600 });
    const host = ['--host-key', f('console.key')];
    const pack = runMedv(['image', 'pack', join(REPO_ROOT, 'vm/build/guest.img'), '--name', 'guest', '--version', '1', '--out', f('root', 'images'), '--keys', f('keys'), ...host], { MEDV_PASSPHRASE: '' });
    assert.equal(pack.code, 0, pack.stderr);
    const keys = await openImageKeys(f('keys'), 'guest', () => ({ kind: 'hostkey', keyFile: f('console.key') }));
    imageKeyId = Buffer.from(keys.imageId);
    keys.dispose();
    srv = await startServe(f('root'));
    adminToken = (await import('node:fs')).readFileSync(srv.adminTokenFile, 'utf8').trim();
    const pub = runMedv(['admin', 'image-keys', 'publish', 'guest', '--keys', f('keys'), ...host, '--server', srv.url, '--token-file', srv.adminTokenFile], { MEDV_PASSPHRASE: '' });
    assert.equal(pub.code, 0, pub.stderr);
    await addUser(srv, adminToken, admin.user, admin.password, [], 'admin');
    const alicePw = password();
    await addUser(srv, adminToken, 'alice', alicePw, []);
    const doc = { name: 'ops', users: ['alice'], workspaces: [{ name: 'desk', image: 'guest', mode: 'persistent', memory: 64, network: 'none', offlineDays: 2 }] };
    assert.equal((await api(srv.url, 'POST', '/api/admin/policies', { token: adminToken, body: doc })).status, 201);
    writeFileSync(f('alice.pw'), alicePw, { mode: 0o600 });
    const login = await medv(['login', '--server', srv.url, '--user', 'alice', '--password-file', f('alice.pw')]);
    assert.equal(login.code, 0, login.stderr);
    const first = await start();
    assert.equal(first.code, 0, `the first start deploys and boots: ${first.stderr}`);
    assert.equal((await stop()).code, 0);
    const clients = await api(srv.url, 'GET', '/api/admin/clients?user=alice', { token: adminToken });
    client = clients.body.clients[0].client;
    browser = await launchBrowser();
    ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    page = await ctx.newPage();
    await signIn(page, srv.url, admin.user, admin.password);
    console.log(`      screenshots: ${shots}`);
  });
  after(async () => {
    await stop().catch(() => undefined);
    await ctx?.close();
    await browser?.close();
    await srv?.stop();
    await dir.cleanup();
  });

  it('a lock given in the console makes the client refuse to start, with exit 15 and the reason; unlocked, it starts again', async () => {
    await order('lock', 'laptop reported stolen on 2 Dec');
    // beside the actions: how long a client that stays offline escapes them (its policy: offlineDays 2)
    assert.match((await page.locator('section[aria-labelledby="h-orders"] > p.sub').textContent())!, /Its offline allowance: a client that stays offline may go on starting its workspaces until \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in (47|48) h\)/);
    await check('locked');
    const r = await start();
    assert.equal(r.code, 15, r.stderr);
    assert.match(r.stderr, /locked for client \S+ by the administrator: laptop reported stolen on 2 Dec/);
    assert.equal(JSON.parse(r.stdout).error.code, 'ELOCKED');
    page.once('dialog', (d) => { void d.accept(); });
    await page.getByRole('button', { name: 'Unlock' }).click();
    await page.waitForURL(/\?cleared=1/);
    const again = await start();
    assert.equal(again.code, 0, again.stderr);
    assert.equal((await stop()).code, 0);
  });

  it('a wipe given in the console deletes the workspace\'s keys and disks on the client (scanned) and it cannot start again', async () => {
    const before = scan([f('client')], [imageKeyId]);
    assert.equal(before.size, 1, 'before: the client holds the image key (wrapped, with its id)');
    await order('wipe', 'lost in transit');
    const r = await start();
    assert.equal(r.code, 16, r.stderr);
    assert.match(r.stderr, /ordered workspace desk wiped on client \S+: lost in transit: this client deleted the workspace's released keys, \d+ disk key files?, then \d+ disk and state files/);
    assert.equal(scan([f('client')], [imageKeyId]).size, 0, 'no file of the client root holds the image key');
    const files = (d: string): string[] => readdirSync(d).flatMap((e) => (statSync(join(d, e)).isDirectory() ? files(join(d, e)) : [join(d, e)]));
    // what stays is the user's own client key pair (it opens grants of every workspace, not this one's data)
    const left = files(f('client')).filter((p) => /\.(enc|evhd|vsv)$/.test(p) && !p.endsWith(join('data', 'Users', 'alice', 'client.key.enc')));
    assert.deepEqual(left, [], 'no key file, disk or saved state of the workspace is left');
    const later = await start();
    assert.equal(later.code, 16, 'the order stands: it cannot start');
    await page.goto(`${srv.url}/console/clients/${client}`);
    const confirmed = page.locator('table', { hasText: 'Wipes the clients confirmed.' }).locator('tbody tr');
    assert.equal(await confirmed.count(), 1);
    assert.match((await confirmed.textContent())!, /alice\s*desk/);
    await check('wiped');
  });
});
