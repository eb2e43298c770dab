/**
 * Parents and undo disks through `medv` as users run it, with hostile and mistaken inputs:
 * a locator that names a host file, an undo disk over a raw disk that was replaced, `undo discard`
 * of disks that are not undo disks, a plaintext undo disk over an encrypted parent, a directory
 * given as a disk, and formats guessed from content.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { FileDevice } from '../../src/block/file.js';
import { openDisk } from '../../src/layers/open.js';
import { createDifferencingVhd } from '../../src/layers/vhd/index.js';
import { run, runMedv, sha256File, startMedv, tempDir, TEST_PASSPHRASE } from '../helpers/cli.js';

const MiB = 1024 * 1024;
const kek = () => ({ kind: 'passphrase' as const, passphrase: TEST_PASSPHRASE });

function assertError(r: { code: number | null; stderr: string }, code: string, status: number, re?: RegExp): void {
  assert.equal(r.code, status, `exit ${status}, got ${r.code}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0], new RegExp(`^medv: .*\\[${code}\\]$`));
  if (re) assert.match(lines[0], re);
}

/** A differencing VHD as an attacker makes it: any parent id, locators naming any path. */
async function hostileChild(path: string, size: number, locators: { relativePath?: string; absolutePath?: string }, uniqueId: Buffer = randomBytes(16)): Promise<void> {
  const s = await FileDevice.open(path, { create: true });
  try { await createDifferencingVhd(s, { size, uniqueId, ...locators }); } finally { await s.close(); }
}

async function stop(server: ChildProcess): Promise<void> {
  const exited = new Promise((res) => server.once('exit', res));
  server.kill('SIGTERM');
  await exited;
}

describe('cli: parents and undo disks', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('parents'); });
  afterEach(() => dir.cleanup());

  describe('a locator never reaches a host file', () => {
    const SECRET = Buffer.concat(Array.from({ length: MiB / 32 }, () => Buffer.from('HOST-SECRET-0123456789-abcdefgh!')));
    for (const kind of ['relative ../..', 'absolute', 'absolute, zero parent id']) {
      it(`disk convert of a hostile .vhd whose ${kind} locator names a raw file copies nothing out`, async () => {
        const secret = join(dir.path, 'secret.bin');
        writeFileSync(secret, SECRET);
        const deep = join(dir.path, 'a', 'b');
        mkdirSync(deep, { recursive: true });
        const child = join(deep, 'evil.vhd');
        await hostileChild(child, SECRET.length,
          kind.startsWith('relative') ? { relativePath: '..\\..\\secret.bin' } : { absolutePath: secret },
          kind.includes('zero') ? Buffer.alloc(16) : randomBytes(16));
        const out = join(dir.path, 'out.raw');
        assertError(runMedv(['disk', 'convert', child, out]), 'EPARENT', 5, /not a usable VHD|no parent unique id/);
        assert.equal(existsSync(out), false, 'no output file');
        const sock = join(dir.path, 's');
        assertError(runMedv(['disk', 'serve', child, '--socket', sock, '--read-only']), 'EPARENT', 5);
        assert.ok(readFileSync(secret).equals(SECRET));
      });
    }

    it('a locator to a VHD is followed only when its unique id matches', async () => {
      const base = join(dir.path, 'base.vhd');
      assert.equal(runMedv(['disk', 'create', base, '--size', '4M']).code, 0);
      const child = join(dir.path, 'child.vhd');
      const size = JSON.parse(runMedv(['disk', 'info', base, '--json']).stdout).virtualSize;
      await hostileChild(child, size, { relativePath: 'base.vhd' });
      assertError(runMedv(['disk', 'convert', child, join(dir.path, 'o.raw')]), 'EPARENT', 5, /unique id/);
    });
  });

  describe('an undo disk over a raw disk', () => {
    let raw: string;
    let undo: string;
    beforeEach(() => {
      raw = join(dir.path, 'disk.img');
      writeFileSync(raw, Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(4 * MiB), randomBytes(2 * MiB)]));
      undo = join(dir.path, 'undo.vhd');
      const r = runMedv(['disk', 'undo', 'create', undo, '--parent', raw]);
      assert.equal(r.code, 0, r.stderr);
    });

    it('is used over the raw disk the user names, and merges into it', async () => {
      const sock = join(dir.path, 's');
      const server = await startMedv(['disk', 'serve', raw, '--undo', undo, '--socket', sock]);
      try {
        run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 64k', '-c', `write -P 0x78 ${5 * MiB} 4k`, `nbd+unix:///?socket=${sock}`]);
      } finally {
        await stop(server);
      }
      const before = readFileSync(raw);
      assertError(runMedv(['disk', 'undo', 'merge', undo]), 'EPARENT', 5, /raw disk.*name it explicitly/);
      assert.ok(readFileSync(raw).equals(before), 'a merge without --parent wrote nothing');
      const m = runMedv(['disk', 'undo', 'merge', undo, '--parent', raw]);
      assert.equal(m.code, 0, m.stderr);
      const after = readFileSync(raw);
      assert.ok(after.subarray(0, 65536).equals(Buffer.alloc(65536, 0x77)));
      assert.ok(after.subarray(5 * MiB, 5 * MiB + 4096).equals(Buffer.alloc(4096, 0x78)));
      assert.ok(after.subarray(65536, 5 * MiB).equals(before.subarray(65536, 5 * MiB)));
      assert.equal(existsSync(undo), false);
    });

    it('refuses to merge into a raw file that replaced the parent, or one of another size', () => {
      const other = join(dir.path, 'other.img');
      writeFileSync(other, randomBytes(8 * MiB));
      renameSync(raw, join(dir.path, 'moved.img'));
      renameSync(other, raw);
      const h = sha256File(raw);
      assertError(runMedv(['disk', 'undo', 'merge', undo]), 'EPARENT', 5);
      assertError(runMedv(['disk', 'undo', 'merge', undo, '--parent', raw]), 'EPARENT', 5, /not the raw disk/);
      assertError(runMedv(['disk', 'serve', raw, '--undo', undo, '--socket', join(dir.path, 's')]), 'EPARENT', 5);
      assert.equal(sha256File(raw), h, 'the file now at the path is untouched');
      const small = join(dir.path, 'small.img');
      writeFileSync(small, Buffer.alloc(4 * MiB));
      assertError(runMedv(['disk', 'undo', 'merge', undo, '--parent', small]), 'EPARENT', 5, /bytes/);
      assert.ok(existsSync(undo), 'the undo disk is kept');
      const m = runMedv(['disk', 'undo', 'merge', undo, '--parent', join(dir.path, 'moved.img')]);
      assert.equal(m.code, 0, m.stderr);
    });
  });

  describe('undo merge never writes into a parent other names share', () => {
    it('a parent with another hard link (a workspace\'s image base) is refused: EREADONLY, nothing written, the undo disk kept; with one name left it merges', async () => {
      // As deployment lays it out: the base in the image's base folder, hard-linked (disk and key) into a workspace's version folder.
      const baseDir = join(dir.path, 'img@base');
      const ws = join(dir.path, 'ws-v1');
      mkdirSync(baseDir);
      mkdirSync(ws);
      assert.equal(runMedv(['disk', 'create', join(baseDir, 'img.evhd'), '--size', '8M']).code, 0);
      for (const n of ['img.evhd', 'img.enc']) linkSync(join(baseDir, n), join(ws, n));
      const parent = join(ws, 'img.evhd');
      const undo = join(ws, 'img.undo.evhd');
      const c = runMedv(['disk', 'undo', 'create', undo, '--parent', parent]);
      assert.equal(c.code, 0, c.stderr);
      const sock = join(dir.path, 's');
      const server = await startMedv(['disk', 'serve', parent, '--undo', undo, '--socket', sock]);
      try {
        run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 64k', `nbd+unix:///?socket=${sock}`]);
      } finally {
        await stop(server);
      }
      const h = sha256File(parent);
      assertError(runMedv(['disk', 'undo', 'merge', undo]), 'EREADONLY', 6, /img\.evhd is shared: it has 2 names \(hard links/);
      assert.equal(sha256File(parent), h, 'the shared base is untouched');
      assert.ok(existsSync(undo), 'the undo disk is kept');
      // The base folder's name gone, the workspace's is the only one: the merge is the user's to make.
      for (const n of ['img.evhd', 'img.enc']) unlinkSync(join(baseDir, n));
      const m = runMedv(['disk', 'undo', 'merge', undo]);
      assert.equal(m.code, 0, m.stderr);
      assert.notEqual(sha256File(parent), h, 'merged into the parent');
      assert.equal(existsSync(undo), false);
    });
  });

  describe('undo discard deletes only undo disks', () => {
    it('refuses a dynamic .evhd (and its .enc), a fixed .vhd and a raw file, deleting nothing', () => {
      const e = join(dir.path, 'data.evhd');
      const f = join(dir.path, 'fixed.vhd');
      const r = join(dir.path, 'plain.img');
      assert.equal(runMedv(['disk', 'create', e, '--size', '4M']).code, 0);
      assert.equal(runMedv(['disk', 'create', f, '--size', '4M', '--type', 'fixed']).code, 0);
      writeFileSync(r, randomBytes(MiB));
      const files = [e, join(dir.path, 'data.enc'), f, r];
      const hashes = files.map(sha256File);
      assertError(runMedv(['disk', 'undo', 'discard', e]), 'EFORMAT', 5, /not an undo disk/);
      assertError(runMedv(['disk', 'undo', 'discard', f]), 'EFORMAT', 5, /not an undo disk/);
      assertError(runMedv(['disk', 'undo', 'discard', r]), 'EFORMAT', 5, /not an undo disk/);
      assert.deepEqual(files.map(sha256File), hashes, 'every file is still there, unchanged');
      const u = join(dir.path, 'u.evhd');
      assert.equal(runMedv(['disk', 'undo', 'create', u, '--parent', e]).code, 0);
      assert.equal(runMedv(['disk', 'undo', 'discard', u]).code, 0);
      assert.equal(existsSync(u) || existsSync(join(dir.path, 'u.enc')), false, 'an undo disk and its .enc are deleted');
    });
  });

  describe('a plaintext undo disk over an encrypted parent', () => {
    it('is refused at every open, not only at create', async () => {
      const base = join(dir.path, 'base.evhd');
      assert.equal(runMedv(['disk', 'create', base, '--size', '4M']).code, 0);
      const inner = await openDisk(base, { readOnly: true, kek });
      const size = inner.device.size;
      const id = inner.vhd!.info.uniqueId;
      await inner.device.close();
      const plain = join(dir.path, 'plain.vhd');
      await hostileChild(plain, size, { relativePath: 'base.evhd' }, id);
      const h = sha256File(base);
      assertError(runMedv(['disk', 'serve', base, '--undo', plain, '--socket', join(dir.path, 's')]), 'EPARENT', 5, /plaintext/);
      assertError(runMedv(['disk', 'undo', 'merge', plain]), 'EPARENT', 5, /plaintext/);
      assertError(runMedv(['disk', 'convert', plain, join(dir.path, 'o.raw')]), 'EPARENT', 5, /plaintext/);
      assertError(runMedv(['disk', 'serve', plain, '--socket', join(dir.path, 's2'), '--read-only']), 'EPARENT', 5, /plaintext/);
      assert.equal(sha256File(base), h);
      assert.equal(existsSync(join(dir.path, 'o.raw')), false);
    });
  });

  it('a directory given as a disk is a typed error', () => {
    const d = join(dir.path, 'folder.vhd');
    mkdirSync(d);
    for (const args of [['disk', 'info', d], ['disk', 'check', d], ['disk', 'serve', d, '--socket', join(dir.path, 's')],
      ['disk', 'convert', d, join(dir.path, 'o.raw')], ['disk', 'undo', 'discard', d], ['disk', 'undo', 'merge', d],
      ['disk', 'undo', 'create', join(dir.path, 'u.vhd'), '--parent', d]]) {
      assertError(runMedv(args), 'EINVAL_ARG', 2, /directory/);
    }
    assert.equal(existsSync(d), true);
  });

  it('--format names the format; guessing from content warns on stderr', () => {
    const vhd = join(dir.path, 'disk.vhd');
    assert.equal(runMedv(['disk', 'create', vhd, '--size', '4M']).code, 0);
    const noext = join(dir.path, 'disk');
    writeFileSync(noext, readFileSync(vhd));
    const guessed = runMedv(['disk', 'info', noext, '--json']);
    assert.equal(guessed.code, 0, guessed.stderr);
    assert.equal(JSON.parse(guessed.stdout).format, 'vhd');
    assert.match(guessed.stderr, /^medv: warning: .*guessed vhd.*--format vhd/);
    const named = runMedv(['disk', 'info', noext, '--json', '--format', 'raw']);
    assert.equal(named.code, 0);
    assert.equal(named.stderr, '', 'no warning when the format is named');
    assert.equal(JSON.parse(named.stdout).format, 'raw');
    assert.equal(runMedv(['disk', 'info', vhd]).stderr, '', 'no warning when the name says it');
    const bad = runMedv(['disk', 'info', vhd, '--format', 'qcow2']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /raw, vhd, evhd/);
  });
});
