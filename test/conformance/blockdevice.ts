/**
 * The shared conformance suite: every BlockDevice and every layer runs it.
 * Usage: describeConformance('vhd dynamic', async () => ({ device, cleanup }))
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readSync } from 'node:fs';
import type { BlockDevice } from '../../src/block/device.js';
import { MedvError } from '../../src/core/errors.js';
import { readInto } from '../../src/block/emulate.js';

export interface ConformanceSubject {
  device: BlockDevice;
  /** Expected initial contents of [0, size); default all zeros. Return undefined to skip the initial-contents check. */
  initial?: (offset: number, length: number) => Buffer | undefined;
  /** Reopen the same storage after close (for persistence checks). */
  reopen?: () => Promise<BlockDevice>;
  cleanup?: () => Promise<void>;
}

export type SubjectFactory = (size: number) => Promise<ConformanceSubject>;

function expectCode(code: string) {
  return (e: unknown) => e instanceof MedvError && e.code === code;
}

/** Seeded PRNG so failures reproduce. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` writes of random data, 1 to `maxLength` bytes each, at random places; `model` follows. */
async function writeScattered(dev: BlockDevice, model: Buffer, rnd: () => number, count: number, maxLength: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(rnd() * maxLength);
    const off = Math.floor(rnd() * (dev.size - len));
    const data = randomBytes(len);
    await dev.write(off, data);
    data.copy(model, off);
  }
}

export function describeConformance(name: string, factory: SubjectFactory, opts: { size?: number } = {}): void {
  const size = opts.size ?? 8 * 1024 * 1024;
  describe(`conformance: ${name}`, function () {
    let subject: ConformanceSubject;
    let model: Buffer;
    beforeEach(async () => {
      subject = await factory(size);
      const init = subject.initial ? subject.initial(0, subject.device.size) : Buffer.alloc(subject.device.size);
      model = init ?? (await subject.device.read(0, subject.device.size));
    });
    afterEach(async () => {
      await subject.device.close().catch(() => undefined);
      if (subject.cleanup) await subject.cleanup();
    });

    it('reports its size and initial contents', async () => {
      assert.ok(subject.device.size >= size, `size ${subject.device.size} < ${size}`);
      const all = await subject.device.read(0, subject.device.size);
      assert.ok(all.equals(model), 'initial contents differ');
    });

    it('reads back aligned and unaligned writes', async () => {
      const dev = subject.device;
      const cases: Array<[number, number]> = [[0, 4096], [512, 512], [4095, 2], [1, 70000], [dev.size - 4096, 4096],
        [2 * 1024 * 1024 - 100, 300], [3 * 1024 * 1024 + 7, 1024 * 1024 + 9]];
      for (const [off, len] of cases) {
        const data = randomBytes(len);
        await dev.write(off, data);
        data.copy(model, off);
      }
      await dev.flush();
      assert.ok((await dev.read(0, dev.size)).equals(model));
      for (const [off, len] of cases) assert.ok((await dev.read(off, len)).equals(model.subarray(off, off + len)));
    });

    it('readInto fills exactly the caller\'s buffer with what read returns (its own, or the emulation)', async () => {
      const dev = subject.device;
      const cases: Array<[number, number]> = [[0, 4096], [4096, 1024 * 1024], [512, 512], [4095, 2], [1, 70000],
        [dev.size - 4096, 4096], [3 * 1024 * 1024 + 7, 1024 * 1024 + 9]];
      for (const [off, len] of cases) {
        const data = randomBytes(len);
        await dev.write(off, data);
        data.copy(model, off);
      }
      for (const [off, len] of cases) {
        // A guard byte on each side: nothing outside the given buffer is written.
        const outer = Buffer.alloc(len + 2, 0xa5);
        await readInto(dev, outer.subarray(1, 1 + len), off);
        assert.ok(outer.subarray(1, 1 + len).equals(model.subarray(off, off + len)), `readInto [${off}, +${len})`);
        assert.equal(outer[0], 0xa5);
        assert.equal(outer[len + 1], 0xa5);
      }
      await assert.rejects(readInto(dev, Buffer.alloc(4096), dev.size - 2048), { code: 'ERANGE' });
    });

    it('readIntoNow, where offered, gives what read gives or declines; never past the end, never after close', async function () {
      const dev = subject.device;
      if (!dev.readIntoNow) this.skip();
      const rnd = prng(0x5eed);
      // Written data in some places, untouched (initial) contents elsewhere; whatever the device has at hand.
      await writeScattered(dev, model, rnd, 24, 20000);
      await dev.flush();
      await dev.read(0, dev.size); // a device that caches gets the chance to
      const sizes = [1, 512, 4096, 8192, 12288, 65536 - 512, 4095];
      let hits = 0;
      for (let i = 0; i < 400; i++) {
        const len = sizes[i % sizes.length];
        const off = i % 3 === 0 ? Math.floor(rnd() * (dev.size - len)) : Math.floor(rnd() * ((dev.size - len) / 4096)) * 4096;
        const outer = Buffer.alloc(len + 2, 0xa5);
        if (!dev.readIntoNow!(outer.subarray(1, 1 + len), off)) continue;
        hits++;
        assert.ok(outer.subarray(1, 1 + len).equals(model.subarray(off, off + len)), `readIntoNow [${off}, +${len})`);
        assert.equal(outer[0], 0xa5);
        assert.equal(outer[len + 1], 0xa5);
      }
      assert.equal(dev.readIntoNow!(Buffer.alloc(4096), dev.size - 2048), false, 'past the end');
      assert.equal(dev.readIntoNow!(Buffer.alloc(4096), -4096), false, 'a negative offset');
      await dev.close();
      assert.equal(dev.readIntoNow!(Buffer.alloc(4096), 0), false, 'after close');
      this.test!.title += ` (${hits} of 400 answered now)`;
    });

    it('fileRange, where offered, names file bytes equal to what read gives; never past the end, never after close', async function () {
      const dev = subject.device;
      if (!dev.fileRange) this.skip();
      const rnd = prng(0xf11e);
      await writeScattered(dev, model, rnd, 16, 100000);
      let given = 0;
      for (let i = 0; i < 64; i++) {
        const len = 1 + Math.floor(rnd() * 300000);
        const off = Math.floor(rnd() * (dev.size - len));
        const r = dev.fileRange!(off, len, { mapped: i % 2 === 0 });
        if (!r) continue;
        given++;
        const b = Buffer.alloc(len);
        assert.equal(readSync(r.fd, b, 0, len, r.position), len);
        assert.ok(b.equals(model.subarray(off, off + len)), `fileRange [${off}, +${len})`);
      }
      assert.equal(dev.fileRange!(dev.size - 2048, 4096), undefined, 'past the end');
      assert.equal(dev.fileRange!(-4096, 4096), undefined, 'a negative offset');
      await dev.close();
      assert.equal(dev.fileRange!(0, 4096), undefined, 'after close');
      this.test!.title += ` (${given} of 64 given)`;
    });

    it('never modifies the caller buffer', async () => {
      const data = randomBytes(10000);
      const copy = Buffer.from(data);
      await subject.device.write(100, data);
      assert.ok(data.equals(copy));
    });

    it('handles many requests in flight, including neighbours sharing a 4 KiB unit', async () => {
      const dev = subject.device;
      const rnd = prng(42);
      const ops: Promise<void>[] = [];
      // 512-byte neighbours inside the same units: tests read-modify-write serialisation.
      for (let i = 0; i < 64; i++) {
        const off = 1024 * 1024 + i * 512;
        const data = randomBytes(512);
        data.copy(model, off);
        ops.push(dev.write(off, data));
      }
      // Random non-overlapping extents in distinct 64 KiB slots.
      const slots = Math.floor((dev.size - 2 * 1024 * 1024) / 65536);
      const used = new Set<number>();
      for (let i = 0; i < 64; i++) {
        const slot = Math.floor(rnd() * slots);
        if (used.has(slot)) continue;
        used.add(slot);
        const off = 2 * 1024 * 1024 + slot * 65536 + Math.floor(rnd() * 1000);
        const len = 1 + Math.floor(rnd() * 60000);
        const data = randomBytes(len);
        data.copy(model, off);
        ops.push(dev.write(off, data));
      }
      const reads = [dev.read(0, 4096), dev.read(5000, 10000)];
      await Promise.all([...ops, ...reads]);
      await dev.flush();
      assert.ok((await dev.read(0, dev.size)).equals(model));
    });

    it('writeZeroes reads back zeros; discard keeps the device usable', async () => {
      const dev = subject.device;
      const data = randomBytes(3 * 65536);
      await dev.write(65536, data);
      data.copy(model, 65536);
      await dev.writeZeroes(65536 + 1000, 70000);
      model.fill(0, 65536 + 1000, 65536 + 71000);
      assert.ok((await dev.read(0, dev.size)).equals(model));
      await dev.discard(0, 2 * 1024 * 1024);
      const fresh = randomBytes(8192);
      await dev.write(4096, fresh);
      assert.ok((await dev.read(4096, 8192)).equals(fresh));
    });

    it('rejects requests past the end with ERANGE', async () => {
      const dev = subject.device;
      await assert.rejects(dev.read(dev.size - 10, 11), expectCode('ERANGE'));
      // Resizable devices (files, containers) grow on writes past the end; virtual disks do not.
      if (!dev.capabilities.resizable) await assert.rejects(dev.write(dev.size, Buffer.alloc(1)), expectCode('ERANGE'));
    });

    it('persists across close and reopen', async function () {
      if (!subject.reopen) this.skip();
      const dev = subject.device;
      const data = randomBytes(100000);
      await dev.write(12345, data);
      data.copy(model, 12345);
      await dev.flush();
      await dev.close();
      subject.device = await subject.reopen!();
      assert.ok((await subject.device.read(0, subject.device.size)).equals(model));
    });

    it('refuses use after close with ECLOSED', async () => {
      await subject.device.close();
      await assert.rejects(subject.device.read(0, 1), expectCode('ECLOSED'));
    });
  });
}
