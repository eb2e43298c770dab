/** The test guest's constants (from vm/layout.json) and the helpers that read what it wrote. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootCounter, fileContainsMarker, GUEST, markerBlock, readCounter, REPO_ROOT } from '../../src/hypervisor/testguest.js';

describe('hypervisor/testguest', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'medv-testguest-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('constants come from vm/layout.json', () => {
    const layout = JSON.parse(readFileSync(join(REPO_ROOT, 'vm/layout.json'), 'utf8'));
    assert.equal(GUEST.counterOffset, layout.counterLba * layout.sectorBytes);
    assert.equal(GUEST.markerOffset, layout.markerLba * layout.sectorBytes);
    assert.equal(GUEST.marker.toString('ascii'), layout.marker);
    assert.equal(GUEST.marker.length, 32);
    assert.equal(markerBlock().length, GUEST.markerBytes);
  });

  it('readCounter / bootCounter: magic then little-endian count; 0 without the magic', () => {
    const sector = Buffer.alloc(512);
    assert.equal(readCounter(sector), 0);
    GUEST.counterMagic.copy(sector);
    sector.writeUInt32LE(7, 8);
    assert.equal(readCounter(sector), 7);
    assert.equal(readCounter(sector.subarray(0, 11)), 0);
    const disk = Buffer.alloc(GUEST.counterOffset + 512);
    sector.copy(disk, GUEST.counterOffset);
    assert.equal(bootCounter(disk), 7);
    assert.equal(bootCounter(Buffer.alloc(10)), 0);
  });

  it('fileContainsMarker finds any 32-byte run of the pattern, at any phase and across 1 MiB reads', async () => {
    const size = (1 << 20) + 4096;
    const clean = join(dir, 'clean');
    writeFileSync(clean, Buffer.alloc(size, 0x4d));
    assert.equal(await fileContainsMarker(clean), false);
    const m = GUEST.marker;
    for (const [at, phase] of [[0, 0], [(1 << 20) - 10, 0], [12345, 13], [size - 32, 31]]) {
      const data = Buffer.alloc(size);
      const run = Buffer.concat([m, m]).subarray(phase, phase + 32);
      run.copy(data, at);
      const f = join(dir, `m${at}`);
      writeFileSync(f, data);
      assert.equal(await fileContainsMarker(f), true, `at ${at} phase ${phase}`);
      // 31 bytes are not a run.
      data.fill(0, at + 31, at + 32);
      writeFileSync(f, data);
      assert.equal(await fileContainsMarker(f), false, `31 bytes at ${at}`);
    }
  });
});
