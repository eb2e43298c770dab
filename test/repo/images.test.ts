import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CURRENT_WORKSPACE_VERSION, ENGINE_VERSION, ImageStore, openClientRoot, type ClientRoot } from '../../src/repo/index.js';
import { parseImageState } from '../../src/formats/imagestate/index.js';
import { MedvError } from '../../src/core/errors.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;

/** A version folder with the two files that make it count. */
function plantVersion(s: ImageStore, n: number, extra: string[] = []): void {
  const d = join(s.dir, `v${n}`);
  fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  for (const f of [`${s.image}.evhd`, `${s.image}.enc`, ...extra]) fs.writeFileSync(join(d, f), `v${n} ${f}`);
}

describe('repo: image store', () => {
  let dir: string;
  let c: ClientRoot;
  beforeEach(() => { dir = fs.mkdtempSync(join(tmpdir(), 'medv-repo-images-')); c = openClientRoot(join(dir, 'root')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('checks the image name and names the layout files', () => {
    assert.throws(() => new ImageStore(c, '../x'), code('EINVAL_ARG'));
    assert.throws(() => new ImageStore(c, '.hidden'), code('EINVAL_ARG'));
    const s = new ImageStore(c, 'Win7');
    assert.equal(s.dir, join(c.images, 'Win7'));
    assert.equal(s.diskPath(3), join(c.images, 'Win7', 'v3', 'Win7.evhd'));
    assert.equal(s.savedStatePath(3), join(s.dir, 'v3', 'Win7.vsv'));
    assert.equal(s.undoPath(3), join(s.dir, 'v3', 'Win7.undo.evhd'));
    assert.equal(s.vmcPath(3), join(s.dir, 'v3', 'Win7.vmc'));
    assert.equal(s.imageStatePath(3), join(s.dir, 'v3', 'ImageState.xml'));
    assert.throws(() => s.versionDir(0), code('EINVAL_ARG'));
    assert.throws(() => s.versionDir(2 ** 31), code('EINVAL_ARG'));
  });

  it('versions() ignores junk: v01, v0, vx, files, folders without the disk, a symlinked version', () => {
    const s = new ImageStore(c, 'img');
    assert.deepEqual(s.versions(), []);
    assert.equal(s.newest(), undefined);
    plantVersion(s, 2); plantVersion(s, 10); plantVersion(s, 9);
    fs.mkdirSync(join(s.dir, 'v01')); fs.writeFileSync(join(s.dir, 'v01', 'img.evhd'), ''); fs.writeFileSync(join(s.dir, 'v01', 'img.enc'), '');
    fs.mkdirSync(join(s.dir, 'v0'));
    fs.mkdirSync(join(s.dir, 'vx'));
    fs.writeFileSync(join(s.dir, 'v4'), 'a file');
    fs.mkdirSync(join(s.dir, 'v5')); fs.writeFileSync(join(s.dir, 'v5', 'img.enc'), ''); // no disk
    fs.mkdirSync(join(s.dir, 'v6')); fs.writeFileSync(join(s.dir, 'v6', 'img.evhd'), ''); // no key
    fs.mkdirSync(join(s.dir, 'v7')); fs.mkdirSync(join(s.dir, 'v7', 'img.evhd')); fs.writeFileSync(join(s.dir, 'v7', 'img.enc'), '');
    fs.symlinkSync(join(s.dir, 'v2'), join(s.dir, 'v8'));
    fs.mkdirSync(join(s.dir, 'v99999999999'));
    assert.deepEqual(s.versions(), [2, 9, 10]);
    assert.equal(s.newest(), 10);
  });

  it('with an identity, a version counts only when its Image.json names that image, image id and version; foreign() names the rest', () => {
    const id = { image: 'img', imageId: 'a'.repeat(32) };
    const s = new ImageStore(c, 'img', { folder: 'desk.0123456789abcdef', identity: id });
    assert.equal(s.dir, join(c.images, 'desk.0123456789abcdef'));
    assert.equal(s.diskPath(1), join(s.dir, 'v1', 'img.evhd'));
    for (const n of [1, 2, 3, 4]) plantVersion(s, n);
    s.writeIdentity(1);
    s.writeIdentity(2);
    fs.writeFileSync(join(s.dir, 'v2', 'Image.json'), JSON.stringify({ v: 1, image: 'img', imageId: 'b'.repeat(32), version: 2 })); // another image id
    fs.writeFileSync(join(s.dir, 'v3', 'Image.json'), JSON.stringify({ v: 1, image: 'img', imageId: 'a'.repeat(32), version: 4 })); // another version
    assert.deepEqual(s.versions(), [1]);
    assert.deepEqual(s.foreign().map((f) => [f.version, f.holds?.imageId.slice(0, 1), f.holds?.version]), [[2, 'b', 2], [3, 'a', 4], [4, undefined, undefined]]);
    assert.equal(s.readIdentity(1)?.imageId, 'a'.repeat(32));
    // without an identity, the old rule (disk and key) holds
    assert.deepEqual(new ImageStore(c, 'img', { folder: 'desk.0123456789abcdef' }).versions(), [1, 2, 3, 4]);
    assert.throws(() => new ImageStore(c, 'img', { folder: '../x' }), code('EINVAL_ARG'));
    assert.throws(() => new ImageStore(c, 'img', { identity: { image: 'other', imageId: 'a'.repeat(32) } }), code('EINVAL_ARG'));
    assert.throws(() => new ImageStore(c, 'img', { identity: { image: 'img', imageId: 'XYZ' } }), code('EINVAL_ARG'));
  });

  it('writes ImageState.xml and GlobalImageData.xml atomically and reads them back', () => {
    const s = new ImageStore(c, 'img');
    assert.equal(s.readGlobal(), undefined);
    s.writeImageState(1, { memoryMB: 512, devices: { usb: true } });
    assert.deepEqual(parseImageState(fs.readFileSync(s.imageStatePath(1))), { memoryMB: 512, devices: { usb: true } });
    s.writeGlobal({ virtualizationEngine: '1.0', workspaceVersion: 2 });
    assert.deepEqual(s.readGlobal(), { virtualizationEngine: '1.0', workspaceVersion: 2 });
    assert.deepEqual(fs.readdirSync(s.dir).sort(), ['GlobalImageData.xml', 'v1']);
    assert.deepEqual(fs.readdirSync(join(s.dir, 'v1')), ['ImageState.xml']);
  });

  it('checkEngine: a newer engine is EENGINE with the message a user can act on', () => {
    const s = new ImageStore(c, 'img');
    s.checkEngine(); // no GlobalImageData: fine
    s.writeGlobal({ virtualizationEngine: '1.0', workspaceVersion: 2 });
    s.checkEngine();
    s.writeGlobal({ virtualizationEngine: '2.0', workspaceVersion: 2 });
    assert.throws(() => s.checkEngine(), (e: unknown) => code('EENGINE')(e)
      && (e as Error).message.startsWith('image img needs medv engine 2.0 or later; this medv is 1.0: update medv before starting it'));
    s.checkEngine('2.0.1');
    assert.equal(ENGINE_VERSION, '1.0');
  });

  it('a tampered GlobalImageData.xml is a typed format error naming the file', () => {
    const s = new ImageStore(c, 'img');
    s.writeGlobal({ virtualizationEngine: '1.0', workspaceVersion: 2 });
    const file = join(s.dir, 'GlobalImageData.xml');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('<WorkspaceVersion>2', '<WorkspaceVersion>two'));
    assert.throws(() => s.checkEngine(), (e: unknown) => code('EFORMAT')(e) && (e as Error).message.includes(file));
    assert.throws(() => s.upgrade(), code('EFORMAT'));
    fs.writeFileSync(file, Buffer.alloc(1024 * 1024, 0x20));
    assert.throws(() => s.readGlobal(), code('ETOOLARGE'));
  });

  it('upgrade v1 -> v2 writes the missing ImageState.xml and the new WorkspaceVersion; idempotent', () => {
    const s = new ImageStore(c, 'img');
    assert.deepEqual(s.upgrade(), []); // no image folder
    plantVersion(s, 1); plantVersion(s, 2);
    s.writeImageState(2, { memoryMB: 256, devices: {} });
    s.writeGlobal({ virtualizationEngine: '1.0', workspaceVersion: 1 });
    const lines = s.upgrade();
    assert.deepEqual(lines, ['v1: wrote ImageState.xml (defaults)', `GlobalImageData.xml: WorkspaceVersion 1 -> ${CURRENT_WORKSPACE_VERSION}`]);
    assert.deepEqual(parseImageState(fs.readFileSync(s.imageStatePath(1))), { devices: {} });
    assert.deepEqual(parseImageState(fs.readFileSync(s.imageStatePath(2))), { memoryMB: 256, devices: {} }); // kept
    assert.deepEqual(s.readGlobal(), { virtualizationEngine: '1.0', workspaceVersion: 2 });
    assert.deepEqual(s.upgrade(), []);
    // no GlobalImageData at all counts as version 1
    const t = new ImageStore(c, 'other');
    plantVersion(t, 3);
    assert.equal(t.upgrade().length, 2);
    assert.deepEqual(t.readGlobal(), { virtualizationEngine: ENGINE_VERSION, workspaceVersion: 2 });
    // a newer layout than ours
    s.writeGlobal({ virtualizationEngine: '1.0', workspaceVersion: 3 });
    assert.throws(() => s.upgrade(), code('EENGINE'));
  });

  it('retain() deletes oldest first, keeps newest, in-use and saved-state versions, never an unknown file', () => {
    const s = new ImageStore(c, 'img');
    for (let n = 1; n <= 6; n++) plantVersion(s, n, ['img.vmc', 'ImageState.xml', 'img.undo.evhd', 'img.undo.enc', 'img.evhd.index']);
    fs.writeFileSync(join(s.dir, 'v1', 'notes.txt'), 'mine'); // not in the layout
    fs.writeFileSync(join(s.dir, 'v3', 'img.vsv'), 'saved'); fs.writeFileSync(join(s.dir, 'v3', 'img.vsv.enc'), 'k');
    fs.mkdirSync(join(s.dir, 'Test'));
    const r = s.retain(1, new Set([2]));
    assert.deepEqual(r.deleted, [1, 4]);
    assert.deepEqual(r.kept, [2, 3, 5, 6]);
    assert.deepEqual(r.skipped, [join(s.dir, 'v1', 'notes.txt')]);
    assert.deepEqual(fs.readdirSync(join(s.dir, 'v1')), ['notes.txt']); // the unknown file survives
    assert.equal(fs.readFileSync(join(s.dir, 'v1', 'notes.txt'), 'utf8'), 'mine');
    assert.equal(fs.existsSync(join(s.dir, 'v4')), false);
    assert.ok(fs.existsSync(join(s.dir, 'v3', 'img.vsv')));
    assert.ok(fs.existsSync(join(s.dir, 'Test')));
    assert.deepEqual(s.versions(), [2, 3, 5, 6]);
    // keep nothing old: still never the newest
    const r2 = s.retain(0, new Set());
    assert.deepEqual(r2.deleted, [2, 5]);
    assert.deepEqual(s.versions(), [3, 6]);
    assert.throws(() => s.retain(-1, new Set()), code('EINVAL_ARG'));
  });

  it('retain() removes a version\'s Test/ copies and test undo disk with it; anything else in Test/ stays, named', () => {
    const s = new ImageStore(c, 'img');
    for (let n = 1; n <= 3; n++) {
      plantVersion(s, n);
      fs.mkdirSync(join(s.dir, `v${n}`, 'Test'));
      for (const name of ['img.vmc', 'ImageState.xml', 'img.undo.evhd', 'img.undo.enc']) fs.writeFileSync(join(s.dir, `v${n}`, 'Test', name), 'x');
    }
    fs.writeFileSync(join(s.dir, 'v2', 'Test', 'notes.txt'), 'mine');
    const r = s.retain(0, new Set());
    assert.deepEqual(r.deleted, [1, 2]);
    assert.equal(fs.existsSync(join(s.dir, 'v1')), false, 'v1 and its Test/ are gone');
    assert.deepEqual(fs.readdirSync(join(s.dir, 'v2', 'Test')), ['notes.txt']);
    assert.deepEqual(r.skipped, [join(s.dir, 'v2', 'Test')]);
    assert.deepEqual(fs.readdirSync(join(s.dir, 'v3', 'Test')).sort(), ['ImageState.xml', 'img.undo.enc', 'img.undo.evhd', 'img.vmc']);
  });

  it('retain() never follows a symlink planted under a layout name', () => {
    const s = new ImageStore(c, 'img');
    plantVersion(s, 1); plantVersion(s, 2);
    const victim = join(dir, 'victim.txt');
    fs.writeFileSync(victim, 'keep me');
    fs.symlinkSync(victim, join(s.dir, 'v1', 'img.vmc'));
    s.retain(0, new Set());
    assert.equal(fs.readFileSync(victim, 'utf8'), 'keep me');
    assert.deepEqual(s.versions(), [2]);
  });
});
