/**
 * Published applications end to end, through the CLI: a real `medv serve` with a policy that
 * publishes two applications of a workspace whose image is the Linux test guest (with Debian's
 * qemu-guest-agent), packed and uploaded with `medv image pack|upload`; `medv workspace run`
 * starts the workspace (headless, TCG), waits for the agent and runs each application's argv in
 * the guest: the exit status and the output reach the CLI. The menu entries run that command.
 * A third workspace runs the guest's 9p variant (Debian's generic kernel, vm/README.md): a folder
 * the user shares with `medv workspace start --share` is read inside the guest, and is read-only.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MEDV_BIN, runMedv, runMedvAsync, tempDir, waitForFileText, type RunResult } from '../helpers/cli.js';
import { freshLinuxImage, LINUX_BOOT_MS, LINUX_GUEST } from '../helpers/linux-guest.js';
import { vmDevices } from '../../src/host/client.js';

describe('workspace run: published applications in the Linux guest through its guest agent', function () {
  this.timeout(LINUX_BOOT_MS + 600_000);
  const dir = tempDir('apps');
  const f = (...p: string[]) => join(dir.path, ...p);
  let serve: ChildProcess;
  let url = '';
  const adminTokenFile = () => f('server', 'admin.token');
  const env = (extra: Record<string, string | undefined> = {}) => ({
    MEDV_CLIENT_ROOT: f('client'), MEDV_RUN_DIR: f('run'), XDG_DATA_HOME: f('xdg'), XDG_CACHE_HOME: f('cache'), XDG_CONFIG_HOME: f('config'),
    MEDV_TEST_ACCEL: undefined, ...extra,
  });
  /** A client command, asynchronously (the server is our child too). */
  const client = (args: string[], extra: Record<string, string | undefined> = {}): Promise<RunResult> => runMedvAsync(args, env(extra));
  const ok = (r: RunResult) => { assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr}${r.stdout}`); return r; };
  const admin = (args: string[]) => ok(runMedv([...args, '--server', url, '--token-file', adminTokenFile()], { MEDV_STATE_DIR: f('state') }, { timeoutMs: 300_000 }));
  const run = (app: string, args: string[] = [], extra: Record<string, string | undefined> = {}) => client(['workspace', 'run', 'apps', app, '--display', 'none', '--accel', 'tcg', ...args], extra);
  const vmNameOf = async (ws: string): Promise<string> => JSON.parse(ok(await client(['workspace', 'status', ws, '--json'])).stdout).vmName;
  const devicesOf = async (ws: string) => vmDevices(await vmNameOf(ws), { root: f('run') });

  before(async () => {
    fs.mkdirSync(f('server'));
    serve = spawn(process.execPath, [MEDV_BIN, 'serve', '--root', f('server'), '--port', '0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    url = await new Promise<string>((res, rej) => {
      let out = '';
      serve.stdout!.on('data', (d) => { out += d; const nl = out.indexOf('\n'); if (nl >= 0) res(JSON.parse(out.slice(0, nl)).url); });
      serve.once('exit', (c) => rej(new Error(`medv serve exited ${c}`)));
    });
    fs.writeFileSync(f('alice.pw'), 'alice-password-alice', { mode: 0o600 });
    admin(['admin', 'user', 'add', 'alice', '--password-file', f('alice.pw'), '--group', 'staff']);
    fs.writeFileSync(f('policy.json'), JSON.stringify({
      name: 'staff', groups: ['staff'],
      workspaces: [{
        name: 'apps', image: 'linux', mode: 'revertible', memory: 256, network: 'none',
        applications: [
          { name: 'exit7', title: 'Exit "7" for $USER %u', argv: ['sh', '-c', 'exit 7'] },
          { name: 'version', title: 'Guest version', argv: ['cat', '/etc/medv/version'] },
          { name: 'killed', argv: ['sh', '-c', 'kill -TERM $$'] },
          // the virtio device ids the guest sees (9: a 9p transport, 3: the console/serial ports)
          { name: 'virtio', argv: ['sh', '-c', 'cat /sys/bus/virtio/devices/*/device'] },
        ],
        devices: { clipboard: true, sharedFolders: true, usb: true, usbDevices: ['1234:abcd'] },
      }, {
        name: 'bare', image: 'linux', mode: 'revertible', memory: 256, network: 'none',
      }, {
        // the guest with a kernel that mounts 9p; shared folders allowed, read-only (no sharedFoldersWritable)
        name: 'shares', image: 'linux9p', mode: 'revertible', memory: 256, network: 'none', devices: { sharedFolders: true },
      }],
    }));
    admin(['admin', 'policy', 'publish', f('policy.json')]);
    ok(runMedv(['image', 'pack', freshLinuxImage(dir.path), '--name', 'linux', '--version', '1', '--out', f('packed'), '--keys', f('keys')], {}, { timeoutMs: 300_000 }));
    admin(['image', 'upload', f('packed', 'linux_1.ckm'), f('packed', 'linux_1.ckm.index')]);
    admin(['admin', 'image-keys', 'publish', 'linux', '--keys', f('keys')]);
    ok(runMedv(['image', 'pack', freshLinuxImage(dir.path, 'linux-9p.img', '9p'), '--name', 'linux9p', '--version', '1', '--out', f('packed'), '--keys', f('keys9p')], {}, { timeoutMs: 300_000 }));
    admin(['image', 'upload', f('packed', 'linux9p_1.ckm'), f('packed', 'linux9p_1.ckm.index')]);
    admin(['admin', 'image-keys', 'publish', 'linux9p', '--keys', f('keys9p')]);
    ok(await client(['login', '--server', url, '--user', 'alice', '--password-file', f('alice.pw')]));
  });

  after(async () => {
    for (const ws of ['apps', 'bare', 'shares']) await client(['workspace', 'stop', ws, '--force']);
    serve?.kill('SIGTERM');
    await dir.cleanup();
  });

  it('the default display is a window: without $DISPLAY a clear refusal, nothing started', async () => {
    const r = await client(['workspace', 'run', 'apps', 'exit7'], { DISPLAY: undefined });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--display window needs an X display/);
    assert.ok(!fs.existsSync(f('client', 'images', 'PackedImages', 'linux_1.ckm')));
  });

  it('starts the workspace, waits for the agent, runs `sh -c "exit 7"` in the guest: medv exits 7; a second run at the same moment (a double click) waits for that start and runs too', async () => {
    fs.mkdirSync(f('docs'));
    const share = ['--share', `docs=${f('docs')}`];
    const [r, twin] = await Promise.all([run('exit7', share), run('version', share)]);
    assert.equal(r.code, 7, `${r.stderr}${r.stdout}`);
    assert.equal(twin.code, 0, `${twin.stderr}${twin.stdout}`);
    assert.equal(twin.stdout, '1\n');
    assert.match(r.stderr + twin.stderr, /deployed linux version 1/);
    assert.match(r.stderr, /running exit7 in workspace apps/);
  });

  it('the running workspace: a second application reads a file in the guest, its output and status in --json', async () => {
    const r = ok(await run('version', ['--json']));
    const out = JSON.parse(r.stdout);
    assert.equal(out.started, false, 'the workspace was already running');
    assert.equal(out.exitCode, 0);
    assert.equal(out.stdout, '1\n');
    assert.deepEqual(out.argv, ['cat', '/etc/medv/version']);
    // the plain form copies the guest's output to stdout
    assert.equal(ok(await run('version')).stdout, '1\n');
  });

  it('a signal that ends the application is 128+N; an application the policy does not publish is ENOENT (exit 3)', async () => {
    const killed = await run('killed', ['--json']);
    assert.equal(killed.code, 128 + 15, killed.stderr);
    assert.equal(JSON.parse(killed.stdout).signal, 15);
    const none = await run('nope');
    assert.equal(none.code, 3);
    assert.match(none.stderr, /workspace apps publishes no application nope \(it publishes exit7, version, killed, virtio\)/);
    const bad = await run('../x');
    assert.equal(bad.code, 2);
  });

  it('the device policy reached the VM: clipboard, the shared folder, the allowed USB device (QMP); the guest sees the 9p device', async () => {
    const d = await devicesOf('apps');
    assert.ok(d.chardevs.some((c) => c.label === 'vdagent0'), JSON.stringify(d.chardevs));
    assert.ok(d.chardevs.some((c) => c.label === 'qga0'));
    const share = d.devices.find((x) => x.type === 'virtio-9p-pci');
    assert.equal(share?.mountTag, 'docs');
    assert.deepEqual(d.devices.filter((x) => x.type === 'usb-host').map((x) => [x.vendorId, x.productId]), [[0x1234, 0xabcd]]);
    const ids = JSON.parse(ok(await run('virtio', ['--json'])).stdout).stdout.split('\n').filter(Boolean);
    assert.ok(ids.includes('0x0009'), `the guest's virtio devices: ${ids.join(' ')}`);
  });

  it('a workspace whose policy allows nothing: no agent port, clipboard, 9p or USB in its VM; --share is refused (exit 4) before anything starts', async () => {
    const refused = await client(['workspace', 'start', 'bare', '--accel', 'tcg', '--share', `docs=${f('docs')}`]);
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(refused.stderr, /the policy of workspace bare does not allow shared folders/);
    ok(await client(['workspace', 'start', 'bare', '--accel', 'tcg', '--json']));
    const d = await devicesOf('bare');
    assert.deepEqual(d.chardevs.map((c) => c.label).filter((l) => l === 'qga0' || l === 'vdagent0'), []);
    assert.deepEqual(d.devices.map((x) => x.type).filter((t) => ['virtio-serial-pci', 'virtio-9p-pci', 'qemu-xhci', 'usb-host'].includes(t)), []);
    const none = await client(['workspace', 'run', 'bare', 'anything', '--display', 'none']);
    assert.equal(none.code, 3, none.stderr);
    assert.match(none.stderr, /workspace bare publishes no application anything/);
    ok(await client(['workspace', 'stop', 'bare', '--force']));
  });

  it('a folder shared with `workspace start --share` is read inside the guest (9p) and is read-only there', async () => {
    const folder = f('shared by alice');
    fs.mkdirSync(folder);
    const line = `alice's note ${process.pid}`;
    fs.writeFileSync(join(folder, LINUX_GUEST.shareFile), `${line}\nsecond line\n`);
    ok(await client(['workspace', 'start', 'shares', '--accel', 'tcg', '--share', `notes=${folder}`, '--json']));
    const serial = join(f('run'), await vmNameOf('shares'), 'serial.log');
    await waitForFileText(serial, LINUX_GUEST.serial.ready, LINUX_BOOT_MS);
    const text = fs.readFileSync(serial, 'latin1');
    assert.deepEqual(text.match(LINUX_GUEST.serial.share)?.slice(1), ['notes', line], `the guest read the file:\n${text}`);
    assert.deepEqual(text.match(LINUX_GUEST.serial.shareWrite)?.slice(1), ['notes', 'refused: Read-only file system'], 'the policy does not allow writes');
    assert.deepEqual(fs.readdirSync(folder), [LINUX_GUEST.shareFile]);
    ok(await client(['workspace', 'stop', 'shares']));
  });

  it('the menu entries run `medv workspace run` with this client root and a window', () => {
    const apps = f('xdg', 'applications');
    const entries = fs.readdirSync(apps).filter((n) => n.endsWith('.desktop')).sort();
    assert.equal(entries.length, 4, entries.join(' '));
    const exit7 = fs.readFileSync(join(apps, entries.find((n) => n.endsWith('-exit7.desktop'))!), 'utf8');
    const exec = exit7.split('\n').find((l) => l.startsWith('Exec='))!;
    assert.ok(exec.includes(` workspace run --client-root ${f('client')} --display window apps exit7`), exec);
    assert.match(exit7, /^Name=Exit "7" for \$USER %u$/m);
  });
});
