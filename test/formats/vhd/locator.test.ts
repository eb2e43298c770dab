import assert from 'node:assert/strict';
import { dataSpaceBytes, decodeLocatorData, encodeLocatorData } from '../../../src/formats/vhd/index.js';

describe('formats/vhd parent locators', () => {
  it('W2ku/W2ru are UTF-16LE, Wi2k ANSI, MacX UTF-8; data space in bytes or sectors', () => {
    const w = encodeLocatorData('W2ku', 'C:\\Disks\\Bäse.vhd');
    assert.equal(w[0], 'C'.charCodeAt(0));
    assert.equal(w[1], 0);
    assert.equal(decodeLocatorData('W2ku', w), 'C:\\Disks\\Bäse.vhd');
    assert.equal(decodeLocatorData('W2ru', Buffer.concat([encodeLocatorData('W2ru', '.\\a.vhd'), Buffer.alloc(4)])), '.\\a.vhd');
    assert.equal(decodeLocatorData('Wi2r', Buffer.from('..\\b.vhd')), '..\\b.vhd');
    assert.equal(decodeLocatorData('MacX', Buffer.from('file://localhost/x/c.vhd')), 'file://localhost/x/c.vhd');
    assert.equal(decodeLocatorData('Mac ', Buffer.alloc(10)), undefined);
    assert.equal(dataSpaceBytes({ platform: 'W2ku', dataSpace: 512, dataLength: 100, dataOffset: 0n }), 512);
    assert.equal(dataSpaceBytes({ platform: 'W2ku', dataSpace: 1, dataLength: 100, dataOffset: 0n }), 512);
  });
});
