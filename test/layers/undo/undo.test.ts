import assert from 'node:assert/strict';
import { copyFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { MedvError } from '../../../src/core/errors.js';
import { openDisk } from '../../../src/layers/open.js';
import { createUndoDisk, discardUndoDisk, mergeUndoDisk, openUndoDisk } from '../../../src/layers/undo/index.js';
import { convertDisk } from '../../../src/disk/index.js';
import { describeConformance } from '../../conformance/blockdevice.js';
import { containsPattern, run, sha256File, tempDir, TEST_PASSPHRASE } from '../../helpers/cli.js';

const kek = () => ({ kind: 'passphrase' as const, passphrase: TEST_PASSPHRASE });
const MiB = 1024 * 1024;
const PATTERN = Buffer.from('UNDO-TEST-PLAINTEXT-PATTERN-0042'); // 32 bytes

async function readAll(path: string): Promise<Buffer> {
  const d = await openDisk(path, { readOnly: true, kek });
  try { return await d.device.read(0, d.device.size); } finally { await d.device.close(); }
}

/** A dynamic VHD made by qemu-img with known data in a few places. */
function makeBase(dir: string): string {
  const base = join(dir, 'base.vhd');
  run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', base, '16M']);
  run('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 5M 64k', '-c', 'write -P 0x33 15M 1M', base]);
  return base;
}

describe('layers/undo', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('undo'); });
  afterEach(() => dir.cleanup());

  for (const encrypted of [false, true]) {
    const kind = encrypted ? 'encrypted (.evhd) parent' : 'VHD parent';
    describe(kind, () => {
      async function setup(): Promise<{ base: string; undo: string }> {
        let base = makeBase(dir.path);
        if (encrypted) {
          const evhd = join(dir.path, 'base.evhd');
          await convertDisk(base, evhd, { kek });
          base = evhd;
        }
        const undo = join(dir.path, encrypted ? 'undo.evhd' : 'undo.vhd');
        await createUndoDisk(undo, base, { kek });
        return { base, undo };
      }

      it('keeps the base unchanged, and discard restores the base view', async () => {
        const { base, undo } = await setup();
        const before = sha256File(base);
        const baseView = await readAll(base);
        const mode = statSync(base).mode;
        const u = await openUndoDisk(undo, { kek });
        assert.equal(statSync(base).mode, mode, 'the parent\'s mode is never changed');
        await assert.rejects(openDisk(base, { kek }), (e: unknown) => e instanceof MedvError && e.code === 'EBUSY', 'the parent cannot be opened for writing while in use');
        const data = Buffer.concat(Array.from({ length: 128 }, () => PATTERN));
        await u.device.write(MiB / 2, data);
        await u.device.write(10 * MiB + 512, randomBytes(3000));
        await u.device.flush();
        const expected = Buffer.from(baseView);
        data.copy(expected, MiB / 2);
        assert.ok((await u.device.read(0, MiB)).equals(expected.subarray(0, MiB)));
        await u.device.close();
        assert.equal(sha256File(base), before, 'the base file is byte-for-byte unchanged');
        if (encrypted) assert.equal(containsPattern(undo, PATTERN), false, 'no plaintext in the encrypted undo disk');
        await discardUndoDisk(undo, { kek });
        assert.equal(existsSync(undo), false);
        if (encrypted) assert.equal(existsSync(undo.replace(/\.evhd$/, '.enc')), false);
        assert.ok((await readAll(base)).equals(baseView));
      });

      it('merge makes the base read what the undo disk read', async () => {
        const { base, undo } = await setup();
        const u = await openUndoDisk(undo, { kek });
        await u.device.write(3 * MiB + 4096, randomBytes(200 * 1024));
        await u.device.write(15 * MiB, randomBytes(4096));
        await u.device.writeZeroes(0, 64 * 1024);
        const undoView = await u.device.read(0, u.device.size);
        await u.device.close();
        const merged = await mergeUndoDisk(undo, { kek });
        assert.ok(merged >= 200 * 1024 + 4096 + 64 * 1024);
        assert.equal(existsSync(undo), false);
        assert.ok((await readAll(base)).equals(undoView));
      });

      it('an interrupted merge can be re-run', async () => {
        const { base, undo } = await setup();
        const u = await openUndoDisk(undo, { kek });
        await u.device.write(2 * MiB, randomBytes(3 * MiB));
        const undoView = await u.device.read(0, u.device.size);
        await u.device.close();
        // Simulate a crash half-way: the progress callback throws after the first chunk was written.
        await assert.rejects(mergeUndoDisk(undo, { kek }, (done) => { if (done >= MiB) throw new Error('crash'); }), /crash/);
        assert.ok(existsSync(undo), 'the undo disk survives an interrupted merge');
        await mergeUndoDisk(undo, { kek });
        assert.ok((await readAll(base)).equals(undoView));
      });
    });
  }

  it('refuses a plain undo disk over an encrypted parent', async () => {
    const base = join(dir.path, 'b.evhd');
    await convertDisk(makeBase(dir.path), base, { kek });
    await assert.rejects(createUndoDisk(join(dir.path, 'u.vhd'), base, { kek }), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
  });

  it('detects a parent that was replaced (unique id mismatch)', async () => {
    const base = makeBase(dir.path);
    const undo = join(dir.path, 'u.vhd');
    await createUndoDisk(undo, base);
    run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', join(dir.path, 'other.vhd'), '16M']);
    copyFileSync(join(dir.path, 'other.vhd'), base);
    await assert.rejects(openUndoDisk(undo), (e: unknown) => e instanceof MedvError && e.code === 'EPARENT');
  });
});

describeConformance('undo disk over a VHD parent', async () => {
  const d = tempDir('undo-conf');
  const base = makeBase(d.path);
  const baseView = await readAll(base);
  const undo = join(d.path, 'u.vhd');
  await createUndoDisk(undo, base);
  const opened = await openUndoDisk(undo);
  return {
    device: opened.device,
    initial: (off, len) => baseView.subarray(off, off + len),
    reopen: async () => (await openUndoDisk(undo)).device,
    cleanup: async () => d.cleanup(),
  };
});
