import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openClientRoot, userDir } from '../../src/repo/index.js';
import { MedvError } from '../../src/core/errors.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;
const modeOf = (p: string) => fs.statSync(p).mode & 0o777;

describe('repo: client root and folders', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(join(tmpdir(), 'medv-repo-paths-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('creates every folder of the layout 0700', () => {
    const c = openClientRoot(join(dir, 'root'));
    for (const p of [c.root, c.images, c.packed, c.prestaged, c.data, c.profile, c.users, c.local, c.config, c.logs]) {
      assert.equal(modeOf(p), 0o700, p);
    }
    assert.equal(c.packed, join(dir, 'root', 'images', 'PackedImages'));
    assert.equal(c.logs, join(dir, 'root', 'data', 'Local', 'Logs'));
    // a second open of the same root is fine
    openClientRoot(join(dir, 'root'));
  });

  it('refuses a symlinked images folder', () => {
    const root = join(dir, 'root');
    fs.mkdirSync(root, { mode: 0o700 });
    fs.mkdirSync(join(dir, 'elsewhere'), { mode: 0o700 });
    fs.symlinkSync(join(dir, 'elsewhere'), join(root, 'images'));
    assert.throws(() => openClientRoot(root), (e: unknown) => code('EUNSAFE')(e) && /images.*symlink/.test((e as Error).message));
    assert.deepEqual(fs.readdirSync(join(dir, 'elsewhere')), []); // nothing created through the link
  });

  it('refuses a folder group or others can write, and one owned by another user', function () {
    const root = join(dir, 'root');
    openClientRoot(root);
    fs.chmodSync(join(root, 'data', 'Users'), 0o777);
    assert.throws(() => openClientRoot(root), (e: unknown) => code('EUNSAFE')(e) && /Users.*0777/.test((e as Error).message));
    fs.chmodSync(join(root, 'data', 'Users'), 0o700);
    fs.chmodSync(join(root, 'data'), 0o755); // readable is fine, writable is not
    openClientRoot(root);
    if (process.getuid?.() !== 0) return; // chown needs root
    fs.chownSync(join(root, 'images'), 4321, 4321);
    assert.throws(() => openClientRoot(root), (e: unknown) => code('EUNSAFE')(e) && /uid 4321/.test((e as Error).message));
  });

  it('userDir validates the name and creates data/Users/<user> 0700', () => {
    const c = openClientRoot(join(dir, 'root'));
    const u = userDir(c, 'alice@corp.example');
    assert.equal(u, join(c.users, 'alice@corp.example'));
    assert.equal(modeOf(u), 0o700);
    for (const bad of ['', '.hidden', '-x', '..', 'a/b', 'x'.repeat(65), 'sp ace']) {
      assert.throws(() => userDir(c, bad), code('EINVAL_ARG'), bad);
    }
  });

});
