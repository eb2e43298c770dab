/** src/core/paths.ts: every default location, from an option, a MEDV_* variable, the XDG variables or the home folder. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  cacheHome, clientRootPath, configHome, consoleKeyDir, dataHome, desktopDir, profileDir, relativeInside, resolveExisting, runRoot, seedCacheDir, stateHome, uploadStateDir,
} from '../../src/core/paths.js';
import { partsBelow } from '../../src/core/fsio.js';

const VARS = ['MEDV_CLIENT_ROOT', 'MEDV_RUN_DIR', 'MEDV_KEYS', 'MEDV_STATE_DIR', 'XDG_DATA_HOME', 'XDG_CONFIG_HOME', 'XDG_STATE_HOME', 'XDG_CACHE_HOME', 'XDG_RUNTIME_DIR'];

describe('core/paths', () => {
  let saved: Record<string, string | undefined>;
  beforeEach(() => {
    saved = Object.fromEntries(VARS.map((v) => [v, process.env[v]]));
    for (const v of VARS) delete process.env[v];
  });
  afterEach(() => {
    for (const v of VARS) { if (saved[v] === undefined) delete process.env[v]; else process.env[v] = saved[v]; }
  });

  it('without variables: the XDG defaults under the home folder', () => {
    const h = homedir();
    assert.equal(dataHome(), `${h}/.local/share`);
    assert.equal(configHome(), `${h}/.config`);
    assert.equal(stateHome(), `${h}/.local/state`);
    assert.equal(cacheHome(), `${h}/.cache`);
    assert.equal(desktopDir(), `${h}/.local/share/applications`);
    assert.equal(profileDir(), `${h}/.local/share/medv/profile`);
    assert.equal(seedCacheDir(), `${h}/.cache/medv/seeds`);
    assert.equal(uploadStateDir(), `${h}/.local/state/medv/uploads`);
    assert.equal(consoleKeyDir(), `${h}/.config/medv/keys`);
    if (process.getuid?.() === 0) {
      assert.equal(clientRootPath(), '/var/lib/medv');
      assert.equal(runRoot(), '/run/medv');
    } else {
      assert.equal(clientRootPath(), `${h}/.local/share/medv`);
      assert.equal(runRoot(), `/tmp/medv-${process.getuid?.()}`);
    }
  });

  it('XDG variables (absolute only: a relative one is ignored, as the spec says) and MEDV_* variables', () => {
    process.env.XDG_DATA_HOME = '/x/data';
    process.env.XDG_CONFIG_HOME = 'relative/config';
    process.env.XDG_CACHE_HOME = '/x/cache';
    process.env.XDG_STATE_HOME = '/x/state';
    assert.equal(desktopDir(), '/x/data/applications');
    assert.equal(consoleKeyDir(), `${homedir()}/.config/medv/keys`);
    assert.equal(seedCacheDir(), '/x/cache/medv/seeds');
    assert.equal(uploadStateDir(), '/x/state/medv/uploads');
    process.env.MEDV_KEYS = '/k';
    process.env.MEDV_STATE_DIR = '/s';
    process.env.MEDV_CLIENT_ROOT = '/srv/medv-env';
    process.env.MEDV_RUN_DIR = '/r';
    assert.equal(consoleKeyDir(), '/k');
    assert.equal(uploadStateDir(), '/s/uploads');
    assert.equal(clientRootPath(), '/srv/medv-env');
    assert.equal(clientRootPath('/srv/x'), '/srv/x', 'an explicit option wins');
    assert.equal(runRoot(), '/r');
  });

  it('a caller\'s UserDirs win over the environment, which stays untouched', () => {
    process.env.XDG_DATA_HOME = '/env/data';
    const d = { data: '/demo/data', cache: '/demo/cache', state: '/demo/state', config: '/demo/config' };
    assert.equal(desktopDir(d), '/demo/data/applications');
    assert.equal(profileDir(d), '/demo/data/medv/profile');
    assert.equal(seedCacheDir(d), '/demo/cache/medv/seeds');
    assert.equal(uploadStateDir(d), '/demo/state/medv/uploads');
    assert.equal(consoleKeyDir(d), '/demo/config/medv/keys');
    assert.equal(process.env.XDG_DATA_HOME, '/env/data');
  });

  it('relativeInside: a name that starts with two dots is inside; only a whole ".." component leads out', () => {
    assert.equal(relativeInside('/r', '/r'), '');
    assert.equal(relativeInside('/r', '/r/..cfg/medv/k'), '..cfg/medv/k');
    assert.equal(relativeInside('/r/', '/r/a/../..x'), '..x');
    assert.equal(relativeInside('/r', '/r/..'), undefined);
    assert.equal(relativeInside('/r', '/r/../x'), undefined);
    assert.equal(relativeInside('/r', '/rx'), undefined);
    assert.equal(relativeInside('/r', '/'), undefined);
    // fsio's confinement (a .vmc's disks below its folder) agrees
    assert.deepEqual(partsBelow('/vm', '/vm/..disks/a.vhd'), { parts: ['..disks'], name: 'a.vhd' });
    assert.throws(() => partsBelow('/vm', '/vm/../a.vhd'), /not inside/);
  });

  it('resolveExisting: a link in the existing part of a path is resolved, the folders not made yet follow as written', () => {
    const t = fs.mkdtempSync(join(tmpdir(), 'medv-paths-'));
    try {
      fs.mkdirSync(join(t, 'real'));
      fs.symlinkSync(join(t, 'real'), join(t, 'link'));
      const real = fs.realpathSync(t);
      assert.equal(resolveExisting(join(t, 'link', 'medv', 'k')), join(real, 'real', 'medv', 'k'));
      assert.equal(resolveExisting(join(t, 'link')), join(real, 'real'));
      assert.equal(resolveExisting(join(t, 'none', 'a')), join(real, 'none', 'a'));
    } finally {
      fs.rmSync(t, { recursive: true, force: true });
    }
  });
});
