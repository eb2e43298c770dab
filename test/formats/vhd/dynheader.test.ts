import assert from 'node:assert/strict';
import { MedvError } from '../../../src/core/errors.js';
import { DATA_OFFSET_NONE, emptyLocators, parseDynamicHeader, serializeDynamicHeader, vhdChecksum, type DynamicHeader } from '../../../src/formats/vhd/index.js';

describe('formats/vhd dynamic header', () => {
  const locators = emptyLocators();
  locators[0] = { platform: 'W2ru', dataSpace: 512, dataLength: 18, dataOffset: 1536n };
  locators[1] = { platform: 'W2ku', dataSpace: 512, dataLength: 40, dataOffset: 2048n };
  const h: DynamicHeader = {
    dataOffset: DATA_OFFSET_NONE, tableOffset: 2560n, version: 0x00010000, maxTableEntries: 32, blockSize: 2 * 1024 * 1024,
    checksum: 0, parentUniqueId: Buffer.alloc(16, 9), parentTimestamp: 12345, parentName: 'Pärent disk ✓.vhd', locators,
  };

  it('round-trips; parent name is UTF-16BE, data offset all ones', () => {
    const buf = serializeDynamicHeader(h);
    assert.equal(buf.length, 1024);
    assert.equal(buf.toString('latin1', 0, 8), 'cxsparse');
    assert.equal(buf.readBigUInt64BE(8), 0xffffffffffffffffn);
    assert.equal(buf.readUInt16BE(64), 'P'.charCodeAt(0));
    assert.equal(buf.readUInt32BE(36), vhdChecksum(buf, 36));
    const back = parseDynamicHeader(buf);
    assert.deepEqual({ ...back, checksum: 0 }, h);
  });

  it('typed errors for cookie, checksum, version, truncation', () => {
    const buf = serializeDynamicHeader(h);
    const is = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;
    const a = Buffer.from(buf); a[1] = 0;
    assert.throws(() => parseDynamicHeader(a), is('EFORMAT'));
    const b = Buffer.from(buf); b[600] ^= 1;
    assert.throws(() => parseDynamicHeader(b), is('ECHECKSUM'));
    const c = Buffer.from(buf); c.writeUInt32BE(2, 24); c.writeUInt32BE(vhdChecksum(c, 36), 36);
    assert.throws(() => parseDynamicHeader(c), is('EVERSION'));
    assert.throws(() => parseDynamicHeader(buf.subarray(0, 1000)), is('ETRUNCATED'));
  });
});
