/**
 * A console test's world: a real `medv serve` (SQLite or PostgreSQL) with an administrator, users
 * and groups, a policy in two versions, an image packed in two versions into the server's
 * repository with its keys published, and a client that was granted a workspace and reported
 * twice. Everything goes through the real CLI and HTTP API, as an administrator and a client do it.
 * Plus: signing in through the browser, and a small CSV reader for the exports.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchBrowser, seriousViolations, shotsDir } from '../../helpers/browser.js';
import { runMedv, tempDir } from '../../helpers/cli.js';
import { makeUsrDisk, mutateDisk } from '../../pack/images.js';
import { generateClientKeyPair } from '../../../src/api/keyrelease.js';
import { type ServeProcess, startServe } from '../helpers.js';
import { type Backend, api, dbArgs, password } from '../accounts-helpers.js';

const MiB = 1048576;

/** Two packed versions of image `lab`, made once per test file (packing is the slow part). */
export interface Packed { dir: string; keys: string; hostKey: string }

export function packLab(root: string): Packed {
  const dir = join(root, 'PackedImages');
  const keys = join(root, 'keys');
  const hostKey = join(root, 'host.key');
  writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
  const v1 = join(root, 'v1.raw');
  const v2 = join(root, 'v2.raw');
  makeUsrDisk(v1, 4 * MiB, 0.5, 5);
  copyFileSync(v1, v2);
  mutateDisk(v2, 0.05, 6);
  for (const [disk, v] of [[v1, '1'], [v2, '2']]) {
    const r = runMedv(['image', 'pack', disk, '--name', 'lab', '--version', v, '--out', dir, '--keys', keys, '--host-key', hostKey], { MEDV_PASSPHRASE: '' });
    assert.equal(r.code, 0, r.stderr);
  }
  return { dir, keys, hostKey };
}

export interface World {
  srv: ServeProcess;
  adminToken: string;
  /** The console administrator and its password. */
  admin: { user: string; password: string };
  /** An ordinary user with a client that reported; its password. */
  alice: { user: string; password: string; client: string };
  cleanup(): Promise<void>;
}

export const policyDoc = (name: string, users: string[], groups: string[], memory: number, extra: Record<string, unknown> = {}) => ({
  name, users, groups, description: `Workspaces of ${name}`,
  workspaces: [{ name: 'desk', image: 'lab', mode: 'revertible', memory, network: 'nat', offlineDays: 1, ...extra }],
});

/** A new account (role `admin` may use the console; `medv admin user add NAME --admin` makes one). */
export async function addUser(srv: ServeProcess, adminToken: string, user: string, pw: string, groups: string[], role: 'admin' | 'user' = 'user'): Promise<void> {
  const r = await api(srv.url, 'POST', '/api/admin/users', { token: adminToken, body: { user, password: pw, groups, role } });
  assert.equal(r.status, 201, r.text);
}

export async function makeWorld(backend: Backend, packed: Packed, label: string, serveArgs: string[] = []): Promise<World> {
  const dir = tempDir(`console-${label}-${backend}`);
  const root = join(dir.path, 'root');
  mkdirSync(join(root, 'images'), { recursive: true });
  for (const f of ['lab_1.ckm', 'lab_1.ckm.index', 'lab_2.ckm', 'lab_2.ckm.index']) copyFileSync(join(packed.dir, f), join(root, 'images', f));
  const db = await dbArgs(backend, `console_${label}`);
  const srv = await startServe(root, [...db.args, ...serveArgs]);
  const adminToken = readFileSync(srv.adminTokenFile, 'utf8').trim();
  const admin = { user: 'ada.admin', password: password() };
  const alice = { user: 'alice', password: password(), client: 'alice-laptop' };
  await addUser(srv, adminToken, admin.user, admin.password, [], 'admin');
  await addUser(srv, adminToken, alice.user, alice.password, ['finance']);
  await addUser(srv, adminToken, 'bob', password(), ['finance', 'lab-team']);
  await addUser(srv, adminToken, 'carol@example.org', password(), []);
  for (const doc of [policyDoc('finance', ['carol@example.org'], ['finance'], 512), policyDoc('finance', ['carol@example.org'], ['finance', 'lab-team'], 1024)]) {
    const r = await api(srv.url, 'POST', '/api/admin/policies', { token: adminToken, body: doc });
    assert.equal(r.status, 201, r.text);
  }
  const pub = runMedv(['admin', 'image-keys', 'publish', 'lab', '--keys', packed.keys, '--host-key', packed.hostKey, '--server', srv.url, '--token-file', srv.adminTokenFile, '--json'], { MEDV_PASSPHRASE: '' });
  assert.equal(pub.code, 0, pub.stderr);
  // alice's client: a login, a grant (what a workspace start asks first), then two reports
  const login = await api(srv.url, 'POST', '/api/login', { body: { user: alice.user, password: alice.password } });
  assert.equal(login.status, 200, login.text);
  const pair = generateClientKeyPair();
  const grant = await api(srv.url, 'POST', '/api/workspaces/grant', { token: login.body.token, body: { workspace: 'desk', client: alice.client, clientKey: pair.publicKey.toString('base64') } });
  pair.dispose();
  assert.equal(grant.status, 200, grant.text);
  const at = (ago: number) => new Date(Date.now() - ago).toISOString();
  for (const reports of [
    [{ workspace: 'desk', version: 1, state: 'failed', lastError: 'disk full while updating', at: at(3600_000) }],
    [{ workspace: 'desk', version: 1, state: 'running', at: at(60_000) }],
  ]) {
    const r = await api(srv.url, 'POST', '/api/reports', { token: login.body.token, body: { client: alice.client, reports } });
    assert.equal(r.status, 200, r.text);
  }
  return {
    srv, adminToken, admin, alice,
    async cleanup() {
      await srv.stop();
      await dir.cleanup();
    },
  };
}

/** Sign in through the sign-in form as a person does (Tab order, typing, Enter). */
export async function signIn(page: Page, base: string, user: string, pw: string): Promise<void> {
  await page.goto(`${base}/console/login`);
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(pw);
  await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: 'Sign in' }).click()]);
}

/** RFC 4180 CSV (quoted fields, doubled quotes, CRLF) into rows of strings. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++; } else if (c === '"') quoted = false; else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(cell); cell = ''; } else if (c === '\r' && text[i + 1] === '\n') { row.push(cell); rows.push(row); row = []; cell = ''; i++; } else cell += c;
  }
  if (cell || row.length) { row.push(cell); rows.push(row); }
  return rows;
}

/** axe on the page as it is (no serious or critical violation), then a full-page screenshot numbered and named after it. */
export function checker(shots: string, page: () => Page): (name: string) => Promise<void> {
  let n = 0;
  return async (name: string) => {
    const bad = await seriousViolations(page());
    assert.deepEqual(bad, [], `${name}: ${JSON.stringify(bad, null, 1)}`);
    await page().screenshot({ path: join(shots, `${String(++n).padStart(2, '0')}-${name}.png`), fullPage: true });
  };
}

export interface Suite {
  w: World;
  packed: Packed;
  browser: Browser;
  ctx: BrowserContext;
  page: Page;
  /** The suite's scratch folder. */
  work: string;
  check(name: string): Promise<void>;
}

/**
 * One console test file's world, set up in `before` and torn down in `after` of the calling
 * describe: a browser, a real `medv serve` (SQLite) with the fixture's data, a page signed in as
 * the administrator, screenshots under $TMPDIR/medv-console-shots/<label>/ (printed).
 */
export function consoleSuite(label: string, o: { serveArgs?: string[]; height?: number } = {}): Suite {
  const s = {} as Suite;
  const work = tempDir(`console-${label}`);
  const shots = shotsDir(label);
  s.work = work.path;
  s.check = checker(shots, () => s.page);
  before(async () => {
    s.browser = await launchBrowser();
    s.packed = packLab(work.path);
    s.w = await makeWorld('sqlite', s.packed, label, o.serveArgs);
    s.ctx = await s.browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: o.height ?? 900 } });
    s.page = await s.ctx.newPage();
    await signIn(s.page, s.w.srv.url, s.w.admin.user, s.w.admin.password);
    console.log(`      screenshots: ${shots}`);
  });
  after(async () => {
    await s.ctx?.close();
    await s.browser?.close();
    await s.w?.cleanup();
    await work.cleanup();
  });
  return s;
}
