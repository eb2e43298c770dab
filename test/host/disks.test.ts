/**
 * What a VM opens, through the real CLI with real QEMU (the nasm guest): a `.vmc` reaches only
 * regular files inside its own folder, never through a link, a block device or a FIFO; a file
 * named on the command line may be a block device but never hangs `vm start`; a read-only test
 * run deletes only the undo disk it made itself (issue 18, items 1, 5 and 9).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST, freshGuestImage } from '../helpers/qemu.js';
import { runMedv, sha256File, waitForFileText, waitForPidExit, type RunResult } from '../helpers/cli.js';
import { vmHost } from '../helpers/vmhost.js';
import { writeVmc } from '../helpers/vmc.js';

/** A refusal the user sees as one line with the code, the given exit status and words. */
function assertRefused(r: RunResult, code: number, re: RegExp): void {
  assert.equal(r.code, code, `exit ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, re);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
}

describe('host: what a VM opens (real CLI, real QEMU)', function () {
  this.timeout(120_000);
  const host = vmHost('host-disks');
  const { vm, serialOf } = host;
  const dir = { get path() { return host.path; } };
  let vmDir: string;
  let elsewhere: string;
  const statusOf = (name: string) => JSON.parse(vm(['status', name, '--json']).stdout);
  /** QEMU was started before the disks were opened: after a refusal it must be gone, and the guest never ran. */
  const assertNothingRan = (name: string) => {
    const s = statusOf(name);
    assert.equal(s.state, 'failed');
    if (s.qemuPid) assert.equal(existsSync(`/proc/${s.qemuPid}`), false, 'QEMU was stopped');
    assert.doesNotMatch(existsSync(serialOf(name)) ? readFileSync(serialOf(name), 'latin1') : '', /MEDV-GUEST/);
  };

  beforeEach(() => {
    vmDir = join(dir.path, 'vm');
    elsewhere = join(dir.path, 'elsewhere');
    mkdirSync(vmDir);
    mkdirSync(elsewhere);
  });

  it('a .vmc\'s disk that is a link out of its folder (or behind a linked folder) is refused; the file it points at is untouched', () => {
    const target = freshGuestImage(elsewhere, 'x.img');
    const before = sha256File(target);
    symlinkSync('../elsewhere/x.img', join(vmDir, 'disk.img'));
    writeVmc(join(vmDir, 'vm.vmc'), { drives: [{ path: 'disk.img' }] });
    assertRefused(vm(['start', join(vmDir, 'vm.vmc')]), 4, /^medv: .*disk\.img is a symbolic link.*\[EUNSAFE\]/);
    assertNothingRan('vm');
    // A folder on the way that is a link: the same.
    symlinkSync('../elsewhere', join(vmDir, 'disks'));
    writeVmc(join(vmDir, 'sub.vmc'), { drives: [{ path: 'disks\\x.img' }] });
    assertRefused(vm(['start', join(vmDir, 'sub.vmc')]), 4, /disks is a symbolic link.*\[EUNSAFE\]/);
    assertNothingRan('sub');
    assert.equal(sha256File(target), before, 'the file the links point at was not written');
  });

  it('a .vmc\'s CD image that links to a root-only file elsewhere is refused', () => {
    freshGuestImage(vmDir, 'disk.img');
    const secret = join(elsewhere, 'secret.iso');
    execFileSync('dd', ['if=/dev/urandom', `of=${secret}`, 'bs=64k', 'count=1', 'status=none']);
    chmodSync(secret, 0o600);
    symlinkSync(secret, join(vmDir, 'cd.iso'));
    writeVmc(join(vmDir, 'cd.vmc'), { drives: [{ path: 'disk.img' }, { path: 'cd.iso', kind: 'cd' }] });
    assertRefused(vm(['start', join(vmDir, 'cd.vmc')]), 4, /CD\/DVD image .*cd\.iso is a symbolic link.*\[EUNSAFE\]/);
    assertNothingRan('cd');
  });

  it('a block device in a .vmc\'s folder is refused; named on the command line it is used', async function () {
    if (process.getuid?.() !== 0) this.skip();
    const scratch = freshGuestImage(elsewhere, 'scratch.img');
    const made = spawnSync('losetup', ['-f', '--show', scratch], { encoding: 'utf8' });
    if (made.status !== 0) this.skip(); // no loop devices here
    const loop = made.stdout.trim();
    try {
      const rdev = statSync(loop).rdev;
      execFileSync('mknod', [join(vmDir, 'disk.img'), 'b', String(Math.floor(rdev / 256) & 0xfff), String(rdev & 0xff)]);
      writeVmc(join(vmDir, 'dev.vmc'), { drives: [{ path: 'disk.img' }] });
      assertRefused(vm(['start', join(vmDir, 'dev.vmc')]), 4, /disk\.img is a block device, not a regular file.*\[EUNSAFE\]/);
      assertNothingRan('dev');
      const started = vm(['start', loop, '--name', 'blk', '--memory', '32', '--json']);
      assert.equal(started.code, 0, started.stderr);
      await waitForFileText(serialOf('blk'), GUEST.serial.ready, 60_000);
      assert.equal(JSON.parse(vm(['stop', 'blk', '--json']).stdout).exitReason, 'poweroff');
    } finally {
      vm(['stop', 'blk', '--force']);
      spawnSync('losetup', ['-d', loop]);
    }
  });

  it('a FIFO as a CD image, as ImageState.xml or as a test-mode disk is refused at once; nothing hangs', () => {
    freshGuestImage(vmDir, 'disk.img');
    execFileSync('mkfifo', [join(vmDir, 'cd.iso')]);
    writeVmc(join(vmDir, 'fifo.vmc'), { drives: [{ path: 'disk.img' }, { path: 'cd.iso', kind: 'cd' }] });
    assertRefused(vm(['start', join(vmDir, 'fifo.vmc')], { timeoutMs: 60_000 }), 4, /cd\.iso is a FIFO.*\[EUNSAFE\]/);
    assertNothingRan('fifo');
    const other = join(dir.path, 'other');
    mkdirSync(other);
    freshGuestImage(other, 'disk.img');
    execFileSync('mkfifo', [join(other, 'ImageState.xml')]);
    writeVmc(join(other, 'is.vmc'), { drives: [{ path: 'disk.img' }] });
    assertRefused(vm(['start', join(other, 'is.vmc')], { timeoutMs: 60_000 }), 4, /ImageState\.xml .*is a FIFO.*\[EUNSAFE\]/);
    const fifo = join(dir.path, 'fifo.vhd');
    execFileSync('mkfifo', [fifo]);
    assertRefused(vm(['start', fifo, '--read-only', '--name', 'ff'], { timeoutMs: 60_000 }), 2, /fifo\.vhd is a FIFO, not a regular file or block device.*\[EINVAL_ARG\]/);
    assertNothingRan('ff');
  });

  it('--read-only deletes only its own undo disk: another VM\'s undo disk at Test/<image>.undo.vhd is refused and kept; a crashed test run\'s is replaced', async () => {
    const base = join(vmDir, 'base.vhd');
    assert.equal(runMedv(['disk', 'convert', freshGuestImage(dir.path), base], host.env).code, 0);
    mkdirSync(join(vmDir, 'Test'));
    const theirs = join(vmDir, 'Test', 'base.undo.vhd');
    assert.equal(runMedv(['disk', 'undo', 'create', theirs, '--parent', base], host.env).code, 0);
    const kept = sha256File(theirs);
    assertRefused(vm(['start', base, '--read-only', '--name', 't', '--memory', '32']), 3, /base\.undo\.vhd exists and is not a test undo disk this VM created.*kept.*\[EEXIST\]/);
    assert.equal(sha256File(theirs), kept, 'the other undo disk is kept as it was');
    // Once it is gone, a test run that crashes leaves its own undo disk, and the next run of this VM replaces it.
    assert.equal(runMedv(['disk', 'undo', 'discard', theirs], host.env).code, 0);
    const s = JSON.parse(vm(['start', base, '--read-only', '--name', 't', '--memory', '32', '--json']).stdout);
    await waitForFileText(serialOf('t'), GUEST.serial.ready, 60_000);
    process.kill(s.pid, 'SIGKILL');
    await waitForPidExit(s.pid);
    assert.ok(existsSync(theirs), 'the crashed run left its undo disk');
    const again = vm(['start', base, '--read-only', '--name', 't', '--memory', '32', '--json']);
    assert.equal(again.code, 0, again.stderr);
    await waitForFileText(serialOf('t'), GUEST.serial.ready, 60_000);
    assert.match(readFileSync(serialOf('t'), 'latin1'), /MEDV-GUEST boot=1\r?\n/, 'the test run started from the base again');
    vm(['stop', 't']);
    assert.equal(existsSync(theirs), false, 'its own undo disk is deleted at stop');
  });
});
