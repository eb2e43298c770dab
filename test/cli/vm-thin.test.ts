/**
 * bin/medv's short path for `medv vm start|stop|suspend|list` (src/cli/vm-thin.ts): it loads no
 * commander, and it answers exactly as the long path (forced here by a trailing `--`, which the
 * short path leaves to commander) — same stdout, stderr and exit status.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { MEDV_BIN, runMedv, tempDir } from '../helpers/cli.js';

describe('cli: medv vm short path', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let env: Record<string, string>;
  before(() => {
    dir = tempDir('vm-thin');
    env = { MEDV_RUN_DIR: join(dir.path, 'run') };
  });
  after(() => {
    runMedv(['host', 'stop'], env);
    dir.cleanup();
  });

  const commanderLoaded = (args: string[]) => {
    const r = spawnSync(process.execPath, [MEDV_BIN, ...args], {
      encoding: 'utf8', env: { ...process.env, ...env, NODE_DEBUG: 'module' }, timeout: 60_000,
    });
    return /node_modules\/commander\//.test(r.stderr);
  };

  it('vm list --json runs without commander; with a trailing -- it takes the long path', () => {
    assert.equal(commanderLoaded(['vm', 'list', '--json']), false);
    assert.equal(commanderLoaded(['vm', 'list', '--json', '--']), true);
    assert.equal(commanderLoaded(['vm', 'list', '--help']), true);
    assert.equal(commanderLoaded(['vm', 'stop', 'x', '--timeout', '5']), true, 'an option the short path does not take');
  });

  for (const args of [
    ['vm', 'list', '--json'],
    ['vm', 'list'],
    ['vm', 'stop', 'nosuch', '--json'],
    ['vm', 'stop', 'nosuch', '--force'],
    ['vm', 'suspend', 'nosuch'],
    ['vm', 'start', '/nonexistent/disk.img', '--name', 'x', '--memory', '32', '--json'],
    ['vm', 'start', '/nonexistent/disk.img', '--accel', 'tcg', '--disk-bus', 'virtio'],
  ]) {
    it(`medv ${args.join(' ')}: the same answer as the long path`, () => {
      const short = runMedv(args, env);
      const long = runMedv([...args, '--'], env);
      assert.deepEqual(short, long);
    });
  }
});
