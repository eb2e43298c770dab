import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type VmcSettings, createVmc, encodeUtf16leBom, parseVmc, serializeVmc, updateVmc,
} from '../../../src/formats/vmc/index.js';
import { attr, childElements } from '../../../src/formats/vmc/xmltree.js';
import { fixture, medv, peerRead } from './helpers.js';

/** What the hand-written fixture says, written out by hand. */
const XP: VmcSettings = {
  version: '2.0',
  memoryMB: 512,
  videoMemoryMB: 16,
  drives: [
    {
      controller: 0, location: 0, kind: 'hard-disk',
      path: { absolute: 'C:\\Virtual Machines\\XP & Tools\\xp.vhd', relative: '.\\xp.vhd' },
      undoPath: { absolute: 'C:\\Virtual Machines\\XP & Tools\\xp_Hard_Disk_1.vud', relative: '.\\xp_Hard_Disk_1.vud' },
    },
    { controller: 0, location: 1, kind: 'hard-disk', path: { absolute: 'D:\\Data\\data.vhd', relative: '..\\..\\Data\\data.vhd' } },
    { controller: 1, location: 0, kind: 'cd-dvd', path: { absolute: 'C:\\Virtual Machines\\XP & Tools\\setup.iso', relative: '.\\setup.iso' } },
    { controller: 1, location: 1, kind: 'cd-dvd', hostDrive: 'E' },
  ],
  undo: { enabled: true, defaultAction: 2 },
  network: [{ id: 0, mac: '00:03:ff:1a:2b:3c', networkName: 'Shared Networking (NAT)', networkId: '5a1b3c4d5e6f708192a3b4c5' }],
  savedState: { absolute: 'C:\\Virtual Machines\\XP & Tools\\xp.vsv', relative: '.\\xp.vsv' },
};

/** A minimal .vmc body around `inner` (placed under <preferences>). */
function vmc8(inner: string, decl = '<?xml version="1.0" encoding="UTF-8"?>\n'): Buffer {
  return Buffer.from(`${decl}<preferences>\n<version type="string">2.0</version>\n${inner}\n</preferences>\n`, 'utf8');
}
const hw = (x: string): string => `<hardware>${x}</hardware>`;
const ide = (x: string): string => hw(`<pci_bus><ide_adapter>${x}</ide_adapter></pci_bus>`);
const eth = (x: string): string => hw(`<pci_bus><ethernet_adapter>${x}</ethernet_adapter></pci_bus>`);

describe('formats: vmc (Virtual PC settings)', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'medv-vmc-')); });
  after(() => { rmSync(dir, { recursive: true, force: true }); });

  it('reads a UTF-16LE file with BOM and CRLF (made by iconv) into the typed record', () => {
    const buf = fixture('xp.vmc');
    assert.deepEqual([buf[0], buf[1]], [0xff, 0xfe]);
    const doc = parseVmc(buf, { file: 'xp.vmc' });
    assert.equal(doc.encoding, 'utf-16le');
    assert.deepEqual(doc.settings, XP);
  });

  it('reads the same document as UTF-8 with a BOM, without one, and without an XML declaration', () => {
    const text = fixture('xp.vmc.utf8.xml').toString('utf8');
    const asUtf8 = text.replace('encoding="UTF-16"', 'encoding="UTF-8"');
    const variants: Array<[string, Buffer]> = [
      ['utf-8 + BOM', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(asUtf8)])],
      ['utf-8', Buffer.from(asUtf8)],
      ['utf-8, no declaration', Buffer.from(text.replace(/^<\?xml[^>]*\?>\n/, ''))],
      ['utf-8, declaration without encoding', Buffer.from(text.replace('encoding="UTF-16"', ''))],
      ['utf-16le, lower-case declaration', encodeUtf16leBom(text.replace('UTF-16', 'utf-16'))],
    ];
    for (const [name, buf] of variants) {
      const doc = parseVmc(buf, { file: name });
      assert.equal(doc.encoding, name.startsWith('utf-16') ? 'utf-16le' : 'utf-8', name);
      assert.deepEqual(doc.settings, XP, name);
    }
  });

  it('refuses other encodings and declarations that contradict the bytes', () => {
    const text = fixture('xp.vmc.utf8.xml').toString('utf8');
    const be = Buffer.from(encodeUtf16leBom(text)); be.swap16();
    assert.throws(() => parseVmc(be, { file: 'be.vmc' }), medv('EUNSUPPORTED', { file: 'be.vmc', msg: /UTF-16BE/, offset: 0 }));
    assert.throws(() => parseVmc(Buffer.from(text, 'utf16le'), { file: 'nobom.vmc' }), medv('EUNSUPPORTED', { msg: /without a byte-order mark/ }));
    // UTF-8 bytes that declare UTF-16, and a legacy code page
    assert.throws(() => parseVmc(Buffer.from(text), { file: 'x.vmc' }), medv('EUNSUPPORTED', { file: 'x.vmc', msg: /declaration names encoding "UTF-16" but the file is UTF-8/ }));
    assert.throws(() => parseVmc(Buffer.from(text.replace('UTF-16', 'windows-1252'), 'latin1'), { file: 'x.vmc' }), medv('EUNSUPPORTED', { msg: /windows-1252/ }));
    assert.throws(() => parseVmc(encodeUtf16leBom(text.replace('UTF-16', 'UTF-8')), { file: 'x.vmc' }), medv('EUNSUPPORTED', { msg: /file is UTF-16LE/ }));
  });

  it('writes back an unmodified file byte for byte', () => {
    const buf = fixture('xp.vmc');
    assert.ok(serializeVmc(parseVmc(buf)).equals(buf));
  });

  it('modifies the tree: changed settings are read by a peer (expat), unknown elements and attributes survive', () => {
    const doc = parseVmc(fixture('xp.vmc'), { file: 'xp.vmc' });
    const changed = updateVmc(doc, {
      memoryMB: 1024,
      videoMemoryMB: 32,
      undoEnabled: false,
      drives: [
        { controller: 0, location: 1, kind: 'none' },
        { controller: 1, location: 0, kind: 'cd-dvd', path: { relative: '.\\tools.iso' } },
        { controller: 0, location: 0, kind: 'hard-disk', path: { absolute: 'C:\\VMs\\new.vhd', relative: '.\\new.vhd' }, undoPath: null },
      ],
      network: [{ mac: '00-03-FF-00-00-01', networkName: 'Shared Networking (NAT)' }, {}],
      savedState: null,
    });
    const out = serializeVmc(changed);
    const file = join(dir, 'changed.vmc');
    writeFileSync(file, out);

    // Virtual PC's framing: BOM, UTF-16LE, CRLF only.
    assert.deepEqual([out[0], out[1]], [0xff, 0xfe]);
    const text = out.subarray(2).toString('utf16le');
    assert.equal(text.replace(/\r\n/g, '').includes('\n'), false);
    assert.equal(text.replace(/\r\n/g, '').includes('\r'), false);
    assert.ok(text.startsWith('<?xml version="1.0" encoding="UTF-16"?>\r\n'));

    const peer = peerRead(file);
    assert.equal(peer.root, 'preferences');
    const L = peer.leaves;
    const ide = 'preferences/hardware/pci_bus/ide_adapter';
    assert.equal(L['preferences/hardware/memory/ram_size'], '1024');
    assert.equal(L['preferences/hardware/pci_bus/video_adapter/vram_size'], '32');
    assert.equal(L['preferences/settings/undo_drives/enabled'], 'false');
    assert.equal(L[`${ide}/ide_controller[@id=0]/location[@id=1]/drive_type`], '0');
    assert.equal(L[`${ide}/ide_controller[@id=0]/location[@id=1]/pathname/absolute`], '');
    assert.equal(L[`${ide}/ide_controller[@id=1]/location[@id=0]/pathname/relative`], '.\\tools.iso');
    assert.equal(L[`${ide}/ide_controller[@id=0]/location[@id=0]/pathname/absolute`], 'C:\\VMs\\new.vhd');
    assert.equal(Object.keys(L).some((k) => k.includes('undo_pathname')), false);
    assert.equal(Object.keys(L).some((k) => k.includes('saved_state/path')), false);
    const nic = 'preferences/hardware/pci_bus/ethernet_adapter';
    assert.equal(L[`${nic}/controller_count`], '2');
    assert.equal(L[`${nic}/ethernet_controller[@id=0]/ethernet_card_address`], '0003FF000001');
    assert.equal(L[`${nic}/ethernet_controller[@id=0]/virtual_network/id`], '5A1B3C4D5E6F708192A3B4C5');
    assert.equal(L[`${nic}/ethernet_controller[@id=1]/ethernet_card_address`], '');
    // untouched and unknown content
    assert.equal(L['preferences/integration/microsoft/future_feature'], 'opaque value');
    assert.equal(L['preferences/hardware/bios/cmos'], '00112233445566778899AABBCCDDEEFF');
    assert.equal(L['preferences/settings/notes'], 'First line\nsecond line <with markup>');
    assert.equal(L['preferences/settings/undo_drives/default_action'], '2');

    // our reader agrees, and the unknown attribute is still there
    const back = parseVmc(out, { file: 'changed.vmc' });
    assert.deepEqual(back.settings, changed.settings);
    assert.equal(back.settings.memoryMB, 1024);
    assert.deepEqual(back.settings.network, [{ id: 0, mac: '00:03:ff:00:00:01', networkName: 'Shared Networking (NAT)', networkId: '5a1b3c4d5e6f708192a3b4c5' }, { id: 1 }]);
    const ff = childElements(childElements(childElements(back.tree.root, 'integration')[0], 'microsoft')[0], 'future_feature')[0];
    assert.equal(attr(ff, 'medv_test'), 'kept');
    assert.equal(back.tree.prolog.length, 1);
    // the original document is not modified
    assert.deepEqual(doc.settings, XP);
  });

  it('creates a new .vmc from settings alone that a peer reads', () => {
    const doc = createVmc({
      memoryMB: 256,
      drives: [
        { controller: 0, location: 0, kind: 'hard-disk', path: { relative: '.\\guest.vhd' } },
        { controller: 1, location: 0, kind: 'cd-dvd', hostDrive: 'd' },
      ],
      network: [{ mac: '0003ff123456' }],
      undoEnabled: true,
    });
    const file = join(dir, 'new.vmc');
    writeFileSync(file, serializeVmc(doc));
    const peer = peerRead(file);
    assert.equal(peer.root, 'preferences');
    assert.deepEqual(peer.leaves, {
      'preferences/version': '2.0',
      'preferences/hardware/memory/ram_size': '256',
      'preferences/hardware/pci_bus/ide_adapter/ide_controller[@id=0]/location[@id=0]/drive_type': '1',
      'preferences/hardware/pci_bus/ide_adapter/ide_controller[@id=0]/location[@id=0]/pathname/absolute': '',
      'preferences/hardware/pci_bus/ide_adapter/ide_controller[@id=0]/location[@id=0]/pathname/relative': '.\\guest.vhd',
      'preferences/hardware/pci_bus/ide_adapter/ide_controller[@id=1]/location[@id=0]/drive_type': '2',
      'preferences/hardware/pci_bus/ide_adapter/ide_controller[@id=1]/location[@id=0]/pathname/absolute': 'D',
      'preferences/hardware/pci_bus/ide_adapter/ide_controller[@id=1]/location[@id=0]/pathname/relative': '',
      'preferences/hardware/pci_bus/ethernet_adapter/controller_count': '1',
      'preferences/hardware/pci_bus/ethernet_adapter/ethernet_controller[@id=0]/ethernet_card_address': '0003FF123456',
      'preferences/settings/undo_drives/enabled': 'true',
    });
    assert.deepEqual(parseVmc(serializeVmc(doc)).settings, {
      version: '2.0', memoryMB: 256, undo: { enabled: true }, network: [{ id: 0, mac: '00:03:ff:12:34:56' }],
      drives: [
        { controller: 0, location: 0, kind: 'hard-disk', path: { relative: '.\\guest.vhd' } },
        { controller: 1, location: 0, kind: 'cd-dvd', hostDrive: 'D' },
      ],
    });
  });

  it('refuses bad arguments to the writer', () => {
    const doc = createVmc();
    assert.throws(() => updateVmc(doc, { memoryMB: 2 }), medv('EINVAL_ARG'));
    assert.throws(() => updateVmc(doc, { memoryMB: 1.5 }), medv('EINVAL_ARG'));
    assert.throws(() => updateVmc(doc, { drives: [{ controller: 2, location: 0, kind: 'none' }] }), medv('EINVAL_ARG'));
    assert.throws(() => updateVmc(doc, { drives: [{ controller: 0, location: 0, kind: 'hard-disk' }] }), medv('EINVAL_ARG'));
    assert.throws(() => updateVmc(doc, { network: [{ mac: '01:00:5e:00:00:01' }] }), medv('EINVAL_ARG', { msg: /multicast/ }));
    assert.throws(() => serializeVmc(updateVmc(doc, { drives: [{ controller: 0, location: 0, kind: 'hard-disk', path: { relative: 'a\u0001.vhd' } }] })), medv('EINVAL_ARG'));
  });

  it('names the element and its byte offset when a value is wrong (UTF-16 and multi-byte UTF-8)', () => {
    const text = fixture('xp.vmc.utf8.xml').toString('utf8').replace('<ram_size type="integer">512<', '<ram_size type="integer">lots<');
    const u16 = encodeUtf16leBom(text);
    let err: unknown;
    try { parseVmc(u16, { file: 'xp.vmc' }); } catch (e) { err = e; }
    assert.ok(medv('EFORMAT', { file: 'xp.vmc', element: 'hardware/memory/ram_size', msg: /hardware\/memory\/ram_size: "lots" is not an integer/ })(err));
    const off = Number((err as { data: { offset: number } }).data.offset);
    assert.equal(u16.subarray(off, off + 18).toString('utf16le'), '<ram_size');

    const u8 = Buffer.from(text.replace('encoding="UTF-16"', 'encoding="UTF-8"').replace('First line', 'Érste Zeile ✓ 𝄞'));
    const moved = Buffer.from(u8.toString('utf8').replace('<version type="string">2.0</version>', '<version type="string">2.0 ✓✓✓ 𝄞</version>'));
    try { parseVmc(moved, { file: 'u8.vmc' }); } catch (e) { err = e; }
    const off8 = Number((err as { data: { offset: number } }).data.offset);
    assert.equal(moved.subarray(off8, off8 + 9).toString('utf8'), '<ram_size');
  });

  it('refuses wrong values, types and structure with typed errors', () => {
    const f = { file: 'v.vmc' };
    const cases: Array<[string, string, RegExp]> = [
      ['ram', hw('<memory><ram_size type="integer">-5</ram_size></memory>'), /ram_size: -5 is outside 4\.\.1048576/],
      ['ram big', hw('<memory><ram_size type="integer">99999999999</ram_size></memory>'), /outside/],
      ['ram type', hw('<memory><ram_size type="string">512</ram_size></memory>'), /ram_size: type is "string", expected "integer"/],
      ['ram children', hw('<memory><ram_size type="integer"><x/></ram_size></memory>'), /found child elements/],
      ['vram', hw('<pci_bus><video_adapter><vram_size type="integer">0</vram_size></video_adapter></pci_bus>'), /vram_size: 0 is outside/],
      ['dup ram', hw('<memory><ram_size type="integer">512</ram_size><ram_size type="integer">256</ram_size></memory>'), /duplicate <ram_size> elements that disagree/],
      ['dup memory', `${hw('<memory><ram_size type="integer">512</ram_size></memory><memory><ram_size type="integer">64</ram_size></memory>')}`, /hardware\/memory: duplicate <memory>/],
      ['dup hardware', `${hw('<memory/>')}${hw('<memory><ram_size type="integer">64</ram_size></memory>')}`, /hardware: duplicate <hardware>/],
      ['drive type', ide('<ide_controller id="0"><location id="0"><drive_type type="integer">7</drive_type></location></ide_controller>'), /drive_type: unknown drive type 7/],
      ['location id', ide('<ide_controller id="0"><location id="2"><drive_type type="integer">0</drive_type></location></ide_controller>'), /location: id "2" is not in 0\.\.1/],
      ['controller no id', ide('<ide_controller><location id="0"/></ide_controller>'), /ide_controller: id is missing/],
      ['dup location', ide('<ide_controller id="0"><location id="0"><drive_type type="integer">0</drive_type></location><location id="0"><drive_type type="integer">2</drive_type></location></ide_controller>'), /location\[@id=0\]: duplicate <location id="0">/],
      ['disk without path', ide('<ide_controller id="0"><location id="0"><drive_type type="integer">1</drive_type></location></ide_controller>'), /a hard disk without a path/],
      ['path without type', ide('<ide_controller id="0"><location id="0"><pathname><relative type="string">.\\a.vhd</relative></pathname></location></ide_controller>'), /drive_type: missing/],
      ['mac short', eth('<ethernet_controller id="0"><ethernet_card_address type="bytes">0003FF1A2B</ethernet_card_address></ethernet_controller>'), /6 bytes, not 5/],
      ['mac hex', eth('<ethernet_controller id="0"><ethernet_card_address type="bytes">0003FF1A2BZZ</ethernet_card_address></ethernet_controller>'), /not hex bytes/],
      ['mac multicast', eth('<ethernet_controller id="0"><ethernet_card_address type="bytes">0103FF1A2B3C</ethernet_card_address></ethernet_controller>'), /01:03:ff:1a:2b:3c is a multicast address/],
      ['nic count', eth('<controller_count type="integer">9</controller_count>'), /controller_count: 9 is outside 0\.\.8/],
      ['undo bool', '<settings><undo_drives><enabled type="boolean">yes</enabled></undo_drives></settings>', /enabled: "yes" is not a boolean/],
    ];
    for (const [name, inner, msg] of cases) {
      assert.throws(() => parseVmc(vmc8(inner), f), medv('EFORMAT', { file: 'v.vmc', msg }), name);
    }
    assert.throws(() => parseVmc(Buffer.from('<vm_description><ram_size type="string">512 MB</ram_size></vm_description>'), f), medv('EFORMAT', { msg: /not <preferences>/ }));
  });

  it('accepts identical duplicates, empty and zero MACs, controller_count, and the nested undo form', () => {
    const s = parseVmc(vmc8([
      hw('<memory><ram_size type="integer">512</ram_size><ram_size type="integer">512</ram_size></memory>'
        + '<pci_bus><ethernet_adapter><controller_count type="integer">2</controller_count>'
        + '<ethernet_controller id="0"><ethernet_card_address type="bytes"></ethernet_card_address></ethernet_controller>'
        + '<ethernet_controller id="1"><ethernet_card_address type="bytes">000000000000</ethernet_card_address></ethernet_controller>'
        + '<ethernet_controller id="2"><ethernet_card_address type="bytes">0003FF000002</ethernet_card_address></ethernet_controller>'
        + '</ethernet_adapter></pci_bus>'),
      '<settings><undo_drives><enabled><enable type="boolean">true</enable></enabled></undo_drives></settings>',
    ].join('\n'), '')).settings;
    assert.equal(s.memoryMB, 512);
    assert.deepEqual(s.network, [{ id: 0 }, { id: 1 }]);
    assert.equal(s.undo.enabled, true);
    // a nested undo setting is written back in its nested form
    // changing a value that was given twice (identically) changes it once, with no disagreeing copy left
    const twice = updateVmc(parseVmc(vmc8(hw('<memory><ram_size type="integer">512</ram_size><ram_size type="integer">512</ram_size></memory>'))), { memoryMB: 768 });
    assert.equal(twice.settings.memoryMB, 768);
    assert.equal(parseVmc(serializeVmc(twice)).settings.memoryMB, 768);
    const d = updateVmc(parseVmc(vmc8('<settings><undo_drives><enabled><enable type="boolean">true</enable></enabled></undo_drives></settings>')), { undoEnabled: false });
    assert.equal(d.settings.undo.enabled, false);
    assert.match(serializeVmc(d).toString('utf16le'), /<enabled>\r\n\s+<enable type="boolean">false<\/enable>/);
  });

  it('reads the minimal files scripts write (UTF-8, relative path only, 4-space indent)', () => {
    const s = parseVmc(vmc8(`<hardware><memory><ram_size type="integer">4096</ram_size></memory><pci_bus><ide_adapter><ide_controller id="0"><location id="0">
      <drive_type type="integer">1</drive_type><pathname><relative type="string">arc.vhd</relative></pathname></location></ide_controller></ide_adapter></pci_bus></hardware>`)).settings;
    assert.deepEqual(s, { version: '2.0', memoryMB: 4096, undo: { enabled: false }, network: [], drives: [{ controller: 0, location: 0, kind: 'hard-disk', path: { relative: 'arc.vhd' } }] });
  });
});
