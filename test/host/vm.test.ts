/**
 * The VM host through the real CLI: `medv vm start|status|list|serial|pause|resume|stop` with the
 * nasm test guest on real QEMU (KVM when usable, TCG here), each VM under its detached supervisor.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { GUEST, INTERNAL_ERROR_GUEST, fileContainsMarker, freshGuestImage } from '../helpers/qemu.js';
import { kvmStatus } from '../../src/hypervisor/qemu.js';
import { runMedv, sha256File, tempDir, waitForFileText, waitForPidExit } from '../helpers/cli.js';
import { writeVmc } from '../helpers/vmc.js';
import { encodePng, nonBackgroundPixels, readPng, readPpm, readXwd } from '../helpers/image.js';
import { startXvfb } from '../helpers/xvfb.js';


/** Descriptors process `pid` holds on `file`, with their open flags (from /proc/<pid>/fdinfo). */
function openDescriptors(pid: number, file: string): Array<{ fd: number; flags: number }> {
  const out: Array<{ fd: number; flags: number }> = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try { target = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    if (target !== file) continue;
    const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    out.push({ fd: Number(fd), flags: parseInt(/flags:\s+([0-7]+)/.exec(info)![1], 8) });
  }
  return out;
}

describe('host: medv vm (supervisor, real QEMU)', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let env: Record<string, string>;
  const vm = (args: string[]) => runMedv(['vm', ...args], env);
  const json = (args: string[]) => {
    const r = vm([...args, '--json']);
    assert.equal(r.code, 0, `medv vm ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const serialOf = (name: string) => join(env.MEDV_RUN_DIR, name, 'serial.log');

  beforeEach(() => {
    dir = tempDir('medv-host-');
    // The commands and the supervisors they start use this temp folder, so it can be scanned.
    env = { MEDV_RUN_DIR: join(dir.path, 'run'), TMPDIR: join(dir.path, 'tmp') };
    mkdirSync(env.TMPDIR);
  });
  afterEach(async () => {
    for (const s of JSON.parse(runMedv(['vm', 'list', '--json'], env).stdout || '[]')) {
      if (s.state !== 'stopped' && s.state !== 'failed') runMedv(['vm', 'stop', s.name, '--force'], env);
    }
    await dir.cleanup();
  });

  for (const kind of ['evhd', 'vhd'] as const) {
    it(`start, serial, ACPI stop, start again: the counter persists in a ${kind}`, async () => {
      const img = freshGuestImage(dir.path);
      const disk = join(dir.path, `g.${kind}`);
      assert.equal(runMedv(['disk', 'convert', img, disk], env).code, 0);
      const started = json(['start', disk, '--name', 'g', '--memory', '32']);
      assert.equal(started.state, 'running');
      assert.equal(started.name, 'g');
      await waitForFileText(serialOf('g'), GUEST.serial.ready, 60_000);
      assert.match(vm(['serial', 'g']).stdout, /MEDV-GUEST boot=1\r?\n/);
      assert.match(json(['serial', 'g']).serial, /MEDV-GUEST boot=1\r?\n/);
      assert.equal(json(['status', 'g']).state, 'running');
      const stopped = json(['stop', 'g', '--timeout', '30']);
      assert.equal(stopped.state, 'stopped');
      assert.equal(stopped.exitReason, 'poweroff', 'the guest powered itself off on the ACPI button');
      assert.equal(runMedv(['disk', 'check', disk], env).code, 0);
      // serial output stays readable after the stop
      assert.match(vm(['serial', 'g']).stdout, /MEDV-GUEST ready/);
      json(['start', disk, '--name', 'g', '--memory', '32']);
      await waitForFileText(serialOf('g'), GUEST.serial.ready, 60_000);
      assert.match(readFileSync(serialOf('g'), 'latin1'), /MEDV-GUEST boot=2\r?\n/);
      json(['stop', 'g']);
    });
  }

  it('--accel kvm with a guest KVM cannot emulate: the supervisor sees internal-error and relaunches it under TCG', async function () {
    if (!kvmStatus().available) this.skip();
    const image = join(dir.path, 'internal-error.img');
    copyFileSync(INTERNAL_ERROR_GUEST.image, image);
    const st = json(['start', image, '--name', 'ierr', '--accel', 'kvm', '--memory', '64']);
    await waitForFileText(serialOf('ierr'), INTERNAL_ERROR_GUEST.serial.ok, 60_000);
    assert.equal(json(['status', 'ierr']).accel, 'tcg', `started as ${st.accel}`);
    assert.match(readFileSync(join(env.MEDV_RUN_DIR, 'ierr', 'supervisor.log'), 'utf8'), /internal.error/i);
    json(['stop', 'ierr', '--force']);
  });

  it('--read-only: guest writes go to a throw-away undo disk; the base never changes', async () => {
    const img = freshGuestImage(dir.path);
    const disk = join(dir.path, 'base.evhd');
    assert.equal(runMedv(['disk', 'convert', img, disk], env).code, 0);
    const before = sha256File(disk);
    for (let i = 0; i < 2; i++) {
      const s = json(['start', disk, '--name', 't', '--memory', '32', '--read-only']);
      assert.equal(s.disks[0].undoPolicy, 'discard');
      await waitForFileText(serialOf('t'), GUEST.serial.ready, 60_000);
      assert.match(readFileSync(serialOf('t'), 'latin1'), /MEDV-GUEST boot=1\r?\n/, 'every test boot starts from the base');
      // The kernel's view of every descriptor the supervisor holds on the base: read-only (O_ACCMODE 0).
      const fds = openDescriptors(s.pid, disk);
      assert.ok(fds.length > 0, 'the supervisor holds the base open');
      for (const f of fds) assert.equal(f.flags & 3, 0, `fd ${f.fd} on the base is open for writing (flags 0${f.flags.toString(8)})`);
      json(['stop', 't']);
      assert.equal(sha256File(disk), before);
      assert.deepEqual(readdirSync(join(dir.path, 'Test')), [], 'the undo disk is discarded at stop');
    }
  });

  it('SIGKILL of the supervisor: QEMU exits too, vm list says stopped, the disk checks, the VM starts again', async () => {
    const img = freshGuestImage(dir.path);
    const disk = join(dir.path, 'k.evhd');
    assert.equal(runMedv(['disk', 'convert', img, disk], env).code, 0);
    const s = json(['start', disk, '--name', 'k', '--memory', '32']);
    await waitForFileText(serialOf('k'), GUEST.serial.ready, 60_000);
    process.kill(s.pid, 'SIGKILL');
    await Promise.all([waitForPidExit(s.pid), waitForPidExit(s.qemuPid)]);
    const listed = json(['list']).find((v: { name: string }) => v.name === 'k');
    assert.equal(listed.state, 'stopped');
    assert.equal(listed.exitReason, 'supervisor died');
    assert.equal(runMedv(['disk', 'check', disk], env).code, 0);
    json(['start', disk, '--name', 'k', '--memory', '32']);
    await waitForFileText(serialOf('k'), /MEDV-GUEST boot=2\r?\n/, 60_000);
    json(['stop', 'k']);
  });

  it('pause and resume; a second start of a running name is refused; bad input gives one line', async () => {
    const img = freshGuestImage(dir.path);
    json(['start', img, '--name', 'p', '--memory', '32']);
    await waitForFileText(serialOf('p'), GUEST.serial.ready, 60_000);
    assert.equal(json(['pause', 'p']).state, 'paused');
    assert.equal(json(['status', 'p']).state, 'paused');
    assert.equal(json(['resume', 'p']).state, 'running');
    const again = vm(['start', img, '--name', 'p']);
    assert.equal(again.code, 9, again.stderr);
    assert.match(again.stderr, /already running/);
    assert.equal(again.stderr.trim().split('\n').length, 1);
    // Another VM on the same disk: the running VM holds the disk's lock.
    const other = vm(['start', img, '--name', 'p2']);
    assert.equal(other.code, 9, other.stderr);
    assert.match(other.stderr, /^medv: .*(in use|locked|held)/i);
    assert.equal(other.stderr.trim().split('\n').length, 1);
    assert.equal(json(['status', 'p2']).state, 'failed');
    json(['stop', 'p']);
    const missing = vm(['start', join(dir.path, 'nope.vhd')]);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /^medv: no such disk/);
    const badName = vm(['start', img, '--name', '../x']);
    assert.equal(badName.code, 2);
    const unknown = vm(['status', 'ghost']);
    assert.equal(unknown.code, 3);
    const enc = join(dir.path, 'w.evhd');
    assert.equal(runMedv(['disk', 'convert', img, enc], env).code, 0);
    const wrongKey = runMedv(['vm', 'start', enc, '--name', 'w'], { ...env, MEDV_PASSPHRASE: 'not the passphrase' });
    assert.equal(wrongKey.code, 4, wrongKey.stderr);
    assert.match(wrongKey.stderr, /wrong passphrase/);
    assert.equal(json(['status', 'w']).state, 'failed');
  });

  it('suspend to an encrypted .vsv and resume: the guest continues (no reboot), no marker in the saved state', async () => {
    const img = freshGuestImage(dir.path);
    const disk = join(dir.path, 's.evhd');
    assert.equal(runMedv(['disk', 'convert', img, disk], env).code, 0);
    json(['start', disk, '--name', 's', '--memory', '32']);
    await waitForFileText(serialOf('s'), GUEST.serial.ready, 60_000);
    const suspended = json(['suspend', 's']);
    assert.equal(suspended.state, 'suspended');
    const vsv = join(dir.path, 's.evhd.vsv');
    assert.ok(existsSync(vsv) && existsSync(`${vsv}.enc`), 'the .vsv and its key file exist');
    assert.equal(await fileContainsMarker(vsv), false, 'no 32-byte run of the guest marker in the saved state');
    await assertNoMarkerAnywhere();
    const resumed = json(['start', disk, '--name', 's']);
    assert.equal(resumed.resumed, true);
    assert.equal(existsSync(vsv), false, 'a resumed saved state is removed');
    const stopped = json(['stop', 's']);
    assert.equal(stopped.exitReason, 'poweroff', 'the resumed guest still answers the power button');
    const serial = readFileSync(serialOf('s'), 'latin1');
    assert.equal((serial.match(/MEDV-GUEST boot=/g) ?? []).length, 1, `the guest did not boot again:\n${serial}`);
    json(['start', disk, '--name', 's']);
    await waitForFileText(serialOf('s'), /MEDV-GUEST boot=2\r?\n/, 60_000);
    json(['stop', 's']);
    // After start, suspend, resume and stop: the image folder, the run folder and the temp folder.
    await assertNoMarkerAnywhere();

    async function assertNoMarkerAnywhere(): Promise<void> {
      for (const top of [dir.path, env.TMPDIR]) {
        for (const f of readdirSync(top, { recursive: true, withFileTypes: true })) {
          if (!f.isFile()) continue;
          const file = join(f.parentPath ?? f.path, f.name);
          let found: boolean;
          try {
            found = await fileContainsMarker(file);
          } catch (e) {
            // a warm-pool supervisor's log, listed and then removed as that member is taken or retired
            if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
            throw e;
          }
          assert.equal(found, false, `the guest's marker is in ${file} in clear`);
        }
      }
    }
  });

  it('a tampered saved state is refused before anything runs and is kept; the intact one then resumes', async () => {
    const img = freshGuestImage(dir.path);
    const disk = join(dir.path, 't.evhd');
    assert.equal(runMedv(['disk', 'convert', img, disk], env).code, 0);
    json(['start', disk, '--name', 'tv', '--memory', '32']);
    await waitForFileText(serialOf('tv'), GUEST.serial.ready, 60_000);
    json(['suspend', 'tv']);
    const vsv = join(dir.path, 't.evhd.vsv');
    const good = readFileSync(vsv);
    const bad = Buffer.from(good);
    bad[Math.floor(bad.length / 2)] ^= 0x01;
    writeFileSync(vsv, bad);
    const r = vm(['start', disk, '--name', 'tv']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /does not authenticate/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.equal(json(['status', 'tv']).state, 'failed');
    assert.ok(readFileSync(vsv).equals(bad), 'a refused saved state is left as it was');
    writeFileSync(vsv, good);
    assert.equal(json(['start', disk, '--name', 'tv']).resumed, true);
    json(['stop', 'tv']);
  });

  it('a saved state whose disk changed since is refused, and nothing is started', async () => {
    const img = freshGuestImage(dir.path);
    const disk = join(dir.path, 'c.evhd');
    assert.equal(runMedv(['disk', 'convert', img, disk], env).code, 0);
    json(['start', disk, '--name', 'c', '--memory', '32']);
    await waitForFileText(serialOf('c'), GUEST.serial.ready, 60_000);
    json(['suspend', 'c']);
    // Another program writes to the disk while the VM is suspended.
    const fd = openSync(disk, 'r+');
    writeSync(fd, Buffer.alloc(1), 0, 1, statSync(disk).size - 1);
    closeSync(fd);
    const r = vm(['start', disk, '--name', 'c']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /changed since the VM was suspended/);
    assert.equal(json(['status', 'c']).state, 'failed');
  });

  it('--display vnc: a real VNC client (vncsnapshot) sees the guest; vm screenshot writes a PNG of its text', async () => {
    const img = freshGuestImage(dir.path);
    const s = json(['start', img, '--name', 'v', '--memory', '32', '--display', 'vnc']);
    assert.equal(s.display.kind, 'vnc');
    await waitForFileText(serialOf('v'), GUEST.serial.ready, 60_000);
    // vncsnapshot speaks TCP only: a loopback relay to the VM's private unix socket.
    const relay = createServer((c) => {
      const u = connect(s.display.vncSocket);
      c.pipe(u); u.pipe(c);
      u.on('error', () => c.destroy()); c.on('error', () => u.destroy());
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
    const port = (relay.address() as { port: number }).port;
    try {
      const jpg = join(dir.path, 'vnc.jpg');
      const r = await new Promise<number | null>((res) => {
        const p = spawn('vncsnapshot', ['-quiet', `127.0.0.1::${port}`, jpg], { stdio: 'ignore' });
        p.once('exit', (code) => res(code));
      });
      assert.equal(r, 0, 'vncsnapshot captured a frame');
      writeFileSync(join(dir.path, 'vnc.ppm'), execFileSync('djpeg', ['-pnm', jpg]));
      const frame = readPpm(join(dir.path, 'vnc.ppm'));
      assert.ok(nonBackgroundPixels(frame) > 1000, 'the VNC frame is not blank');
    } finally {
      relay.close();
    }
    const png = join(dir.path, 'shot.png');
    const saved = vm(['screenshot', 'v', png]);
    assert.equal(saved.code, 0, saved.stderr);
    assert.equal(saved.stdout, `saved the screen of VM v to ${png}\n`);
    assert.deepEqual(json(['screenshot', 'v', join(dir.path, 'shot2.png')]), { name: 'v', file: join(dir.path, 'shot2.png') });
    const shot = readPng(png);
    assert.ok(shot.width >= 640 && shot.height >= 400);
    assert.ok(nonBackgroundPixels(shot) > 2000, 'the screenshot shows text');
    json(['stop', 'v']);
  });

  it('--display window: the guest\'s screen appears in a GTK window on an X server (Xvfb)', async function () {
    const x = await startXvfb();
    try {
      const img = freshGuestImage(dir.path);
      const blank = readXwdOf(x.display);
      const started = runMedv(['vm', 'start', img, '--name', 'x', '--memory', '32', '--display', 'window'], { ...env, DISPLAY: x.display });
      assert.equal(started.code, 0, started.stderr);
      await waitForFileText(serialOf('x'), GUEST.serial.ready, 60_000);
      // The window paints after the guest's last line: take frames until it shows (each xwd is an event, not a sleep).
      let seen = 0;
      for (let i = 0; i < 50 && seen < 2000; i++) seen = nonBackgroundPixels(readXwdOf(x.display)) - nonBackgroundPixels(blank);
      writeFileSync(join(dir.path, 'x.png'), encodePng(readXwdOf(x.display)));
      assert.ok(seen > 2000, `the X screen shows the guest window (${seen} more non-background pixels than a blank screen)`);
      json(['stop', 'x']);
    } finally {
      x.stop();
    }
    function readXwdOf(display: string) {
      const file = join(dir.path, 'screen.xwd');
      const r = spawnSync('xwd', ['-root', '-silent', '-display', display, '-out', file]);
      assert.equal(r.status, 0, String(r.stderr));
      return readXwd(file);
    }
  });

  it('started without a passphrase or host key: one line warns that suspend will need one (not for a test run)', () => {
    const img = freshGuestImage(dir.path);
    const r = runMedv(['vm', 'start', img, '--name', 'nokey', '--memory', '32'], { ...env, MEDV_PASSPHRASE: undefined });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^medv: warning: no passphrase or host key: `medv vm suspend nokey` will be refused/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    const refused = vm(['suspend', 'nokey']);
    assert.equal(refused.code, 4, refused.stderr);
    json(['stop', 'nokey']);
    const withKey = vm(['start', img, '--name', 'nokey', '--memory', '32']);
    assert.equal(withKey.stderr, '');
    json(['stop', 'nokey']);
    const test = runMedv(['vm', 'start', img, '--name', 'nokey', '--memory', '32', '--read-only'], { ...env, MEDV_PASSPHRASE: undefined });
    assert.equal(test.code, 0, test.stderr);
    assert.equal(test.stderr, '', 'a test run cannot be suspended anyway');
    json(['stop', 'nokey']);
  });

  it('--display window without $DISPLAY is one clear line', () => {
    const img = freshGuestImage(dir.path);
    const r = runMedv(['vm', 'start', img, '--name', 'nw', '--display', 'window'], { ...env, DISPLAY: undefined });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /DISPLAY/);
  });

  for (const kind of ['evhd', 'vhd'] as const) {
    it(`a UTF-16LE .vmc with Windows relative paths starts the guest from a ${kind}; ACPI stop; the counter persists`, async () => {
      const img = freshGuestImage(dir.path);
      const disk = join(dir.path, `xp.${kind}`);
      assert.equal(runMedv(['disk', 'convert', img, disk], env).code, 0);
      const vmc = join(dir.path, 'xp.vmc');
      writeVmc(vmc, { drives: [{ path: `xp.${kind}` }] });
      const s = json(['start', vmc]);
      assert.equal(s.name, 'xp');
      assert.equal(s.memoryMiB, 32);
      assert.equal(s.vmc, vmc);
      await waitForFileText(serialOf('xp'), GUEST.serial.ready, 60_000);
      assert.match(vm(['serial', 'xp']).stdout, /MEDV-GUEST boot=1\r?\n/);
      assert.equal(json(['stop', 'xp']).exitReason, 'poweroff');
      json(['start', vmc]);
      await waitForFileText(serialOf('xp'), /MEDV-GUEST boot=2\r?\n/, 60_000);
      json(['stop', 'xp']);
    });
  }

  it('a .vmc that is not XML, or names a disk outside its folder or on an unmapped drive, is one clear line', () => {
    const bad = join(dir.path, 'bad.vmc');
    writeFileSync(bad, 'this is not xml');
    const r1 = vm(['start', bad]);
    assert.equal(r1.code, 5, r1.stderr);
    assert.equal(r1.stderr.trim().split('\n').length, 1);
    const outside = join(dir.path, 'out.vmc');
    writeVmc(outside, { drives: [{ path: '..\\..\\etc\\passwd' }] });
    const r2 = vm(['start', outside]);
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /^medv: .*(leaves the folder|no such file)/);
    assert.equal(r2.stderr.trim().split('\n').length, 1);
  });

  it('Virtual PC undo drives: writes go to the .vud, the base keeps its bytes', async () => {
    const img = freshGuestImage(dir.path);
    const disk = join(dir.path, 'u.vhd');
    assert.equal(runMedv(['disk', 'convert', img, disk], env).code, 0);
    const before = sha256File(disk);
    const vmc = join(dir.path, 'u.vmc');
    writeVmc(vmc, { drives: [{ path: 'u.vhd' }], extra: '    <settings><undo_drives><enabled type="boolean">true</enabled></undo_drives></settings>' });
    const s = json(['start', vmc]);
    assert.equal(s.disks[0].undoPolicy, 'keep');
    await waitForFileText(serialOf('u'), GUEST.serial.ready, 60_000);
    json(['stop', 'u']);
    assert.equal(sha256File(disk), before, 'the base is unchanged');
    assert.ok(existsSync(s.disks[0].undo), 'the undo disk is kept');
    json(['start', vmc]);
    await waitForFileText(serialOf('u'), /MEDV-GUEST boot=2\r?\n/, 60_000);
    json(['stop', 'u']);
    assert.equal(runMedv(['disk', 'undo', 'merge', s.disks[0].undo], env).code, 0);
    assert.notEqual(sha256File(disk), before, 'merge commits the guest\'s writes');
  });
});
