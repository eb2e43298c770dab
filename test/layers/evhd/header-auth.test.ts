/**
 * The EVHD header MAC: a header changed without the key (here a forged logical length with a
 * recomputed SHA-256 checksum, which passes the keyless parser) is refused at open with EAUTH,
 * before any data unit is read and with nothing written; through the CLI, every command that
 * opens the disk refuses it and the file keeps its bytes.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WriteOptions } from '../../../src/block/device.js';
import { FilterDevice } from '../../../src/block/filter.js';
import { MemoryDevice } from '../../../src/block/memory.js';
import { DataKey } from '../../../src/crypto/index.js';
import { MedvError } from '../../../src/core/errors.js';
import { EVHD_HEADER_SIZE, EVHD_VERSION, parseEvhdHeader } from '../../../src/formats/evhd.js';
import { createEvhd, openEvhd } from '../../../src/layers/evhd/index.js';
import { runMedv, sha256File, tempDir } from '../../helpers/cli.js';

/** Change the logical length at offset 88 and recompute the SHA-256 checksum at 104 (what anyone can do without the key). */
function forgeLength(file: Buffer, length: bigint): Buffer {
  const b = Buffer.from(file);
  b.writeBigUInt64LE(length, 88);
  const z = Buffer.from(b.subarray(0, EVHD_HEADER_SIZE));
  z.fill(0, 104, 136);
  createHash('sha256').update(z).digest().copy(b, 104);
  return b;
}

/** Records every storage request (offset, length) passing through to the device below. */
class Recording extends FilterDevice {
  readonly reads: Array<[number, number]> = [];
  readonly writes: Array<[number, number]> = [];
  override read(o: number, n: number) { this.reads.push([o, n]); return super.read(o, n); }
  override write(o: number, d: Buffer, opt?: WriteOptions) { this.writes.push([o, d.length]); return super.write(o, d, opt); }
  override discard(o: number, n: number) { this.writes.push([o, n]); return super.discard(o, n); }
  override writeZeroes(o: number, n: number, opt?: WriteOptions) { this.writes.push([o, n]); return super.writeZeroes(o, n, opt); }
  override resize(n: number) { this.writes.push([n, 0]); return super.resize(n); }
}

describe('layers/evhd: header authentication', function () {
  this.timeout(60_000);

  it('a forged logical length with a recomputed checksum gives EAUTH at open; no data read, nothing written', async () => {
    const key = DataKey.generate();
    const mem = new MemoryDevice(0);
    const dev = await createEvhd(mem, key.clone());
    await dev.write(0, randomBytes(5 * 4096));
    await dev.close();
    const good = mem.snapshot();
    assert.equal(parseEvhdHeader(good).version, EVHD_VERSION);
    for (const length of [3n * 4096n, 5n * 4096n - 1n, 0n]) {
      const forged = forgeLength(good, length);
      assert.equal(parseEvhdHeader(forged, 'f.evhd').logicalLength, length, 'the keyless parser accepts it');
      const rec = new Recording(MemoryDevice.from(forged));
      await assert.rejects(openEvhd(rec, key.clone(), { name: 'f.evhd' }),
        (e: unknown) => e instanceof MedvError && e.code === 'EAUTH' && e.data.offset === 136 && e.data.file === 'f.evhd');
      assert.deepEqual(rec.reads, [[0, EVHD_HEADER_SIZE]], 'only the header was read');
      assert.deepEqual(rec.writes, []);
    }
    // The genuine header opens, and every header rewrite (growth) keeps it valid.
    const ok = await openEvhd(MemoryDevice.from(good), key.clone());
    assert.equal(ok.size, 5 * 4096);
    await ok.close();
    key.dispose();
  });

  it('medv disk info/check/convert refuse the forged header with one line [EAUTH] (exit 5), file unchanged', () => {
    const dir = tempDir('evhd-auth');
    try {
      const raw = join(dir.path, 'd.raw');
      writeFileSync(raw, randomBytes(2 * 1024 * 1024));
      const e = join(dir.path, 'd.evhd');
      assert.equal(runMedv(['disk', 'convert', raw, e]).code, 0);
      const file = readFileSync(e);
      const length = parseEvhdHeader(file).logicalLength;
      writeFileSync(e, forgeLength(file, length - 512n)); // drop the VHD footer's sector from view
      const before = sha256File(e);
      for (const args of [['disk', 'info', e], ['disk', 'check', e], ['disk', 'convert', e, join(dir.path, 'out.raw'), '--to', 'raw']]) {
        const r = runMedv(args);
        assert.equal(r.code, 5, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, r.stderr);
        assert.match(lines[0], /header authentication failed.*\[EAUTH\]/);
      }
      assert.equal(sha256File(e), before);
    } finally {
      void dir.cleanup();
    }
  });
});
