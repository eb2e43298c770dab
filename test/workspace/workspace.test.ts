/**
 * Workspaces end to end, through the CLI: a real `medv serve`, packs uploaded with `medv image
 * upload`, two clients (two client roots, two VM run roots) and two users, the tiny nasm guest
 * under QEMU (its boot counter shows whether a disk kept the last run's writes).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { dirname, join } from 'node:path';
import { GUEST, fileContainsMarker } from '../helpers/qemu.js';
import { MEDV_BIN, TEST_PASSPHRASE, runMedv, runMedvAsync, tempDir, waitForFileText, type RunResult } from '../helpers/cli.js';
import { fakeClock } from '../helpers/faketime.js';
import { readKeyFile } from '../../src/crypto/index.js';
import { clientRootLayout } from '../../src/repo/index.js';
import { instanceName } from '../../src/workspace/index.js';

const IMAGE = 'img';
const IMAGE_BYTES = 16 << 20;

/** A TCP relay that records what the server sent back: the wire as a client sees it. */
class RecordingProxy {
  readonly fromServer: Buffer[] = [];
  /** While set, a request for an index waits here before it goes on to the server. */
  hold: { reached: () => void; released: Promise<void> } | undefined;
  private server = net.createServer((c) => {
    const up = net.connect(this.target);
    c.on('data', (d: Buffer) => {
      const hold = this.hold;
      if (!hold || !/^GET \/images\/\S+\.ckm\.index /m.test(d.toString('latin1'))) { up.write(d); return; }
      c.pause();
      hold.reached();
      void hold.released.then(() => { up.write(d); c.resume(); });
    });
    c.on('end', () => up.end());
    up.on('data', (d: Buffer) => { this.fromServer.push(Buffer.from(d)); c.write(d); });
    up.on('end', () => c.end());
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  port = 0;
  /** The server's port (a restarted server gets a new one). */
  constructor(public target: number) {}
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
  this.timeout(1_500_000);
  const dir = tempDir('workspace');
  const f = (...p: string[]) => join(dir.path, ...p);
  let serve: ChildProcess;
  let url = '';
  let proxy: RecordingProxy;
  let proxyUrl = '';
  const adminTokenFile = () => f('server', 'admin.token');
  const clients = { alice: { root: f('client-a'), run: f('run-a'), user: 'alice' }, bob: { root: f('client-b'), run: f('run-b'), user: 'bob' } };
  type Who = keyof typeof clients;
  const env = (who: Who, extra: Record<string, string> = {}) => ({
    MEDV_CLIENT_ROOT: clients[who].root, MEDV_RUN_DIR: clients[who].run, XDG_DATA_HOME: f(`xdg-${who}`), XDG_CACHE_HOME: f(`cache-${who}`),
    XDG_CONFIG_HOME: f(`config-${who}`), MEDV_TEST_ACCEL: undefined, ...extra,
  });
  const medv = (args: string[], who?: Who, extra: Record<string, string> = {}): RunResult => runMedv(args, who ? env(who, extra) : { MEDV_STATE_DIR: f('state') });
  /** A client command, run asynchronously: its requests go through the recording proxy in this process. */
  const client = (args: string[], who: Who, extra: Record<string, string> = {}): Promise<RunResult> => runMedvAsync(args, env(who, extra));
  const ok = (r: RunResult) => { assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr}${r.stdout}`); return r; };
  /** The serial log of a workspace's VM: its name is scoped to the client root and user. */
  const serialOf = (root: string, run: string, user: string, ws: string) => join(run, instanceName(clientRootLayout(root), user, ws), 'serial.log');
  const serial = (who: Who, ws: string) => serialOf(clients[who].root, clients[who].run, clients[who].user, ws);
  const status = async (who: Who, ws: string) => JSON.parse(ok(await client(['workspace', 'status', ws, '--json'], who)).stdout);

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
  const bootCountAt = async (file: string) => Number((await waitForFileText(file, GUEST.serial.ready, 60_000), fs.readFileSync(file, 'latin1').match(GUEST.serial.boot)?.[1]));
  const bootCount = (who: Who, ws: string) => bootCountAt(serial(who, ws));

  const cleanups: Array<() => Promise<unknown>> = [];
  const startServe = async () => {
    serve = spawn(process.execPath, [MEDV_BIN, 'serve', '--root', f('server'), '--port', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
    url = await new Promise<string>((res, rej) => {
      let out = '';
      serve.stdout!.on('data', (d) => { out += d; const nl = out.indexOf('\n'); if (nl >= 0) res(JSON.parse(out.slice(0, nl)).url); });
      serve.once('exit', (c) => rej(new Error(`medv serve exited ${c}`)));
    });
  };

  before(async () => {
    fs.mkdirSync(f('server'));
    await startServe();
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
        { name: 'travel', image: IMAGE, mode: 'persistent', memory: 64, network: 'none', offlineDays: 5 },
        { name: 'flip', image: 'swap', mode: 'persistent', memory: 64, network: 'none' },
        { name: 'race', image: IMAGE, mode: 'persistent', memory: 64, network: 'none', versionsToKeep: 0 },
        { name: 'twin', image: IMAGE, mode: 'persistent', memory: 64, network: 'none' },
      ],
    }));
    ok(medv(['admin', 'policy', 'publish', f('policy.json'), '--server', url, '--token-file', adminTokenFile()]));
    publishVersion(1, []);
    ok(medv(['admin', 'image-keys', 'publish', IMAGE, '--keys', f('keys'), '--server', url, '--token-file', adminTokenFile()]));
    ok(await client(['login', '--server', proxyUrl, '--user', 'alice', '--password-file', f('alice.pw')], 'alice'));
    ok(await client(['login', '--server', proxyUrl, '--user', 'bob', '--password-file', f('bob.pw')], 'bob'));
  });

  after(async () => {
    for (const who of ['alice', 'bob'] as const) for (const ws of ['desk', 'kiosk', 'resume', 'travel', 'flip', 'race', 'twin']) await client(['workspace', 'stop', ws, '--force'], who);
    for (const extra of cleanups) await extra();
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
    assert.deepEqual(fs.readdirSync(join(clients.bob.root, 'images')).sort(), ['PackedImages', 'PrestagedImages'], 'nothing deployed for bob');
    assert.ok(!fs.existsSync(join(clients.bob.root, 'data', 'Users', 'bob', 'Workspaces')), 'no key folder for bob');
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
    const st = await status('alice', 'desk');
    const versions = fs.readdirSync(st.folder).filter((n) => /^v\d+$/.test(n)).sort();
    assert.deepEqual(versions, ['v2', 'v3']);
    assert.deepEqual(st.versions, [2, 3]);
    for (const v of [2, 3]) assert.deepEqual(JSON.parse(fs.readFileSync(join(st.folder, `v${v}`, 'Image.json'), 'utf8')), { v: 1, image: IMAGE, imageId: st.imageId, version: v });
    const listed = JSON.parse(ok(medv(['admin', 'clients', '--json', '--server', url, '--token-file', adminTokenFile()])).stdout);
    const desk = listed.clients.find((c: { user: string; workspace: string }) => c.user === 'alice' && c.workspace === 'desk');
    assert.equal(desk.version, 3);
    assert.equal(desk.state, 'stopped');
  });

  it('a rolled-back index published under a newer version\'s URL is refused before anything is written, and nothing is left behind', async () => {
    const images = f('server', 'images');
    // the server (or a mirror) serves v3's signed index as version 9
    fs.copyFileSync(join(images, `${IMAGE}_3.ckm.index`), join(images, `${IMAGE}_9.ckm.index`));
    try {
      const before = await status('alice', 'desk');
      const listing = (dir: string) => fs.readdirSync(dir, { recursive: true }).map(String).sort();
      const was = listing(before.folder);
      const r = await start('alice', 'desk', ['--update']);
      assert.equal(r.code, 5, `installed a rolled-back index as version 9: ${r.stderr}${r.stdout}`);
      assert.match(r.stderr, /is a signed index of img version 3 .*not img version 9/);
      assert.deepEqual(listing(before.folder), was, 'no v9 folder, no partial files');
      assert.deepEqual((await status('alice', 'desk')).versions, [2, 3]);
    } finally {
      fs.rmSync(join(images, `${IMAGE}_9.ckm.index`));
    }
  });

  it('a clock override in the environment changes nothing (there is no test hook): MEDV_TEST_CLOCK=2100 still starts', async () => {
    const r = await start('alice', 'desk', [], { MEDV_TEST_CLOCK: '2100-01-01T00:00:00Z' });
    ok(r);
    await stop('alice', 'desk');
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

  it('each version folder holds its .vmc (UTF-16LE, CRLF) and ImageState.xml, with copies in Test/; the VM runs from that .vmc; GlobalImageData keeps engine, layout and VM name; --read-only runs the Test/ copy', async () => {
    const out = JSON.parse(ok(await start('alice', 'kiosk')).stdout);
    const v = join(out.folder, `v${out.version}`);
    const vmcText = (path: string) => {
      const bytes = fs.readFileSync(path);
      assert.deepEqual([...bytes.subarray(0, 2)], [0xff, 0xfe], `${path} starts with the UTF-16LE byte-order mark`);
      const text = bytes.subarray(2).toString('utf16le');
      assert.doesNotMatch(text, /[^\r]\n/, `${path}: CRLF line ends only`);
      assert.match(text, /^<\?xml version="1.0" encoding="UTF-16"\?>\r\n<preferences>\r\n/);
      assert.match(text, /<ram_size type="integer">64<\/ram_size>/, 'the policy\'s memory');
      assert.match(text, /<undo_drives>[\s\S]*<enabled type="boolean">true<\/enabled>/, 'a revertible workspace: undo drives');
      return text;
    };
    assert.match(vmcText(join(v, `${IMAGE}.vmc`)), /<relative type="string">\.\\img\.evhd<\/relative>/);
    assert.match(vmcText(join(v, 'Test', `${IMAGE}.vmc`)), /<relative type="string">\.\.\\img\.evhd<\/relative>/);
    for (const d of [v, join(v, 'Test')]) assert.match(fs.readFileSync(join(d, 'ImageState.xml'), 'utf8'), /<Memory>64<\/Memory>[\s\S]*<Network>none<\/Network>/);
    // What the folder says is what runs: the VM host started the workspace from that .vmc.
    assert.equal(out.vm.vmc, join(v, `${IMAGE}.vmc`));
    assert.equal(out.vm.memoryMiB, 64);
    assert.equal(out.vm.disks[0].undo, join(v, `${IMAGE}.undo.evhd`));
    const global = fs.readFileSync(join(out.folder, 'GlobalImageData.xml'), 'utf8');
    assert.match(global, /<VirtualizationEngine>1\.0<\/VirtualizationEngine>\s*<WorkspaceVersion>2<\/WorkspaceVersion>\s*<VmName>([^<]+)<\/VmName>/);
    assert.equal(global.match(/<VmName>([^<]+)</)![1], out.vmName);
    assert.equal(await bootCount('alice', 'kiosk'), 1);
    await stop('alice', 'kiosk');
    // A read-only test run: the Test/ copy, its writes in a throw-away undo disk in Test/, gone at stop.
    const t = JSON.parse(ok(await start('alice', 'kiosk', ['--read-only'])).stdout);
    assert.equal(t.vm.vmc, join(v, 'Test', `${IMAGE}.vmc`));
    assert.equal(t.vm.disks[0].undo, join(v, 'Test', `${IMAGE}.undo.evhd`));
    assert.equal(t.vm.disks[0].undoPolicy, 'discard');
    assert.equal(await bootCount('alice', 'kiosk'), 1);
    await stop('alice', 'kiosk');
    assert.deepEqual(fs.readdirSync(join(v, 'Test')).sort(), ['ImageState.xml', `${IMAGE}.vmc`], 'the test run left only the copies');
  });

  it('one download per image: a second workspace of a version already here fetches nothing and stores no second base; the two never see each other\'s writes', async () => {
    const desk = JSON.parse(ok(await start('alice', 'desk')).stdout);
    const n = await bootCount('alice', 'desk');
    await stop('alice', 'desk');
    const du = () => Number(execFileSync('du', ['-s', '-B1', join(clients.alice.root, 'images')], { encoding: 'utf8' }).split('\t')[0]);
    const before = du();
    proxy.reset();
    const twin = JSON.parse(ok(await start('alice', 'twin')).stdout);
    assert.equal(twin.version, desk.version);
    assert.equal(twin.deployed.shared, true);
    assert.equal(twin.deployed.fetchedBytes, 0);
    assert.doesNotMatch(proxy.wire().toString('latin1'), /content-type: (?:application\/octet-stream|multipart\/byteranges)/i, 'no index or pack bytes crossed the wire');
    const disk = (o: { folder: string; version: number }) => fs.statSync(join(o.folder, `v${o.version}`, `${IMAGE}.evhd`));
    assert.equal(disk(twin).ino, disk(desk).ino, 'one base file, linked into both version folders');
    assert.equal(await bootCount('alice', 'twin'), 1, 'twin boots the pristine base, not desk\'s writes');
    await stop('alice', 'twin');
    // Measured once twin's VM is gone (its guest's writes are all in its undo disk by then), and
    // without that undo disk: twin's own state (a VHD allocates 2 MiB blocks), not a second base.
    const undo = fs.statSync(join(twin.folder, `v${twin.version}`, `${IMAGE}.undo.evhd`));
    const added = du() - before - undo.blocks * 512;
    assert.ok(added < IMAGE_BYTES / 8, `the second workspace added ${added} bytes besides its undo disk (the image is ${IMAGE_BYTES})`);
    ok(await start('alice', 'desk'));
    assert.equal(await bootCount('alice', 'desk'), n + 1, 'desk kept its own writes, and saw none of twin\'s');
    await stop('alice', 'desk');
    // A wipe of twin deletes twin's folder (Test/ copies included) and leaves the base desk links.
    const links = disk(desk).nlink;
    ok(medv(['admin', 'client', 'wipe', '--user', 'alice', '--workspace', 'twin', '--reason', 'test wipe', '--server', url, '--token-file', adminTokenFile()]));
    const wiped = await start('alice', 'twin');
    assert.equal(wiped.code, 16, wiped.stderr);
    assert.doesNotMatch(wiped.stderr, /left /, 'nothing of twin was left behind');
    assert.equal(fs.existsSync(join(twin.folder, `v${twin.version}`)), false, 'twin\'s version folder is gone');
    assert.equal(disk(desk).nlink, links - 1, 'the base is still there, linked by desk (twin\'s link gone)');
    ok(await start('alice', 'desk'));
    assert.equal(await bootCount('alice', 'desk'), n + 2);
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

  it('medv workspace list --json on a client that never logged in prints []; a start prints each step once', async () => {
    const fresh = f('never-logged-in');
    for (const args of [['workspace', 'list', '--json'], ['workspace', 'list']]) {
      const r = runMedv([...args, '--client-root', fresh], { XDG_CONFIG_HOME: f('config-fresh') });
      assert.equal(r.code, 0, r.stderr);
      if (args.includes('--json')) assert.deepEqual(JSON.parse(r.stdout), []);
      else assert.match(r.stdout, /no workspaces yet/);
    }
    assert.ok(!fs.existsSync(fresh), 'listing created nothing');
    const r = ok(await client(['workspace', 'start', 'kiosk', '--accel', 'tcg'], 'alice'));
    const err = r.stderr.trim().split('\n');
    assert.equal(new Set(err).size, err.length, `a step printed twice:\n${r.stderr}`);
    const out = r.stdout.trim().split('\n');
    assert.equal(out.length, 1, r.stdout);
    assert.match(out[0], /^workspace kiosk started: img version \d+, VM kiosk-[0-9a-f]{16}/);
    assert.equal(`${r.stdout}${r.stderr}`.match(/workspace kiosk (started|resumed)/g)?.length, 1, `the result printed twice:\n${r.stderr}${r.stdout}`);
    await stop('alice', 'kiosk');
  });

  it('onStop suspend: stop saves the guest encrypted, status says so, the next start resumes it', async () => {
    ok(await start('alice', 'resume'));
    await waitForFileText(serial('alice', 'resume'), GUEST.serial.ready, 60_000);
    const s = JSON.parse((await stop('alice', 'resume')).stdout);
    assert.equal(s.suspended, true);
    const st = JSON.parse(ok(await client(['workspace', 'status', 'resume', '--json'], 'alice')).stdout);
    assert.equal(st.suspended, true);
    const vsv = fs.readdirSync(st.folder, { recursive: true }).map(String).filter((n) => n.endsWith('.vsv'));
    assert.equal(vsv.length, 1);
    assert.equal(await fileContainsMarker(join(st.folder, vsv[0])), false, 'the saved state holds the guest\'s marker in the clear');
    const out = JSON.parse(ok(await start('alice', 'resume')).stdout);
    assert.equal(out.resumed, true);
    assert.equal(out.vm.resumed, true);
    ok(await client(['workspace', 'stop', 'resume', '--force'], 'alice'));
    assert.equal(JSON.parse(ok(await client(['workspace', 'status', 'resume', '--json'], 'alice')).stdout).suspended, false);
  });

  it('a policy that changes the devices of a suspended workspace (its first published application: the agent\'s port) does not strand it: it resumes with the devices it had, with one warning; the next cold start has the new ones', async () => {
    ok(await start('alice', 'resume'));
    await waitForFileText(serial('alice', 'resume'), GUEST.serial.ready, 60_000);
    assert.equal(JSON.parse((await stop('alice', 'resume')).stdout).suspended, true);
    const policy = JSON.parse(fs.readFileSync(f('policy.json'), 'utf8'));
    policy.workspaces.find((w: { name: string }) => w.name === 'resume').applications = [{ name: 'shell', argv: ['sh'] }];
    fs.writeFileSync(f('policy-apps.json'), JSON.stringify(policy));
    ok(medv(['admin', 'policy', 'publish', f('policy-apps.json'), '--server', url, '--token-file', adminTokenFile()]));
    const agentPort = () => fs.existsSync(join(dirname(serial('alice', 'resume')), 'qga.sock'));
    const r = ok(await start('alice', 'resume'));
    assert.equal(JSON.parse(r.stdout).resumed, true, r.stderr);
    assert.equal(agentPort(), false, 'the resumed VM got a device its saved state does not have');
    assert.equal(r.stderr.split('\n').filter((l) => /changed the devices of workspace resume while it was suspended/.test(l)).length, 1, r.stderr);
    ok(await client(['workspace', 'stop', 'resume', '--force'], 'alice'));
    const cold = ok(await start('alice', 'resume'));
    assert.equal(JSON.parse(cold.stdout).resumed, false);
    assert.doesNotMatch(cold.stderr, /changed the devices/);
    assert.equal(agentPort(), true, 'the cold start lacks the guest agent\'s port the policy now asks for');
    ok(await client(['workspace', 'stop', 'resume', '--force'], 'alice'));
  });

  it('VM names are scoped to the client root: the same user and workspace in two roots run side by side, and each stops only its own', async () => {
    const root2 = f('client-a2');
    const env2 = { MEDV_CLIENT_ROOT: root2 };
    ok(await client(['login', '--server', proxyUrl, '--user', 'alice', '--password-file', f('alice.pw')], 'alice', env2));
    cleanups.push(() => client(['workspace', 'stop', 'kiosk', '--force'], 'alice', env2));
    ok(await start('alice', 'kiosk'));
    const second = await start('alice', 'kiosk', [], env2);
    ok(second);
    const a = (await status('alice', 'kiosk')).vmName;
    const b = JSON.parse(second.stdout).vmName;
    assert.notEqual(a, b);
    assert.equal(await bootCountAt(serialOf(root2, clients.alice.run, 'alice', 'kiosk')), 1);
    ok(await client(['workspace', 'stop', 'kiosk', '--force'], 'alice', env2));
    assert.equal((await status('alice', 'kiosk')).state, 'running', 'stopping the second root\'s workspace left the first running');
    await stop('alice', 'kiosk');
    const listed = JSON.parse(ok(await client(['vm', 'list', '--json'], 'alice')).stdout).map((v: { name: string }) => v.name);
    assert.ok(listed.includes(a) && listed.includes(b), listed.join(' '));
  });

  it('two users of one client root never boot each other\'s disk: bob\'s desk is his own', async () => {
    const shared = f('client-shared');
    // one OS account (a system client), two medv users
    const as = (_who: 'alice' | 'bob') => ({ MEDV_CLIENT_ROOT: shared, MEDV_RUN_DIR: f('run-shared'), XDG_CONFIG_HOME: f('config-shared') });
    fs.writeFileSync(f('bobs.json'), JSON.stringify({ name: 'bobs', users: ['bob'], workspaces: [{ name: 'desk', image: IMAGE, mode: 'persistent', memory: 64, network: 'none' }] }));
    ok(medv(['admin', 'policy', 'publish', f('bobs.json'), '--server', url, '--token-file', adminTokenFile()]));
    ok(await client(['login', '--server', proxyUrl, '--user', 'alice', '--password-file', f('alice.pw')], 'alice', as('alice')));
    ok(await start('alice', 'desk', [], as('alice')));
    const aliceSerial = serialOf(shared, f('run-shared'), 'alice', 'desk');
    assert.equal(await bootCountAt(aliceSerial), 1);
    ok(await client(['workspace', 'stop', 'desk'], 'alice', as('alice')));
    ok(await start('alice', 'desk', [], as('alice')));
    assert.equal(await bootCountAt(aliceSerial), 2);
    ok(await client(['workspace', 'stop', 'desk'], 'alice', as('alice')));
    // bob logs in on the same root
    ok(await client(['login', '--server', proxyUrl, '--user', 'bob', '--password-file', f('bob.pw')], 'bob', as('bob')));
    const b = JSON.parse(ok(await start('bob', 'desk', [], as('bob'))).stdout);
    assert.ok(b.deployed, 'bob\'s desk was deployed for him');
    assert.equal(await bootCountAt(serialOf(shared, f('run-shared'), 'bob', 'desk')), 1, 'bob booted alice\'s disk');
    ok(await client(['workspace', 'stop', 'desk'], 'bob', as('bob')));
    assert.equal(fs.readdirSync(join(shared, 'images')).filter((n) => n.startsWith('desk.')).length, 2, 'one folder per user');
  });

  it('a server that swaps the image behind a name (new content key, lower version) gets a fresh deployment, never the old image\'s disk', async () => {
    const images = f('server', 'images');
    const pack = (keys: string, version: number) => {
      ok(medv(['image', 'pack', rawImage(1, []), '--name', 'swap', '--version', String(version), '--out', f(`packed-${keys}`), '--keys', f(keys)]));
      ok(medv(['image', 'upload', f(`packed-${keys}`, `swap_${version}.ckm`), f(`packed-${keys}`, `swap_${version}.ckm.index`), '--server', url, '--token-file', adminTokenFile()]));
      ok(medv(['admin', 'image-keys', 'publish', 'swap', '--keys', f(keys), '--server', url, '--token-file', adminTokenFile()]));
    };
    pack('keys-swap1', 2);
    const first = JSON.parse(ok(await start('alice', 'flip')).stdout);
    assert.equal(first.version, 2);
    assert.equal(await bootCount('alice', 'flip'), 1);
    await stop('alice', 'flip');
    ok(await start('alice', 'flip'));
    assert.equal(await bootCount('alice', 'flip'), 2);
    await stop('alice', 'flip');
    // the administrator replaces image swap: other content key, published again as version 1
    for (const n of fs.readdirSync(images).filter((x) => x.startsWith('swap_'))) fs.rmSync(join(images, n));
    pack('keys-swap2', 1);
    const swapped = JSON.parse(ok(await start('alice', 'flip')).stdout);
    assert.notEqual(swapped.imageId, first.imageId);
    assert.equal(swapped.version, 1);
    assert.ok(swapped.deployed, 'the new image was deployed');
    assert.notEqual(swapped.folder, first.folder);
    assert.equal(await bootCount('alice', 'flip'), 1, 'the old image\'s disk was booted');
    await stop('alice', 'flip');
  });

  it('an account the administrator disables loses its cached grant at the next contact: no offline start afterwards', async () => {
    // carol: a third user of group staff on her own client
    const carol = { MEDV_CLIENT_ROOT: f('client-c'), MEDV_RUN_DIR: f('run-c'), XDG_CONFIG_HOME: f('config-c'), XDG_DATA_HOME: f('xdg-c'), XDG_CACHE_HOME: f('cache-c') };
    fs.writeFileSync(f('carol.pw'), 'carol-password-carol', { mode: 0o600 });
    ok(medv(['admin', 'user', 'add', 'carol', '--password-file', f('carol.pw'), '--group', 'staff', '--server', url, '--token-file', adminTokenFile()]));
    ok(await client(['login', '--server', proxyUrl, '--user', 'carol', '--password-file', f('carol.pw')], 'alice', carol));
    ok(await start('alice', 'desk', [], carol));
    ok(await client(['workspace', 'stop', 'desk', '--json'], 'alice', carol));
    ok(medv(['admin', 'user', 'disable', 'carol', '--server', url, '--token-file', adminTokenFile()]));
    const refused = await start('alice', 'desk', [], carol);
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(refused.stderr, /disabled/);
    // then the server is out of reach: desk allows 2 days offline, but not to a disabled account
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const nowhere = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const target = proxy.target;
    proxy.target = nowhere;
    try {
      const offline = await start('alice', 'desk', [], carol);
      assert.equal(offline.code, 13, `a disabled account still started offline: ${offline.stderr}${offline.stdout}`);
      assert.match(offline.stderr, /no grant cached on this client/);
    } finally {
      proxy.target = target;
      await client(['workspace', 'stop', 'desk', '--force'], 'alice', carol);
    }
  });

  it('a workspace the server refuses (403) loses its cached grant and released keys at once', async () => {
    ok(await start('alice', 'travel'));
    await stop('alice', 'travel');
    const keys = join(clients.alice.root, 'data', 'Users', 'alice', 'Workspaces', 'travel', 'keys');
    assert.ok(fs.existsSync(join(keys, 'images', `${IMAGE}.key.enc`)));
    // the administrator takes travel out of the policy
    const doc = JSON.parse(fs.readFileSync(f('policy.json'), 'utf8'));
    doc.workspaces = doc.workspaces.filter((w: { name: string }) => w.name !== 'travel');
    fs.writeFileSync(f('policy.json'), JSON.stringify(doc));
    ok(medv(['admin', 'policy', 'publish', f('policy.json'), '--server', url, '--token-file', adminTokenFile()]));
    const refused = await start('alice', 'travel');
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(refused.stderr, /not entitled to workspace travel/);
    assert.ok(!fs.existsSync(keys), 'the released keys are gone');
    assert.equal(JSON.parse(ok(await client(['workspace', 'list', '--json'], 'alice')).stdout).some((w: { workspace: string }) => w.workspace === 'travel'), false);
  });

  it('a copy of the client root opens under no other account: its start is refused in one line before anything is done', async () => {
    const copy = f('client-a-copy');
    assert.equal(spawnSync('cp', ['-a', clients.alice.root, copy]).status, 0);
    const before = fs.readdirSync(join(copy, 'images')).sort();
    const thief = await start('alice', 'desk', [], { MEDV_CLIENT_ROOT: copy, XDG_CONFIG_HOME: f('config-thief') });
    assert.equal(thief.code, 4, thief.stderr);
    assert.match(thief.stderr, /^medv: the host key .* is bound to another machine or user/);
    assert.equal(JSON.parse(thief.stdout).error.code, 'EBADKEY');
    assert.deepEqual(fs.readdirSync(join(copy, 'images')).sort(), before);
    // the same account on the same machine keeps working
    ok(await start('alice', 'desk'));
    await stop('alice', 'desk');
  });

  it('offline: starts within the allowance, is refused after it and after the expiry date, and says why; setting the clock back gives nothing back', async () => {
    serve.kill('SIGTERM');
    await new Promise((r) => serve.once('exit', r));
    const inside = await start('alice', 'desk', [], fakeClock('+1d'));
    const out = JSON.parse(ok(inside).stdout);
    assert.equal(out.online, false);
    assert.equal(out.offlineDaysLeft, 1);
    await stop('alice', 'desk');
    const after = await start('alice', 'desk', [], fakeClock('+3d'));
    assert.equal(after.code, 13, after.stderr);
    assert.match(after.stderr, /last reached it on \d{4}-\d\d-\d\d, 3 days ago, and its policy allows 2 days offline/);
    // the allowance is used up; the clock set back to inside it does not restore it
    const backInside = await start('alice', 'desk', [], fakeClock('+1d'));
    assert.equal(backInside.code, 13, `a clock set back restored the offline allowance: ${backInside.stderr}${backInside.stdout}`);
    assert.match(backInside.stderr, /3 days ago, and its policy allows 2 days offline/);
    const noClock = await start('alice', 'desk');
    assert.equal(noClock.code, 13, noClock.stderr);
    const back = await start('alice', 'desk', [], fakeClock('@2020-01-01 00:00:00'));
    assert.equal(back.code, 13);
    assert.match(back.stderr, /clock .* is before the last contact/);
    const expired = await start('alice', 'desk', [], fakeClock('@2100-01-01 00:00:00'));
    assert.equal(expired.code, 14, expired.stderr);
    assert.match(expired.stderr, /workspace desk expired on 2099-12-31/);
    // and once past the expiry day, an earlier clock does not bring the workspace back
    const unexpired = await start('alice', 'desk', [], fakeClock('@2099-12-30 00:00:00'));
    assert.equal(unexpired.code, 14, unexpired.stderr);
    const never = await start('alice', 'kiosk-never', []);
    assert.equal(never.code, 13);
    assert.match(never.stderr, /no grant cached on this client/);
    // refused by the server earlier: no cached grant, no keys, so no offline start
    const travel = await start('alice', 'travel');
    assert.equal(travel.code, 13, travel.stderr);
    assert.match(travel.stderr, /workspace travel has no grant cached on this client/);
  });

  it('back online: a report the server refuses (dated days ahead by a wrong clock) is dropped, and the reports after it arrive', async () => {
    // the offline starts above queued reports, some dated three days and more ahead
    const since = Date.now();
    await startServe();
    proxy.target = Number(new URL(url).port);
    const r = JSON.parse(ok(await start('alice', 'desk')).stdout);
    assert.equal(r.online, true);
    await stop('alice', 'desk');
    const listed = JSON.parse(ok(medv(['admin', 'clients', '--json', '--server', url, '--token-file', adminTokenFile()])).stdout);
    const clientId = JSON.parse(fs.readFileSync(join(clients.alice.root, 'data', 'Local', 'Config', 'Client.json'), 'utf8')).client;
    const desk = listed.clients.find((c: { client: string; user: string; workspace: string }) => c.client === clientId && c.user === 'alice' && c.workspace === 'desk');
    const logs = () => ok(runMedv(['logs'], env('alice'))).stdout.split('\n').filter((l) => /report/.test(l)).join('\n');
    assert.ok(Date.parse(desk.received) >= since - 1000, `no report of desk arrived since the server came back: ${JSON.stringify(desk)}\n${logs()}`);
  });

  it('two starts of one workspace at once (one of them updating) never delete the disk the other runs', async () => {
    const first = JSON.parse(ok(await start('alice', 'race')).stdout);
    await stop('alice', 'race');
    const latest = first.version as number;
    publishVersion(latest + 1, [5, 6, 900]);
    // the updating start is held as it asks for the new version's index...
    let reached!: () => void;
    const atGate = new Promise<void>((r) => { reached = r; });
    let release!: () => void;
    proxy.hold = { reached, released: new Promise<void>((r) => { release = r; }) };
    const updating = start('alice', 'race', ['--update']);
    await atGate;
    // ...while a second start of the same workspace (a double click on its menu entry) runs
    const other = await start('alice', 'race', ['--no-update']);
    proxy.hold = undefined;
    release();
    const upd = await updating;
    const old = join(first.folder, `v${latest}`, `${IMAGE}.evhd`);
    if (other.code === 0) assert.ok(fs.existsSync(old), `the disk of the running workspace (v${latest}) was deleted by the other start's retention: ${upd.stderr}`);
    assert.notEqual(other.code, 0, 'both starts went ahead');
    assert.match(other.stderr, /workspace race is (being started|already running)/);
    assert.equal(JSON.parse(ok(upd).stdout).version, latest + 1);
    await stop('alice', 'race');
  });
});
