/**
 * The byte-level JSON parser of request bodies that carry keys (src/api/jsonbytes.ts) and the
 * byte codecs under it (src/api/bytes.ts): the same values as JSON.parse, secrets kept out of
 * strings, and everything that is not strict JSON refused.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { isMedvError } from '../../src/core/errors.js';
import { SecretText, parseJsonBytes } from '../../src/api/jsonbytes.js';
import { base64DecodeInto, base64EncodeInto, base64Length, hexDecodeInto, hexEncodeInto } from '../../src/api/bytes.js';

describe('api: jsonbytes and bytes', () => {
  it('gives what JSON.parse gives for ordinary documents', () => {
    const docs = [
      '{}', '[]', '{"a":1,"b":[true,false,null,-0.5e3,"x\\u00e9\\n"],"c":{"d":"é"}}', ' [ 1 , 2 ] ', '"s"', '0', '12345678901234567890',
      JSON.stringify({ image: 'lab', signers: [randomBytes(32).toString('hex')], nested: { deep: [[[{ x: 1 }]]] } }),
    ];
    for (const d of docs) assert.deepEqual(JSON.parse(JSON.stringify(parseJsonBytes(Buffer.from(d)))), JSON.parse(d), d);
  });

  it('returns a secret field as secure bytes, never a string', () => {
    const body = Buffer.from('{"content":{"id":"00","key":"c2VjcmV0"},"n":5}');
    const v = parseJsonBytes(body, [['content', 'key']]) as { content: { id: string; key: SecretText }; n: number };
    assert.ok(v.content.key instanceof SecretText);
    assert.equal(Buffer.from(v.content.key.bytes).toString(), 'c2VjcmV0');
    assert.equal(v.content.id, '00');
    assert.equal(v.n, 5);
    v.content.key.dispose();
  });

  it('refuses what is not strict JSON, duplicates, escapes in a secret, and nesting past the bound', () => {
    const bad = ['', '{', '{"a":1,}', '[1,]', '{"a":1}x', '{a:1}', "{'a':1}", '01', '1.', '+1', 'tru', 'nul', '"\u0001"', '{"a":1,"a":2}', '{"k":"ab\\u0041"}', `${'['.repeat(40)}${']'.repeat(40)}`];
    for (const b of bad) assert.throws(() => parseJsonBytes(Buffer.from(b), [['k']]), (e: unknown) => isMedvError(e, 'EINVAL_ARG'), JSON.stringify(b));
  });

  it('hex and base64 round trip byte by byte; non-canonical or wrong-length text is refused', () => {
    for (const n of [1, 2, 3, 16, 32, 64]) {
      const k = randomBytes(n);
      const b = Buffer.alloc(base64Length(n));
      base64EncodeInto(k, b);
      assert.equal(b.toString('latin1'), k.toString('base64'));
      const back = Buffer.alloc(n);
      assert.ok(base64DecodeInto(b, back));
      assert.ok(back.equals(k));
      const h = Buffer.alloc(2 * n);
      hexEncodeInto(k, h);
      assert.equal(h.toString('latin1'), k.toString('hex'));
      const hb = Buffer.alloc(n);
      assert.ok(hexDecodeInto(Buffer.from(k.toString('hex').toUpperCase()), hb));
      assert.ok(hb.equals(k));
      const upper = k.toString('hex').toUpperCase();
      assert.equal(hexDecodeInto(Buffer.from(upper), hb, true), !/[A-F]/.test(upper), 'lowercase only when asked');
    }
    const out = Buffer.alloc(1);
    assert.equal(base64DecodeInto(Buffer.from('AB=='), out), false, 'unused bits set');
    assert.equal(base64DecodeInto(Buffer.from('AA='), out), false);
    assert.equal(base64DecodeInto(Buffer.from('A!=='), out), false);
    assert.ok(base64DecodeInto(Buffer.from('AA=='), out));
  });
});
