import assert from 'node:assert/strict';
import { MedvError } from '../../../src/core/errors.js';
import { DiskType, newFooterDefaults, parseFooter, serializeFooter, vhdChecksum, type VhdFooter } from '../../../src/formats/vhd/index.js';

const sample: VhdFooter = {
  ...newFooterDefaults(),
  dataOffset: 512n,
  timestamp: 0x2e8d1b3a,
  creatorApp: 'qemu',
  creatorVersion: 0x00050003,
  creatorOs: 'Wi2k',
  originalSize: 67125248n,
  currentSize: 67125248n,
  geometry: { cylinders: 0x3c4, heads: 8, sectorsPerTrack: 17 },
  diskType: DiskType.Dynamic,
  uniqueId: Buffer.from('00112233445566778899aabbccddeeff', 'hex'),
};

const code = (c: string, offset?: number) => (e: unknown) => e instanceof MedvError && e.code === c && (offset === undefined || e.data.offset === offset);

describe('formats/vhd footer', () => {
  it('round-trips and computes the checksum as the ones complement of the byte sum', () => {
    const buf = serializeFooter(sample);
    assert.equal(buf.length, 512);
    assert.equal(buf.toString('latin1', 0, 8), 'conectix');
    let sum = 0;
    for (let i = 0; i < 512; i++) if (i < 64 || i >= 68) sum += buf[i];
    assert.equal(buf.readUInt32BE(64), (~sum) >>> 0);
    assert.equal(vhdChecksum(buf, 64), buf.readUInt32BE(64));
    const back = parseFooter(buf);
    assert.deepEqual({ ...back, checksum: 0 }, { ...sample, checksum: 0 });
    assert.equal(buf.readUInt32BE(12), 0x00010000);
    assert.equal(buf.readUInt32BE(8), 2);
  });

  it('checks cookie, then checksum, then version, naming file and offset', () => {
    const buf = serializeFooter(sample);
    const a = Buffer.from(buf); a[0] = 0x41;
    assert.throws(() => parseFooter(a, { file: 'x.vhd', offset: 1000 }), code('EFORMAT', 1000));
    const b = Buffer.from(buf); b[200] = 1;
    assert.throws(() => parseFooter(b, { file: 'x.vhd', offset: 1000 }), code('ECHECKSUM', 1064));
    const c = Buffer.from(buf); c.writeUInt32BE(0x00020000, 12); c.writeUInt32BE(vhdChecksum(c, 64), 64);
    assert.throws(() => parseFooter(c), code('EVERSION', 12));
    const d = Buffer.from(buf); d.writeUInt32BE(5, 60); d.writeUInt32BE(vhdChecksum(d, 64), 64);
    assert.throws(() => parseFooter(d), code('EFORMAT', 60));
    assert.throws(() => parseFooter(buf.subarray(0, 100)), code('ETRUNCATED'));
  });

  it('does not modify its input', () => {
    const buf = serializeFooter(sample);
    const copy = Buffer.from(buf);
    parseFooter(buf);
    assert.ok(buf.equals(copy));
  });
});
