/**
 * Crash safety of block allocation: a failure injected after every possible number of storage
 * mutations must leave a file that opens and passes checkVhd with no errors, showing for the
 * interrupted write either the old or the new data, and nothing else changed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MemoryDevice } from '../../../src/block/memory.js';
import { checkVhd, createDifferencingVhd, createVhd, openVhd } from '../../../src/layers/vhd/index.js';
import { prng } from '../../conformance/blockdevice.js';
import { InjectingDevice } from './helpers.js';

const SIZE = 8 * 1024 * 1024;

function parentData(): Buffer {
  const rnd = prng(1);
  const b = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4) b.writeUInt32LE((rnd() * 2 ** 32) >>> 0, i);
  return b;
}

async function makeBase(type: 'dynamic' | 'differencing'): Promise<{ image: Buffer; parent?: Buffer; model: Buffer }> {
  const storage = new MemoryDevice(0);
  let parent: Buffer | undefined;
  if (type === 'dynamic') await createVhd(storage, { type: 'dynamic', size: SIZE });
  else { parent = parentData(); await createDifferencingVhd(storage, { size: SIZE, uniqueId: randomBytes(16) }); }
  const dev = await openVhd(storage, parent ? { parent: MemoryDevice.from(parent, true) } : {});
  // One block already allocated, so the scenario has blocks before the new one.
  await dev.write(4096, Buffer.alloc(8192, 0x5a));
  const model = await dev.read(0, dev.size);
  await dev.close();
  return { image: storage.snapshot(), parent, model };
}

const scenarios: Array<{ name: string; off: number; len: number }> = [
  { name: 'allocating write, aligned', off: 3 * 1024 * 1024, len: 64 * 1024 },
  { name: 'allocating write, unaligned, spanning two new blocks', off: 4 * 1024 * 1024 - 1000, len: 5000 },
  { name: 'write into an allocated block (bitmap update)', off: 100 * 512 + 7, len: 3000 },
];

for (const type of ['dynamic', 'differencing'] as const) {
  describe(`vhd crash safety (${type})`, () => {
    for (const sc of scenarios) {
      it(`${sc.name}: every failure point leaves a clean, openable file`, async () => {
        const base = await makeBase(type);
        const data = randomBytes(sc.len);
        const open = (dev: MemoryDevice | InjectingDevice) => openVhd(dev, base.parent ? { parent: MemoryDevice.from(base.parent, true) } : {});
        // Dry run: how many mutations does the write take?
        const dry = new InjectingDevice(MemoryDevice.from(base.image));
        const d0 = await open(dry);
        await d0.write(sc.off, data);
        const total = dry.mutations;
        assert.ok(total >= 1);
        const after = Buffer.from(base.model);
        data.copy(after, sc.off);
        for (let k = 0; k <= total; k++) {
          const mem = MemoryDevice.from(base.image);
          const inj = new InjectingDevice(mem);
          inj.failAfter = k;
          const dev = await open(inj);
          if (k < total) await assert.rejects(dev.write(sc.off, data), /injected failure/);
          else await dev.write(sc.off, data);
          // "Reboot": look at what is in storage now.
          const image = MemoryDevice.from(mem.snapshot());
          const chk = await checkVhd(image);
          assert.deepEqual(chk.errors, [], `failure after ${k} of ${total} mutations`);
          const re = await open(image);
          const seen = await re.read(0, re.size);
          // Outside the write: unchanged. Inside, per sector: old or new.
          assert.ok(seen.subarray(0, sc.off).equals(base.model.subarray(0, sc.off)), `k=${k}: bytes before the write changed`);
          assert.ok(seen.subarray(sc.off + sc.len).equals(base.model.subarray(sc.off + sc.len)), `k=${k}: bytes after the write changed`);
          // Per virtual sector (the unit of a bitmap bit and of a torn write): old or new.
          for (let a = sc.off; a < sc.off + sc.len; a = Math.floor(a / 512) * 512 + 512) {
            const z = Math.min(sc.off + sc.len, Math.floor(a / 512) * 512 + 512);
            const piece = seen.subarray(a, z);
            assert.ok(piece.equals(base.model.subarray(a, z)) || piece.equals(after.subarray(a, z)), `k=${k}: [${a}, ${z}) is neither old nor new`);
          }
          if (k === total) assert.ok(seen.subarray(sc.off, sc.off + sc.len).equals(data));
          // The recovered file keeps working: allocate another block and check again.
          await re.write(6 * 1024 * 1024 + 512, Buffer.alloc(4096, 0x77));
          assert.ok((await re.read(6 * 1024 * 1024 + 512, 4096)).equals(Buffer.alloc(4096, 0x77)));
          assert.ok((await re.read(0, sc.off)).equals(base.model.subarray(0, sc.off)));
          await re.close();
          assert.deepEqual((await checkVhd(MemoryDevice.from(image.snapshot()))).errors, []);
        }
      });
    }
  });
}

describe('vhd crash safety: torn footer at the end of the file', () => {
  it('opens from the footer copy, checks with a warning only, and repairs on the next allocation', async () => {
    const base = await makeBase('dynamic');
    const mem = MemoryDevice.from(Buffer.concat([base.image, Buffer.alloc(700, 0xee)]));
    const chk = await checkVhd(mem);
    assert.deepEqual(chk.errors, []);
    assert.ok(chk.warnings.some((w) => w.includes('copy at offset 0')));
    const dev = await openVhd(mem);
    assert.ok((await dev.read(0, dev.size)).equals(base.model));
    await dev.write(5 * 1024 * 1024, Buffer.alloc(512, 1));
    await dev.close();
    const again = await checkVhd(MemoryDevice.from(mem.snapshot()));
    assert.deepEqual(again.errors, []);
    assert.ok(!again.warnings.some((w) => w.includes('copy at offset 0')));
  });
});

describe('vhd crash safety: a batch of concurrent allocations', () => {
  for (const type of ['dynamic', 'differencing'] as const) {
    it(`${type}: every failure point leaves a clean file, each write old or new`, async () => {
      const base = await makeBase(type);
      const writes = [[2 * 1024 * 1024 + 512, 4096], [5 * 1024 * 1024 + 3, 9000], [7 * 1024 * 1024, 65536], [2 * 1024 * 1024 + 9000, 512]]
        .map(([off, len]) => ({ off, data: randomBytes(len) }));
      const open = (dev: MemoryDevice | InjectingDevice) => openVhd(dev, base.parent ? { parent: MemoryDevice.from(base.parent, true) } : {});
      const dry = new InjectingDevice(MemoryDevice.from(base.image));
      const d0 = await open(dry);
      await Promise.all(writes.map((w) => d0.write(w.off, w.data)));
      const total = dry.mutations;
      for (let k = 0; k <= total; k++) {
        const mem = MemoryDevice.from(base.image);
        const inj = new InjectingDevice(mem);
        inj.failAfter = k;
        const dev = await open(inj);
        const results = await Promise.allSettled(writes.map((w) => dev.write(w.off, w.data)));
        if (k === total) assert.ok(results.every((r) => r.status === 'fulfilled'));
        const image = MemoryDevice.from(mem.snapshot());
        assert.deepEqual((await checkVhd(image)).errors, [], `failure after ${k} of ${total} mutations`);
        const re = await open(image);
        const seen = await re.read(0, re.size);
        const written = new Uint8Array(re.size);
        for (const w of writes) {
          written.fill(1, w.off, w.off + w.data.length);
          for (let a = w.off; a < w.off + w.data.length; a = Math.floor(a / 512) * 512 + 512) {
            const z = Math.min(w.off + w.data.length, Math.floor(a / 512) * 512 + 512);
            const piece = seen.subarray(a, z);
            assert.ok(piece.equals(base.model.subarray(a, z)) || piece.equals(w.data.subarray(a - w.off, z - w.off)), `k=${k}: [${a}, ${z}) neither old nor new`);
          }
        }
        for (let i = 0; i < re.size; i += 4096) {
          if (written.subarray(i, i + 4096).some((x) => x)) continue;
          assert.ok(seen.subarray(i, i + 4096).equals(base.model.subarray(i, i + 4096)), `k=${k}: untouched bytes at ${i} changed`);
        }
        await re.close();
      }
    });
  }
});
