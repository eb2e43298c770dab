/**
 * `medv image pack` / `medv image verify` as a user runs them: disks made by qemu-img and by
 * `medv disk convert` (VHD, EVHD, an undo disk over an EVHD), packed, verified, unpacked and
 * judged by `qemu-img compare`; version 2 judged by the .ckm sizes; errors as one line with the
 * documented exit status.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, readdirSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run, runMedv as runMedvRaw, tempDir } from '../helpers/cli.js';
import { unpackToRaw } from '../pack/helpers.js';
import { makeUsrDisk, mutateDisk } from '../pack/images.js';

const MiB = 1048576;

describe('cli: medv image', function () {
  this.timeout(120_000);
  const t = tempDir('cli-image');
  const keys = join(t.path, 'keys');
  const out = join(t.path, 'PackedImages');
  const raw1 = join(t.path, 'v1.raw');
  const raw2 = join(t.path, 'v2.raw');
  const vhd1 = join(t.path, 'v1.vhd');
  const evhd1 = join(t.path, 'v1.evhd');
  const evhd2 = join(t.path, 'v2.evhd');
  // A host key as the KEK for disks and key folder alike (no Argon2id per command: fast tests;
  // test/crypto covers passphrases).
  const hostKey = join(t.path, 'host.key');
  const otherHostKey = join(t.path, 'other.key');
  const runMedv = (args: string[], key = hostKey) => runMedvRaw([...args, '--host-key', key], { MEDV_PASSPHRASE: '' });

  before(() => {
    writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
    writeFileSync(otherHostKey, randomBytes(32), { mode: 0o600 });
    makeUsrDisk(raw1, 12 * MiB, 0.5, 21);
    copyFileSync(raw1, raw2);
    mutateDisk(raw2, 0.03, 22);
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic', raw1, vhd1]);
    const vhd2 = join(t.path, 'v2.vhd');
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic', raw2, vhd2]);
    for (const [src, dst] of [[vhd1, evhd1], [vhd2, evhd2]]) {
      const r = runMedv(['disk', 'convert', src, dst]);
      assert.equal(r.code, 0, r.stderr);
    }
  });
  after(() => t.cleanup());

  // the library's unpack reads the key folder the CLI made, with the CLI's passphrase
  const unpack = (index: string, dst: string) => unpackToRaw(index, keys, dst, () => ({ kind: 'hostkey', keyFile: hostKey }));

  it('--help teaches, with examples and the key files', () => {
    const r = runMedvRaw(['image', 'pack', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Examples:/);
    assert.match(r.stdout, /console\.sign\.pub/);
    assert.match(runMedvRaw(['image', 'verify', '--help']).stdout, /trusted\/\*\.pub/);
  });

  it('packs an EVHD made by qemu-img + medv disk convert; verify passes; the blocks equal the disk (qemu-img compare)', async () => {
    const r = runMedv(['image', 'pack', evhd1, '--name', 'lab', '--version', '1', '--out', out, '--keys', keys, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    assert.equal(res.indexPath, join(out, 'lab_1.ckm.index'));
    assert.deepEqual(readdirSync(out).sort(), ['lab_1.ckm', 'lab_1.ckm.index']);
    for (const f of ['console.sign.pub', 'console.sign.enc', 'repository.key.enc', 'images/lab.key.enc']) assert.ok(existsSync(join(keys, f)), f);
    const v = runMedv(['image', 'verify', join(out, 'lab_1.ckm.index'), '--keys', keys, '--json']);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(JSON.parse(v.stdout).ok, true);
    const back = join(t.path, 'v1.back.raw');
    await unpack(join(out, 'lab_1.ckm.index'), back);
    run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', back, vhd1]);
    run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', back, raw1]);
  });

  it('version 2 stores only what changed: its .ckm is a few percent of version 1', async () => {
    const r = runMedv(['image', 'pack', evhd2, '--name', 'lab', '--version', '2', '--out', out, '--keys', keys]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /reused from .*lab_1\.ckm\.index/);
    const s1 = statSync(join(out, 'lab_1.ckm')).size;
    const s2 = statSync(join(out, 'lab_2.ckm')).size;
    assert.ok(s2 < s1 * 0.06, `v2 ${s2} bytes, v1 ${s1}`);
    assert.equal(runMedv(['image', 'verify', join(out, 'lab_2.ckm.index'), '--keys', keys]).code, 0);
    const back = join(t.path, 'v2.back.raw');
    await unpack(join(out, 'lab_2.ckm.index'), back);
    run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', back, raw2]);
  });

  it('packs a VHD through an undo disk over an EVHD (the stack openDisk builds)', async () => {
    const undo = join(t.path, 'work.evhd');
    assert.equal(runMedv(['disk', 'undo', 'create', undo, '--parent', evhd1]).code, 0);
    const r = runMedv(['image', 'pack', undo, '--name', 'undo', '--version', '1', '--out', out, '--keys', keys, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const back = join(t.path, 'undo.back.raw');
    await unpack(join(out, 'undo_1.ckm.index'), back);
    run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', back, raw1]);
  });

  it('a passphrase works as the key-encryption key too', () => {
    const pkeys = join(t.path, 'pkeys');
    const r = runMedvRaw(['image', 'pack', vhd1, '--name', 'p', '--version', '1', '--out', join(t.path, 'p'), '--keys', pkeys]);
    assert.equal(r.code, 0, r.stderr);
    const w = runMedvRaw(['image', 'verify', join(t.path, 'p', 'p_1.ckm.index'), '--keys', pkeys], { MEDV_PASSPHRASE: 'not the passphrase' });
    assert.equal(w.code, 4);
    assert.match(w.stderr, /\[EBADKEY\]/);
  });

  it('errors: one line on stderr, the documented exit status, JSON with --json, nothing left behind', () => {
    const idx = join(out, 'lab_1.ckm.index');
    // existing output
    let r = runMedv(['image', 'pack', evhd1, '--name', 'lab', '--version', '1', '--out', out, '--keys', keys]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /^medv: refusing to overwrite .*lab_1\.ckm .*\[EEXIST\]\n$/);
    // bad name and version
    assert.equal(runMedv(['image', 'pack', evhd1, '--name', '../x', '--version', '1', '--out', out, '--keys', keys]).code, 2);
    assert.equal(runMedv(['image', 'pack', evhd1, '--name', 'x', '--version', 'one', '--out', out, '--keys', keys]).code, 2);
    // the wrong key-encryption key
    r = runMedv(['image', 'verify', idx, '--keys', keys], otherHostKey);
    assert.equal(r.code, 4);
    assert.match(r.stderr, /\[EBADKEY\]/);
    // a tampered index
    const bad = join(t.path, 'bad');
    run('mkdir', [bad]);
    copyFileSync(join(out, 'lab_1.ckm'), join(bad, 'lab_1.ckm'));
    const buf = readFileSync(idx);
    buf[130] ^= 1;
    writeFileSync(join(bad, 'lab_1.ckm.index'), buf);
    r = runMedv(['image', 'verify', join(bad, 'lab_1.ckm.index'), '--keys', keys, '--json']);
    assert.equal(r.code, 5);
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1);
    assert.match(r.stderr, /signature does not verify .*\[ESIGNATURE\]/);
    assert.equal(JSON.parse(r.stdout).error.code, 'ESIGNATURE');
    // a damaged block
    const pack = readFileSync(join(out, 'lab_1.ckm'));
    pack[pack.length - 5] ^= 0x80;
    writeFileSync(join(bad, 'lab_1.ckm'), pack);
    writeFileSync(join(bad, 'lab_1.ckm.index'), readFileSync(idx));
    r = runMedv(['image', 'verify', join(bad, 'lab_1.ckm.index'), '--keys', keys]);
    assert.equal(r.code, 5);
    assert.match(r.stderr, /lab_1\.ckm, offset \d+\) \[EBADBLOCK\]/);
    // no key folder
    r = runMedv(['image', 'verify', idx, '--keys', join(t.path, 'nokeys')]);
    assert.equal(r.code, 4);
    assert.deepEqual(readdirSync(out).filter((f) => f.includes('.tmp')), []);
  });
});
