/**
 * Publishing versions to a repository and retiring old ones, as a user does it: `medv image pack`,
 * `medv image upload` to a `medv serve` child process, `du` on DIR/images, `medv image prune`,
 * then the kept version downloaded with curl and checked by `medv image verify`.
 * Issue 8, acceptance 4: publishing v2 grows the repository by <= 1.5x the compressed size of v2's
 * new blocks; after `image prune --keep 1`, v2 still fetches correctly from scratch.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, runMedv as runMedvRaw, tempDir } from '../helpers/cli.js';
import { makeUsrDisk, mutateDisk } from '../pack/images.js';
import { zstdCompress } from '../../src/formats/ckm/index.js';
import { curl, curlDownload, runMedvAsync, startServe, type ServeProcess } from '../server/helpers.js';

const MiB = 1048576;
const du = (dir: string) => Number(run('du', ['-s', '-B1', dir]).split('\t')[0]);

describe('cli: medv image upload / prune with medv serve', function () {
  this.timeout(120_000);
  const t = tempDir('cli-image-repo');
  const hostKey = join(t.path, 'host.key');
  const keys = join(t.path, 'keys');
  const P = join(t.path, 'PackedImages');
  const root = join(t.path, 'repo');
  const images = join(root, 'images');
  const raw1 = join(t.path, 'v1.raw');
  const raw2 = join(t.path, 'v2.raw');
  const runMedv = (args: string[]) => runMedvRaw([...args, '--host-key', hostKey], { MEDV_PASSPHRASE: '' });
  let changed: number[] = [];
  let s: ServeProcess;
  const upload = async (files: string[]) => {
    const r = await runMedvAsync(['image', 'upload', ...files.map((f) => join(P, f)), '--server', s.url, '--token-file', s.adminTokenFile, '--state-dir', join(t.path, 'state'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  /** Download an index and the packs it needs from the server into a fresh folder, then verify there. */
  const fetchAndVerify = (version: number, packs: number[]) => {
    const dst = join(t.path, `fetched-${version}-${randomBytes(4).toString('hex')}`);
    mkdirSync(dst);
    for (const f of [`lab_${version}.ckm.index`, ...packs.map((v) => `lab_${v}.ckm`)]) {
      assert.equal(curlDownload(`${s.url}/images/${f}`, join(dst, f)), 200, f);
    }
    return runMedv(['image', 'verify', join(dst, `lab_${version}.ckm.index`), '--keys', keys, '--json']);
  };

  /** The fetched .evhd read back through `medv disk convert`, compared with the raw source by `qemu-img compare`. */
  let cmp = 0;
  const sameAs = (evhd: string, raw: string) => {
    const out = join(t.path, `cmp-${cmp++}.raw`);
    const c = runMedv(['disk', 'convert', evhd, out]);
    assert.equal(c.code, 0, c.stderr);
    const q = spawnSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw, out]);
    rmSync(out, { force: true });
    return q.status === 0;
  };

  before(async () => {
    writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
    makeUsrDisk(raw1, 16 * MiB, 0.5, 31);
    copyFileSync(raw1, raw2);
    changed = mutateDisk(raw2, 0.03, 32);
    for (const [disk, v] of [[raw1, '1'], [raw2, '2']]) {
      const r = runMedv(['image', 'pack', disk, '--name', 'lab', '--version', v, '--out', P, '--keys', keys]);
      assert.equal(r.code, 0, r.stderr);
    }
    s = await startServe(root);
  });
  after(async () => {
    if (s) assert.equal(await s.stop(), 0);
    await t.cleanup();
  });

  it('acceptance 4: publishing v2 grows DIR/images by <= 1.5x its new blocks compressed; after prune --keep 1, v2 fetches and verifies from scratch', async () => {
    await upload(['lab_1.ckm', 'lab_1.ckm.index']);
    const before = du(images);
    await upload(['lab_2.ckm.index', 'lab_2.ckm']);
    const growth = du(images) - before;
    // v2's new blocks, each zstd-compressed alone (level 3, as a block store without deltas would)
    const fd = openSync(raw2, 'r');
    let compressed = 0;
    const buf = Buffer.alloc(4096);
    for (const off of changed) {
      readSync(fd, buf, 0, 4096, off);
      compressed += zstdCompress(buf).length;
    }
    closeSync(fd);
    const packBytes = readFileSync(join(images, 'lab_2.ckm')).length;
    const indexBytes = readFileSync(join(images, 'lab_2.ckm.index')).length;
    process.stdout.write(`      v2: ${changed.length} changed blocks, ${compressed} B compressed alone; repository grew ${growth} B (du), lab_2.ckm ${packBytes} B + lab_2.ckm.index ${indexBytes} B; ratio ${(growth / compressed).toFixed(2)}\n`);
    assert.ok(growth > 0);
    assert.ok(growth <= 1.5 * compressed, `grew ${growth} B, 1.5x the new blocks is ${1.5 * compressed} B`);

    // prune: v2's index names pack 1 too (unchanged blocks), so only index 1 goes
    const dry = runMedvRaw(['image', 'prune', images, '--name', 'lab', '--keep', '1', '--dry-run', '--json']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(JSON.parse(dry.stdout).deleted, ['lab_1.ckm.index']);
    assert.deepEqual(readdirSync(images).sort(), ['lab_1.ckm', 'lab_1.ckm.index', 'lab_2.ckm', 'lab_2.ckm.index'], 'dry run deletes nothing');
    const pr = runMedvRaw(['image', 'prune', images, '--name', 'lab', '--keep', '1']);
    assert.equal(pr.code, 0, pr.stderr);
    assert.match(pr.stdout, /deleted lab_1\.ckm\.index/);
    assert.deepEqual(readdirSync(images).sort(), ['lab_1.ckm', 'lab_2.ckm', 'lab_2.ckm.index']);
    assert.equal(curl([`${s.url}/images/lab_1.ckm.index`]).status, 404);
    const v = fetchAndVerify(2, [1, 2]);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(JSON.parse(v.stdout).ok, true);
    // and the client's own way: medv image fetch from scratch, content equal to the packed disk
    const out = join(t.path, 'after-prune-v2.evhd');
    const f = runMedv(['image', 'fetch', `${s.url}/images/lab_2.ckm.index`, '--out', out, '--keys', keys, '--json']);
    assert.equal(f.code, 0, f.stderr);
    assert.ok(sameAs(out, raw2), 'v2 fetched after the prune differs from the disk that was packed');
  });

  it('prune deletes the packs no kept index names, and never a file that is not a pack or index of that image', async () => {
    // v3 stores every block (--no-previous): it names only its own pack
    const r = runMedv(['image', 'pack', raw2, '--name', 'lab', '--version', '3', '--out', P, '--keys', keys, '--no-previous']);
    assert.equal(r.code, 0, r.stderr);
    await upload(['lab_3.ckm', 'lab_3.ckm.index']);
    // bystanders: other names, an unparsable file with a matching name, a pack of another image
    // under this image's name, a newer pack whose index is not there yet
    const other = runMedv(['image', 'pack', raw1, '--name', 'other', '--version', '1', '--out', P, '--keys', keys]);
    assert.equal(other.code, 0, other.stderr);
    copyFileSync(join(P, 'other_1.ckm'), join(images, 'lab_7.ckm'));
    const v4 = runMedv(['image', 'pack', raw1, '--name', 'lab', '--version', '4', '--out', P, '--keys', keys]);
    assert.equal(v4.code, 0, v4.stderr);
    copyFileSync(join(P, 'lab_4.ckm'), join(images, 'lab_4.ckm')); // its index not uploaded yet
    writeFileSync(join(images, 'lab_9.ckm.index'), randomBytes(500));
    writeFileSync(join(images, 'lab_1.ckm.bak'), 'keep me');
    writeFileSync(join(images, 'notes.txt'), 'keep me');
    copyFileSync(join(P, 'other_1.ckm'), join(images, 'other_1.ckm'));
    const before = new Set(readdirSync(images));
    const pr = runMedvRaw(['image', 'prune', images, '--name', 'lab', '--keep', '1', '--json']);
    assert.equal(pr.code, 0, pr.stderr);
    const res = JSON.parse(pr.stdout);
    assert.deepEqual(res.keptVersions, [3]);
    assert.deepEqual(res.deleted.sort(), ['lab_1.ckm', 'lab_2.ckm', 'lab_2.ckm.index']);
    assert.deepEqual(res.skipped.map((x: { file: string }) => x.file).sort(), ['lab_4.ckm', 'lab_7.ckm', 'lab_9.ckm.index']);
    assert.match(res.skipped.find((x: { file: string }) => x.file === 'lab_4.ckm').reason, /newer than the newest index/);
    const after = readdirSync(images).sort();
    assert.deepEqual(after, [...before].filter((f) => !res.deleted.includes(f)).sort());
    for (const f of ['lab_4.ckm', 'lab_7.ckm', 'lab_9.ckm.index', 'lab_1.ckm.bak', 'notes.txt', 'other_1.ckm', 'lab_3.ckm', 'lab_3.ckm.index']) assert.ok(existsSync(join(images, f)), f);
    const v = fetchAndVerify(3, [3]);
    assert.equal(v.code, 0, v.stderr);
    // argument errors: one line, exit 2, nothing deleted
    for (const args of [['--keep', '0'], ['--keep', 'x'], ['--keep', '1', '--name', '../lab']]) {
      const e = runMedvRaw(['image', 'prune', images, '--name', 'lab', ...args]);
      assert.equal(e.code, 2, args.join(' '));
      assert.equal(e.stderr.split('\n').filter(Boolean).length, 1);
    }
    assert.deepEqual(readdirSync(images).sort(), after);
  });

  it('--help teaches upload, prune and serve', () => {
    assert.match(runMedvRaw(['image', 'upload', '--help']).stdout, /Examples:[\s\S]*--token-file/);
    assert.match(runMedvRaw(['image', 'prune', '--help']).stdout, /Examples:[\s\S]*--dry-run/);
    assert.match(runMedvRaw(['serve', '--help']).stdout, /admin token[\s\S]*Examples:/);
  });

  // Last: it publishes v1's index again, which the tests above expect gone.
  it('acceptance 1 with medv serve: v1 fetched from scratch, then v2 with v1 as seed, each equal to the packed disk', async () => {
    // Published again (identical bytes are accepted), so this holds whether or not a prune retired v1.
    await upload(['lab_1.ckm', 'lab_1.ckm.index', 'lab_2.ckm', 'lab_2.ckm.index']);
    const v1 = join(t.path, 'served-v1.evhd');
    const a = runMedv(['image', 'fetch', `${s.url}/images/lab_1.ckm.index`, '--out', v1, '--keys', keys, '--json']);
    assert.equal(a.code, 0, a.stderr);
    assert.ok(sameAs(v1, raw1), 'v1 fetched from medv serve differs from the packed disk');
    const requestsBefore = s.log.length;
    const v2 = join(t.path, 'served-v2.evhd');
    const b = runMedv(['image', 'fetch', `${s.url}/images/lab_2.ckm.index`, '--out', v2, '--seed', v1, '--keys', keys, '--json']);
    assert.equal(b.code, 0, b.stderr);
    assert.ok(sameAs(v2, raw2), 'v2 fetched with v1 as seed differs from the packed disk');
    const sent = s.log.slice(requestsBefore).reduce((n, e) => n + e.bytes, 0);
    const packs = readFileSync(join(images, 'lab_1.ckm')).length + readFileSync(join(images, 'lab_2.ckm')).length;
    assert.ok(JSON.parse(b.stdout).blocksFromSeeds > 0, 'the seed lent no block');
    assert.ok(sent < packs / 4, `the update moved ${sent} B from medv serve; the packs hold ${packs} B`);
  });
});
