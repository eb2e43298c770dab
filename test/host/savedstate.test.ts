/**
 * The VHD footer's saved-state flag (byte 84 of the footer, VHD 1.0 specification), through the
 * real CLI: `vm suspend` sets it, the resume clears it, and while it is set only that resume may
 * write the disk; a disk flagged by another program (Virtual PC) without a saved state is refused
 * with one clear line until `vm discard-state`.
 */
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readFileSync, readSync, renameSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST, freshGuestImage } from '../helpers/qemu.js';
import { runMedv, sha256File, tempDir, waitForFileText } from '../helpers/cli.js';

const FOOTER = 512;

/** Ones' complement of the byte sum with the checksum field (64..67) counted as zero (the spec's rule). */
function footerChecksum(footer: Buffer): number {
  let sum = 0;
  for (let i = 0; i < FOOTER; i++) if (i < 64 || i >= 68) sum += footer[i];
  return (~sum) >>> 0;
}

function readAt(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally { closeSync(fd); }
}

/** The footer at the end and (dynamic, differencing) the copy at offset 0, as bytes in the file. */
function footers(file: string): Buffer[] {
  const end = readAt(file, statSync(file).size - FOOTER, FOOTER);
  const head = readAt(file, 0, FOOTER);
  return head.subarray(0, 8).toString('latin1') === 'conectix' ? [end, head] : [end];
}

/** Assert the saved-state byte of every footer copy, and that each checksum is right. */
function assertFlag(file: string, set: boolean): void {
  for (const f of footers(file)) {
    assert.equal(f.subarray(0, 8).toString('latin1'), 'conectix');
    assert.equal(f[84], set ? 1 : 0, `saved-state byte of ${file}`);
    assert.equal(f.readUInt32BE(64), footerChecksum(f), `footer checksum of ${file}`);
  }
}

/** Set the flag the way Virtual PC leaves it (both footer copies, checksum fixed). */
function flagLikeVirtualPc(file: string): void {
  const size = statSync(file).size;
  const fd = openSync(file, 'r+');
  try {
    for (const [f, at] of footers(file).map((b, i) => [b, i === 0 ? size - FOOTER : 0] as const)) {
      f[84] = 1;
      f.writeUInt32BE(footerChecksum(f), 64);
      writeSync(fd, f, 0, FOOTER, at);
    }
  } finally { closeSync(fd); }
}

describe('host: the VHD saved-state flag (real CLI, real QEMU)', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let env: Record<string, string>;
  const medv = (args: string[]) => runMedv(args, env);
  const ok = (args: string[]) => {
    const r = medv(args);
    assert.equal(r.code, 0, `medv ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const refused = (args: string[], why: RegExp) => {
    const r = medv(args);
    assert.equal(r.code, 11, `medv ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, /\[ESAVEDSTATE\]/);
    assert.match(r.stderr, why);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  };
  const serialOf = (name: string) => join(env.MEDV_RUN_DIR, name, 'serial.log');

  beforeEach(() => {
    dir = tempDir('medv-flag-');
    env = { MEDV_RUN_DIR: join(dir.path, 'run') };
  });
  afterEach(async () => {
    for (const s of JSON.parse(runMedv(['vm', 'list', '--json'], env).stdout || '[]')) {
      if (s.state !== 'stopped' && s.state !== 'failed') runMedv(['vm', 'stop', s.name, '--force'], env);
    }
    await dir.cleanup();
  });

  it('a resume asking for other hardware than the suspend had (--disk-bus) is refused with one clear line, the state kept; as suspended, it resumes', async () => {
    const disk = join(dir.path, 'h.vhd');
    ok(['disk', 'convert', freshGuestImage(dir.path), disk]);
    ok(['vm', 'start', disk, '--name', 'h', '--memory', '32', '--disk-bus', 'virtio']);
    await waitForFileText(serialOf('h'), GUEST.serial.ready, 60_000);
    ok(['vm', 'suspend', 'h']);
    const vsv = `${disk}.vsv`;
    const before = sha256File(vsv);
    // QEMU used to fail mid-stream here, and the command said only "read ECONNRESET [EINTERNAL]".
    refused(['vm', 'start', disk, '--name', 'h'], /other hardware \(drives virtio; NIC none\) than this start asks for \(drives ide; NIC none\)/);
    assert.equal(sha256File(vsv), before, 'the saved state is kept as it was');
    assertFlag(disk, true);
    const r = ok(['vm', 'start', disk, '--name', 'h', '--disk-bus', 'virtio', '--json']);
    assert.equal(JSON.parse(r.stdout).resumed, true);
    assert.equal(existsSync(vsv), false);
    ok(['vm', 'stop', 'h', '--force']);
  });

  for (const ext of ['vhd', 'evhd']) {
    it(`suspend sets the flag of a ${ext}; only its resume writes the disk; the resume clears it`, async () => {
      const disk = join(dir.path, `s.${ext}`);
      ok(['disk', 'convert', freshGuestImage(dir.path), disk]);
      ok(['vm', 'start', disk, '--name', 's', '--memory', '32']);
      await waitForFileText(serialOf('s'), GUEST.serial.ready, 60_000);
      ok(['vm', 'suspend', 's']);
      if (ext === 'vhd') assertFlag(disk, true);
      // Inspection still works and shows it.
      assert.equal(JSON.parse(ok(['disk', 'info', disk, '--json']).stdout).savedState, true);
      assert.match(ok(['disk', 'info', disk]).stdout, /saved state: +set/);
      ok(['disk', 'check', disk]);
      const before = sha256File(disk);
      // Without its saved state, nothing may write the disk.
      const vsv = `${disk}.vsv`;
      renameSync(vsv, `${vsv}.away`);
      refused(['vm', 'start', disk, '--name', 's'], /no saved state .*s\.[a-z]+\.vsv/);
      refused(['disk', 'serve', disk, '--socket', join(dir.path, 'nbd.sock')], /suspended VM/);
      refused(['disk', 'convert', disk, join(dir.path, `copy.${ext}`)], /suspended VM/);
      assert.equal(existsSync(join(dir.path, `copy.${ext}`)), false);
      assert.equal(sha256File(disk), before, 'the refused commands left the disk as it was');
      renameSync(`${vsv}.away`, vsv);
      // Its resume may, and clears the flag before the guest runs.
      const logged = existsSync(serialOf('s')) ? statSync(serialOf('s')).size : 0;
      assert.equal(JSON.parse(ok(['vm', 'start', disk, '--name', 's', '--json']).stdout).resumed, true);
      if (ext === 'vhd') assertFlag(disk, false);
      ok(['vm', 'stop', 's']);
      assert.equal(JSON.parse(ok(['disk', 'info', disk, '--json']).stdout).savedState, false);
      const since = readFileSync(serialOf('s')).subarray(logged).toString('latin1');
      assert.doesNotMatch(since, /MEDV-GUEST (start|boot=)/, `resumed, not booted again:\n${since}`);
    });
  }

  it('a disk Virtual PC left flagged without a saved state: one clear line, until vm discard-state; then it boots', async () => {
    const disk = join(dir.path, 'xp.vhd');
    ok(['disk', 'convert', freshGuestImage(dir.path), disk]);
    flagLikeVirtualPc(disk);
    const before = sha256File(disk);
    refused(['vm', 'start', disk, '--name', 'xp', '--memory', '32'], /no saved state .*xp\.vhd\.vsv.*vm discard-state/);
    const failed = JSON.parse(ok(['vm', 'status', 'xp', '--json']).stdout);
    assert.equal(failed.state, 'failed');
    // QEMU had been started before the disk was opened: it is gone, and it never ran the guest.
    assert.ok(Number.isSafeInteger(failed.qemuPid));
    assert.equal(existsSync(`/proc/${failed.qemuPid}`), false, 'QEMU was stopped');
    assert.doesNotMatch(existsSync(serialOf('xp')) ? readFileSync(serialOf('xp'), 'latin1') : '', /MEDV-GUEST/);
    assert.equal(sha256File(disk), before);
    // An undo disk carrying the flag is not merged into its parent.
    const base = join(dir.path, 'base.vhd');
    ok(['disk', 'convert', freshGuestImage(dir.path, 'b.img'), base]);
    const undo = join(dir.path, 'base.undo.vhd');
    ok(['disk', 'undo', 'create', undo, '--parent', base]);
    flagLikeVirtualPc(undo);
    const baseBefore = sha256File(base);
    refused(['disk', 'undo', 'merge', undo], /suspended VM/);
    assert.equal(sha256File(base), baseBefore);
    assert.ok(existsSync(undo));
    // discard-state clears the flag (and deletes nothing it did not create).
    const d = JSON.parse(ok(['vm', 'discard-state', disk, '--json']).stdout);
    assert.deepEqual(d, { removed: [], kept: [], cleared: [disk] });
    assertFlag(disk, false);
    ok(['vm', 'start', disk, '--name', 'xp', '--memory', '32']);
    await waitForFileText(serialOf('xp'), GUEST.serial.ready, 60_000);
    ok(['vm', 'stop', 'xp']);
  });

  it('vm discard-state after a suspend removes the .vsv and its key and clears the flag; the guest boots afresh', async () => {
    const disk = join(dir.path, 'd.vhd');
    ok(['disk', 'convert', freshGuestImage(dir.path), disk]);
    ok(['vm', 'start', disk, '--name', 'd', '--memory', '32']);
    await waitForFileText(serialOf('d'), GUEST.serial.ready, 60_000);
    ok(['vm', 'suspend', 'd']);
    const vsv = join(dir.path, 'd.vhd.vsv');
    const out = ok(['vm', 'discard-state', disk]).stdout;
    assert.match(out, /removed .*d\.vhd\.vsv\n/);
    assert.match(out, /cleared the saved-state flag of .*d\.vhd/);
    assert.equal(existsSync(vsv), false);
    assert.equal(existsSync(`${vsv}.enc`), false);
    assertFlag(disk, false);
    assert.equal(JSON.parse(ok(['vm', 'start', disk, '--name', 'd', '--json']).stdout).resumed, false);
    await waitForFileText(serialOf('d'), /MEDV-GUEST boot=2\r?\n/, 60_000);
    ok(['vm', 'stop', 'd']);
  });
});
