/** The hostile-input layer under .vmc and ImageState parsing: bytes, encodings, XML structure, limits. */
import assert from 'node:assert/strict';
import { decodeXmlBytes, encodeUtf16leBom, firstInvalidUtf8, parseVmc } from '../../../src/formats/vmc/index.js';
import { decodeEntities, parseXmlTree, serializeXmlTree } from '../../../src/formats/vmc/xmltree.js';
import { medv } from './helpers.js';

const F = { file: 'h.vmc' };
const u8 = (s: string): Buffer => Buffer.from(s, 'utf8');
const tree = (s: string, limits?: { maxDepth: number; maxMarkup: number }) => parseXmlTree(decodeXmlBytes(u8(s), F), F, limits);

describe('formats: vmc XML layer (hostile input)', () => {
  it('decodes UTF-16LE+BOM and UTF-8 (BOM or not); refuses UTF-32, odd lengths, bad UTF-8 at its offset', () => {
    assert.equal(decodeXmlBytes(encodeUtf16leBom('<a>✓</a>')).text, '<a>✓</a>');
    assert.equal(decodeXmlBytes(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), u8('<a>✓</a>')])).text, '<a>✓</a>');
    assert.throws(() => decodeXmlBytes(Buffer.from([0xff, 0xfe, 0, 0, 0x3c, 0, 0, 0]), F), medv('EUNSUPPORTED', { msg: /UTF-32/ }));
    assert.throws(() => decodeXmlBytes(Buffer.from([0xff, 0xfe, 0x3c, 0x00, 0x61]), F), medv('ETRUNCATED', { offset: 4 }));
    assert.throws(() => decodeXmlBytes(Buffer.alloc(0), F), medv('ETRUNCATED'));
    assert.throws(() => decodeXmlBytes(Buffer.concat([u8('<a>ok'), Buffer.from([0xc3, 0x28]), u8('</a>')]), F), medv('EFORMAT', { file: 'h.vmc', offset: 5, msg: /invalid UTF-8/ }));
    // overlong, surrogate, beyond U+10FFFF, truncated sequence
    assert.equal(firstInvalidUtf8(Buffer.from([0x61, 0xc0, 0x80])), 1);
    assert.equal(firstInvalidUtf8(Buffer.from([0xed, 0xa0, 0x80])), 0);
    assert.equal(firstInvalidUtf8(Buffer.from([0xf4, 0x90, 0x80, 0x80])), 0);
    assert.equal(firstInvalidUtf8(Buffer.from([0x61, 0x62, 0xe2, 0x9c])), 2);
    assert.equal(firstInvalidUtf8(u8('✓ 𝄞 é')), -1);
  });

  it('refuses characters XML forbids and lone surrogates, with their byte offset', () => {
    assert.throws(() => decodeXmlBytes(u8('<a>x\u0001</a>'), F), medv('EFORMAT', { offset: 4, msg: /U\+0001/ }));
    const lone = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('<a>', 'utf16le'), Buffer.from([0x00, 0xd8]), Buffer.from('</a>', 'utf16le')]);
    assert.throws(() => decodeXmlBytes(lone, F), medv('EFORMAT', { offset: 8, msg: /U\+D800/ }));
    assert.throws(() => tree('<a>&#1;</a>'), medv('EFORMAT', { msg: /names a character XML does not allow/ }));
    assert.throws(() => tree('<a>&#x110000;</a>'), medv('EFORMAT', { msg: /out of range/ }));
  });

  it('bounds the size before decoding', () => {
    const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x20);
    assert.throws(() => parseVmc(big, F), medv('EFORMAT', { msg: /too large/ }));
  });

  it('never expands entities: a DOCTYPE is refused, undefined entities are errors', () => {
    const laughs = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]><preferences><v type="string">&lol2;</v></preferences>';
    assert.throws(() => parseVmc(u8(laughs), F), medv('EUNSUPPORTED', { file: 'h.vmc', offset: 21, msg: /DOCTYPE or entity declaration is not allowed/ }));
    const ext = '<!doctype p SYSTEM "file:///etc/passwd"><p/>';
    assert.throws(() => parseVmc(u8(ext), F), medv('EUNSUPPORTED', { offset: 0 }));
    assert.throws(() => parseVmc(u8('<preferences><!ENTITY y SYSTEM "file:///etc/passwd"></preferences>'), F), medv('EUNSUPPORTED', { offset: 13 }));
    assert.throws(() => parseVmc(u8('<preferences><version type="string">&xxe;</version></preferences>'), F), medv('EFORMAT', { msg: /entity &xxe; is not defined/ }));
    assert.throws(() => parseVmc(u8('<preferences a="x & y"/>'), F), medv('EFORMAT', { msg: /"&" that starts no entity/ }));
    assert.equal(decodeEntities('&lt;&gt;&amp;&quot;&apos;&#65;&#x42;&#x1D11E;', () => ({})), '<>&"\'AB𝄞');
  });

  it('bounds nesting depth and the number of tags', () => {
    const deep = (n: number): string => '<a>'.repeat(n) + '</a>'.repeat(n);
    assert.doesNotThrow(() => tree(deep(32)));
    assert.throws(() => tree(deep(33)), medv('EFORMAT', { msg: /nested deeper than 32/ }));
    assert.throws(() => tree(deep(20000)), medv('EFORMAT', { msg: /nested deeper/ }));
    assert.throws(() => tree(`<a>${'<b/>'.repeat(100)}</a>`, { maxDepth: 8, maxMarkup: 50 }), medv('EFORMAT', { msg: /too many XML tags/ }));
  });

  it('refuses what is not one well-formed document, naming line, column and byte offset', () => {
    let err: unknown;
    try { tree('<a>\n  <b>\n</a>'); } catch (e) { err = e; }
    assert.ok(medv('EFORMAT', { file: 'h.vmc', msg: /not well-formed XML: .*line 3, column/ })(err));
    assert.equal((err as { data: { line: number } }).data.line, 3);
    assert.throws(() => tree('<a/><b/>'), medv('EFORMAT', { msg: /second root element <b>/, offset: 4 }));
    assert.throws(() => tree('<a/>junk'), medv('EFORMAT', { msg: /text outside the root/ }));
    assert.throws(() => tree('<!-- only a comment -->'), medv('EFORMAT', { msg: /no root element|Start tag expected/ }));
    assert.throws(() => tree('<a x="1" x="2"/>'), medv('EFORMAT', { msg: /repeated/ }));
    assert.throws(() => tree('<a><b></a>'), medv('EFORMAT'));
    assert.throws(() => tree('<a b/>'), medv('EFORMAT'));
    assert.throws(() => tree('<a/><?xml version="1.0"?>'), medv('EFORMAT', { msg: /declaration allowed only at the start/ }));
    assert.throws(() => tree('<__proto__><constructor/></__proto__>'), medv('EFORMAT', { msg: /refused/ }));
    assert.throws(() => tree('<a __proto__="1"/>'), medv('EFORMAT'));
    assert.throws(() => tree('<a/>'.padEnd(3, ' ') + '<![CDATA[x]]>'), medv('EFORMAT'));
  });

  it('keeps comments, CDATA (as text), attribute order and exact leaf text; drops layout whitespace', () => {
    const d = tree('<?xml version="1.0"?>\n<!--head-->\n<r z="1" a="&lt;2&gt;">\n  <!--in-->\n  <x> two  spaces </x>\n  <y><![CDATA[<raw & text>]]></y>\n</r>\n<!--tail-->\n');
    assert.deepEqual(d.prolog, [{ kind: 'comment', value: 'head' }]);
    assert.deepEqual(d.epilog, [{ kind: 'comment', value: 'tail' }]);
    assert.deepEqual(d.root.attrs, [['z', '1'], ['a', '<2>']]);
    assert.deepEqual(d.root.children.map((c) => c.kind), ['comment', 'element', 'element']);
    const out = serializeXmlTree(d, { newline: '\n', indent: ' ', encodingName: 'UTF-8' });
    assert.equal(out, '<?xml version="1.0" encoding="UTF-8"?>\n<!--head-->\n<r z="1" a="&lt;2&gt;">\n <!--in-->\n <x> two  spaces </x>\n <y>&lt;raw &amp; text&gt;</y>\n</r>\n<!--tail-->\n');
  });
});
