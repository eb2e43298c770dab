/**
 * FileDevice.extents: the holes of a sparse raw file (SEEK_DATA / SEEK_HOLE) are reported as
 * hole + zero, the rest as data, with the addon and with the fallback (perl on the inherited fd).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileDevice } from '../../src/block/file.js';

const G = 1 << 30;
const MiB = 1 << 20;

describe('block: FileDevice extents of a sparse file', () => {
  let dir: string;
  let path: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'medv-extents-'));
    path = join(dir, 'sparse.raw');
    const fd = openSync(path, 'w');
    ftruncateSync(fd, 16 * G);
    writeSync(fd, randomBytes(MiB), 0, MiB, 3 * MiB);
    writeSync(fd, randomBytes(4096), 0, 4096, 9 * G);
    closeSync(fd);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('holes are hole+zero, written ranges data, clipped to the range asked for', async () => {
    const dev = await FileDevice.open(path, { readOnly: true });
    try {
      const all = await dev.extents(0, dev.size);
      assert.deepEqual(all.map((e) => [e.length, e.hole, e.zero]), [
        [3 * MiB, true, true], [MiB, false, false], [9 * G - 4 * MiB, true, true], [4096, false, false], [7 * G - 4096, true, true],
      ]);
      const part = await dev.extents(3 * MiB + 4096, 8192);
      assert.deepEqual(part.map((e) => [e.length, e.hole, e.zero]), [[8192, false, false]]);
      assert.deepEqual(await dev.extents(0, 0), []);
      await assert.rejects(dev.extents(16 * G - 1, 2), /past end/);
    } finally {
      await dev.close();
    }
  });

  it('the fallback (MEDV_NO_NATIVE=1) reports the same extents', () => {
    const file = fileURLToPath(new URL('../../src/block/file.js', import.meta.url));
    const script = `import { FileDevice } from ${JSON.stringify(file)};
      const d = await FileDevice.open(${JSON.stringify(path)}, { readOnly: true });
      console.log(JSON.stringify((await d.extents(0, d.size)).map((e) => [e.length, e.hole, e.zero])));
      await d.close();`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, MEDV_NO_NATIVE: '1' }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [
      [3 * MiB, true, true], [MiB, false, false], [9 * G - 4 * MiB, true, true], [4096, false, false], [7 * G - 4096, true, true],
    ]);
  });
});
