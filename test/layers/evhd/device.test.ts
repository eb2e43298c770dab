import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice, FileRange, FileRangeOptions, WriteOptions } from '../../../src/block/device.js';
import { FilterDevice } from '../../../src/block/filter.js';
import { FileDevice } from '../../../src/block/file.js';
import { MemoryDevice } from '../../../src/block/memory.js';
import { DataKey } from '../../../src/crypto/index.js';
import { MedvError } from '../../../src/core/errors.js';
import { parseEvhdHeader } from '../../../src/formats/evhd.js';
import { native } from '../../../src/native.js';
import { EvhdDevice, createEvhd, openEvhd, readEvhdHeader } from '../../../src/layers/evhd/index.js';
import { describeConformance } from '../../conformance/blockdevice.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;

describeConformance('evhd over file', async (size) => {
  const dir = mkdtempSync(join(tmpdir(), 'medv-evhd-'));
  const path = join(dir, 'disk.evhd');
  const key = DataKey.generate();
  const spare = key.clone();
  const device = await createEvhd(await FileDevice.open(path, { create: true }), key);
  await device.resize(size);
  return {
    device,
    reopen: async () => openEvhd(await FileDevice.open(path), spare.clone(), { name: path }),
    cleanup: async () => { spare.dispose(); rmSync(dir, { recursive: true, force: true }); },
  };
});

describeConformance('evhd over memory', async (size) => {
  const mem = new MemoryDevice(0);
  const key = DataKey.generate();
  const spare = key.clone();
  const device = await createEvhd(mem, key);
  await device.resize(size);
  return {
    device,
    reopen: async () => openEvhd(MemoryDevice.from(mem.snapshot()), spare.clone()),
    cleanup: async () => spare.dispose(),
  };
});

/** Instrumentation layer: records the storage requests an EvhdDevice makes; can fail writes on demand. */
class Recorder extends FilterDevice {
  log: string[] = [];
  failWritesAt?: (offset: number) => boolean;
  override async read(o: number, l: number) { this.log.push(`r ${o} ${l}`); return super.read(o, l); }
  override async write(o: number, d: Buffer, opt?: WriteOptions) {
    if (this.failWritesAt?.(o)) throw new MedvError('EIO', 'injected write failure', { offset: o });
    this.log.push(`w ${o} ${d.length}`);
    return super.write(o, d, opt);
  }
  override async flush() { this.log.push('f'); return super.flush(); }
  override async resize(n: number) { this.log.push(`t ${n}`); return super.resize(n); }
}

describe('layers: evhd device', () => {
  let key: DataKey;
  beforeEach(() => { key = DataKey.generate(); });

  it('starts empty, grows on writes past the end with zeros in the gap, keeps exact odd lengths', async () => {
    const mem = new MemoryDevice(0);
    const dev = await createEvhd(mem, key.clone());
    assert.equal(dev.size, 0);
    assert.equal(dev.capabilities.resizable, true);
    assert.equal(mem.size, 4096);
    const data = randomBytes(777);
    await dev.write(10000, data);
    assert.equal(dev.size, 10777);
    assert.ok((await dev.read(0, 10000)).equals(Buffer.alloc(10000)));
    assert.ok((await dev.read(10000, 777)).equals(data));
    assert.equal(mem.size, 4096 + 3 * 4096);
    assert.equal(parseEvhdHeader(await mem.read(0, 4096)).logicalLength, 10777n);
    await dev.close();
    assert.ok(key.key, 'the caller keeps its own key');
    const again = await openEvhd(MemoryDevice.from(mem.snapshot()), key.clone());
    assert.equal(again.size, 10777);
    assert.ok((await again.read(10000, 777)).equals(data));
    await again.close();
  });

  it('concurrent writes past the end (and inside it) all land; gaps read as zeros', async () => {
    const mem = new MemoryDevice(0);
    const dev = await createEvhd(mem, key.clone());
    await dev.write(0, randomBytes(3000));
    const model = Buffer.alloc(200000);
    (await dev.read(0, 3000)).copy(model);
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      const off = i % 2 === 0 ? 150000 - i * 3333 : 100 + i * 37; // growing appends and small in-place writes
      const data = randomBytes(i % 2 === 0 ? 1000 + i * 10 : 20);
      data.copy(model, off);
      ops.push(dev.write(off, data));
    }
    await Promise.all(ops);
    const end = 150000 + 1000;
    assert.equal(dev.size, end);
    assert.ok((await dev.read(0, end)).equals(model.subarray(0, end)));
    await dev.close();
    const again = await openEvhd(MemoryDevice.from(mem.snapshot()), key.clone());
    assert.ok((await again.read(0, end)).equals(model.subarray(0, end)));
    await again.close();
  });

  it('never lets stale ciphertext past the end reappear: shrink, then grow, reads zeros', async () => {
    const mem = new MemoryDevice(0);
    const dev = await createEvhd(mem, key.clone());
    await dev.write(0, randomBytes(20000));
    await dev.resize(5000);
    assert.equal(dev.size, 5000);
    assert.equal(mem.size, 4096 + 2 * 4096, 'storage truncated to the units in use');
    await dev.resize(9000);
    assert.ok((await dev.read(5000, 4000)).equals(Buffer.alloc(4000)));
    await dev.resize(3000);
    await dev.write(8000, Buffer.from('x'));
    assert.ok((await dev.read(3000, 5000)).equals(Buffer.alloc(5000)));
    await dev.close();
  });

  it('stores no plaintext: a repeated pattern never appears in storage, and the key id is in the header', async () => {
    const mem = new MemoryDevice(0);
    const dev = await createEvhd(mem, key.clone());
    const pattern = Buffer.from('medv-plaintext-marker-0123456789');
    const data = Buffer.alloc(256 * 1024);
    for (let i = 0; i < data.length; i += 32) pattern.copy(data, i);
    await dev.write(0, data);
    await dev.write(300000 + 13, data.subarray(0, 10000));
    const raw = mem.snapshot();
    assert.equal(raw.indexOf(pattern.subarray(0, 16)), -1);
    assert.equal(raw.indexOf(key.key.subarray(0, 16)), -1, 'key bytes');
    assert.ok(raw.subarray(0, 4096).includes(key.keyId));
    await dev.close();
  });

  it('aligned whole-unit I/O is one storage request; unaligned writes read-modify-write only the edge units', async () => {
    const rec = new Recorder(new MemoryDevice(0));
    const dev = await createEvhd(rec, key.clone());
    await dev.resize(1024 * 1024);
    rec.log = [];
    await dev.write(65536, randomBytes(65536));
    assert.deepEqual(rec.log, ['w 69632 65536']);
    rec.log = [];
    await dev.read(8192, 131072);
    assert.deepEqual(rec.log, ['r 12288 131072']);
    rec.log = [];
    await dev.write(4096 + 100, randomBytes(3 * 4096));
    assert.deepEqual(rec.log.sort(), ['r 20480 4096', 'r 8192 4096', 'w 8192 16384']);
    await dev.close();
  });

  it('grows in the documented order: data units, fdatasync, then the header', async () => {
    const rec = new Recorder(new MemoryDevice(0));
    const dev = await createEvhd(rec, key.clone());
    rec.log = [];
    await dev.write(8192, randomBytes(4096));
    assert.deepEqual(rec.log, ['w 4096 8192', 'w 12288 4096', 'f', 'w 0 4096']);
    await dev.close();
  });

  it('a failed header write leaves the old length; the data before it is intact after reopen', async () => {
    const mem = new MemoryDevice(0);
    const rec = new Recorder(mem);
    const dev = await createEvhd(rec, key.clone());
    const first = randomBytes(6000);
    await dev.write(0, first);
    rec.failWritesAt = (o) => o === 0;
    await assert.rejects(dev.write(6000, randomBytes(100000)), code('EIO'));
    assert.equal(dev.size, 6000);
    await dev.close();
    const again = await openEvhd(MemoryDevice.from(mem.snapshot()), key.clone());
    assert.equal(again.size, 6000);
    assert.ok((await again.read(0, 6000)).equals(first));
    await again.close();
  });

  it('checks the key before reading any data unit: wrong key id or wrong key => EBADKEY, storage untouched', async () => {
    const mem = new MemoryDevice(0);
    const dev = await createEvhd(mem, key.clone());
    await dev.write(0, randomBytes(50000));
    await dev.close();
    const before = mem.snapshot();
    const other = DataKey.generate();
    const rec = new Recorder(MemoryDevice.from(before));
    await assert.rejects(openEvhd(rec, other), code('EBADKEY'));
    // Same key id, different key bytes (a forged .enc): caught by the key-check value.
    const forged = DataKey.adopt(key.keyId, Buffer.from(other.key));
    await assert.rejects(openEvhd(rec, forged), (e: unknown) => code('EBADKEY')(e) && /key-check/.test((e as Error).message));
    assert.ok(rec.log.every((l) => l === 'r 0 4096'), rec.log.join());
    assert.ok(!other.disposed, 'a failed open leaves the key with the caller');
    assert.ok((rec.next as MemoryDevice).snapshot().equals(before));
    other.dispose(); forged.dispose();
  });

  it('refuses truncated containers (ETRUNCATED) and non-EVHD storage (EFORMAT)', async () => {
    const mem = new MemoryDevice(0);
    const dev = await createEvhd(mem, key.clone());
    await dev.write(0, randomBytes(9000));
    await dev.close();
    const cut = mem.snapshot().subarray(0, 4096 + 2 * 4096);
    await assert.rejects(openEvhd(MemoryDevice.from(cut), key.clone()), code('ETRUNCATED'));
    await assert.rejects(openEvhd(new MemoryDevice(100), key.clone()), code('EFORMAT'));
    await assert.rejects(openEvhd(new MemoryDevice(0), key.clone()), code('ETRUNCATED'));
    await assert.rejects(readEvhdHeader(MemoryDevice.from(Buffer.from('MEDVEV'))), code('ETRUNCATED'));
  });

  it('read-only: refuses writes, resize, writeZeroes; flush is a no-op', async () => {
    const mem = new MemoryDevice(0);
    const dev = await createEvhd(mem, key.clone());
    await dev.write(0, randomBytes(4096));
    await dev.close();
    const ro = await openEvhd(MemoryDevice.from(mem.snapshot()), key.clone(), { readOnly: true });
    assert.equal(ro.readOnly, true);
    assert.equal(ro.capabilities.resizable, false);
    await assert.rejects(ro.write(0, Buffer.alloc(1)), code('EREADONLY'));
    await assert.rejects(ro.writeZeroes(0, 1), code('EREADONLY'));
    await assert.rejects(ro.resize(0), code('EREADONLY'));
    await ro.flush();
    assert.equal((await ro.read(0, 4096)).length, 4096);
    await ro.close();
  });

  it('large reads over a file decrypt straight from its file range (mapping or pread), before and after it grows and shrinks; a file truncated behind its back reads EIO, typed', async () => {
    /** Counts the file ranges the storage gave (it leaves reads alone, so it passes them down). */
    class Ranges extends FilterDevice {
      given = 0;
      mapped = 0;
      override fileRange(o: number, l: number, opt?: FileRangeOptions): FileRange | undefined {
        const r = super.fileRange(o, l, opt);
        if (r) this.given++;
        if (r?.map) this.mapped++;
        return r;
      }
    }
    const dir = mkdtempSync(join(tmpdir(), 'medv-evhd-range-'));
    const path = join(dir, 'disk.evhd');
    const storage = new Ranges(await FileDevice.open(path, { create: true }));
    const dev = await createEvhd(storage, key.clone());
    try {
      const plain = randomBytes(4 << 20);
      await dev.write(0, plain.subarray(0, 2 << 20));
      const check = async (unit: number, units: number) => {
        const buf = Buffer.alloc(units * 4096);
        await dev.readInto(buf, unit * 4096);
        assert.ok(buf.equals(plain.subarray(unit * 4096, (unit + units) * 4096)), `units ${unit}..${unit + units}`);
      };
      await check(0, 64);
      await check(200, 56);
      assert.equal(storage.given, 2, 'each large read was one file range');
      assert.equal(storage.mapped, native.available ? 2 : 0);
      // Grown past the size the file had when first mapped.
      await dev.write(2 << 20, plain.subarray(2 << 20));
      await check(500, 24);
      await check(480, 64);
      // Shrunk, then grown again.
      await dev.resize(1 << 20);
      await assert.rejects(dev.readInto(Buffer.alloc(65536), 1 << 20), code('ERANGE'));
      await dev.write(1 << 20, plain.subarray(1 << 20));
      await check(250, 16);
      await check(700, 64);
      assert.equal(storage.given, 6);
      // Another process truncates the file under us. Through the mapping (the addon) the lost pages
      // are a typed EIO, not a SIGBUS that kills the process; pread would read zeros there.
      if (native.available) {
        truncateSync(path, 4096 + (1 << 20));
        await assert.rejects(dev.readInto(Buffer.alloc(4096 * 16), 3 << 20), code('EIO'));
      }
      await check(16, 16);
    } finally {
      await dev.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('close waits for requests in flight, closes storage and disposes its key', async () => {
    const mem = new MemoryDevice(0);
    const k = key.clone();
    const dev = await createEvhd(mem, k);
    const writes = Array.from({ length: 16 }, (_, i) => dev.write(i * 1000, randomBytes(1000)));
    await dev.close();
    await Promise.all(writes);
    assert.ok(k.disposed);
    await assert.rejects(mem.read(0, 1), code('ECLOSED'));
    await assert.rejects(dev.read(0, 1), code('ECLOSED'));
    // every write that was in flight at close() reached storage: 16 writes of 1000 bytes, 4 units.
    assert.equal(mem.size, 4096 + 4 * 4096);
  });

  it('rejects invalid requests with typed errors', async () => {
    const dev = await createEvhd(new MemoryDevice(0), key.clone());
    await dev.resize(8192);
    await assert.rejects(dev.read(-1, 1), code('EINVAL_ARG'));
    await assert.rejects(dev.read(0, 1.5), code('EINVAL_ARG'));
    await assert.rejects(dev.read(8000, 200), code('ERANGE'));
    await assert.rejects(dev.write(2 ** 53, Buffer.alloc(1)), code('EINVAL_ARG'));
    await assert.rejects(dev.write(0, 'abc' as unknown as Buffer), code('EINVAL_ARG'));
    await assert.rejects(dev.resize(-5), code('EINVAL_ARG'));
    await assert.rejects(dev.discard(8000, 1000), code('ERANGE'));
    await dev.discard(0, 4096);
    await dev.close();
  });
});
