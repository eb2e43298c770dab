import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
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

describe('block: FileDevice readIntoDecrypted', () => {
  it('decrypts like xtsCrypt, before and after the file grows and shrinks; a file truncated behind its back reads EIO, typed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'medv-file-xts-'));
    try {
      const key = randomBytes(64);
      const plain = randomBytes(4 << 20);
      const cipher = Buffer.alloc(plain.length);
      native.xtsCrypt(key, plain, cipher, 0, 4096, true);
      const path = join(dir, 'disk.img');
      writeFileSync(path, cipher.subarray(0, 2 << 20));
      const dev = await FileDevice.open(path);
      const check = async (unit: number, units: number) => {
        const buf = Buffer.alloc(units * 4096);
        await dev.readIntoDecrypted(buf, unit * 4096, key, unit, 4096);
        assert.ok(buf.equals(plain.subarray(unit * 4096, (unit + units) * 4096)), `units ${unit}..${unit + units}`);
      };
      try {
        await check(0, 64);
        await check(200, 56);
        // Grown past the size it had when first read (a mapping, where there is one, stops there).
        await dev.write(2 << 20, cipher.subarray(2 << 20));
        await check(500, 24);
        await check(480, 64);
        // Shrunk through the device, then grown again.
        await dev.resize(1 << 20);
        await assert.rejects(dev.readIntoDecrypted(Buffer.alloc(4096), 1 << 20, key, 256, 4096), { code: 'ERANGE' });
        await dev.write(1 << 20, cipher.subarray(1 << 20));
        await check(250, 16);
        await check(700, 64);
        // Another process truncates the file under us. Through the mapping (the addon) the lost
        // pages are a typed EIO, not a SIGBUS that kills the process; pread reads zeros there.
        if (native.available) {
          truncateSync(path, 1 << 20);
          await assert.rejects(dev.readIntoDecrypted(Buffer.alloc(4096 * 16), 3 << 20, key, 768, 4096), { code: 'EIO' });
        }
        await check(16, 16);
      } finally {
        await dev.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
