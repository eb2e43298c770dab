/**
 * Interop with real NBD clients: qemu-img, qemu-io (QEMU 7.2), nbdinfo and nbdcopy (libnbd).
 * The server runs in this process, so every tool is run asynchronously (never spawnSync).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FileDevice } from '../../src/block/file.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { createDifferencingVhd, createVhd, openVhd } from '../../src/layers/vhd/index.js';
import { serveNbd, type NbdServer } from '../../src/nbd/server.js';

const run = promisify(execFile);

async function tool(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  try {
    const r = await run(cmd, args, { maxBuffer: 64 << 20 });
    return { code: 0, out: r.stdout + r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : 1, out: `${err.stdout ?? ''}${err.stderr ?? ''}` };
  }
}

describe('nbd server interop (qemu-img, qemu-io, nbdinfo, nbdcopy)', function () {
  this.timeout(60000);
  const SIZE = 16 << 20;
  let dir: string;
  let sock: string;
  let uri: string;
  let server: NbdServer | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'medv-nbdi-'));
    sock = join(dir, 'nbd.sock');
    uri = `nbd+unix:///?socket=${sock}`;
  });
  afterEach(async () => {
    if (server) await server.close();
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it('qemu-img convert reads back exactly the device contents', async () => {
    const src = randomBytes(SIZE);
    server = await serveNbd(MemoryDevice.from(src), { socketPath: sock, readOnly: true });
    const out = join(dir, 'out.raw');
    const r = await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]);
    assert.equal(r.code, 0, r.out);
    assert.ok(readFileSync(out).equals(src));
  });

  it('qemu-io writes land in the device, aligned and unaligned', async () => {
    const mem = MemoryDevice.from(randomBytes(SIZE));
    const before = mem.snapshot();
    server = await serveNbd(mem, { socketPath: sock });
    const r = await tool('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 0xab 4096 65536', '-c', 'write -P 0xcd 1000 10',
      '-c', 'read -P 0xab 4096 65536', '-c', 'flush']);
    assert.equal(r.code, 0, r.out);
    assert.doesNotMatch(r.out, /error|fail|mismatch/i);
    const after = mem.snapshot();
    assert.ok(after.subarray(4096, 4096 + 65536).equals(Buffer.alloc(65536, 0xab)));
    assert.ok(after.subarray(1000, 1010).equals(Buffer.alloc(10, 0xcd)));
    assert.ok(after.subarray(0, 1000).equals(before.subarray(0, 1000)), 'read-modify-write kept the neighbours');
    assert.ok(after.subarray(1010, 4096).equals(before.subarray(1010, 4096)));
    assert.ok(after.subarray(4096 + 65536).equals(before.subarray(4096 + 65536)));
  });

  it('a read-only export refuses qemu-io writes and the device is unchanged', async () => {
    const mem = MemoryDevice.from(randomBytes(SIZE));
    const before = mem.snapshot();
    server = await serveNbd(mem, { socketPath: sock, readOnly: true });
    const rw = await tool('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 0xab 4096 65536']);
    assert.notEqual(rw.code, 0);
    assert.match(rw.out, /denied|read-only/i);
    const ro = await tool('qemu-io', ['-r', '-f', 'raw', uri, '-c', 'write -P 0xab 4096 65536']);
    assert.notEqual(ro.code, 0);
    assert.match(ro.out, /read-only/i);
    assert.ok(mem.snapshot().equals(before));
  });

  it('nbdinfo shows the size, flags and block sizes', async () => {
    server = await serveNbd(new MemoryDevice(SIZE), { socketPath: sock, description: 'medv test' });
    const r = await tool('nbdinfo', ['--json', uri]);
    assert.equal(r.code, 0, r.out);
    const info = JSON.parse(r.out) as { exports: Array<Record<string, unknown>> };
    const e = info.exports[0];
    assert.equal(e['export-size'], SIZE);
    assert.equal(e.block_size_minimum, 4096);
    assert.equal(e.block_size_preferred, 4096);
    assert.equal(e.block_size_maximum, 32 << 20);
    assert.equal(e.description, 'medv test');
    assert.equal(e.is_read_only, false);
    assert.equal(e.can_flush, true);
    assert.equal(e.can_fua, true);
    assert.equal(e.can_trim, true);
    assert.equal(e.can_zero, true);
    assert.equal(e.can_multi_conn, true);
  });

  it('nbdcopy copies into and out of a FileDevice export', async () => {
    const path = join(dir, 'disk.img');
    const dev = await FileDevice.open(path, { create: true, size: SIZE });
    try {
      server = await serveNbd(dev, { socketPath: sock });
      const src = randomBytes(SIZE);
      src.fill(0, 4 << 20, 8 << 20); // a zero run, which nbdcopy may send as WRITE_ZEROES
      const srcPath = join(dir, 'src.raw');
      writeFileSync(srcPath, src);
      const w = await tool('nbdcopy', [srcPath, uri]);
      assert.equal(w.code, 0, w.out);
      assert.ok(readFileSync(path).equals(src));
      const outPath = join(dir, 'out.raw');
      const r = await tool('nbdcopy', [uri, outPath]);
      assert.equal(r.code, 0, r.out);
      assert.ok(readFileSync(outPath).equals(src));
      const n = await tool('nbdcopy', [uri, 'null:']);
      assert.equal(n.code, 0, n.out);
      // qemu-img writing through the export too (multi-connection writer with flushes).
      const back = randomBytes(SIZE);
      writeFileSync(srcPath, back);
      const q = await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', srcPath, uri]);
      assert.equal(q.code, 0, q.out);
      assert.ok(readFileSync(path).equals(back));
    } finally {
      if (server) await server.close();
      server = undefined;
      await dev.close();
    }
  });

  it('nbdinfo --map of a differencing VHD: its own sectors and the parent\'s blocks are data, the rest hole,zero', async () => {
    const MiB = 1 << 20;
    const parentStore = new MemoryDevice(0);
    const pinfo = await createVhd(parentStore, { type: 'dynamic', size: SIZE });
    const parent = await openVhd(parentStore);
    await parent.write(4 * MiB, Buffer.alloc(4096, 1)); // allocates [4M, 6M) in the parent
    const childStore = new MemoryDevice(0);
    await createDifferencingVhd(childStore, { size: pinfo.virtualSize, uniqueId: pinfo.uniqueId });
    const child = await openVhd(childStore, { parent });
    await child.write(10 * MiB + 8192, Buffer.alloc(8192, 2)); // two 4 KiB pieces of a child block
    await child.write(4 * MiB + 65536, Buffer.alloc(512, 3)); // one sector over the parent's data
    server = await serveNbd(child, { socketPath: sock, readOnly: true });
    const r = await tool('nbdinfo', ['--map', '--json', uri]);
    assert.equal(r.code, 0, r.out);
    const rows = (JSON.parse(r.out) as Array<{ offset: number; length: number; description: string }>).map((x) => [x.offset, x.length, x.description]);
    const size = pinfo.virtualSize;
    assert.deepEqual(rows, [
      [0, 4 * MiB, 'hole,zero'], [4 * MiB, 2 * MiB, 'data'], [6 * MiB, 4 * MiB + 8192, 'hole,zero'],
      [10 * MiB + 8192, 8192, 'data'], [10 * MiB + 16384, size - 10 * MiB - 16384, 'hole,zero'],
    ]);
    // The parent alone, as a second check of the same layer.
    const own = await parent.extents(0, size);
    assert.deepEqual(own.map((e) => [e.length, e.hole, e.zero]), [[4 * MiB, true, true], [2 * MiB, false, false], [size - 6 * MiB, true, true]]);
  });
});
