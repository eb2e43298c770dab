/**
 * `medv disk …` from an install without the test guest (no vm/): the disk commands work; `medv
 * demo`, which needs the guest, fails with one clear line naming vm/layout.json.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, TEST_PASSPHRASE, tempDir } from '../helpers/cli.js';

describe('cli: medv without vm/', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let bin: string;
  before(() => {
    dir = tempDir('novm');
    const root = join(dir.path, 'medv');
    mkdirSync(join(root, 'bin'), { recursive: true });
    mkdirSync(join(root, 'dist'), { recursive: true });
    copyFileSync(join(REPO_ROOT, 'package.json'), join(root, 'package.json'));
    copyFileSync(join(REPO_ROOT, 'bin', 'medv'), join(root, 'bin', 'medv'));
    cpSync(join(REPO_ROOT, 'dist', 'src'), join(root, 'dist', 'src'), { recursive: true });
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
    if (existsSync(join(REPO_ROOT, 'build'))) symlinkSync(join(REPO_ROOT, 'build'), join(root, 'build'));
    assert.equal(existsSync(join(root, 'vm')), false);
    bin = join(root, 'bin', 'medv');
  });
  after(() => dir.cleanup());

  const medv = (args: string[]) => {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, MEDV_PASSPHRASE: TEST_PASSPHRASE }, timeout: 60_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('disk create, info, check and convert work', () => {
    const v = join(dir.path, 'a.vhd');
    let r = medv(['disk', 'create', v, '--size', '16M']);
    assert.equal(r.code, 0, r.stderr);
    r = medv(['disk', 'info', v, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).type, 'dynamic');
    const e = join(dir.path, 'a.evhd');
    r = medv(['disk', 'convert', v, e]);
    assert.equal(r.code, 0, r.stderr);
    r = medv(['disk', 'check', e]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(medv(['--help']).code, 0);
  });

  for (const [args, file] of [[['demo'], 'vm/linux/layout.json'], [['demo', '--disks', '--tcg'], 'vm/layout.json']] as const) {
    it(`medv ${args.join(' ')} fails with one line naming ${file}, exit 3, no stack trace`, () => {
      const r = medv([...args]);
      assert.equal(r.code, 3, r.stdout + r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], new RegExp(`^medv: the test guest is not here \\(${file.replaceAll('/', '\\/').replaceAll('.', '\\.')} is missing.*\\[ENOENT\\]$`));
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    });
  }
});
