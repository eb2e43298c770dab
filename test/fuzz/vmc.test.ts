/**
 * Fuzzing the XML settings parsers: 2,000 mutated .vmc files, 1,500 ImageState.xml and 1,000
 * GlobalImageData.xml (seeded, so any failure reproduces). Mutations work on the text (deleted,
 * duplicated and swapped spans - which makes duplicate and misplaced elements -, hostile snippets:
 * DOCTYPEs, entities, deep nesting, CDATA, stray markup, forged numbers, MACs and paths) and on the
 * bytes (bit flips, truncation, junk), in UTF-16LE and UTF-8. Every failure must be a MedvError;
 * every file that parses must survive write -> read with the same settings, its paths must resolve
 * or fail typed, and every case must finish in bounded time.
 */
import assert from 'node:assert/strict';
import { MedvError } from '../../src/core/errors.js';
import {
  effectiveSettings, parseGlobalImageData, parseImageState, serializeGlobalImageData, serializeImageState,
} from '../../src/formats/imagestate/index.js';
import {
  createVmc, encodeUtf16leBom, parseVmc, resolvePathRef, serializeVmc, updateVmc,
} from '../../src/formats/vmc/index.js';
import { prng } from '../conformance/blockdevice.js';
import { fixture } from '../formats/vmc/helpers.js';

const SEED = 20261202;

const HOSTILE = [
  '<!DOCTYPE preferences [<!ENTITY x "xxxxxxxx">]>', '<!ENTITY y SYSTEM "file:///etc/passwd">', '&x;', '&#0;', '&#x110000;', '&amp', '&',
  '<', '>', '</', '/>', '<a>', '</preferences>', '<preferences>', '<![CDATA[', ']]>', '<![CDATA[<x>&y;]]>', '<!--', '-->', '<?pi x?>',
  '<?xml version="1.0"?>', ' id="0"', ' id="1"', ' id="7"', ' id="-1"', ' id=""', ' type="integer"', ' type="bytes"', ' type="boolean"',
  ' type="string"', '"', "'", '\u0000', '\u0001', '\ud800', '\udc00', '\ufffe', '𝄞', 'é', '\r', '\n', '\t',
  '<ram_size type="integer">99999999999999999999</ram_size>', '<ram_size type="integer">-1</ram_size>', '<ram_size type="integer">512</ram_size>',
  '<drive_type type="integer">2</drive_type>', '<drive_type type="integer">9</drive_type>', '<ethernet_card_address type="bytes">FFFFFFFFFFFF</ethernet_card_address>',
  '<ethernet_card_address type="bytes">0003FF</ethernet_card_address>', '<relative type="string">..\\..\\..\\etc\\shadow</relative>',
  '<absolute type="string">\\\\server\\share\\x.vhd</absolute>', '<absolute type="string">Q:\\x.vhd</absolute>', '<absolute type="string">C:x</absolute>',
  '<location id="0"><drive_type type="integer">1</drive_type></location>', '<__proto__/>', '<constructor>1</constructor>', '<a __proto__="1"/>',
  '<Memory>0</Memory>', '<Memory>65536</Memory>', '<Network>nat</Network>', '<Devices><Usb>true</Usb></Devices>', '<WorkspaceVersion>0</WorkspaceVersion>',
  '<VirtualizationEngine>9.9.9.9.9</VirtualizationEngine>', '<a>'.repeat(40) + '</a>'.repeat(40), '<b>'.repeat(3000),
];
const NUMBERS = ['0', '1', '2', '-1', '4', '3', '8', '9', '4294967296', '9007199254740993', '1e3', '0x10', ' 12 ', '', '0003FF1A2B3C', '01'];

function mutateText(text: string, rnd: () => number): string {
  const pick = <T>(a: T[]): T => a[Math.floor(rnd() * a.length)];
  const pos = (): number => Math.floor(rnd() * (text.length + 1));
  const n = rnd() < 0.7 ? 1 : 2;
  for (let i = 0; i < n; i++) {
    const kind = Math.floor(rnd() * 8);
    if (kind === 0) {                                   // delete a span
      const a = pos(); text = text.slice(0, a) + text.slice(a + Math.floor(rnd() * 80));
    } else if (kind === 1) {                            // duplicate a span elsewhere (duplicate / misplaced elements)
      const a = pos(); const span = text.slice(a, a + Math.floor(rnd() * 400)); const b = pos();
      text = text.slice(0, b) + span + text.slice(b);
    } else if (kind === 2 || kind === 3) {              // hostile snippet
      const a = pos(); text = text.slice(0, a) + pick(HOSTILE) + text.slice(a);
    } else if (kind === 4) {                            // forge a value between > and <
      const starts: number[] = [];
      for (let j = text.indexOf('>'); j >= 0 && starts.length < 400; j = text.indexOf('>', j + 1)) if (text[j + 1] !== '\r' && text[j + 1] !== '\n' && text[j + 1] !== '<') starts.push(j + 1);
      if (starts.length) {
        const a = pick(starts); const b = text.indexOf('<', a);
        if (b > a) text = text.slice(0, a) + pick(NUMBERS) + text.slice(b);
      }
    } else if (kind === 5) {                            // retype or re-id an element
      text = text.replace(rnd() < 0.5 ? /type="[a-z]+"/ : /id="[0-9]"/, rnd() < 0.5 ? `type="${pick(['integer', 'string', 'bytes', 'boolean', 'x'])}"` : `id="${pick(NUMBERS)}"`);
    } else if (kind === 6) {                            // one random character
      const a = pos(); const c = rnd() < 0.5 ? pick(['<', '>', '&', '"', '/', '=', '\\', ':', '\u0000', '\ud800', ' ']) : String.fromCharCode(Math.floor(rnd() * 0x3000));
      text = text.slice(0, a) + c + text.slice(a + 1);
    } else {                                            // truncate
      text = text.slice(0, pos());
    }
  }
  return text;
}

function encode(text: string, rnd: () => number): Buffer {
  const r = rnd();
  if (r < 0.45) return encodeUtf16leBom(text.replace(/encoding="UTF-8"/i, 'encoding="UTF-16"'));
  if (r < 0.9) return Buffer.from(text.replace(/encoding="UTF-16"/i, 'encoding="UTF-8"'), 'utf8');
  return Buffer.from(text, 'utf8');
}

function mutateBytes(buf: Buffer, rnd: () => number): Buffer {
  const out = Buffer.from(buf);
  const n = 1 + Math.floor(rnd() * 4);
  let b = out;
  for (let i = 0; i < n && b.length; i++) {
    const k = Math.floor(rnd() * 3);
    if (k === 0) { const at = Math.floor(rnd() * b.length); b[at] ^= 1 << Math.floor(rnd() * 8); }
    else if (k === 1) b = b.subarray(0, Math.floor(rnd() * b.length));
    else { const at = Math.floor(rnd() * b.length); b = Buffer.concat([b.subarray(0, at), Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 8) }, () => Math.floor(rnd() * 256))), b.subarray(at)]); }
  }
  return b;
}

function only(f: () => void, what: string): boolean {
  try { f(); return true; } catch (e) {
    if (e instanceof MedvError) return false;
    throw new Error(`${what}: non-MedvError ${e instanceof Error ? e.stack : String(e)}`);
  }
}

const OPTS = { vmcDir: '/srv/vms/xp', driveMap: { C: '/mnt/c', D: '/mnt/d' } };

describe('fuzz: .vmc, ImageState.xml, GlobalImageData.xml', function () {
  this.timeout(120000);

  it('4,500 mutated files raise only MedvError, round-trip when they parse, each in bounded time', () => {
    const rnd = prng(SEED);
    const vmcSeeds = [
      fixture('xp.vmc.utf8.xml').toString('utf8'),
      serializeVmc(createVmc({ memoryMB: 128, drives: [{ controller: 0, location: 0, kind: 'hard-disk', path: { relative: '.\\a.vhd' } }], network: [{}] })).subarray(2).toString('utf16le'),
    ];
    const isSeed = serializeImageState({ memoryMB: 1024, devices: { usb: false, cdDvd: true, clipboard: true, sharedFolders: false }, network: 'nat', firstTimeSetup: 'pending' }).toString('utf8');
    const gSeed = serializeGlobalImageData({ virtualizationEngine: '1.2.3', workspaceVersion: 7 }).toString('utf8');
    const stats = { vmc: 0, vmcOk: 0, is: 0, isOk: 0, g: 0, gOk: 0, paths: 0 };
    const codes = new Map<string, number>();

    for (let i = 0; i < 4500; i++) {
      const kind = i < 2000 ? 'vmc' : i < 3500 ? 'is' : 'g';
      // the hand-written Virtual PC file (4 KB of text) every fourth case, a small written one otherwise
      const seed = kind === 'vmc' ? vmcSeeds[i % 4 === 0 ? 0 : 1] : kind === 'is' ? isSeed : gSeed;
      const what = `case ${i} (${kind}, seed ${SEED})`;
      const buf = rnd() < 0.8 ? encode(mutateText(seed, rnd), rnd) : mutateBytes(encode(seed, rnd), rnd);
      const note = (f: () => void): boolean => {
        try { f(); return true; } catch (e) {
          if (!(e instanceof MedvError)) throw new Error(`${what}: non-MedvError ${e instanceof Error ? e.stack : String(e)}`);
          codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
          assert.ok(e.data.file === 'fuzz.xml', `${what}: error without the file name: ${e.message}`);
          return false;
        }
      };
      if (kind === 'vmc') {
        stats.vmc++;
        note(() => {
          const doc = parseVmc(buf, { file: 'fuzz.xml' });
          stats.vmcOk++;
          const s = doc.settings;
          if (s.memoryMB !== undefined) assert.ok(s.memoryMB >= 4 && s.memoryMB <= 1048576, what);
          for (const d of s.drives) assert.ok(d.controller <= 1 && d.location <= 1, what);
          // write -> read gives the same settings
          const again = parseVmc(serializeVmc(doc), { file: 'fuzz.xml' });
          assert.deepEqual(again.settings, s, `${what}: settings changed across write/read`);
          for (const d of s.drives) {
            for (const ref of [d.path, d.undoPath]) {
              if (ref && only(() => resolvePathRef(ref, OPTS, { file: 'fuzz.xml' }), what)) stats.paths++;
            }
          }
          only(() => effectiveSettings(s, { devices: { cdDvd: false }, network: 'nat' }, { file: 'fuzz.xml' }), what);
          only(() => { parseVmc(serializeVmc(updateVmc(doc, { memoryMB: 256, undoEnabled: true, network: [{}] })), { file: 'fuzz.xml' }); }, what);
        });
      } else if (kind === 'is') {
        stats.is++;
        note(() => {
          const s = parseImageState(buf, { file: 'fuzz.xml' });
          stats.isOk++;
          assert.deepEqual(parseImageState(serializeImageState(s), { file: 'fuzz.xml' }), s, what);
        });
      } else {
        stats.g++;
        note(() => {
          const g = parseGlobalImageData(buf, { file: 'fuzz.xml' });
          stats.gOk++;
          assert.deepEqual(parseGlobalImageData(serializeGlobalImageData(g), { file: 'fuzz.xml' }), g, what);
        });
      }
    }
    // The mutations must reach past the first checks a fair share of the time, and fail in many ways.
    assert.ok(stats.vmcOk > stats.vmc * 0.08, `only ${stats.vmcOk} of ${stats.vmc} mutated .vmc files parsed`);
    assert.ok(stats.isOk > stats.is * 0.08 && stats.gOk > stats.g * 0.08, JSON.stringify(stats));
    assert.ok(stats.paths > 200, JSON.stringify(stats));
    for (const c of ['EFORMAT', 'EUNSUPPORTED', 'ETRUNCATED']) assert.ok((codes.get(c) ?? 0) > 0, `no ${c} seen: ${JSON.stringify([...codes])}`);
    console.log(`      ${JSON.stringify(stats)} errors ${JSON.stringify(Object.fromEntries(codes))}`);
  });
});
