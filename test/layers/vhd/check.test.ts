import assert from 'node:assert/strict';
import { MemoryDevice } from '../../../src/block/memory.js';
import { MedvError } from '../../../src/core/errors.js';
import { vhdChecksum } from '../../../src/formats/vhd/index.js';
import { checkVhd, createDifferencingVhd, createVhd, openVhd, readVhdInfo } from '../../../src/layers/vhd/index.js';

/** A dynamic VHD with blocks 0 and 2 allocated: returns the image. */
async function dynamicImage(): Promise<Buffer> {
  const storage = new MemoryDevice(0);
  await createVhd(storage, { type: 'dynamic', size: 8 * 1024 * 1024 });
  const dev = await openVhd(storage);
  await dev.write(0, Buffer.alloc(4096, 1));
  await dev.write(4 * 1024 * 1024, Buffer.alloc(4096, 2));
  await dev.close();
  return storage.snapshot();
}

function fixFooter(img: Buffer, at: number): void {
  img.writeUInt32BE(vhdChecksum(img.subarray(at, at + 512), 64), at + 64);
}

function patchFooters(img: Buffer, fn: (f: Buffer) => void): Buffer {
  const out = Buffer.from(img);
  for (const at of [0, out.length - 512]) { fn(out.subarray(at, at + 512)); fixFooter(out, at); }
  return out;
}

function patchHeader(img: Buffer, fn: (h: Buffer) => void): Buffer {
  const out = Buffer.from(img);
  const h = out.subarray(512, 1536);
  fn(h);
  h.writeUInt32BE(vhdChecksum(h, 36), 36);
  return out;
}

const BAT = 1536;

async function expectBad(img: Buffer, code: string, offsetCheck?: (o: number) => boolean): Promise<void> {
  await assert.rejects(readVhdInfo(MemoryDevice.from(img), 'bad.vhd'), (e: unknown) => {
    assert.ok(e instanceof MedvError, String(e));
    assert.equal(e.code, code, e.message);
    assert.equal(e.data.file, 'bad.vhd');
    assert.equal(typeof e.data.offset, 'number');
    if (offsetCheck) assert.ok(offsetCheck(Number(e.data.offset)), `offset ${e.data.offset}`);
    return true;
  });
  const chk = await checkVhd(MemoryDevice.from(img));
  assert.equal(chk.ok, false);
  assert.ok(chk.errors.some((x) => x.startsWith(code)), chk.errors.join('\n'));
}

describe('checkVhd and hostile input', () => {
  it('a medv-made disk checks clean', async () => {
    const img = await dynamicImage();
    const chk = await checkVhd(MemoryDevice.from(img));
    assert.deepEqual(chk, { ok: true, errors: [], warnings: [] });
    const fixed = new MemoryDevice(0);
    await createVhd(fixed, { type: 'fixed', size: 3 * 1024 * 1024 });
    assert.deepEqual(await checkVhd(fixed), { ok: true, errors: [], warnings: [] });
    const diff = new MemoryDevice(0);
    await createDifferencingVhd(diff, { size: 3 * 1024 * 1024, uniqueId: Buffer.alloc(16, 1), absolutePath: 'C:\\x\\p.vhd', relativePath: '.\\p.vhd' });
    assert.deepEqual(await checkVhd(diff), { ok: true, errors: [], warnings: [] });
  });

  it('bad footer checksum (both copies): ECHECKSUM at the checksum field', async () => {
    const img = await dynamicImage();
    img[img.length - 512 + 100] ^= 1;
    img[100] ^= 1;
    await expectBad(img, 'ECHECKSUM', (o) => o === img.length - 512 + 64);
  });

  it('bad header checksum: ECHECKSUM; bad cookie: EFORMAT; bad version: EVERSION', async () => {
    const img = await dynamicImage();
    const a = Buffer.from(img); a[512 + 40] ^= 0xff;
    await expectBad(a, 'ECHECKSUM', (o) => o === 512 + 36);
    await expectBad(patchHeader(img, (h) => h.write('xxsparse', 0)), 'EFORMAT');
    await expectBad(patchHeader(img, (h) => h.writeUInt32BE(0x00020000, 24)), 'EVERSION');
    await expectBad(patchFooters(img, (f) => f.writeUInt32BE(0x00020000, 12)), 'EVERSION');
  });

  it('BAT entry past EOF: ECORRUPT at the entry', async () => {
    const img = await dynamicImage();
    img.writeUInt32BE(img.length / 512 + 10, BAT + 4);
    await expectBad(img, 'ECORRUPT', (o) => o === BAT + 4);
  });

  it('overlapping BAT entries, or a block over the BAT: ECORRUPT', async () => {
    const img = await dynamicImage();
    const a = Buffer.from(img);
    a.writeUInt32BE(a.readUInt32BE(BAT) + 1, BAT + 4);
    await expectBad(a, 'ECORRUPT');
    const b = Buffer.from(img);
    b.writeUInt32BE(BAT / 512, BAT + 4);
    await expectBad(b, 'ECORRUPT', (o) => o === BAT + 4);
  });

  it('block size not a power of two, absurd table entries, too small a BAT: typed errors', async () => {
    const img = await dynamicImage();
    await expectBad(patchHeader(img, (h) => h.writeUInt32BE(3 * 1024 * 1024, 32)), 'EFORMAT', (o) => o === 512 + 32);
    await expectBad(patchHeader(img, (h) => h.writeUInt32BE(1000, 28)), 'EFORMAT', (o) => o === 512 + 28);
    await expectBad(patchHeader(img, (h) => h.writeUInt32BE(1, 28)), 'ECORRUPT', (o) => o === 512 + 28);
  });

  it('sizes beyond 2040 GiB: EFORMAT', async () => {
    const img = await dynamicImage();
    await expectBad(patchFooters(img, (f) => { f.writeBigUInt64BE(3n * 1024n ** 4n, 48); f.writeUInt32BE(0xffff10ff, 56); }), 'EFORMAT');
  });

  it('truncated files: ETRUNCATED or a valid-copy warning', async () => {
    const img = await dynamicImage();
    await expectBad(img.subarray(0, 100), 'ETRUNCATED');
    // Cut inside the last block: the end footer is gone, the copy at 0 stands in, the block is past the end.
    await expectBad(img.subarray(0, img.length - 4096), 'ECORRUPT');
  });

  it('leaked space is a warning, not an error', async () => {
    const img = await dynamicImage();
    const leaked = Buffer.concat([img.subarray(0, img.length - 512), Buffer.alloc(3 * 1024 * 1024), img.subarray(img.length - 512)]);
    const chk = await checkVhd(MemoryDevice.from(leaked));
    assert.deepEqual(chk.errors, []);
    assert.ok(chk.warnings.some((w) => w.includes('leaked')), chk.warnings.join('\n'));
  });

  it('differencing: locator data outside the file is ECORRUPT', async () => {
    const diff = new MemoryDevice(0);
    await createDifferencingVhd(diff, { size: 3 * 1024 * 1024, uniqueId: Buffer.alloc(16, 1), relativePath: 'p.vhd' });
    const img = patchHeader(diff.snapshot(), (h) => h.writeBigUInt64BE(1n << 40n, 576 + 16));
    await expectBad(img, 'ECORRUPT', (o) => o === 512 + 576 + 16);
  });
});
