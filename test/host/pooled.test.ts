/**
 * src/host/pooled.ts: the pool's folder. A pool process (a pooled QEMU's supervisor, the spare) can
 * outlive its service and run root (a test's or a user's removal, the service then exiting): it must
 * not bring the run root back (found as empty `run/.pool` folders left in /tmp after test runs).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/cli.js';
import { poolDir, preparePooled } from '../../src/host/pooled.js';

describe('host: the pool\'s folder', () => {
  let dir: ReturnType<typeof tempDir>;
  before(() => { dir = tempDir('host-pooled'); });
  after(async () => dir.cleanup());

  it('a run root that is gone stays gone: ENOENT, nothing made', async () => {
    const root = join(dir.path, 'gone', 'run');
    assert.throws(() => poolDir(root), (e: Error & { code?: string }) => e.code === 'ENOENT');
    await assert.rejects(preparePooled(root, { accel: 'tcg', memoryMiB: 32, incoming: false, drives: [{ iface: 'ide' }], network: { kind: 'none' }, display: 'none' }), (e: Error & { code?: string }) => e.code === 'ENOENT');
    assert.equal(existsSync(join(dir.path, 'gone')), false, 'no folder was made');
  });

  it('in a run root that exists: <root>/.pool, private', () => {
    const root = join(dir.path, 'run');
    mkdirSync(root, { mode: 0o700 });
    assert.equal(poolDir(root), join(root, '.pool'));
    assert.equal(statSync(join(root, '.pool')).mode & 0o777, 0o700);
  });
});
