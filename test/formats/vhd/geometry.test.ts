import assert from 'node:assert/strict';
import { chsGeometry, diskSizeFromFooter, exactGeometry, geometrySectors, MAX_GEOMETRY, roundedDiskSize } from '../../../src/formats/vhd/index.js';

describe('formats/vhd geometry', () => {
  // Measured with qemu-img 7.2 (`qemu-img create -f vpc F SIZE`): virtual size and C/H/S in the footer.
  const table: Array<[number, number, number, number, number]> = [
    [1, 34816, 1, 4, 17],
    [1000000, 1009664, 0x1d, 4, 17],
    [10000000, 10027008, 0x120, 4, 17],
    [67108864, 67125248, 0x3c4, 8, 17],
    [1073741824, 1073995776, 0x821, 16, 63],
    [34359738368, 34361303040, 0x4041, 16, 255],
    [136365211648, 136365219840, 0xfeff, 16, 255],
    [200000000000, 200000000000, 0xffff, 16, 255],
  ];
  for (const [req, size, c, h, s] of table) {
    it(`rounds ${req} like qemu-img: ${size} (${c}/${h}/${s})`, () => {
      const r = roundedDiskSize(req);
      assert.equal(r.size, size);
      assert.deepEqual(r.geometry, { cylinders: c, heads: h, sectorsPerTrack: s });
    });
  }

  it('follows the specification algorithm', () => {
    assert.deepEqual(chsGeometry(65535 * 16 * 255 + 1000), MAX_GEOMETRY);
    assert.deepEqual(chsGeometry(2 * 1024 * 2), { cylinders: 60, heads: 4, sectorsPerTrack: 17 });
    for (let n = 1; n < 3_000_000; n += 9973) assert.ok(geometrySectors(chsGeometry(n)) <= n);
  });

  it('exact sizes keep CHS when representable, else saturate', () => {
    assert.deepEqual(exactGeometry(67125248), { cylinders: 0x3c4, heads: 8, sectorsPerTrack: 17 });
    assert.deepEqual(exactGeometry(64 * 1024 * 1024), MAX_GEOMETRY);
  });

  it("sizes disks by qemu's creator rule", () => {
    const g = { cylinders: 100, heads: 4, sectorsPerTrack: 17 };
    const chs = BigInt(100 * 4 * 17 * 512);
    for (const app of ['vpc ', 'qemu', 'medv', 'xxxx']) assert.equal(diskSizeFromFooter(app, g, 10n ** 9n), chs);
    for (const app of ['win ', 'qem2', 'd2v ', 'tap\0', 'CTXS']) assert.equal(diskSizeFromFooter(app, g, 10n ** 9n + 100n), 10n ** 9n);
    assert.equal(diskSizeFromFooter('vpc ', MAX_GEOMETRY, 5n * 10n ** 12n), 5n * 10n ** 12n - (5n * 10n ** 12n) % 512n);
  });
});
