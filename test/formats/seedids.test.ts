/** The seed id cache format: round trip, and anything else (other stamp, key tag, length, magic) is not taken. */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { parseSeedIds, serializeSeedIds } from '../../src/formats/seedids.js';

describe('formats: seed id cache', () => {
  const stamp = { size: 1 << 20, mtimeNs: 123456789n, ctimeNs: 123456999n, ino: 42n, dev: 7n };
  const tag = randomBytes(16);
  const ids = { ids: randomBytes(3 * 16), blocks: Uint32Array.from([0, 5, 255]), count: 3 };
  const b = serializeSeedIds(stamp, tag, ids);

  it('round trips', () => {
    const p = parseSeedIds(b, stamp, tag)!;
    assert.equal(p.count, 3);
    assert.ok(p.ids.equals(ids.ids));
    assert.deepEqual([...p.blocks], [0, 5, 255]);
  });

  it('is not taken for another seed identity or generation (size, mtime, ctime), another key, or when damaged', () => {
    assert.equal(parseSeedIds(b, { ...stamp, mtimeNs: 1n }, tag), undefined);
    assert.equal(parseSeedIds(b, { ...stamp, ino: 43n }, tag), undefined);
    assert.equal(parseSeedIds(b, { ...stamp, ctimeNs: 1n }, tag), undefined, 'a restored mtime does not restore ctime');
    assert.equal(parseSeedIds(b, { ...stamp, dev: 8n }, tag), undefined);
    assert.equal(parseSeedIds(b, { ...stamp, size: 4096 }, tag), undefined);
    assert.equal(parseSeedIds(b, stamp, randomBytes(16)), undefined);
    assert.equal(parseSeedIds(b.subarray(0, b.length - 1), stamp, tag), undefined);
    assert.equal(parseSeedIds(Buffer.concat([b, Buffer.alloc(20)]), stamp, tag), undefined);
    const bad = Buffer.from(b);
    bad[0] ^= 1;
    assert.equal(parseSeedIds(bad, stamp, tag), undefined);
    assert.equal(parseSeedIds(Buffer.alloc(10), stamp, tag), undefined);
  });
});
