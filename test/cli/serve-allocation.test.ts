/**
 * Allocation through `medv disk serve` (NBD base:allocation), judged by other people's tools:
 * nbdinfo --map, qemu-img map, and qemu-img convert to a sparse file.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { run, runMedv, startMedv, tempDir } from '../helpers/cli.js';

const MiB = 1024 * 1024;
const HZ = 'hole,zero';

async function stop(server: ChildProcess): Promise<void> {
  const exited = new Promise<number | null>((r) => server.once('exit', (code) => r(code)));
  server.kill('SIGTERM');
  assert.equal(await exited, 0);
}

/** nbdinfo --map --json as [offset, length, description] rows, adjacent equal rows merged. */
function nbdinfoMap(uri: string): Array<[number, number, string]> {
  const rows = JSON.parse(run('nbdinfo', ['--map', '--json', uri])) as Array<{ offset: number; length: number; description: string }>;
  const out: Array<[number, number, string]> = [];
  for (const r of rows) {
    const last = out[out.length - 1];
    if (last && last[2] === r.description && last[0] + last[1] === r.offset) last[1] += r.length;
    else out.push([r.offset, r.length, r.description]);
  }
  return out;
}

/** qemu-img map --output=json as [start, length, data] rows, adjacent equal rows merged. */
function qemuMap(uri: string): Array<[number, number, boolean]> {
  const rows = JSON.parse(run('qemu-img', ['map', '--output=json', '-f', 'raw', uri])) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  const out: Array<[number, number, boolean]> = [];
  for (const r of rows) {
    const last = out[out.length - 1];
    if (last && last[2] === r.data && last[0] + last[1] === r.start) last[1] += r.length;
    else out.push([r.start, r.length, r.data]);
  }
  return out;
}

describe('cli: medv disk serve reports allocation (nbdinfo --map, qemu-img map/convert)', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('serve-alloc'); });
  afterEach(() => dir.cleanup());

  for (const name of ['d.vhd', 'd.evhd']) {
    it(`a dynamic ${name.slice(2)} with two allocated blocks maps as exactly those blocks; qemu-img convert allocates no more`, async () => {
      const disk = join(dir.path, name);
      assert.equal(runMedv(['disk', 'create', disk, '--size', '64M']).code, 0);
      const sock = join(dir.path, 's');
      const uri = `nbd+unix:///?socket=${sock}`;
      let server = await startMedv(['disk', 'serve', disk, '--socket', sock]);
      try {
        // Two 2 MiB blocks, filled so that nothing in them reads as zeros.
        run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 4M 2M', '-c', 'write -P 0x22 40M 2M', uri]);
      } finally {
        await stop(server);
      }
      server = await startMedv(['disk', 'serve', disk, '--socket', sock, '--read-only']);
      try {
        const size = 67125248; // 64M rounded up to whole CHS geometry
        assert.deepEqual(nbdinfoMap(uri), [
          [0, 4 * MiB, HZ], [4 * MiB, 2 * MiB, 'data'], [6 * MiB, 34 * MiB, HZ], [40 * MiB, 2 * MiB, 'data'], [42 * MiB, size - 42 * MiB, HZ],
        ]);
        assert.deepEqual(qemuMap(uri), [
          [0, 4 * MiB, false], [4 * MiB, 2 * MiB, true], [6 * MiB, 34 * MiB, false], [40 * MiB, 2 * MiB, true], [42 * MiB, size - 42 * MiB, false],
        ]);
        const out = join(dir.path, 'out.raw');
        run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]);
        const st = statSync(out);
        assert.equal(st.size, size);
        assert.ok(st.blocks * 512 <= 4 * MiB + 64 * 1024, `converted file allocates ${st.blocks * 512} bytes`);
        assert.ok(st.blocks * 512 >= 4 * MiB - 64 * 1024, `the data blocks are there (${st.blocks * 512} bytes)`);
        assert.match(run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri, out]), /identical/);
      } finally {
        await stop(server);
      }
    });
  }
});
