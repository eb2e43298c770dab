/** Pure parts of the repository server: which names exist, and how Range headers read. */
import assert from 'node:assert/strict';
import { packFileName, indexFileName } from '../../src/formats/ckm/index.js';
import { parseRepoFileName } from '../../src/api/names.js';
import { parseRanges } from '../../src/server/range.js';

describe('server: repository file names', () => {
  it('accepts exactly what image pack writes', () => {
    for (const [name, v] of [['lab', 1], ['win10.x86_64-pro', 2147483647], ['a_b', 12], ['A', 3]] as const) {
      assert.deepEqual(parseRepoFileName(packFileName(name, v)), { file: packFileName(name, v), name, version: v, kind: 'pack' });
      assert.deepEqual(parseRepoFileName(indexFileName(name, v)), { file: indexFileName(name, v), name, version: v, kind: 'index' });
    }
  });
  it('refuses everything else', () => {
    for (const f of ['', '.', '..', '../lab_1.ckm', 'lab_1.ckm/', 'x/lab_1.ckm', '.lab_1.ckm', '_1.ckm', 'lab_0.ckm', 'lab_01.ckm', 'lab_2147483648.ckm',
      'lab_1.ckm.index.tmp', 'lab_1.CKM', 'lab_1.ckm\0', 'lab_1.ckm%00', '%2e%2e_1.ckm', 'lab%2f_1.ckm', 'lab 1_1.ckm', 'lab_1', 'lab.ckm',
      `${'a'.repeat(65)}_1.ckm`, 'lab_-1.ckm', 'lab_1.5.ckm', 'lab\\_1.ckm', 'ĺab_1.ckm']) {
      assert.equal(parseRepoFileName(f), undefined, JSON.stringify(f));
    }
  });
});

describe('server: Range headers', () => {
  it('reads single, open-ended, suffix and several ranges, clamped to the file', () => {
    assert.deepEqual(parseRanges('bytes=0-9', 100, 8), [{ start: 0, end: 9 }]);
    assert.deepEqual(parseRanges('bytes=90-', 100, 8), [{ start: 90, end: 99 }]);
    assert.deepEqual(parseRanges('bytes=-10', 100, 8), [{ start: 90, end: 99 }]);
    assert.deepEqual(parseRanges('bytes=95-200', 100, 8), [{ start: 95, end: 99 }]);
    assert.deepEqual(parseRanges('bytes=0-0, 50-59 ,-1', 100, 8), [{ start: 0, end: 0 }, { start: 50, end: 59 }, { start: 99, end: 99 }]);
    assert.deepEqual(parseRanges('bytes=0-9,200-300', 100, 8), [{ start: 0, end: 9 }]);
  });
  it('unsatisfiable when no range starts inside the file; ignored when malformed, too many or overlapping past the file size', () => {
    assert.equal(parseRanges('bytes=100-', 100, 8), 'unsatisfiable');
    assert.equal(parseRanges('bytes=-0', 100, 8), 'unsatisfiable');
    for (const h of ['bytes=', 'bytes=a-b', 'bytes=5-1', 'items=0-1', 'bytes=--1', 'bytes=0-1-2', `bytes=0-${'9'.repeat(20)}`, 'x'.repeat(9000)]) {
      assert.equal(parseRanges(h, 100, 8), 'ignore', h.slice(0, 40));
    }
    assert.equal(parseRanges(`bytes=${Array.from({ length: 9 }, (_, i) => `${i}-${i}`).join(',')}`, 100, 8), 'ignore');
    assert.equal(parseRanges('bytes=0-99,0-99', 100, 8), 'ignore');
  });
});
