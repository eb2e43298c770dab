/**
 * src/core/fsio.ts on real files: staging and publishing, and what a later run does with a
 * dead run's leftovers (complete, half-published, never published) and with a live run's.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import {
  beginStaging, checkDir, createFileAtomic, createFileAtomicSync, ensureDir, ensurePrivateDir, openAtomicSync, parseTempName,
  processAlive, processStartTime, readBoundedSync, readSecretSync, removeLeftovers, tempNameFor, thisProcess, writeFileAtomic,
  writeFileAtomicSync,
} from '../../src/core/fsio.js';
import { MedvError } from '../../src/core/errors.js';
import { tempDir } from '../helpers/cli.js';

/** The pid of a process that has exited (a real one, not a made-up number). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(r.stdout);
  assert.ok(pid > 0 && !processAlive(pid));
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

  it('temporary names carry the final name, the process (pid and start time) and the run token', () => {
    assert.equal(tempNameFor(evhd, 'abcdef012345', { pid: 1234, start: 98765 }), join(dir.path, '.x.evhd.medv-tmp-1234-98765-abcdef012345'));
    assert.deepEqual(parseTempName('.x.evhd.medv-tmp-1234-98765-abcdef012345'), { final: 'x.evhd', pid: 1234, start: 98765, token: 'abcdef012345' });
    // This process's own temporaries carry its start time.
    const me = thisProcess();
    assert.ok(me.start !== undefined && me.pid === process.pid);
    assert.deepEqual(parseTempName(basename(tempNameFor(evhd, 'abcdef012345'))), { final: 'x.evhd', pid: me.pid, start: me.start, token: 'abcdef012345' });
    // Names written before the start time was recorded are still recognised (pid only).
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
    const te = tempNameFor(enc, '00000000000a', { pid });
    const td = tempNameFor(evhd, '00000000000a', { pid });
    writeFileSync(te, 'key');
    writeFileSync(td, 'disk');
    linkSync(te, enc); // killed between linking x.enc and x.evhd
    const removed = removeLeftovers([enc, evhd]);
    assert.deepEqual(removed.sort(), [enc, td, te].sort());
    assert.deepEqual(readdirSync(dir.path), []);
  });

  it('a dead run: complete outputs stay (only the temporary names go); never-published ones go', () => {
    const pid = deadPid();
    const te = tempNameFor(enc, '00000000000b', { pid });
    const td = tempNameFor(evhd, '00000000000b', { pid });
    writeFileSync(te, 'key');
    writeFileSync(td, 'disk');
    linkSync(te, enc);
    linkSync(td, evhd); // killed after publishing both, before dropping the temporary names
    removeLeftovers([evhd]);
    assert.deepEqual(readdirSync(dir.path).sort(), ['x.enc', 'x.evhd']);

    const other = join(dir.path, 'o.vhd');
    writeFileSync(tempNameFor(other, '00000000000c', { pid }), 'partial');
    removeLeftovers([other]);
    assert.deepEqual(readdirSync(dir.path).sort(), ['x.enc', 'x.evhd']);
  });

  it('a file under the final name that is not the dead run\'s inode is never removed', () => {
    const pid = deadPid();
    const te = tempNameFor(enc, '00000000000d', { pid });
    const td = tempNameFor(evhd, '00000000000d', { pid });
    writeFileSync(te, 'key');
    writeFileSync(td, 'disk');
    writeFileSync(enc, 'another disk\'s key');
    removeLeftovers([enc, evhd]);
    assert.deepEqual(readdirSync(dir.path), ['x.enc']);
    assert.equal(readFileSync(enc, 'utf8'), 'another disk\'s key');
  });

  it('temporaries of a live process, and of other names, are left alone', () => {
    const live = tempNameFor(evhd, '00000000000e', { pid: process.pid });
    const liveEnc = tempNameFor(enc, '00000000000e', { pid: process.pid });
    writeFileSync(live, 'in use');
    writeFileSync(liveEnc, 'in use');
    linkSync(liveEnc, enc); // a live run mid-publish: its half pair must survive
    const unrelated = tempNameFor(join(dir.path, 'other.vhd'), '00000000000f', { pid: deadPid() });
    writeFileSync(unrelated, 'not asked about');
    assert.deepEqual(removeLeftovers([enc, evhd]), []);
    assert.equal(readdirSync(dir.path).length, 4);
  });

  it('a reused pid does not keep a dead run\'s temporary; a live process\'s own temporaries stay', () => {
    const me = thisProcess();
    // Our pid, another start time: the process that wrote it is gone (its pid is ours now).
    const reused = tempNameFor(evhd, '000000000010', { pid: me.pid, start: me.start! + 1 });
    const mine = tempNameFor(enc, '000000000011');
    writeFileSync(reused, 'dead run');
    writeFileSync(mine, 'live run');
    assert.deepEqual(removeLeftovers([enc, evhd]), [reused]);
    assert.deepEqual(readdirSync(dir.path), [basename(mine)]);
    assert.equal(processAlive(me.pid, me.start), true);
    assert.equal(processAlive(me.pid, me.start! + 1), false);
    assert.equal(processStartTime(deadPid()), undefined);
  });

  it('a temporary that is not ours, or not a regular file, is never removed', () => {
    const pid = deadPid();
    const foreign = tempNameFor(enc, '000000000012', { pid });
    writeFileSync(foreign, 'someone else');
    chownSync(foreign, 65534, 65534);
    const folder = tempNameFor(evhd, '000000000013', { pid });
    mkdirSync(folder);
    assert.deepEqual(removeLeftovers([enc, evhd]), []);
    assert.equal(readdirSync(dir.path).length, 2);
  });

  describe('write-then-rename and create-without-overwrite', () => {
    it('writeFileAtomic replaces the file with the exact mode whatever the umask, and leaves no temporary', async () => {
      const f = join(dir.path, 'state.json');
      const old = process.umask(0o777);
      try {
        writeFileAtomicSync(f, 'one', { mode: 0o640 });
        assert.equal(statSync(f).mode & 0o777, 0o640);
        await writeFileAtomic(f, Buffer.from('two'));
        assert.equal(statSync(f).mode & 0o777, 0o600);
      } finally {
        process.umask(old);
      }
      assert.equal(readFileSync(f, 'utf8'), 'two');
      assert.deepEqual(readdirSync(dir.path), ['state.json']);
    });

    it('a killed writer\'s temporary is removed by the next write of the same name', () => {
      const f = join(dir.path, 'state.json');
      const left = tempNameFor(f, '000000000014', { pid: deadPid() });
      writeFileSync(left, 'half');
      writeFileAtomicSync(f, 'whole');
      assert.deepEqual(readdirSync(dir.path), ['state.json']);
    });

    it('writes never follow a symlink planted under the temporary\'s or the final name', () => {
      const victim = join(dir.path, 'victim');
      writeFileSync(victim, 'keep');
      const f = join(dir.path, 'token');
      symlinkSync(victim, f);
      assert.throws(() => createFileAtomicSync(f, 'secret'), code('EEXIST'));
      writeFileAtomicSync(f, 'replaced'); // the link itself is replaced, its target untouched
      assert.equal(readFileSync(victim, 'utf8'), 'keep');
      assert.equal(readFileSync(f, 'utf8'), 'replaced');
    });

    it('createFileAtomic never replaces an existing file and leaves nothing behind when refused', async () => {
      const f = join(dir.path, 'host.key');
      await createFileAtomic(f, Buffer.alloc(32, 1));
      assert.equal(statSync(f).mode & 0o777, 0o600);
      await assert.rejects(createFileAtomic(f, Buffer.alloc(32, 2)), code('EEXIST'));
      assert.throws(() => createFileAtomicSync(f, Buffer.alloc(32, 2)), code('EEXIST'));
      assert.deepEqual(readFileSync(f), Buffer.alloc(32, 1));
      assert.deepEqual(readdirSync(dir.path), ['host.key']);
    });

    it('openAtomicSync: nothing under the final name until commit; abort leaves nothing', () => {
      const f = join(dir.path, 'x.vsv');
      const a = openAtomicSync(f);
      writeFileSync(a.fd, 'part');
      assert.equal(existsSync(f), false);
      a.abort();
      assert.deepEqual(readdirSync(dir.path), []);
      const b = openAtomicSync(f);
      writeFileSync(b.fd, 'all');
      b.commit();
      assert.equal(readFileSync(f, 'utf8'), 'all');
      assert.deepEqual(readdirSync(dir.path), ['x.vsv']);
    });
  });

  describe('reads', () => {
    it('readBoundedSync: missing is undefined; symlink, FIFO and folder are EUNSAFE without blocking; over the bound is ETOOLARGE', () => {
      const f = join(dir.path, 'f');
      assert.equal(readBoundedSync(f, 10), undefined);
      writeFileSync(f, '0123456789A');
      assert.throws(() => readBoundedSync(f, 10), code('ETOOLARGE'));
      assert.equal(readBoundedSync(f, 11)!.toString(), '0123456789A');
      symlinkSync(f, join(dir.path, 'l'));
      assert.throws(() => readBoundedSync(join(dir.path, 'l'), 100), code('EUNSAFE'));
      assert.equal(spawnSync('mkfifo', [join(dir.path, 'p')]).status, 0);
      assert.throws(() => readBoundedSync(join(dir.path, 'p'), 100), code('EUNSAFE'));
      assert.throws(() => readBoundedSync(dir.path, 100), code('EUNSAFE'));
    });

    it('readSecretSync: ours, 0600, a regular file, the exact size; else one typed error and nothing read', () => {
      const f = join(dir.path, 'k');
      writeFileSync(f, Buffer.alloc(32, 7), { mode: 0o600 });
      const into = Buffer.alloc(32);
      assert.equal(readSecretSync(f, { what: 'host key file', size: 32, into }), into);
      assert.deepEqual(into, Buffer.alloc(32, 7));
      assert.throws(() => readSecretSync(f, { what: 'host key file', size: 31 }), code('EFORMAT'));
      writeFileSync(join(dir.path, 'open'), 'x', { mode: 0o644 });
      assert.throws(() => readSecretSync(join(dir.path, 'open'), { what: 'token' }), (e: unknown) => code('EINSECURE')(e) && /permissions 644 are too open/.test((e as Error).message));
      const lines: string[] = [];
      assert.equal(readSecretSync(join(dir.path, 'open'), { what: 'passphrase file', warn: (l) => lines.push(l) }).toString(), 'x');
      assert.equal(lines.length, 1);
      chownSync(f, 65534, 65534);
      assert.throws(() => readSecretSync(f, { what: 'host key file', size: 32 }), (e: unknown) => code('EINSECURE')(e) && /belongs to uid 65534/.test((e as Error).message));
      symlinkSync(join(dir.path, 'open'), join(dir.path, 'l'));
      assert.throws(() => readSecretSync(join(dir.path, 'l'), { what: 'token' }), code('EINSECURE'));
      assert.equal(spawnSync('mkfifo', ['-m', '600', join(dir.path, 'p')]).status, 0);
      assert.throws(() => readSecretSync(join(dir.path, 'p'), { what: 'token' }), code('EINVAL_ARG'));
      assert.throws(() => readSecretSync(join(dir.path, 'none'), { what: 'token' }), code('ENOENT'));
    });
  });

  describe('folders', () => {
    it('ensureDir creates with the exact mode whatever the umask, and refuses symlinks, others\' folders and open modes', () => {
      const d = join(dir.path, 'a', 'b');
      assert.throws(() => ensurePrivateDir(d), code('ENOENT'));
      const old = process.umask(0o277);
      try { ensurePrivateDir(d, true); } finally { process.umask(old); }
      assert.equal(statSync(d).mode & 0o777, 0o700);
      ensurePrivateDir(d); // exists, fine
      const open = join(dir.path, 'open');
      mkdirSync(open, { mode: 0o755 });
      assert.throws(() => ensurePrivateDir(open), (e: unknown) => code('EUNSAFE')(e) && /mode 0755/.test((e as Error).message));
      assert.equal(statSync(open).mode & 0o777, 0o755); // refused, never "fixed"
      ensureDir(open, { forbid: 0o022 }); // readable by others is allowed where only writes are forbidden
      const link = join(dir.path, 'link');
      symlinkSync(d, link);
      assert.throws(() => ensurePrivateDir(link), code('EUNSAFE'));
      assert.throws(() => checkDir(link), code('EUNSAFE'));
      const theirs = join(dir.path, 'theirs');
      mkdirSync(theirs, { mode: 0o700 });
      chownSync(theirs, 65534, 65534);
      assert.throws(() => ensurePrivateDir(theirs), (e: unknown) => code('EUNSAFE')(e) && /belongs to uid 65534/.test((e as Error).message));
      writeFileSync(join(dir.path, 'file'), '');
      assert.throws(() => ensurePrivateDir(join(dir.path, 'file')), code('EUNSAFE'));
    });
  });
});
