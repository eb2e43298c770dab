/**
 * The multipart/byteranges parser on bodies as nginx writes them, cut into chunks at every size
 * (the bytes out must not depend on where the network split them), and on hostile bodies.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MedvError } from '../../src/core/errors.js';
import { MultipartParser, byterangesBoundary, parseContentRange } from '../../src/formats/multipart.js';

function body(boundary: string, parts: Array<{ start: number; data: Buffer }>, total: number): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    out.push(Buffer.from(`\r\n--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${p.start}-${p.start + p.data.length - 1}/${total}\r\n\r\n`));
    out.push(p.data);
  }
  out.push(Buffer.from(`\r\n--${boundary}--\r\n`));
  return Buffer.concat(out);
}

function parse(boundary: string, b: Buffer, chunk: number): Map<number, Buffer> {
  const got = new Map<number, Buffer>();
  let cur = -1;
  const p = new MultipartParser(boundary, (r) => { cur = r.start; got.set(cur, Buffer.alloc(0)); }, (off, d) => {
    got.set(cur, Buffer.concat([got.get(cur)!, d]));
    assert.equal(off, cur + got.get(cur)!.length - d.length);
  });
  for (let i = 0; i < b.length; i += chunk) p.push(b.subarray(i, i + chunk));
  p.end();
  return got;
}

const bad = (f: () => void, re: RegExp) => assert.throws(f, (e: unknown) => e instanceof MedvError && e.code === 'EBADREPLY' && re.test(e.message));

describe('formats: multipart/byteranges parser', () => {
  const parts = [{ start: 64, data: randomBytes(5000) }, { start: 9000, data: randomBytes(17) }, { start: 20000, data: randomBytes(70000) }];
  const b = body('00000000000000000042', parts, 100000);

  it('gives every part at its offset, whatever the chunk size', () => {
    for (const chunk of [1, 2, 3, 7, 64, 1000, 65536, b.length]) {
      const got = parse('00000000000000000042', b, chunk);
      assert.equal(got.size, 3);
      for (const p of parts) assert.ok(got.get(p.start)!.equals(p.data), `chunk ${chunk}`);
    }
  });

  it('reads the boundary and Content-Range headers', () => {
    assert.equal(byterangesBoundary('multipart/byteranges; boundary=00000000000000000042'), '00000000000000000042');
    assert.equal(byterangesBoundary('multipart/byteranges; boundary="a b"'), 'a b');
    assert.equal(byterangesBoundary('application/octet-stream'), undefined);
    assert.deepEqual(parseContentRange('bytes 1-2/3'), { start: 1, end: 2, total: 3 });
    assert.equal(parseContentRange('bytes 5-2/3'), undefined);
    assert.equal(parseContentRange('bytes 1-2'), undefined);
  });

  it('refuses hostile bodies with EBADREPLY, holding little', () => {
    const p = () => new MultipartParser('B', () => undefined, () => undefined);
    bad(() => p().push(Buffer.alloc(4096, 0x61)), /no boundary/);
    bad(() => { const x = p(); x.push(Buffer.from('--B\r\nContent-Type: x\r\n')); x.push(Buffer.alloc(9000, 0x61)); }, /header too long/);
    bad(() => p().push(Buffer.from('--B\r\nContent-Type: x\r\n\r\n')), /without a valid Content-Range/);
    bad(() => p().push(Buffer.from('--B\r\nContent-Range: bytes 0-3/9\r\n\r\nabcdXX')), /not followed by the boundary/);
    bad(() => { const x = p(); x.push(Buffer.from('--B\r\nContent-Range: bytes 0-3/9\r\n\r\nab')); x.end(); }, /inside a part/);
    bad(() => p().push(Buffer.from('--B--')), /no parts/);
  });
});
