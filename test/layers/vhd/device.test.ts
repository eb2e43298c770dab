import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { FileDevice } from '../../../src/block/file.js';
import { MemoryDevice } from '../../../src/block/memory.js';
import { MedvError } from '../../../src/core/errors.js';
import {
  createDifferencingVhd, createVhd, openVhd, readVhdInfo, VhdDevice,
} from '../../../src/layers/vhd/index.js';
import { describeConformance, prng } from '../../conformance/blockdevice.js';
import { InjectingDevice } from './helpers.js';
import { tempDir } from '../../helpers/cli.js';
import { DataKey } from '../../../src/crypto/datakey.js';
import { createEvhd, openEvhd } from '../../../src/layers/evhd/index.js';
import { openDisk } from '../../../src/layers/open.js';

/** A VHD file with its parent chain (src/layers/parent.ts resolves it). */
async function openVhdFile(path: string, opts: { readOnly?: boolean } = {}) {
  return (await openDisk(path, { readOnly: opts.readOnly, format: 'vhd' })).vhd!;
}

function patterned(size: number, seed: number): Buffer {
  const rnd = prng(seed);
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) b.writeUInt32LE((rnd() * 2 ** 32) >>> 0, i);
  return b;
}

for (const type of ['fixed', 'dynamic'] as const) {
  describeConformance(`vhd ${type} (file)`, async (size) => {
    const { path: dir, cleanup } = tempDir('vhd');
    const path = join(dir, 'disk.vhd');
    const storage = await FileDevice.open(path, { create: true });
    await createVhd(storage, { type, size });
    const device = await openVhd(storage);
    return { device, reopen: () => openVhdFile(path), cleanup };
  });
}

// The storage the lead stacks under VHDs: an EVHD container (4 KiB XTS units) on a file.
for (const type of ['dynamic', 'differencing'] as const) {
  describeConformance(`vhd ${type} over an EVHD container`, async (size) => {
    const { path: dir, cleanup } = tempDir('vhd');
    const path = join(dir, 'disk.evhd');
    const key = DataKey.generate();
    const parentData = patterned(size, 13);
    const parent = () => MemoryDevice.from(parentData, true);
    const ev = await createEvhd(await FileDevice.open(path, { create: true }), key.clone());
    if (type === 'dynamic') await createVhd(ev, { type, size });
    else await createDifferencingVhd(ev, { size, uniqueId: randomBytes(16) });
    const opts = type === 'dynamic' ? {} : { parent: parent() };
    const device = await openVhd(ev, opts);
    return {
      device,
      initial: type === 'dynamic' ? undefined : (o: number, l: number) => parentData.subarray(o, o + l),
      reopen: async () => openVhd(await openEvhd(await FileDevice.open(path), key.clone()), type === 'dynamic' ? {} : { parent: parent() }),
      cleanup: async () => { key.dispose(); await cleanup(); },
    };
  });
}

describeConformance('vhd differencing over a memory parent', async (size) => {
  const parentData = patterned(size, 7);
  const storage = new MemoryDevice(0);
  await createDifferencingVhd(storage, { size, uniqueId: randomBytes(16) });
  const device = await openVhd(storage, { parent: MemoryDevice.from(parentData, true) });
  return {
    device,
    initial: (o, l) => parentData.subarray(o, o + l),
    reopen: async () => {
      const again = MemoryDevice.from(storage.snapshot());
      return openVhd(again, { parent: MemoryDevice.from(parentData, true) });
    },
  };
});

describeConformance('vhd differencing over a dynamic VHD file parent', async (size) => {
  const { path: dir, cleanup } = tempDir('vhd');
  const parentPath = join(dir, 'parent.vhd');
  const childPath = join(dir, 'child.vhd');
  const ps = await FileDevice.open(parentPath, { create: true });
  const pinfo = await createVhd(ps, { type: 'dynamic', size });
  const parent = await openVhd(ps);
  const parentData = patterned(pinfo.virtualSize, 11);
  await parent.write(0, parentData);
  await parent.close();
  const cs = await FileDevice.open(childPath, { create: true });
  await createDifferencingVhd(cs, { size: pinfo.virtualSize, uniqueId: pinfo.uniqueId, relativePath: 'parent.vhd', absolutePath: parentPath });
  await cs.close();
  const device = await openVhdFile(childPath);
  return { device, initial: (o, l) => parentData.subarray(o, o + l), reopen: () => openVhdFile(childPath), cleanup };
});

describe('VhdDevice', () => {
  it('reports info for each type and keeps it after writes', async () => {
    const storage = new MemoryDevice(0);
    const info = await createVhd(storage, { type: 'dynamic', size: 10 * 1024 * 1024 });
    assert.equal(info.type, 'dynamic');
    assert.equal(info.creatorApp, 'medv');
    assert.equal(info.creatorOs, 'Wi2k');
    assert.equal(info.blockSize, 2 * 1024 * 1024);
    assert.equal(info.allocatedBlocks, 0);
    assert.ok(info.virtualSize >= 10 * 1024 * 1024);
    const dev = await openVhd(storage);
    await dev.write(3 * 1024 * 1024, Buffer.alloc(4096, 1));
    assert.equal(dev.info.allocatedBlocks, 1);
    assert.deepEqual(await dev.allocatedRanges(), [{ offset: 2 * 1024 * 1024, length: 2 * 1024 * 1024 }]);
    await dev.close();
    assert.equal((await readVhdInfo(MemoryDevice.from(storage.snapshot()))).allocatedBlocks, 1);
  });

  it('places block data 4 KiB-aligned in the file, so an aligned read is one aligned storage read', async () => {
    const storage = new MemoryDevice(0);
    await createVhd(storage, { type: 'dynamic', size: 16 * 1024 * 1024 });
    const spy = new InjectingDevice(storage);
    const reads = spy.reads;
    const dev = await openVhd(spy);
    await dev.write(5 * 1024 * 1024, randomBytes(8192));
    await dev.write(9 * 1024 * 1024 + 4096, randomBytes(4096));
    reads.length = 0;
    await dev.read(5 * 1024 * 1024 + 4096, 4096);
    await dev.read(9 * 1024 * 1024 + 4096, 4096);
    assert.equal(reads.length, 2);
    for (const [o, l] of reads) { assert.equal(o % 4096, 0); assert.equal(l, 4096); }
  });

  it('differencing: bitmap bits decide child or parent per sector, partial sectors merge the parent', async () => {
    const size = 4 * 1024 * 1024;
    const parentData = patterned(size, 3);
    const storage = new MemoryDevice(0);
    await createDifferencingVhd(storage, { size, uniqueId: randomBytes(16) });
    const dev = await openVhd(storage, { parent: MemoryDevice.from(parentData, true) });
    const model = Buffer.from(parentData);
    const w = (o: number, b: Buffer) => { b.copy(model, o); return dev.write(o, b); };
    await w(1000, Buffer.alloc(10, 0xaa));             // partial sector in a fresh block
    await w(2 * 1024 * 1024 + 700, Buffer.alloc(300, 0xbb)); // spans a sector boundary
    await w(1600, Buffer.alloc(100, 0xcc));            // partial sector in an allocated block, bit 0
    await w(1010, Buffer.alloc(4, 0xdd));              // partial sector with bit set
    assert.ok((await dev.read(0, size)).equals(model));
    const ranges = await dev.allocatedRanges();
    assert.deepEqual(ranges, [{ offset: 512, length: 512 }, { offset: 1536, length: 512 }, { offset: 2 * 1024 * 1024 + 512, length: 512 }]);
    await dev.writeZeroes(100, 5000);
    model.fill(0, 100, 5100);
    assert.ok((await dev.read(0, size)).equals(model));
    await dev.close();
  });

  it('refuses a differencing disk without a parent, or with a parent of another size or id', async () => {
    const storage = new MemoryDevice(0);
    const id = randomBytes(16);
    await createDifferencingVhd(storage, { size: 1024 * 1024, uniqueId: id });
    await assert.rejects(openVhd(storage), (e: unknown) => e instanceof MedvError && e.code === 'EPARENT');
    await assert.rejects(openVhd(storage, { parent: new MemoryDevice(512 * 1024) }), (e: unknown) => e instanceof MedvError && e.code === 'EPARENT');
    const ps = new MemoryDevice(0);
    const pinfo = await createVhd(ps, { type: 'dynamic', size: 1024 * 1024 });
    const cs = new MemoryDevice(0);
    await createDifferencingVhd(cs, { size: pinfo.virtualSize, uniqueId: randomBytes(16) });
    await assert.rejects(openVhd(cs, { parent: await openVhd(ps) }), (e: unknown) => e instanceof MedvError && e.code === 'EPARENT');
    let asked = false;
    const parentData = MemoryDevice.from(Buffer.alloc(1024 * 1024, 0x5a), true);
    const dev = await openVhd(storage, { openParent: async (info) => { asked = info.uniqueId.equals(id); return parentData; } });
    assert.ok(asked);
    assert.ok((await dev.read(4096, 512)).equals(Buffer.alloc(512, 0x5a)), 'an empty differencing disk reads its parent');
    await dev.close();
  });

  it('dynamic blocks with partial bitmaps (other tools): reads ignore the bitmap like qemu, writes set the bits', async () => {
    const storage = new MemoryDevice(0);
    await createVhd(storage, { type: 'dynamic', size: 4 * 1024 * 1024 });
    const dev = await openVhd(storage);
    await dev.write(0, Buffer.alloc(8192, 0x61));
    await dev.close();
    const img = storage.snapshot();
    const bmAt = img.readUInt32BE(1536) * 512;
    img.fill(0, bmAt, bmAt + 512);                      // as Virtual PC leaves unwritten sectors
    const mem = MemoryDevice.from(img);
    const again = await openVhd(mem);
    assert.ok((await again.read(0, 8192)).equals(Buffer.alloc(8192, 0x61)));
    await again.write(4096 + 100, Buffer.alloc(1000, 0x62));
    const bm = mem.snapshot().subarray(bmAt, bmAt + 512);
    assert.equal(bm[1], 0b11100000);                     // sectors 8 to 10
    assert.equal(bm[0], 0);
    await again.close();
  });

  it('read-only VHDs refuse writes', async () => {
    const storage = new MemoryDevice(0);
    await createVhd(storage, { type: 'dynamic', size: 1024 * 1024 });
    const dev = await openVhd(storage, { readOnly: true });
    await assert.rejects(dev.write(0, Buffer.alloc(1)), (e: unknown) => e instanceof MedvError && e.code === 'EREADONLY');
  });
});
