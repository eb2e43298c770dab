import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  type ImageState, compareEngineVersions, effectiveSettings, engineSatisfies, parseGlobalImageData, parseImageState,
  serializeGlobalImageData, serializeImageState,
} from '../../../src/formats/imagestate/index.js';
import { encodeUtf16leBom, parseVmc } from '../../../src/formats/vmc/index.js';
import { FIXTURES, fixture, medv, peerRead } from '../vmc/helpers.js';

const u8 = (s: string): Buffer => Buffer.from(s, 'utf8');
const F = { file: 'ImageState.xml' };

/** The ```xml examples of docs/imagestate.md, in order. */
const DOC_EXAMPLES = [...readFileSync(resolve(FIXTURES, '../../../../docs/imagestate.md'), 'utf8').matchAll(/```xml\n([\s\S]*?)```/g)].map((m) => m[1]);

/** The ImageState example of docs/imagestate.md, byte for byte. */
const IMAGESTATE_EXAMPLE = `<?xml version="1.0" encoding="UTF-8"?>
<ImageState version="1">
  <Memory>1024</Memory>
  <Devices>
    <Usb>false</Usb>
    <CdDvd>true</CdDvd>
    <Clipboard>true</Clipboard>
    <SharedFolders>false</SharedFolders>
  </Devices>
  <Network>nat</Network>
  <FirstTimeSetup>pending</FirstTimeSetup>
</ImageState>
`;
const GLOBAL_EXAMPLE = `<?xml version="1.0" encoding="UTF-8"?>
<GlobalImageData version="1">
  <VirtualizationEngine>1.0</VirtualizationEngine>
  <WorkspaceVersion>3</WorkspaceVersion>
  <VmName>desk-3f2a9c0d5e6b7a81</VmName>
</GlobalImageData>
`;

const imagestate = (inner: string): Buffer => u8(`<ImageState version="1">${inner}</ImageState>`);

describe('formats: ImageState.xml and GlobalImageData.xml', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'medv-imagestate-')); });
  after(() => { rmSync(dir, { recursive: true, force: true }); });

  it('the examples of docs/imagestate.md are the ones tested here', () => {
    assert.deepEqual(DOC_EXAMPLES, [IMAGESTATE_EXAMPLE, GLOBAL_EXAMPLE]);
  });

  it('parses the documented ImageState example and writes it back byte for byte', () => {
    const s = parseImageState(u8(IMAGESTATE_EXAMPLE), F);
    assert.deepEqual(s, { memoryMB: 1024, devices: { usb: false, cdDvd: true, clipboard: true, sharedFolders: false }, network: 'nat', firstTimeSetup: 'pending' });
    assert.equal(serializeImageState(s).toString('utf8'), IMAGESTATE_EXAMPLE);
    // also read from UTF-16LE with a BOM, as a Windows tool might save it
    assert.deepEqual(parseImageState(encodeUtf16leBom(IMAGESTATE_EXAMPLE.replace('UTF-8', 'UTF-16')), F), s);
  });

  it('an empty ImageState overrides nothing; partial ones write only what they hold (read by a peer)', () => {
    assert.deepEqual(parseImageState(u8('<ImageState version="1"/>'), F), { devices: {} });
    const file = join(dir, 'ImageState.xml');
    writeFileSync(file, serializeImageState({ devices: { usb: true }, network: 'none' }));
    assert.deepEqual(peerRead(file), { root: 'ImageState', encoding: 'UTF-8', leaves: { 'ImageState/Devices/Usb': 'true', 'ImageState/Network': 'none' } });
  });

  it('refuses values outside their range, naming the element and its byte offset', () => {
    const doc = imagestate('\n  <Memory>2</Memory>');
    let err: unknown;
    try { parseImageState(doc, F); } catch (e) { err = e; }
    assert.ok(medv('EFORMAT', { file: 'ImageState.xml', element: 'ImageState/Memory', msg: /ImageState\/Memory: 2 is outside 4\.\.1048576/ })(err));
    const off = Number((err as { data: { offset: number } }).data.offset);
    assert.equal(doc.subarray(off, off + 8).toString(), '<Memory>');
    const cases: Array<[string, RegExp]> = [
      ['<Memory>2000000</Memory>', /Memory: 2000000 is outside/],
      ['<Memory>1.5</Memory>', /Memory: "1\.5" is not a whole number/],
      ['<Memory>-1</Memory>', /not a whole number/],
      ['<Memory unit="GB">1</Memory>', /Memory: unknown attribute unit/],
      ['<Memory><x/></Memory>', /Memory: expected a value/],
      ['<Network>bridged</Network>', /Network: "bridged" is not one of nat, none/],
      ['<FirstTimeSetup>maybe</FirstTimeSetup>', /FirstTimeSetup: "maybe" is not one of pending, done/],
      ['<Devices><Usb>yes</Usb></Devices>', /Devices\/Usb: "yes" is not true or false/],
      ['<Devices><Floppy>true</Floppy></Devices>', /Devices\/Floppy: unknown element/],
      ['<Memroy>512</Memroy>', /ImageState\/Memroy: unknown element \(expected one of Memory, Devices, Network, FirstTimeSetup\)/],
      ['<Memory>512</Memory><Memory>512</Memory>', /Memory: appears more than once/],
      ['stray text', /text where only elements belong/],
    ];
    for (const [inner, msg] of cases) assert.throws(() => parseImageState(imagestate(inner), F), medv('EFORMAT', { file: 'ImageState.xml', msg }), inner);
    assert.throws(() => parseImageState(u8('<ImageState version="2"/>'), F), medv('EVERSION', { msg: /unsupported version "2"/ }));
    assert.throws(() => parseImageState(u8('<ImageState/>'), F), medv('EFORMAT', { msg: /missing version/ }));
    assert.throws(() => parseImageState(u8('<ImageState version="1" extra="x"/>'), F), medv('EFORMAT', { msg: /unknown attribute extra/ }));
    assert.throws(() => parseImageState(u8('<preferences/>'), F), medv('EFORMAT', { msg: /root element is not <ImageState>/ }));
    assert.throws(() => parseImageState(u8('<!DOCTYPE x><ImageState version="1"/>'), F), medv('EUNSUPPORTED'));
  });

  it('refuses to write values outside their range', () => {
    assert.throws(() => serializeImageState({ memoryMB: 3, devices: {} }), medv('EINVAL_ARG'));
    assert.throws(() => serializeImageState({ devices: {}, network: 'bridged' as never }), medv('EINVAL_ARG'));
    assert.throws(() => serializeImageState({ devices: { usb: 'yes' as never } }), medv('EINVAL_ARG'));
  });

  it('parses and writes GlobalImageData; compares engine versions', () => {
    const g = parseGlobalImageData(u8(GLOBAL_EXAMPLE), { file: 'GlobalImageData.xml' });
    assert.deepEqual(g, { virtualizationEngine: '1.0', workspaceVersion: 3, vmName: 'desk-3f2a9c0d5e6b7a81' });
    assert.equal(serializeGlobalImageData(g).toString('utf8'), GLOBAL_EXAMPLE);
    const file = join(dir, 'GlobalImageData.xml');
    writeFileSync(file, serializeGlobalImageData({ virtualizationEngine: '2.1.7', workspaceVersion: 12 }));
    assert.deepEqual(peerRead(file).leaves, { 'GlobalImageData/VirtualizationEngine': '2.1.7', 'GlobalImageData/WorkspaceVersion': '12' });
    assert.equal(engineSatisfies(g, '1'), true);
    assert.equal(engineSatisfies(g, '0.9.9'), false);
    assert.equal(engineSatisfies(g, '1.0.1'), true);
    assert.ok(compareEngineVersions('1.10', '1.9') > 0);
    assert.throws(() => compareEngineVersions('1.x', '1'), medv('EINVAL_ARG'));
  });

  it('refuses bad GlobalImageData naming the element', () => {
    const G = { file: 'GlobalImageData.xml' };
    const doc = (inner: string): Buffer => u8(`<GlobalImageData version="1">${inner}</GlobalImageData>`);
    const ok = '<VirtualizationEngine>1.0</VirtualizationEngine><WorkspaceVersion>1</WorkspaceVersion>';
    assert.doesNotThrow(() => parseGlobalImageData(doc(ok), G));
    const cases: Array<[string, RegExp]> = [
      ['<WorkspaceVersion>1</WorkspaceVersion>', /GlobalImageData\/VirtualizationEngine: missing/],
      ['<VirtualizationEngine>1.0</VirtualizationEngine>', /GlobalImageData\/WorkspaceVersion: missing/],
      [ok.replace('>1<', '>0<'), /WorkspaceVersion: 0 is outside 1\.\.2147483647/],
      [ok.replace('>1<', '>4294967296<'), /WorkspaceVersion: 4294967296 is outside/],
      [ok.replace('1.0', 'one'), /VirtualizationEngine: "one" is not a version/],
      [`${ok}<VmName>../x</VmName>`, /GlobalImageData\/VmName: "\.\.\/x" is not a VM name/],
      [ok.replace('1.0', '1.2.3.4.5'), /is not a version/],
      [ok.replace('1.0', '1.70000'), /is not a version/],
      [`${ok}<Extra/>`, /GlobalImageData\/Extra: unknown element/],
    ];
    for (const [inner, msg] of cases) assert.throws(() => parseGlobalImageData(doc(inner), G), medv('EFORMAT', { file: 'GlobalImageData.xml', msg }), inner);
    assert.throws(() => serializeGlobalImageData({ virtualizationEngine: 'x', workspaceVersion: 1 }), medv('EINVAL_ARG'));
    assert.throws(() => serializeGlobalImageData({ virtualizationEngine: '1', workspaceVersion: 0 }), medv('EINVAL_ARG'));
  });

  describe('effectiveSettings: ImageState overrides the VMC', () => {
    const vmc = parseVmc(fixture('xp.vmc'), { file: 'xp.vmc' }).settings;

    it('without ImageState: the VMC, with safe device defaults', () => {
      const e = effectiveSettings(vmc);
      assert.equal(e.memoryMB, 512);
      assert.equal(e.videoMemoryMB, 16);
      assert.equal(e.undoDrives, true);
      assert.deepEqual(e.network, { mode: 'nat', adapters: vmc.network });
      assert.deepEqual(e.devices, { usb: false, cdDvd: true, clipboard: false, sharedFolders: false });
      assert.deepEqual(e.drives.map((d) => `${d.controller}:${d.location}:${d.kind}`), ['0:0:hard-disk', '0:1:hard-disk', '1:0:cd-dvd', '1:1:cd-dvd']);
      assert.equal(e.firstTimeSetup, 'done');
      assert.equal(e.sources.memoryMB, 'vmc');
    });

    it('ImageState wins: memory, network none, CD/DVD denied, devices allowed, first-time setup', () => {
      const st: ImageState = { memoryMB: 2048, network: 'none', devices: { cdDvd: false, usb: true, clipboard: true }, firstTimeSetup: 'pending' };
      const e = effectiveSettings(vmc, st);
      assert.equal(e.memoryMB, 2048);
      assert.deepEqual(e.network, { mode: 'none', adapters: [] });
      assert.deepEqual(e.drives.map((d) => d.kind), ['hard-disk', 'hard-disk']);
      assert.deepEqual(e.devices, { usb: true, cdDvd: false, clipboard: true, sharedFolders: false });
      assert.equal(e.firstTimeSetup, 'pending');
      assert.deepEqual(e.sources, { memoryMB: 'imagestate', network: 'imagestate', usb: 'imagestate', cdDvd: 'imagestate', clipboard: 'imagestate', sharedFolders: 'default', firstTimeSetup: 'imagestate' });
    });

    it('NAT asked for a VMC without adapters gives one adapter with no fixed MAC; no memory anywhere is an error', () => {
      const bare = parseVmc(u8('<preferences><hardware><memory><ram_size type="integer">64</ram_size></memory></hardware></preferences>')).settings;
      assert.deepEqual(effectiveSettings(bare).network, { mode: 'none', adapters: [] });
      assert.deepEqual(effectiveSettings(bare, { devices: {}, network: 'nat' }).network, { mode: 'nat', adapters: [{ id: 0 }] });
      const noMem = parseVmc(u8('<preferences/>')).settings;
      assert.throws(() => effectiveSettings(noMem, undefined, { file: 'x.vmc' }), medv('EFORMAT', { file: 'x.vmc', msg: /ram_size: the \.vmc gives no memory size/ }));
      assert.equal(effectiveSettings(noMem, { devices: {}, memoryMB: 128 }).memoryMB, 128);
    });
  });
});
