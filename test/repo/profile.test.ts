import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openClientRoot, userProfile } from '../../src/repo/index.js';

describe('repo: user profile', () => {
  let dir: string;
  let saved: string | undefined;
  beforeEach(() => { dir = fs.mkdtempSync(join(tmpdir(), 'medv-repo-profile-')); saved = process.env.XDG_DATA_HOME; process.env.XDG_DATA_HOME = join(dir, 'home-data'); });
  afterEach(() => {
    if (saved === undefined) delete process.env.XDG_DATA_HOME; else process.env.XDG_DATA_HOME = saved;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('copies regular files only, keeps the user\'s own changes, skips symlinks and folders', () => {
    const c = openClientRoot(join(dir, 'root'));
    fs.writeFileSync(join(c.profile, 'settings.ini'), 'a=1\n');
    fs.writeFileSync(join(c.profile, 'bookmarks.html'), '<html/>');
    fs.writeFileSync(join(dir, 'secret'), 'not for the profile');
    fs.symlinkSync(join(dir, 'secret'), join(c.profile, 'link'));
    fs.mkdirSync(join(c.profile, 'sub'));
    fs.writeFileSync(join(c.profile, 'sub', 'inner'), 'x');
    const p = userProfile(c);
    assert.equal(p, join(dir, 'home-data', 'medv', 'profile'));
    assert.equal(fs.statSync(p).mode & 0o777, 0o700);
    assert.deepEqual(fs.readdirSync(p).sort(), ['bookmarks.html', 'settings.ini']);
    assert.equal(fs.readFileSync(join(p, 'settings.ini'), 'utf8'), 'a=1\n');
    fs.writeFileSync(join(p, 'settings.ini'), 'a=2\n'); // the user's change
    fs.writeFileSync(join(c.profile, 'new.txt'), 'new');
    userProfile(c);
    assert.equal(fs.readFileSync(join(p, 'settings.ini'), 'utf8'), 'a=2\n');
    assert.equal(fs.readFileSync(join(p, 'new.txt'), 'utf8'), 'new');
  });
});
