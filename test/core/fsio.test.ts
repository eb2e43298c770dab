/**
 * src/core/fsio.ts on real files: staging and publishing, and what a later run does with a
 * dead run's leftovers (complete, half-published, never published) and with a live run's.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, linkSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beginStaging, parseTempName, pidAlive, removeLeftovers, tempNameFor } from '../../src/core/fsio.js';
import { MedvError } from '../../src/core/errors.js';
import { tempDir } from '../helpers/cli.js';

/** The pid of a process that has exited (a real one, not a made-up number). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(r.stdout);
  assert.ok(pid > 0 && !pidAlive(pid));
  return pid;
}

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;

describe('core/fsio', () => {
  let dir: ReturnType<typeof tempDir>;
  let enc: string;
  let evhd: string;
  beforeEach(() => {
    dir = tempDir('atomic');
    enc = join(dir.path, 'x.enc');
    evhd = join(dir.path, 'x.evhd');
  });
  afterEach(() => dir.cleanup());

  it('temporary names carry the final name, pid and run token', () => {
    const t = tempNameFor(evhd, 1234, 'abcdef012345');
    assert.equal(t, join(dir.path, '.x.evhd.medv-tmp-1234-abcdef012345'));
    assert.deepEqual(parseTempName('.x.evhd.medv-tmp-1234-abcdef012345'), { final: 'x.evhd', pid: 1234, token: 'abcdef012345' });
    for (const n of ['x.evhd', '.x.evhd.medv-tmp-1234-abc', '.x.evhd.medv-tmp--1-abcdef012345', '.x.evhd.medv-tmp-0-abcdef012345', '.x.evhd.tmp']) {
      assert.equal(parseTempName(n), undefined, n);
    }
  });

  it('publish links in order and drops the temporaries; abort removes only what this run made', async () => {
    const s = beginStaging([enc, evhd]);
    writeFileSync(s.tempFor(enc), 'key');
    writeFileSync(s.tempFor(evhd), 'disk');
    assert.equal(existsSync(enc), false);
    await s.publish();
    assert.deepEqual(readdirSync(dir.path).sort(), ['x.enc', 'x.evhd']);
    assert.equal(readFileSync(evhd, 'utf8'), 'disk');

    // Someone else's x.evhd appears while we stage y: publishing fails, their file stays, ours go.
    const y = join(dir.path, 'y.enc');
    const yd = join(dir.path, 'y.evhd');
    const s2 = beginStaging([y, yd]);
    writeFileSync(s2.tempFor(y), 'key');
    writeFileSync(s2.tempFor(yd), 'disk');
    writeFileSync(yd, 'theirs');
    await assert.rejects(s2.publish(), code('EEXIST'));
    assert.equal(readFileSync(yd, 'utf8'), 'theirs');
    assert.deepEqual(readdirSync(dir.path).sort(), ['x.enc', 'x.evhd', 'y.evhd']);
    // Existing finals are refused before anything is created.
    assert.throws(() => beginStaging([enc, join(dir.path, 'z.evhd')]), code('EEXIST'));
  });

  it('a dead run: a half-published pair is removed (same inode proves it is ours), nothing else', () => {
    const pid = deadPid();
    const te = tempNameFor(enc, pid, '00000000000a');
    const td = tempNameFor(evhd, pid, '00000000000a');
    writeFileSync(te, 'key');
    writeFileSync(td, 'disk');
    linkSync(te, enc); // killed between linking x.enc and x.evhd
    const removed = removeLeftovers([enc, evhd]);
    assert.deepEqual(removed.sort(), [enc, td, te].sort());
    assert.deepEqual(readdirSync(dir.path), []);
  });

  it('a dead run: complete outputs stay (only the temporary names go); never-published ones go', () => {
    const pid = deadPid();
    const te = tempNameFor(enc, pid, '00000000000b');
    const td = tempNameFor(evhd, pid, '00000000000b');
    writeFileSync(te, 'key');
    writeFileSync(td, 'disk');
    linkSync(te, enc);
    linkSync(td, evhd); // killed after publishing both, before dropping the temporary names
    removeLeftovers([evhd]);
    assert.deepEqual(readdirSync(dir.path).sort(), ['x.enc', 'x.evhd']);

    const other = join(dir.path, 'o.vhd');
    writeFileSync(tempNameFor(other, pid, '00000000000c'), 'partial');
    removeLeftovers([other]);
    assert.deepEqual(readdirSync(dir.path).sort(), ['x.enc', 'x.evhd']);
  });

  it('a file under the final name that is not the dead run\'s inode is never removed', () => {
    const pid = deadPid();
    const te = tempNameFor(enc, pid, '00000000000d');
    const td = tempNameFor(evhd, pid, '00000000000d');
    writeFileSync(te, 'key');
    writeFileSync(td, 'disk');
    writeFileSync(enc, 'another disk\'s key');
    removeLeftovers([enc, evhd]);
    assert.deepEqual(readdirSync(dir.path), ['x.enc']);
    assert.equal(readFileSync(enc, 'utf8'), 'another disk\'s key');
  });

  it('temporaries of a live process, and of other names, are left alone', () => {
    const live = tempNameFor(evhd, process.pid, '00000000000e');
    const liveEnc = tempNameFor(enc, process.pid, '00000000000e');
    writeFileSync(live, 'in use');
    writeFileSync(liveEnc, 'in use');
    linkSync(liveEnc, enc); // a live run mid-publish: its half pair must survive
    const unrelated = tempNameFor(join(dir.path, 'other.vhd'), deadPid(), '00000000000f');
    writeFileSync(unrelated, 'not asked about');
    assert.deepEqual(removeLeftovers([enc, evhd]), []);
    assert.equal(readdirSync(dir.path).length, 4);
  });
});
