/**
 * Workspaces end to end, through the CLI: a real `medv serve`, packs uploaded with `medv image
 * upload`, two clients (two client roots, two VM run roots) and two users, the tiny nasm guest
 * under QEMU (its boot counter shows whether a disk kept the last run's writes).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { GUEST, fileContainsMarker } from '../helpers/qemu.js';
import { MEDV_BIN, TEST_PASSPHRASE, runMedv, tempDir, waitForFileText, type RunResult } from '../helpers/cli.js';
import { readKeyFile } from '../../src/crypto/index.js';

const IMAGE = 'img';
const IMAGE_BYTES = 16 << 20;

/** A TCP relay that records what the server sent back: the wire as a client sees it. */
class RecordingProxy {
  readonly fromServer: Buffer[] = [];
  private server = net.createServer((c) => {
    const up = net.connect(this.target);
    c.pipe(up);
    up.on('data', (d: Buffer) => { this.fromServer.push(Buffer.from(d)); c.write(d); });
    up.on('end', () => c.end());
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  port = 0;
  constructor(private readonly target: number) {}
  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
    return `http://127.0.0.1:${this.port}`;
  }
  wire(): Buffer { return Buffer.concat(this.fromServer); }
  reset(): void { this.fromServer.length = 0; }
  close(): Promise<void> { return new Promise((r) => this.server.close(() => r())); }
}

describe('workspaces end to end: medv serve, two clients, two users, the nasm guest', function () {
  this.timeout(900_000);
  const dir = tempDir('workspace');
  const f = (...p: string[]) => join(dir.path, ...p);
  let serve: ChildProcess;
  let url = '';
  let proxy: RecordingProxy;
  let proxyUrl = '';
  const adminTokenFile = () => f('server', 'admin.token');
  const clients = { alice: { root: f('client-a'), run: f('run-a') }, bob: { root: f('client-b'), run: f('run-b') } };
  type Who = keyof typeof clients;
  const env = (who: Who, extra: Record<string, string> = {}) => ({
    MEDV_CLIENT_ROOT: clients[who].root, MEDV_RUN_DIR: clients[who].run, XDG_DATA_HOME: f(`xdg-${who}`), XDG_CACHE_HOME: f(`cache-${who}`),
    MEDV_TEST_ACCEL: undefined, ...extra,
  });
  const medv = (args: string[], who?: Who, extra: Record<string, string> = {}): RunResult => runMedv(args, who ? env(who, extra) : { MEDV_STATE_DIR: f('state') });
  /** A client command, run asynchronously: its requests go through the recording proxy in this process. */
  const client = (args: string[], who: Who, extra: Record<string, string> = {}): Promise<RunResult> => new Promise((resolve) => {
    const child = spawn(process.execPath, [MEDV_BIN, ...args], { env: { ...process.env, MEDV_PASSPHRASE: TEST_PASSPHRASE, ...env(who, extra) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => { stdout += d; });
    child.stderr!.on('data', (d) => { stderr += d; });
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
  const ok = (r: RunResult) => { assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr}${r.stdout}`); return r; };
  const serial = (who: Who, ws: string) => join(clients[who].run, ws, 'serial.log');

  /** The raw image of a version: the guest's 1 MiB, then 15 MiB of data (seeded, so versions share it) with `changed` blocks rewritten. */
  const rawImage = (version: number, changed: number[]): string => {
    const path = f(`img-v${version}.raw`);
    const buf = Buffer.alloc(IMAGE_BYTES);
    fs.readFileSync(GUEST.image).copy(buf, 0);
    const seedData = Buffer.alloc(IMAGE_BYTES - (1 << 20));
    for (let i = 0; i < seedData.length; i += 32) seedData.writeUInt32LE(i * 2654435761 >>> 0, i);
    seedData.copy(buf, 1 << 20);
    for (const b of changed) randomBytes(4096).copy(buf, (1 << 20) + b * 4096);
    fs.writeFileSync(path, buf);
    return path;
  };
  const publishVersion = (version: number, changed: number[]) => {
    ok(medv(['image', 'pack', rawImage(version, changed), '--name', IMAGE, '--version', String(version), '--out', f('packed'), '--keys', f('keys')]));
    ok(medv(['image', 'upload', f('packed', `${IMAGE}_${version}.ckm`), f('packed', `${IMAGE}_${version}.ckm.index`), '--server', url, '--token-file', adminTokenFile()]));
  };
  // TCG: the nasm guest's SeaBIOS takes ~15 s under these machines' nested KVM and 0.1 s under TCG (docs/machines.md)
  const start = (who: Who, ws: string, args: string[] = [], extra: Record<string, string> = {}) => client(['workspace', 'start', ws, '--json', '--accel', 'tcg', ...args], who, extra);
  const stop = async (who: Who, ws: string) => ok(await client(['workspace', 'stop', ws, '--json'], who));
  const bootCount = async (who: Who, ws: string) => Number((await waitForFileText(serial(who, ws), GUEST.serial.ready, 60_000), fs.readFileSync(serial(who, ws), 'latin1').match(GUEST.serial.boot)?.[1]));

  before(async () => {
    fs.mkdirSync(f('server'));
    serve = spawn(process.execPath, [MEDV_BIN, 'serve', '--root', f('server'), '--port', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
    url = await new Promise<string>((res, rej) => {
      let out = '';
      serve.stdout!.on('data', (d) => { out += d; const nl = out.indexOf('\n'); if (nl >= 0) res(JSON.parse(out.slice(0, nl)).url); });
      serve.once('exit', (c) => rej(new Error(`medv serve exited ${c}`)));
    });
    proxy = new RecordingProxy(Number(new URL(url).port));
    proxyUrl = await proxy.start();
    for (const [user, groups] of [['alice', ['staff']], ['bob', []]] as const) {
      fs.writeFileSync(f(`${user}.pw`), `${user}-password-${user}`, { mode: 0o600 });
      ok(medv(['admin', 'user', 'add', user, '--password-file', f(`${user}.pw`), ...groups.flatMap((g) => ['--group', g]), '--server', url, '--token-file', adminTokenFile()]));
    }
    fs.writeFileSync(f('policy.json'), JSON.stringify({
      name: 'staff', groups: ['staff'],
      workspaces: [
        { name: 'desk', image: IMAGE, mode: 'persistent', memory: 64, network: 'none', versionsToKeep: 1, suggestUpdate: false, offlineDays: 2, expires: '2099-12-31' },
        { name: 'kiosk', image: IMAGE, mode: 'revertible', memory: 64, network: 'none' },
        { name: 'old', image: IMAGE, expires: '2020-01-01' },
        { name: 'resume', image: IMAGE, mode: 'persistent', onStop: 'suspend', memory: 64, network: 'none' },
      ],
    }));
    ok(medv(['admin', 'policy', 'publish', f('policy.json'), '--server', url, '--token-file', adminTokenFile()]));
    publishVersion(1, []);
    ok(medv(['admin', 'image-keys', 'publish', IMAGE, '--keys', f('keys'), '--server', url, '--token-file', adminTokenFile()]));
    ok(await client(['login', '--server', proxyUrl, '--user', 'alice', '--password-file', f('alice.pw')], 'alice'));
    ok(await client(['login', '--server', proxyUrl, '--user', 'bob', '--password-file', f('bob.pw')], 'bob'));
  });

  after(async () => {
    for (const who of ['alice', 'bob'] as const) for (const ws of ['desk', 'kiosk', 'resume']) await client(['workspace', 'stop', ws, '--force'], who);
    serve?.kill('SIGTERM');
    await proxy?.close();
    await dir.cleanup();
  });

  it('the entitled user starts the workspace; the other is refused with a clear message and no key bytes reach that client', async () => {
    proxy.reset();
    const r = ok(await start('alice', 'desk'));
    const out = JSON.parse(r.stdout);
    assert.equal(out.version, 1);
    assert.equal(out.online, true);
    assert.ok(out.deployed.fetchedBytes > 0);
    assert.equal(await bootCount('alice', 'desk'), 1);
    assert.ok(proxy.wire().includes(Buffer.from('"sealed"')), 'alice\'s grant came over this wire');
    await stop('alice', 'desk');

    proxy.reset();
    const denied = await start('bob', 'desk');
    assert.equal(denied.code, 4, denied.stderr);
    assert.match(denied.stderr, /user bob is not entitled to workspace desk/);
    const wire = proxy.wire();
    const key = await readKeyFile(f('keys', 'images', `${IMAGE}.key.enc`), { kind: 'passphrase', passphrase: TEST_PASSPHRASE });
    const raw = Buffer.from(key.key.subarray(0, 32));
    key.dispose();
    for (const form of [raw, Buffer.from(raw.toString('hex')), Buffer.from(raw.toString('base64')), Buffer.from('"sealed"')]) assert.ok(!wire.includes(form), `bob's wire holds ${form.toString().slice(0, 20)}…`);
    assert.ok(!fs.existsSync(join(clients.bob.root, 'images', IMAGE)), 'nothing deployed for bob');
    assert.ok(!fs.existsSync(join(clients.bob.root, 'data', 'Users', 'bob', 'keys', 'images')), 'no key folder for bob');
    const expired = await start('alice', 'old');
    assert.equal(expired.code, 14, expired.stderr);
    assert.match(expired.stderr, /workspace old expired on 2020-01-01/);
    assert.ok(!proxy.wire().includes(Buffer.from('"sealed"')), 'the server released no keys for an expired workspace');
    const unknown = await start('bob', 'no-such-workspace');
    assert.equal(unknown.code, 4);
    assert.match(unknown.stderr, /user bob is not entitled to workspace no-such-workspace/);
  });

  it('v1 → v2 → v3 with one old version kept: the client holds v3 and v2, and each update fetched far less than the image', async () => {
    for (const v of [2, 3]) {
      publishVersion(v, [v * 10, v * 10 + 1, 700 + v]);
      const out = JSON.parse(ok(await start('alice', 'desk')).stdout);
      assert.equal(out.version, v);
      assert.ok(out.deployed.fetchedBytes < IMAGE_BYTES / 20, `update to v${v} fetched ${out.deployed.fetchedBytes} bytes of ${IMAGE_BYTES}`);
      assert.ok(out.deployed.blocksFromSeeds > out.deployed.blocksFromNetwork);
      await stop('alice', 'desk');
    }
    const versions = fs.readdirSync(join(clients.alice.root, 'images', 'desk')).filter((n) => /^v\d+$/.test(n)).sort();
    assert.deepEqual(versions, ['v2', 'v3']);
    const st = JSON.parse(ok(await client(['workspace', 'status', 'desk', '--json'], 'alice')).stdout);
    assert.deepEqual(st.versions, [2, 3]);
    const listed = JSON.parse(ok(medv(['admin', 'clients', '--json', '--server', url, '--token-file', adminTokenFile()])).stdout);
    const desk = listed.clients.find((c: { user: string; workspace: string }) => c.user === 'alice' && c.workspace === 'desk');
    assert.equal(desk.version, 3);
    assert.equal(desk.state, 'stopped');
  });

  it('revertible: the guest\'s writes are gone at the next start; persistent: they stay', async () => {
    for (let i = 0; i < 2; i++) {
      ok(await start('alice', 'kiosk'));
      assert.equal(await bootCount('alice', 'kiosk'), 1, `kiosk run ${i + 1}`);
      const s = JSON.parse((await stop('alice', 'kiosk')).stdout);
      assert.equal(s.discarded, true);
    }
    const before = JSON.parse(ok(await start('alice', 'desk')).stdout);
    const n = await bootCount('alice', 'desk');
    await stop('alice', 'desk');
    ok(await start('alice', 'desk'));
    assert.equal(await bootCount('alice', 'desk'), n + 1, `persistent desk v${before.version}`);
    await stop('alice', 'desk');
  });

  it('a policy that suggests updates: a script is told, a terminal is asked (y deploys it)', async function () {
    if (spawnSync('script', ['--version']).status !== 0) this.skip();
    publishVersion(4, [40, 41]);
    const told = JSON.parse(ok(await start('alice', 'kiosk')).stdout);
    assert.equal(told.version, 3);
    assert.equal(told.updateAvailable, 4);
    assert.equal(told.deployed, undefined);
    await stop('alice', 'kiosk');
    const envs = Object.entries({ ...process.env, MEDV_PASSPHRASE: TEST_PASSPHRASE, ...env('alice') }).filter(([, v]) => v !== undefined);
    const cmd = ['env', ...envs.map(([k, v]) => `${k}=${v}`), process.execPath, MEDV_BIN, 'workspace', 'start', 'kiosk', '--accel', 'tcg'].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
    const child = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let seen = '';
    const asked = new Promise<void>((res) => child.stdout!.on('data', (d) => { seen += d; if (/Update now\? \[y\/N\]/.test(seen)) res(); }));
    const closed = new Promise<number | null>((res) => child.once('close', res));
    await asked;
    child.stdin!.write('y\r');
    assert.equal(await closed, 0, seen);
    assert.match(seen, /Version 4 of workspace kiosk is available \(this client has 3\)/);
    assert.match(seen, /workspace kiosk started: img version 4/);
    await stop('alice', 'kiosk');
  });

  it('onStop suspend: stop saves the guest encrypted, status says so, the next start resumes it', async () => {
    ok(await start('alice', 'resume'));
    await waitForFileText(serial('alice', 'resume'), GUEST.serial.ready, 60_000);
    const s = JSON.parse((await stop('alice', 'resume')).stdout);
    assert.equal(s.suspended, true);
    const st = JSON.parse(ok(await client(['workspace', 'status', 'resume', '--json'], 'alice')).stdout);
    assert.equal(st.suspended, true);
    const vsv = fs.readdirSync(join(clients.alice.root, 'images', 'resume'), { recursive: true }).map(String).filter((n) => n.endsWith('.vsv'));
    assert.equal(vsv.length, 1);
    assert.equal(await fileContainsMarker(join(clients.alice.root, 'images', 'resume', vsv[0])), false, 'the saved state holds the guest\'s marker in the clear');
    const out = JSON.parse(ok(await start('alice', 'resume')).stdout);
    assert.equal(out.resumed, true);
    assert.equal(out.vm.resumed, true);
    ok(await client(['workspace', 'stop', 'resume', '--force'], 'alice'));
    assert.equal(JSON.parse(ok(await client(['workspace', 'status', 'resume', '--json'], 'alice')).stdout).suspended, false);
  });

  it('offline: starts within the allowance, is refused after it and after the expiry date, and says why', async () => {
    serve.kill('SIGTERM');
    await new Promise((r) => serve.once('exit', r));
    const day = 86_400_000;
    const inside = await start('alice', 'desk', [], { MEDV_TEST_CLOCK: new Date(Date.now() + day).toISOString() });
    const out = JSON.parse(ok(inside).stdout);
    assert.equal(out.online, false);
    assert.equal(out.offlineDaysLeft, 1);
    await stop('alice', 'desk');
    const after = await start('alice', 'desk', [], { MEDV_TEST_CLOCK: new Date(Date.now() + 3 * day).toISOString() });
    assert.equal(after.code, 13, after.stderr);
    assert.match(after.stderr, /last reached it on \d{4}-\d\d-\d\d, 3 days ago, and its policy allows 2 days offline/);
    const expired = await start('alice', 'desk', [], { MEDV_TEST_CLOCK: '2100-01-01T00:00:00Z' });
    assert.equal(expired.code, 14, expired.stderr);
    assert.match(expired.stderr, /workspace desk expired on 2099-12-31/);
    const back = await start('alice', 'desk', [], { MEDV_TEST_CLOCK: '2020-01-01T00:00:00Z' });
    assert.equal(back.code, 13);
    assert.match(back.stderr, /clock .* is before the last contact/);
    const never = await start('alice', 'kiosk-never', []);
    assert.equal(never.code, 13);
    assert.match(never.stderr, /never been started online on this client/);
  });
});
