import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MemoryDevice } from '../../../src/block/memory.js';
import { MedvError } from '../../../src/core/errors.js';
import { checkVhd, compactVhd, createDifferencingVhd, createVhd, openVhd, readVhdInfo } from '../../../src/layers/vhd/index.js';

describe('compactVhd', () => {
  it('dynamic: drops all-zero blocks, keeps contents, unique id and size', async () => {
    const storage = new MemoryDevice(0);
    const info = await createVhd(storage, { type: 'dynamic', size: 20 * 1024 * 1024, blockSize: 1024 * 1024 });
    const dev = await openVhd(storage);
    const data = randomBytes(100000);
    await dev.write(3 * 1024 * 1024 + 5, data);
    await dev.write(7 * 1024 * 1024, Buffer.alloc(1024 * 1024));        // allocated, all zero
    await dev.write(9 * 1024 * 1024, randomBytes(4096));
    await dev.writeZeroes(9 * 1024 * 1024, 4096);                        // allocated, zeroed again
    await dev.write(19 * 1024 * 1024, randomBytes(512 * 1024));
    assert.equal(dev.info.allocatedBlocks, 4);
    const before = await dev.read(0, dev.size);
    const dst = new MemoryDevice(0);
    await compactVhd(dev, dst);
    await dev.close();
    const out = await readVhdInfo(dst);
    assert.equal(out.allocatedBlocks, 2);
    assert.equal(out.virtualSize, info.virtualSize);
    assert.ok(out.uniqueId.equals(info.uniqueId));
    assert.deepEqual(await checkVhd(dst), { ok: true, errors: [], warnings: [] });
    const c = await openVhd(dst);
    assert.ok((await c.read(0, c.size)).equals(before));
    assert.ok(dst.size < storage.snapshot().length);
  });

  it('differencing: keeps zero blocks that hide the parent, keeps parent fields and locators', async () => {
    const size = 6 * 1024 * 1024;
    const parent = randomBytes(size);
    const storage = new MemoryDevice(0);
    await createDifferencingVhd(storage, { size, uniqueId: Buffer.alloc(16, 7), relativePath: 'p.vhd', absolutePath: '/x/p.vhd' });
    const dev = await openVhd(storage, { parent: MemoryDevice.from(parent, true) });
    await dev.writeZeroes(2 * 1024 * 1024, 8192);
    await dev.write(5 * 1024 * 1024 + 1, Buffer.alloc(700, 3));
    const before = await dev.read(0, size);
    const dst = new MemoryDevice(0);
    await compactVhd(dev, dst);
    const out = await readVhdInfo(dst);
    assert.equal(out.allocatedBlocks, 2);
    assert.deepEqual(out.parent, dev.info.parent);
    const c = await openVhd(dst, { parent: MemoryDevice.from(parent, true) });
    assert.ok((await c.read(0, size)).equals(before));
    assert.deepEqual((await checkVhd(dst)).errors, []);
  });

  it('fixed disks: EUNSUPPORTED', async () => {
    const storage = new MemoryDevice(0);
    await createVhd(storage, { type: 'fixed', size: 1024 * 1024 });
    await assert.rejects(compactVhd(await openVhd(storage), new MemoryDevice(0)), (e: unknown) => e instanceof MedvError && e.code === 'EUNSUPPORTED');
  });
});
