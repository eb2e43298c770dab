/**
 * Outputs of `medv disk convert` and `disk create` as a user sees them: a failed run never deletes
 * a file it did not create (another disk's key file), and a killed run (SIGKILL mid-write) leaves
 * nothing under the final names, is not mistaken for a disk by `disk check`, and does not block
 * the re-run, which removes the killed run's temporaries.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, linkSync, openSync, closeSync, readdirSync, statSync, watch, writeSync } from 'node:fs';
import { join } from 'node:path';
import { MEDV_BIN, TEST_PASSPHRASE, run, runMedv, sha256File, tempDir } from '../helpers/cli.js';

const TEMP = /\.medv-tmp-/;

/** A raw file of `mib` MiB with no all-zero chunk (so every chunk is copied). */
function writeSource(path: string, mib: number): void {
  const fd = openSync(path, 'w');
  try {
    const chunk = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < mib; i++) {
      for (let o = 0; o < chunk.length; o += 16) { chunk.writeUInt32LE(i, o); chunk.write('medv-source-', o + 4, 'latin1'); }
      writeSync(fd, chunk);
    }
  } finally { closeSync(fd); }
}

const temps = (dir: string) => readdirSync(dir).filter((n) => TEMP.test(n));

/**
 * Run `medv ARGS` and SIGKILL it as soon as a file it made in `dir` (its output, under whatever
 * name) holds at least `atLeast` bytes (woken by inotify events on the folder, not by a timer).
 * Fails if the command finishes first.
 */
async function killMidWrite(dir: string, args: string[], atLeast: number): Promise<{ killedAt: number }> {
  const child = spawn(process.execPath, [MEDV_BIN, ...args], { env: { ...process.env, MEDV_PASSPHRASE: TEST_PASSPHRASE }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr += d; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (code, signal) => res({ code, signal })));
  let killedAt = 0;
  const before = new Set(readdirSync(dir));
  const watcher = watch(dir, () => {
    if (killedAt) return;
    for (const n of readdirSync(dir).filter((f) => !before.has(f))) {
      let size = 0;
      try { size = statSync(join(dir, n)).size; } catch { continue; }
      if (size >= atLeast) { killedAt = size; child.kill('SIGKILL'); return; }
    }
  });
  try {
    const { code, signal } = await exited;
    assert.equal(signal, 'SIGKILL', `medv ${args.join(' ')} finished (exit ${code}) before it was killed: ${stderr}`);
  } finally {
    watcher.close();
  }
  return { killedAt };
}

describe('cli: convert and create outputs', function () {
  this.timeout(180_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('outputs'); });
  afterEach(() => dir.cleanup());

  describe('a failed run deletes nothing it did not create', () => {
    it('convert/create to x.evhd when x.enc exists: refused, x.enc keeps its bytes', () => {
      const d = dir.path;
      // x.enc is the key file of another disk (a real one, copied beside a name it does not own).
      assert.equal(runMedv(['disk', 'create', join(d, 'other.evhd'), '--size', '8M']).code, 0);
      copyFileSync(join(d, 'other.enc'), join(d, 'x.enc'));
      const keyBefore = sha256File(join(d, 'x.enc'));
      const raw = join(d, 'src.raw');
      writeSource(raw, 2);
      const vhd = join(d, 'src.vhd');
      assert.equal(runMedv(['disk', 'convert', raw, vhd]).code, 0);
      for (const args of [
        ['disk', 'convert', vhd, join(d, 'x.evhd')], // container path (encryptFile)
        ['disk', 'convert', raw, join(d, 'x.evhd')], // virtual-disk copy path
        ['disk', 'create', join(d, 'x.evhd'), '--size', '8M'],
      ]) {
        const r = runMedv(args);
        assert.equal(r.code, 3, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /key file exists: .*x\.enc.* \[EEXIST\]/);
        assert.ok(existsSync(join(d, 'x.enc')), `${args.join(' ')} deleted x.enc`);
        assert.equal(sha256File(join(d, 'x.enc')), keyBefore);
        assert.equal(existsSync(join(d, 'x.evhd')), false);
        assert.deepEqual(temps(d), []);
      }
    });

    it('convert src.vhd x.EVHD beside x.evhd (same key file x.enc): refused, x.evhd still decrypts', () => {
      const d = dir.path;
      const raw = join(d, 'src.raw');
      writeSource(raw, 3);
      const x = join(d, 'x.evhd');
      assert.equal(runMedv(['disk', 'convert', raw, x]).code, 0);
      const before = [sha256File(x), sha256File(join(d, 'x.enc'))];
      const vhd = join(d, 'src.vhd');
      assert.equal(runMedv(['disk', 'convert', raw, vhd]).code, 0);
      const r = runMedv(['disk', 'convert', vhd, join(d, 'x.EVHD')]);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /\[EEXIST\]/);
      assert.deepEqual([sha256File(x), sha256File(join(d, 'x.enc'))], before);
      assert.equal(existsSync(join(d, 'x.EVHD')), false);
      // The other disk can still be decrypted, and reads the source.
      const back = join(d, 'back.raw');
      const c = runMedv(['disk', 'convert', x, back, '--to', 'raw']);
      assert.equal(c.code, 0, c.stderr);
      run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw, back]);
      assert.deepEqual(temps(d), []);
    });
  });

  describe('a killed run (SIGKILL mid-write)', () => {
    const cases: Array<{ title: string; from: 'raw' | 'vhd'; dst: string; extra?: string[] }> = [
      { title: 'convert raw -> dynamic .vhd', from: 'raw', dst: 'out.vhd' },
      { title: 'convert raw -> .evhd', from: 'raw', dst: 'out.evhd' },
      { title: 'convert .vhd -> .evhd (container)', from: 'vhd', dst: 'out.evhd' },
      { title: 'convert raw -> raw', from: 'raw', dst: 'out.img', extra: ['--to', 'raw'] },
    ];
    for (const c of cases) {
      it(`${c.title}: nothing under the final name, check not fooled, the re-run succeeds and cleans up`, async () => {
        const d = dir.path;
        const raw = join(d, 'src.raw');
        writeSource(raw, 128);
        let src = raw;
        if (c.from === 'vhd') {
          src = join(d, 'src.vhd');
          assert.equal(runMedv(['disk', 'convert', raw, src]).code, 0);
        }
        const dst = join(d, c.dst);
        const enc = join(d, 'out.enc');
        await killMidWrite(d, ['disk', 'convert', src, dst, ...(c.extra ?? [])], 8 * 1024 * 1024);
        assert.equal(existsSync(dst), false, 'no file under the final name');
        assert.equal(existsSync(enc), false, 'no key file under the final name');
        assert.ok(temps(d).length > 0, 'the killed run left its temporaries');
        const check = runMedv(['disk', 'check', dst]);
        assert.equal(check.code, 3, `disk check must not pass a killed output: ${check.stdout}${check.stderr}`);

        // A temporary of a live process (this test's) is never touched by the re-run.
        const live = join(d, `.${c.dst}.medv-tmp-${process.pid}-0123456789ab`);
        writeSource(live, 1);

        const again = runMedv(['disk', 'convert', src, dst, ...(c.extra ?? [])]);
        assert.equal(again.code, 0, again.stderr);
        assert.deepEqual(temps(d), [`.${c.dst}.medv-tmp-${process.pid}-0123456789ab`], 'only the live temporary is left');
        assert.equal(runMedv(['disk', 'check', dst]).code, 0);
        if (c.dst.endsWith('.vhd') || c.dst.endsWith('.img')) {
          run('qemu-img', ['compare', '-f', 'raw', '-F', c.dst.endsWith('.vhd') ? 'vpc' : 'raw', raw, dst]);
        } else {
          const back = join(d, 'back.raw');
          assert.equal(runMedv(['disk', 'convert', dst, back, '--to', 'raw']).code, 0);
          run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw, back]);
        }
      });
    }

    it('a half-published pair left by a dead run (x.enc linked, x.evhd not) is removed by the re-run; a foreign x.enc is not', () => {
      const d = dir.path;
      const raw = join(d, 'src.raw');
      writeSource(raw, 2);
      assert.equal(runMedv(['disk', 'create', join(d, 'other.evhd'), '--size', '8M']).code, 0);
      const r0 = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
      const dead = Number(r0.stdout);
      // The dead run's state between its two links: its .enc published, its .evhd not.
      const tEnc = join(d, `.x.enc.medv-tmp-${dead}-00000000dead`);
      copyFileSync(join(d, 'other.enc'), tEnc);
      linkSync(tEnc, join(d, 'x.enc'));
      writeSource(join(d, `.x.evhd.medv-tmp-${dead}-00000000dead`), 1);
      const r = runMedv(['disk', 'convert', raw, join(d, 'x.evhd')]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(temps(d), []);
      assert.notEqual(sha256File(join(d, 'x.enc')), sha256File(join(d, 'other.enc')), 'x.enc is the new disk\'s key');
      const back = join(d, 'back.raw');
      assert.equal(runMedv(['disk', 'convert', join(d, 'x.evhd'), back, '--to', 'raw']).code, 0);
      run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', raw, back]);

      // Same leftovers, but y.enc is not the dead run's file (another inode): kept, the convert refused.
      const tEnc2 = join(d, `.y.enc.medv-tmp-${dead}-0000000dead2`);
      copyFileSync(join(d, 'other.enc'), tEnc2);
      copyFileSync(join(d, 'other.enc'), join(d, 'y.enc'));
      writeSource(join(d, `.y.evhd.medv-tmp-${dead}-0000000dead2`), 1);
      const before = sha256File(join(d, 'y.enc'));
      const r2 = runMedv(['disk', 'convert', raw, join(d, 'y.evhd')]);
      assert.equal(r2.code, 3, r2.stderr);
      assert.equal(sha256File(join(d, 'y.enc')), before);
      assert.equal(existsSync(join(d, 'y.evhd')), false);
      assert.deepEqual(temps(d), [], 'the dead run\'s temporaries are gone');
    });

    it('create a fixed .evhd: neither the .evhd nor its .enc appear; the re-run succeeds', async () => {
      const d = dir.path;
      const dst = join(d, 'new.evhd');
      await killMidWrite(d, ['disk', 'create', dst, '--size', '512M', '--type', 'fixed'], 16 * 1024 * 1024);
      assert.equal(existsSync(dst), false);
      assert.equal(existsSync(join(d, 'new.enc')), false);
      assert.ok(temps(d).length === 2, `both temporaries left: ${temps(d)}`);
      assert.equal(runMedv(['disk', 'check', dst]).code, 3);
      const again = runMedv(['disk', 'create', dst, '--size', '512M', '--type', 'fixed']);
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(temps(d), []);
      assert.equal(runMedv(['disk', 'check', dst]).code, 0);
    });
  });
});
