/**
 * Kernel locks on files (flock): the addon and the JS fallback take the same lock, judged by the
 * kernel's own tool (/usr/bin/flock) and /proc/locks; FileDevice takes them on open and refuses a
 * conflicting open with EBUSY naming the holder, in this process or another.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { FileDevice } from '../../src/block/file.js';
import { parseLockLines } from '../../src/block/flock.js';
import { MedvError } from '../../src/core/errors.js';
import { type NativeApi, fallback, nativeAddon } from '../../src/native.js';
import { REPO_ROOT, tempDir } from '../helpers/cli.js';

/** Can /usr/bin/flock (another process, its own open) take `mode` on the file right now? */
function peerCanLock(path: string, mode: '-x' | '-s'): boolean {
  const r = spawnSync('/usr/bin/flock', ['-n', '-E', '75', mode, path, 'true']);
  if (r.status !== 0 && r.status !== 75) throw new Error(`flock failed: ${r.stderr}`);
  return r.status === 0;
}

const isBusy = (e: unknown) => e instanceof MedvError && e.code === 'EBUSY';

describe('block/flock', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  let file: string;
  beforeEach(() => {
    dir = tempDir('flock');
    file = join(dir.path, 'disk.raw');
    fs.writeFileSync(file, Buffer.alloc(65536));
  });
  afterEach(() => dir.cleanup());

  for (const [name, impl] of [['addon', nativeAddon()], ['fallback', fallback]] as Array<[string, NativeApi | undefined]>) {
    describe(name, () => {
      before(function () { if (!impl) this.skip(); });

      it('takes a kernel lock on the open file description, seen by other processes and other opens', () => {
        const a = fs.openSync(file, 'r+');
        const b = fs.openSync(file, 'r');
        try {
          assert.equal(impl!.flock(a, true), true);
          assert.equal(peerCanLock(file, '-s'), false, 'another process cannot even share it');
          assert.equal(impl!.flock(b, false), false, 'a second open in this process is refused too');
          fs.closeSync(a);
          assert.equal(impl!.flock(b, false), true, 'closing the holder releases the lock');
          assert.equal(peerCanLock(file, '-s'), true, 'readers share');
          assert.equal(peerCanLock(file, '-x'), false, 'a writer is refused while a reader holds it');
        } finally {
          for (const fd of [a, b]) { try { fs.closeSync(fd); } catch { /* closed */ } }
        }
        assert.equal(peerCanLock(file, '-x'), true);
      });

      it('rejects bad arguments with EINVAL_ARG', () => {
        assert.throws(() => impl!.flock(-1, true), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
        assert.throws(() => impl!.flock(0, 'yes' as unknown as boolean), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
      });
    });
  }

  it('FileDevice: writers exclusive, readers shared, EBUSY names the holding pid', async () => {
    const w = await FileDevice.open(file);
    try {
      await assert.rejects(FileDevice.open(file, { readOnly: true }), (e: unknown) => {
        assert.ok(isBusy(e), String(e));
        const holders = (e as MedvError).data.holders as Array<{ pid: number; mode: string }>;
        assert.ok(holders.some((h) => h.pid === process.pid && h.mode === 'exclusive'), JSON.stringify(holders));
        assert.match((e as Error).message, new RegExp(`pid ${process.pid}`));
        return true;
      });
      assert.equal(peerCanLock(file, '-s'), false);
      const unlocked = await FileDevice.open(file, { readOnly: true, lock: 'none' });
      await unlocked.close();
    } finally {
      await w.close();
    }
    const r1 = await FileDevice.open(file, { readOnly: true });
    const r2 = await FileDevice.open(file, { readOnly: true });
    await assert.rejects(FileDevice.open(file), isBusy);
    assert.equal(peerCanLock(file, '-x'), false);
    await r1.close();
    await r2.close();
    const created = await FileDevice.open(join(dir.path, 'new.raw'), { create: true, size: 4096 });
    assert.equal(peerCanLock(join(dir.path, 'new.raw'), '-s'), false, 'a created file is held exclusively');
    await created.close();
  });

  it('a lock dies with its process (SIGKILL) and names it while alive', async () => {
    const script = `import('${join(REPO_ROOT, 'dist/src/block/file.js')}').then(async (m) => { await m.FileDevice.open(${JSON.stringify(file)}); process.stdout.write('locked\\n'); setInterval(() => {}, 1000); });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res, rej) => {
      child.stdout!.on('data', (d) => { if (String(d).includes('locked')) res(); });
      child.once('exit', (c) => rej(new Error(`child exited ${c}`)));
    });
    await assert.rejects(FileDevice.open(file, { readOnly: true }), (e: unknown) => {
      assert.ok(isBusy(e));
      assert.match((e as Error).message, new RegExp(`pid ${child.pid} \\(node\\) holds it for writing`));
      return true;
    });
    const exited = new Promise((res) => child.once('exit', res));
    child.kill('SIGKILL');
    await exited;
    const d = await FileDevice.open(file);
    await d.close();
  });

  it('parses /proc/locks lines, skipping waiters and other files', () => {
    const text = [
      '1: FLOCK  ADVISORY  WRITE 4242 fe:00:123 0 EOF',
      '1: -> FLOCK  ADVISORY  WRITE 4343 fe:00:123 0 EOF',
      '2: FLOCK  ADVISORY  READ 77 fe:00:123 0 EOF',
      '3: POSIX  ADVISORY  WRITE 88 fe:00:123 0 EOF',
      '4: FLOCK  ADVISORY  WRITE 99 fe:00:124 0 EOF',
    ].join('\n');
    assert.deepEqual(parseLockLines(text, 'fe:00:123'), [{ pid: 4242, mode: 'exclusive' }, { pid: 77, mode: 'shared' }]);
  });
});
