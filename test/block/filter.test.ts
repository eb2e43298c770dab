import assert from 'node:assert/strict';
import { readInto } from '../../src/block/emulate.js';
import { FilterDevice } from '../../src/block/filter.js';
import { MemoryDevice } from '../../src/block/memory.js';

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
