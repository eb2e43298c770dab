import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readInto } from '../../src/block/emulate.js';
import { FileDevice } from '../../src/block/file.js';
import { FilterDevice } from '../../src/block/filter.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { describeConformance } from '../conformance/blockdevice.js';

/** A filter that changes what reads return (every byte inverted). */
class Inverting extends FilterDevice {
  override async read(offset: number, length: number): Promise<Buffer> {
    const b = await this.next.read(offset, length);
    for (let i = 0; i < b.length; i++) b[i] ^= 0xff;
    return b;
  }
}

describe('block: FilterDevice pass-through of readInto', () => {
  it('a filter that overrides read() is not bypassed by readInto()', async () => {
    const mem = new MemoryDevice(65536);
    await mem.write(0, Buffer.alloc(65536, 0x0f));
    const buf = Buffer.alloc(8192);
    await readInto(new Inverting(mem), buf, 4096);
    assert.ok(buf.equals(Buffer.alloc(8192, 0xf0)), 'readInto returned the inner bytes, not the filter\'s');
  });

  it('a filter that leaves read() alone passes readInto() down to the device below', async () => {
    const mem = new MemoryDevice(65536);
    await mem.write(0, Buffer.alloc(65536, 0x0f));
    let calls = 0;
    const below = Object.assign(Object.create(mem) as MemoryDevice, {
      readInto: async (b: Buffer, off: number) => { calls++; (await mem.read(off, b.length)).copy(b); },
    });
    const buf = Buffer.alloc(4096);
    await readInto(new FilterDevice(below), buf, 0);
    assert.equal(calls, 1);
    assert.ok(buf.equals(Buffer.alloc(4096, 0x0f)));
  });
});

describeConformance('pass-through filter over a file', async (size) => {
  const dir = mkdtempSync(join(tmpdir(), 'medv-filter-'));
  const path = join(dir, 'disk.img');
  const device = new FilterDevice(await FileDevice.open(path, { create: true, size }));
  return { device, reopen: async () => new FilterDevice(await FileDevice.open(path)), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

describe('block: FilterDevice pass-through of fileRange', () => {
  it('gives the file range below only while the filter changes neither read() nor readInto()', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'medv-filter-range-'));
    const file = await FileDevice.open(join(dir, 'disk.img'), { create: true, size: 1 << 20 });
    try {
      class OwnReadInto extends FilterDevice {
        override async readInto(buf: Buffer, offset: number): Promise<void> { await super.readInto(buf, offset); buf.fill(1); }
      }
      assert.deepEqual(new FilterDevice(file).fileRange(4096, 8192), file.fileRange(4096, 8192));
      assert.equal(new Inverting(file).fileRange(4096, 8192), undefined, 'read() overridden');
      assert.equal(new OwnReadInto(file).fileRange(4096, 8192), undefined, 'readInto() overridden');
      assert.equal(new FilterDevice(new MemoryDevice(1 << 20)).fileRange(0, 4096), undefined, 'nothing below to give');
    } finally {
      await file.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
