/**
 * Undo disks over a raw parent: the size + fingerprint record (MdvR locator), checked whenever the
 * parent is named; an interrupted merge into a raw parent can be re-run; hostile records fail typed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../../../src/core/errors.js';
import { parseRawParent, serializeRawParent } from '../../../src/formats/vhd/index.js';
import { openDisk } from '../../../src/layers/open.js';
import { createUndoDisk, mergeUndoDisk, openUndoDisk } from '../../../src/layers/undo/index.js';
import { runMedv, tempDir } from '../../helpers/cli.js';

const MiB = 1024 * 1024;
const isCode = (code: string) => (e: unknown) => e instanceof MedvError && e.code === code;

describe('layers/undo over a raw parent', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  let raw: string;
  let undo: string;
  beforeEach(async () => {
    dir = tempDir('rawparent');
    raw = join(dir.path, 'disk.img');
    writeFileSync(raw, randomBytes(6 * MiB));
    undo = join(dir.path, 'undo.vhd');
    await createUndoDisk(undo, raw);
  });
  afterEach(() => dir.cleanup());

  it('records the parent: disk check is clean, and the parent must be named', async () => {
    const r = runMedv(['disk', 'check', undo, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).warnings, [], 'our locator is known to our own checker');
    await assert.rejects(openUndoDisk(undo), isCode('EPARENT'));
    const u = await openUndoDisk(undo, { parent: raw });
    assert.ok((await u.device.read(0, 4096)).equals(readFileSync(raw).subarray(0, 4096)));
    await u.device.close();
  });

  it('a change in any sampled region of the parent is detected', async () => {
    const data = readFileSync(raw);
    data[6 * MiB - 1] ^= 1; // the last region
    writeFileSync(raw, data);
    await assert.rejects(openUndoDisk(undo, { parent: raw }), isCode('EPARENT'));
    await assert.rejects(mergeUndoDisk(undo, { parent: raw }), isCode('EPARENT'));
  });

  it('an interrupted merge into the raw parent can be re-run (merged regions are recognised)', async () => {
    const u = await openUndoDisk(undo, { parent: raw });
    await u.device.write(0, randomBytes(3 * MiB));          // covers sampled regions at the start
    await u.device.write(6 * MiB - 8192, randomBytes(8192)); // and the last one
    const view = await u.device.read(0, u.device.size);
    await u.device.close();
    // Crash after the first two chunks: region 0 is merged, the last region is not.
    await assert.rejects(mergeUndoDisk(undo, { parent: raw }, (done) => { if (done >= 2 * MiB) throw new Error('crash'); }), /crash/);
    assert.ok(readFileSync(raw).subarray(0, MiB).equals(view.subarray(0, MiB)), 'part of the merge landed');
    await mergeUndoDisk(undo, { parent: raw });
    assert.ok(readFileSync(raw).equals(view));
  });

  it('a VHD parent is never taken for a raw one, nor the other way round', async () => {
    const vhd = join(dir.path, 'base.vhd');
    assert.equal(runMedv(['disk', 'create', vhd, '--size', '4M']).code, 0);
    const u2 = join(dir.path, 'u2.vhd');
    await createUndoDisk(u2, vhd);
    const other = join(dir.path, 'other.img');
    writeFileSync(other, Buffer.alloc(4 * MiB));
    await assert.rejects(openUndoDisk(u2, { parent: other }), isCode('EPARENT'));
    await assert.rejects(openDisk(raw, { parent: vhd }), isCode('EINVAL_ARG'));
  });

  it('hostile records give typed errors', () => {
    const good = serializeRawParent({ size: 8192, regionLength: 4096, regions: [{ offset: 0, hash: Buffer.alloc(16, 1) }, { offset: 4096, hash: Buffer.alloc(16, 2) }] });
    assert.equal(parseRawParent(good).regions.length, 2);
    const cases: Array<[string, (b: Buffer) => Buffer]> = [
      ['EFORMAT', (b) => { b.write('x', 0); return b; }],
      ['EVERSION', (b) => { b.writeUInt32BE(2, 8); return b; }],
      ['EFORMAT', (b) => { b.writeUInt32BE(0, 12); return b; }],
      ['EFORMAT', (b) => { b.writeUInt32BE(65, 24); return b; }],
      ['ETRUNCATED', (b) => b.subarray(0, b.length - 1)],
      ['ETRUNCATED', (b) => b.subarray(0, 20)],
      ['EFORMAT', (b) => { b.writeBigUInt64BE(4097n, 32 + 24); return b; }],
      ['EFORMAT', (b) => { b.writeBigUInt64BE(0n, 16); return b; }],
    ];
    for (const [code, mutate] of cases) assert.throws(() => parseRawParent(mutate(Buffer.from(good))), isCode(code), code);
    // Seeded mutations: every outcome is a record whose regions lie inside the parent, or a typed error.
    let seed = 0x5eed;
    const rnd = (n: number) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed % n; };
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(good);
      for (let k = 1 + rnd(4); k > 0; k--) b[rnd(b.length)] = rnd(256);
      try {
        const r = parseRawParent(rnd(8) === 0 ? b.subarray(0, rnd(b.length)) : b);
        for (const g of r.regions) assert.ok(g.offset + r.regionLength <= r.size);
      } catch (e) {
        assert.ok(e instanceof MedvError, String(e));
      }
    }
  });
});
