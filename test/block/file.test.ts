import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { native } from '../../src/native.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDevice } from '../../src/block/file.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { describeConformance } from '../conformance/blockdevice.js';

describeConformance('file', async (size) => {
  const dir = mkdtempSync(join(tmpdir(), 'medv-file-'));
  const path = join(dir, 'disk.img');
  const device = await FileDevice.open(path, { create: true, size });
  return { device, reopen: () => FileDevice.open(path), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

describeConformance('memory', async (size) => ({ device: new MemoryDevice(size) }));

describe('block: FileDevice discard and write-zeroes (fallocate in the addon)', () => {
  it('discard punches a hole (fewer blocks, zeros) and write-zeroes zeroes in place and extends sparsely', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'medv-file-'));
    try {
      const path = join(dir, 'f.img');
      const data = randomBytes(4 << 20);
      writeFileSync(path, data);
      const dev = await FileDevice.open(path);
      await dev.flush();
      const before = statSync(path).blocks;
      await dev.discard(1 << 20, 2 << 20);
      await dev.writeZeroes(4096, 4096);
      await dev.writeZeroes((4 << 20) - 4096, 12288);
      await dev.flush();
      await dev.close();
      const now = readFileSync(path);
      assert.equal(now.length, (4 << 20) + 8192, 'write-zeroes past the end grows the file');
      assert.ok(now.subarray(4096, 8192).equals(Buffer.alloc(4096)));
      assert.ok(now.subarray((4 << 20) - 4096).equals(Buffer.alloc(12288)));
      assert.ok(now.subarray(0, 4096).equals(data.subarray(0, 4096)) && now.subarray(8192, 1 << 20).equals(data.subarray(8192, 1 << 20)));
      if (native.available) {
        assert.ok(now.subarray(1 << 20, 3 << 20).equals(Buffer.alloc(2 << 20)), 'a discarded range reads zeros');
        assert.ok(before - statSync(path).blocks >= 0.9 * ((2 << 20) / 512), `the discarded range is deallocated (${before} -> ${statSync(path).blocks} blocks)`);
      } else {
        assert.ok(now.subarray(1 << 20, 3 << 20).equals(data.subarray(1 << 20, 3 << 20)), 'the fallback leaves a discarded range as it was');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('block: FileDevice fileRange', () => {
  it('names the bytes read() gives, at the same offsets, with a mapping when asked (addon); none past the end, after a shrink the mapping is renewed, none after close', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'medv-file-range-'));
    try {
      const data = randomBytes(2 << 20);
      const path = join(dir, 'disk.img');
      writeFileSync(path, data);
      const dev = await FileDevice.open(path);
      const bytesAt = (fd: number, position: number, length: number) => {
        const b = Buffer.alloc(length);
        assert.equal(readSync(fd, b, 0, length, position), length);
        return b;
      };
      try {
        for (const [offset, length] of [[0, 4096], [12345, 70000], [(2 << 20) - 100, 100]]) {
          const r = dev.fileRange(offset, length);
          assert.ok(r, `[${offset}, +${length})`);
          assert.equal(r.position, offset);
          assert.equal(r.map, undefined, 'no mapping unless asked');
          assert.ok(bytesAt(r.fd, r.position, length).equals(await dev.read(offset, length)));
        }
        assert.equal(dev.fileRange(2 << 20, 1), undefined, 'past the end');
        assert.equal(dev.fileRange((2 << 20) - 100, 101), undefined, 'across the end');
        assert.equal(dev.fileRange(-4096, 4096), undefined, 'a negative offset');
        assert.equal(dev.fileRange(0, 0), undefined, 'nothing');
        const mapped = dev.fileRange(4096, 65536, { mapped: true });
        assert.equal(mapped?.map !== undefined, native.available, 'a mapping with the addon, none in the fallback');
        await dev.write(2 << 20, randomBytes(4096));
        assert.ok(dev.fileRange(2 << 20, 4096, { mapped: true }), 'grown: the new bytes are a range');
        assert.equal(dev.fileRange(2 << 20, 4096, { mapped: true })?.map, undefined, 'past the mapping made before the growth');
        await dev.resize(1 << 20);
        assert.equal(dev.fileRange(1 << 20, 4096), undefined, 'shrunk');
        assert.equal(dev.fileRange(0, 4096, { mapped: true })?.map !== undefined, native.available, 'mapped again at the new size');
      } finally {
        await dev.close();
      }
      assert.equal(dev.fileRange(0, 4096), undefined, 'closed');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('block: FileDevice opened with map: false', () => {
  /** Bytes of the file's pages this process holds mapped (RssFile of /proc/self/status). */
  const rssFile = () => Number(/RssFile:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;
  const key = randomBytes(64);

  it('gives file ranges without a mapping, so reading a file through them leaves none of its pages in RSS (a mapped read does)', async function () {
    if (!native.available) this.skip(); // the fallback never maps
    const dir = mkdtempSync(join(tmpdir(), 'medv-file-nomap-'));
    try {
      const size = 32 << 20;
      const path = join(dir, 'seed.img');
      writeFileSync(path, randomBytes(size));
      /** Reads the whole file through the ranges the device gives (as an EVHD reads its storage); the growth of RssFile. */
      const readAll = async (dev: FileDevice) => {
        const before = rssFile();
        const buf = Buffer.alloc(1 << 20);
        for (let at = 0; at < size; at += buf.length) {
          const r = dev.fileRange(at, buf.length, { mapped: true })!;
          if (r.map) await native.xtsFromMapAsync(r.map, r.position, buf, key, 0, 4096);
          else await native.preadXtsAsync(r.fd, buf, r.position, key, 0, 4096);
        }
        return rssFile() - before;
      };
      const plain = await FileDevice.open(path, { readOnly: true, map: false });
      try {
        assert.equal(plain.fileRange(0, 4096, { mapped: true })?.map, undefined, 'no mapping when asked');
        assert.ok(plain.fileRange(0, 4096, { mapped: true }), 'but a file range');
        const grew = await readAll(plain);
        assert.ok(grew < 4 << 20, `RssFile grew by ${grew >> 20} MiB reading 32 MiB unmapped`);
      } finally {
        await plain.close();
      }
      const mapped = await FileDevice.open(path, { readOnly: true });
      try {
        const grew = await readAll(mapped);
        assert.ok(grew > 24 << 20, `RssFile grew by ${grew >> 20} MiB reading 32 MiB mapped (the shared mapping's pages count)`);
      } finally {
        await mapped.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
