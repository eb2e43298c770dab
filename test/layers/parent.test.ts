import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { renameSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { FileDevice } from '../../src/block/file.js';
import { MedvError } from '../../src/core/errors.js';
import { openDisk } from '../../src/layers/open.js';
import { MAX_CHAIN_DEPTH } from '../../src/layers/parent.js';
import { createDifferencingVhd, createVhd, openVhd } from '../../src/layers/vhd/index.js';
import { tempDir } from '../helpers/cli.js';

/** A VHD file and its parent chain, through the one resolver (src/layers/parent.ts). */
async function openVhdFile(path: string, opts: { readOnly?: boolean } = {}) {
  return (await openDisk(path, { readOnly: opts.readOnly, format: 'vhd' })).vhd!;
}

const isCode = (code: string) => (e: unknown) => e instanceof MedvError && e.code === code;

async function makeBase(path: string, size = 4 * 1024 * 1024): Promise<{ size: number; uniqueId: Buffer }> {
  const s = await FileDevice.open(path, { create: true });
  const info = await createVhd(s, { type: 'dynamic', size });
  const dev = await openVhd(s);
  await dev.write(0, Buffer.alloc(1024 * 1024, 0xb0));
  await dev.close();
  return { size: info.virtualSize, uniqueId: info.uniqueId };
}

async function makeChild(path: string, parent: { size: number; uniqueId: Buffer }, locs: { relativePath?: string; absolutePath?: string }): Promise<{ size: number; uniqueId: Buffer }> {
  const s = await FileDevice.open(path, { create: true });
  const info = await createDifferencingVhd(s, { size: parent.size, uniqueId: parent.uniqueId, ...locs });
  await s.close();
  return { size: info.virtualSize, uniqueId: info.uniqueId };
}

describe('layers/parent: parent chains', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(() => ({ path: dir, cleanup } = tempDir('vhd')));
  afterEach(async () => cleanup());

  it('resolves relative locators first, then absolute ones, and opens parents read-only', async () => {
    const base = await makeBase(join(dir, 'base.vhd'));
    await makeChild(join(dir, 'child.vhd'), base, { relativePath: '.\\base.vhd', absolutePath: '/nonexistent/base.vhd' });
    const dev = await openVhdFile(join(dir, 'child.vhd'));
    assert.ok((await dev.read(0, 4096)).equals(Buffer.alloc(4096, 0xb0)));
    assert.equal(dev.parent!.readOnly, true);
    assert.equal(dev.info.parent!.locators[0].platform, 'W2ru');
    assert.equal(dev.info.parent!.locators[1].platform, 'W2ku');
    assert.equal(dev.info.parent!.unicodeName, 'base.vhd');
    await dev.write(0, Buffer.alloc(512, 1));
    await dev.close();
    // Only the absolute locator works when the child moves away.
    const base2 = await makeBase(join(dir, 'b2.vhd'));
    await makeChild(join(dir, 'c2.vhd'), base2, { relativePath: 'gone.vhd', absolutePath: join(dir, 'b2.vhd') });
    const d2 = await openVhdFile(join(dir, 'c2.vhd'), { readOnly: true });
    assert.ok((await d2.read(0, 512)).equals(Buffer.alloc(512, 0xb0)));
    await d2.close();
  });

  it('EPARENT when the parent is missing or has another unique id', async () => {
    const base = await makeBase(join(dir, 'base.vhd'));
    await makeChild(join(dir, 'child.vhd'), base, { relativePath: 'base.vhd' });
    renameSync(join(dir, 'base.vhd'), join(dir, 'moved.vhd'));
    await assert.rejects(openVhdFile(join(dir, 'child.vhd')), isCode('EPARENT'));
    await makeBase(join(dir, 'base.vhd'));  // same name, new unique id
    await assert.rejects(openVhdFile(join(dir, 'child.vhd')), isCode('EPARENT'));
    await assert.rejects(openVhdFile(join(dir, 'nope.vhd')), isCode('ENOENT'));
  });

  it('EPARENT on a loop in the parent chain', async () => {
    // a -> b -> a: b's parent locator names a, a's names b, unique ids match each other.
    const idA = randomBytes(16);
    const idB = randomBytes(16);
    const size = 2 * 1024 * 1024;
    for (const [name, other, otherId] of [['a.vhd', 'b.vhd', idB], ['b.vhd', 'a.vhd', idA]] as const) {
      const s = await FileDevice.open(join(dir, name), { create: true });
      await createDifferencingVhd(s, { size, uniqueId: otherId, relativePath: other });
      await s.close();
    }
    // Give each file the unique id the other expects: rewrite the footers by re-creating with fixed ids.
    for (const [name, id] of [['a.vhd', idA], ['b.vhd', idB]] as const) {
      const s = await FileDevice.open(join(dir, name));
      const raw = await s.read(s.size - 512, 512);
      id.copy(raw, 68);
      raw.writeUInt32BE(0, 64);
      let sum = 0;
      for (const x of raw) sum = (sum + x) >>> 0;
      raw.writeUInt32BE(~sum >>> 0, 64);
      await s.write(s.size - 512, raw);
      await s.write(0, raw);
      await s.close();
    }
    await assert.rejects(openVhdFile(join(dir, 'a.vhd')), (e: unknown) => isCode('EPARENT')(e) && /loop/.test((e as Error).message));
    // A symlink to the child itself is a loop too.
    const base = await makeBase(join(dir, 'base.vhd'), size);
    void base;
    symlinkSync(join(dir, 'a.vhd'), join(dir, 'self.vhd'));
    await assert.rejects(openVhdFile(join(dir, 'self.vhd')), isCode('EPARENT'));
  });

  it('follows a MacX file URL, and bounds the chain at MAX_CHAIN_DEPTH', async () => {
    const base = await makeBase(join(dir, 'base.vhd'), 1024 * 1024);
    const s = await FileDevice.open(join(dir, 'mac.vhd'), { create: true });
    await createDifferencingVhd(s, { ...base, extraLocators: [{ platform: 'MacX', data: Buffer.from(`file://${join(dir, 'base.vhd')}`) }] });
    await s.close();
    const mac = await openVhdFile(join(dir, 'mac.vhd'), { readOnly: true });
    assert.ok((await mac.read(0, 512)).equals(Buffer.alloc(512, 0xb0)));
    await mac.close();
    let parent = base;
    for (let i = 0; i <= MAX_CHAIN_DEPTH; i++) parent = await makeChild(join(dir, `c${i}.vhd`), parent, { relativePath: i === 0 ? 'base.vhd' : `c${i - 1}.vhd` });
    const ok = await openVhdFile(join(dir, `c${MAX_CHAIN_DEPTH - 1}.vhd`), { readOnly: true });
    await ok.close();
    await assert.rejects(openVhdFile(join(dir, `c${MAX_CHAIN_DEPTH}.vhd`), { readOnly: true }), (e: unknown) => isCode('EPARENT')(e) && /deeper/.test((e as Error).message));
  });
});
