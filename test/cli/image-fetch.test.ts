/**
 * `medv image fetch` as a user runs it (local repository paths; HTTP is in test/transfer):
 * --help, an existing output refused before anything is fetched, --dry-run writes nothing,
 * --no-trim ignores seeds, a bad seed is reported and skipped, and the seed id cache (keyed ids
 * only, refreshed when the seed changes).
 */
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { containsPattern, runMedv, tempDir } from '../helpers/cli.js';
import { type Repo, makeRepo } from '../transfer/fixture.js';

describe('cli: medv image fetch', function () {
  this.timeout(120_000);
  const t = tempDir('cli-fetch');
  let r: Repo;
  let index1: string;
  let index2: string;
  const v1 = () => join(t.path, 'v1.evhd');

  before(() => {
    r = makeRepo(t.path, 16, 0.5, 71);
    index1 = join(r.repo, 'lab_1.ckm.index');
    index2 = join(r.repo, 'lab_2.ckm.index');
  });
  after(() => t.cleanup());

  it('--help teaches: what it does, seeds, exit status, examples', () => {
    const res = runMedv(['image', 'fetch', '--help']);
    assert.equal(res.code, 0);
    for (const re of [/--seed/, /--dry-run/, /--no-trim/, /Exit status/, /Examples:/, /PrestagedImages/]) assert.match(res.stdout, re);
  });

  it('fetches v1, then refuses an existing output (EEXIST, 3) before asking the repository anything', () => {
    let res = r.medv(['image', 'fetch', index1, '--out', v1(), '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.ok(r.sameAs(v1(), r.v1));
    res = r.medv(['image', 'fetch', join(t.path, 'nowhere.ckm.index'), '--out', v1(), '--keys', r.keys]);
    assert.equal(res.code, 3);
    assert.match(res.stderr, /^medv: file exists: .*v1\.evhd.*\[EEXIST\]\n$/);
  });

  it('--dry-run prints the bytes and requests it would need and writes nothing', () => {
    const out = join(t.path, 'dry.evhd');
    const before = readdirSync(t.path).filter((n) => n !== 'cache').sort();
    const res = r.medv(['image', 'fetch', index2, '--out', out, '--seed', v1(), '--keys', r.keys, '--dry-run', '--json']);
    assert.equal(res.code, 0, res.stderr);
    const j = JSON.parse(res.stdout);
    assert.equal(j.dryRun, true);
    assert.ok(j.blocksFromSeeds > 0.9 * j.blocks);
    assert.ok(j.wouldFetchBytes > 0 && j.wouldFetchBytes < 0.2 * j.blocks * 4096, String(j.wouldFetchBytes));
    assert.ok(j.wouldRequests >= 1);
    assert.deepEqual(readdirSync(t.path).filter((n) => n !== 'cache').sort(), before); // the seed id cache may appear
  });

  it('a seed that cannot be read is reported and skipped; --no-trim ignores seeds', () => {
    const junk = join(t.path, 'junk.evhd');
    writeFileSync(junk, 'not a disk');
    let res = r.medv(['image', 'fetch', index2, '--out', join(t.path, 'a.evhd'), '--seed', junk, '--seed', v1(), '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, /warning: seed .*junk\.evhd skipped/);
    const a = JSON.parse(res.stdout);
    assert.ok(a.blocksFromSeeds > 0.9 * a.blocks);
    assert.ok(r.sameAs(join(t.path, 'a.evhd'), r.v2));
    res = r.medv(['image', 'fetch', index2, '--out', join(t.path, 'b.evhd'), '--seed', v1(), '--no-trim', '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    const b = JSON.parse(res.stdout);
    assert.equal(b.blocksFromSeeds, 0);
    assert.equal(b.blocksFromNetwork, b.blocks);
  });

  it('caches a disk seed\'s block ids (keyed ids only), and hashes it again only when it changes', () => {
    const seedsDir = join(r.cache, 'medv', 'seeds');
    const run = (out: string) => {
      const res = r.medv(['image', 'fetch', index2, '--out', join(t.path, out), '--seed', v1(), '--keys', r.keys, '--json']);
      assert.equal(res.code, 0, res.stderr);
      return JSON.parse(res.stdout).seeds.find((s: { path: string }) => s.path === v1());
    };
    assert.equal(run('c1.evhd').cached, true); // hashed by the runs above
    const files = readdirSync(seedsDir);
    assert.ok(files.length >= 1);
    // no plaintext: a run of the disk's first non-zero block is in no cache file
    const fd = openSync(r.v1, 'r');
    const block = Buffer.alloc(4096);
    for (let off = 0; ; off += 4096) {
      readSync(fd, block, 0, 4096, off);
      if (block.some((x) => x !== 0)) break;
    }
    closeSync(fd);
    for (const f of files) assert.ok(!containsPattern(join(seedsDir, f), block.subarray(0, 64), 32));
    const now = new Date();
    utimesSync(v1(), now, new Date(now.getTime() + 5000));
    assert.equal(run('c2.evhd').cached, false);
    assert.equal(run('c3.evhd').cached, true);
    assert.ok(existsSync(join(t.path, 'c3.evhd')));
  });
});
