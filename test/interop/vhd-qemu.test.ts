/**
 * VHD interop with qemu (qemu-img 7.2, qemu-io): qemu-made disks read byte-identical through medv,
 * medv-made disks open in qemu-img with the same size and contents.
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDevice } from '../../src/block/file.js';
import { checkVhd, createDifferencingVhd, createVhd, openVhd, readVhdInfo } from '../../src/layers/vhd/index.js';
import { prng } from '../conformance/blockdevice.js';
import { run, tempDir } from '../helpers/cli.js';
import { openDisk } from '../../src/layers/open.js';

/** A VHD file with its parent chain (src/layers/parent.ts resolves it). */
async function openVhdFile(path: string, opts: { readOnly?: boolean } = {}) {
  return (await openDisk(path, { readOnly: opts.readOnly, format: 'vhd' })).vhd!;
}

function qemuSize(path: string): number {
  return JSON.parse(run('qemu-img', ['info', '--output=json', '-f', 'vpc', path]))['virtual-size'];
}

async function readAll(path: string): Promise<Buffer> {
  const dev = await openVhdFile(path, { readOnly: true });
  try {
    return await dev.read(0, dev.size);
  } finally {
    await dev.close();
  }
}

describe('interop: qemu-made VHDs read through medv', function () {
  this.timeout(120000);
  let dir: string;
  let cleanup: () => Promise<void>;
  before(() => ({ path: dir, cleanup } = tempDir('vhd-qemu')));
  after(async () => cleanup());

  const cases: Array<{ sub: 'fixed' | 'dynamic'; size: string; force?: boolean }> = [
    { sub: 'dynamic', size: '64M' },
    { sub: 'fixed', size: '64M' },
    { sub: 'dynamic', size: '10000000' },      // not whole CHS cylinders: rounded up by qemu-img
    { sub: 'fixed', size: '33554944' },
    { sub: 'dynamic', size: '50000000', force: true },
    { sub: 'fixed', size: '7340544', force: true },
    { sub: 'dynamic', size: '200G' },           // beyond CHS: saturated geometry, current_size rules
  ];
  for (const c of cases) {
    it(`${c.sub} ${c.size}${c.force ? ' force_size=on' : ''}`, async () => {
      const path = join(dir, `q-${c.sub}-${c.size}-${c.force ? 'f' : 'n'}.vhd`);
      run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', `subformat=${c.sub}${c.force ? ',force_size=on' : ''}`, path, c.size]);
      const size = qemuSize(path);
      const writes: Array<[number, number, number]> = [
        [0, 4096, 0x11], [1000 * 1024, 3000 * 1024, 0xab], [2 * 1024 * 1024 - 512, 1024, 0x5c],
        [size - 8192, 8192, 0xee], [Math.floor(size / 3), 70000, 0x77],
      ];
      for (const [off, len, pat] of writes) {
        run('qemu-io', ['-f', 'vpc', '-c', `write -P 0x${pat.toString(16)} ${off} ${len}`, path]);
      }
      const info = await readVhdInfo(await FileDevice.open(path, { readOnly: true }));
      assert.equal(info.virtualSize, size, 'medv and qemu agree on the size');
      assert.equal(info.type, c.sub);
      assert.equal(info.creatorApp, c.force ? 'qem2' : 'qemu');
      const storage = await FileDevice.open(path, { readOnly: true });
      const chk = await checkVhd(storage);
      await storage.close();
      assert.deepEqual(chk.errors, []);
      const dev = await openVhdFile(path, { readOnly: true });
      const raw = join(dir, 'out.raw');
      run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', path, raw]);
      assert.equal(statSync(raw).size, dev.size);
      const fd = openSync(raw, 'r');
      try {
        const chunk = 16 * 1024 * 1024;
        const expected = Buffer.alloc(chunk);
        // Small disks: every byte. Big sparse ones: the chunks around each write, and a few others.
        const offsets: number[] = [];
        if (dev.size <= 256 * 1024 * 1024) for (let off = 0; off < dev.size; off += chunk) offsets.push(off);
        else for (const w of [...writes.map((x) => x[0]), size / 2]) offsets.push(Math.max(0, Math.min(dev.size - chunk, Math.floor(w / chunk) * chunk)));
        for (const off of offsets) {
          const n = Math.min(chunk, dev.size - off);
          readSync(fd, expected, 0, n, off);
          assert.ok((await dev.read(off, n)).equals(expected.subarray(0, n)), `bytes differ in [${off}, +${n})`);
        }
      } finally {
        closeSync(fd);
      }
      await dev.close();
    });
  }
});

describe('interop: medv-made VHDs in qemu-img', function () {
  this.timeout(120000);
  let dir: string;
  let cleanup: () => Promise<void>;
  before(() => ({ path: dir, cleanup } = tempDir('vhd-qemu2')));
  after(async () => cleanup());

  for (const type of ['fixed', 'dynamic'] as const) {
    for (const size of [8 * 1024 * 1024, 10_000_000, 40 * 1024 * 1024 + 12345]) {
      it(`${type} of ${size} bytes: same size, qemu-img compare identical`, async () => {
        const path = join(dir, `m-${type}-${size}.vhd`);
        const storage = await FileDevice.open(path, { create: true });
        const info = await createVhd(storage, { type, size });
        const dev = await openVhd(storage);
        const rnd = prng(size);
        const model = Buffer.alloc(dev.size);
        for (let i = 0; i < 40; i++) {
          const off = Math.floor(rnd() * (dev.size - 70000));
          const data = Buffer.alloc(1 + Math.floor(rnd() * 65536), Math.floor(rnd() * 256));
          await dev.write(off, data);
          data.copy(model, off);
        }
        await dev.close();
        assert.equal(qemuSize(path), info.virtualSize);
        const raw = join(dir, `m-${type}-${size}.raw`);
        writeFileSync(raw, model);
        run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', path, raw]);
        // qemu writes into a medv-made disk; medv reads what qemu wrote.
        if (type === 'dynamic') {
          run('qemu-io', ['-f', 'vpc', '-c', `write -P 0x42 ${dev.size - 3 * 1024 * 1024} 1M`, path]);
          model.fill(0x42, dev.size - 3 * 1024 * 1024, dev.size - 2 * 1024 * 1024);
          const again = await readAll(path);
          assert.ok(again.equals(model));
          const s = await FileDevice.open(path, { readOnly: true });
          assert.deepEqual((await checkVhd(s)).errors, []);
          await s.close();
        }
      });
    }
  }

  it('dynamic beyond the CHS range (200 GiB + 12345): saturated geometry, qemu and libvhdi agree on the size', async () => {
    const path = join(dir, 'big.vhd');
    const storage = await FileDevice.open(path, { create: true });
    const info = await createVhd(storage, { type: 'dynamic', size: 200 * 1024 ** 3 + 12345 });
    assert.equal(info.virtualSize, 200 * 1024 ** 3 + 12800);
    const dev = await openVhd(storage);
    await dev.write(dev.size - 65536, Buffer.alloc(65536, 0x3c));
    await dev.close();
    assert.equal(qemuSize(path), info.virtualSize);
    assert.match(run('vhdiinfo', [path]), new RegExp(`\\(${info.virtualSize} bytes\\)`));
    assert.match(run('qemu-io', ['-f', 'vpc', '-c', `read -P 0x3c ${info.virtualSize - 65536} 65536`, path]), /read 65536\/65536/);
  });

  it('differencing: qemu-img info opens it with the parent size', async () => {
    const ppath = join(dir, 'parent.vhd');
    const ps = await FileDevice.open(ppath, { create: true });
    const pinfo = await createVhd(ps, { type: 'dynamic', size: 20 * 1024 * 1024 });
    await ps.close();
    const cpath = join(dir, 'child.vhd');
    const cs = await FileDevice.open(cpath, { create: true });
    await createDifferencingVhd(cs, { size: pinfo.virtualSize, uniqueId: pinfo.uniqueId, relativePath: 'parent.vhd', absolutePath: ppath });
    await cs.close();
    const child = await openVhdFile(cpath);
    await child.write(4096, Buffer.alloc(8192, 9));
    await child.close();
    assert.equal(qemuSize(cpath), pinfo.virtualSize);
  });
});
