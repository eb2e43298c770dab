/**
 * A seed's block ids are kept by the disk's identity and content generation: a disk a fetch
 * published is never hashed (its ids come from its index), a disk changed since (even with its
 * mtime put back) is hashed again, and ids that lie (a stale or forged cache) cost only time: every
 * block read from a seed is checked against its id before it is written. Judged through the CLI's
 * JSON and `qemu-img compare`.
 */
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { KekSource } from '../../src/crypto/index.js';
import { openDisk } from '../../src/layers/open.js';
import { keyTag, seedStamp, writeSeedCache } from '../../src/transfer/seedcache.js';
import { openImageKeys } from '../../src/pack/keys.js';
import { run, tempDir } from '../helpers/cli.js';
import { type Repo, makeRepo } from './fixture.js';

describe('transfer: seed block ids, cached by identity and content generation', function () {
  this.timeout(180_000);
  const t = tempDir('seedcache');
  let r: Repo;
  let n = 0;
  const kek = (): KekSource => ({ kind: 'hostkey', keyFile: r.hostKey });
  const cacheDir = () => join(r.cache, 'medv', 'seeds');

  /** `medv image fetch` of v2 with `seed`, into a folder of its own; the JSON result. */
  const update = (seed: string) => {
    const out = join(t.path, `v2-${n++}.evhd`);
    const res = r.medv(['image', 'fetch', join(r.repo, 'lab_2.ckm.index'), '--out', out, '--seed', seed, '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.ok(r.sameAs(out, r.v2), 'the updated disk differs from v2');
    return JSON.parse(res.stdout);
  };

  before(() => {
    r = makeRepo(t.path, 16, 0.5, 81);
    const res = r.medv(['image', 'fetch', join(r.repo, 'lab_1.ckm.index'), '--out', join(t.path, 'v1.evhd'), '--keys', r.keys]);
    assert.equal(res.code, 0, res.stderr);
  });
  after(() => t.cleanup());

  it('a disk a fetch published is never hashed: its ids were cached from its index', () => {
    assert.equal(readdirSync(cacheDir()).filter((f) => f.endsWith('.ids')).length, 1, 'the fetch of v1 cached its ids');
    const j = update(join(t.path, 'v1.evhd'));
    assert.equal(j.seeds[0].cached, true);
    assert.ok(j.blocksFromSeeds > 0.9 * j.blocks, JSON.stringify(j));
  });

  it('a changed disk is hashed again, even with its mtime put back (ctime is part of the generation)', async () => {
    const v1 = join(t.path, 'v1.evhd');
    const ref = join(t.path, 'v1.times');
    run('touch', ['-r', v1, ref]); // its timestamps, to the nanosecond
    const before = statSync(v1, { bigint: true });
    const d = await openDisk(v1, { kek });
    try {
      await d.device.write(0, Buffer.alloc(4096, 0x5a)); // block 0 is not what the ids say any more
      await d.device.flush();
    } finally {
      await d.device.close();
    }
    run('touch', ['-r', ref, v1]);
    assert.equal(statSync(v1, { bigint: true }).mtimeNs, before.mtimeNs);
    const j = update(v1);
    assert.equal(j.seeds[0].cached, false, 'the stale ids were taken');
    assert.equal(update(v1).seeds[0].cached, true, 'hashed once, then cached');
  });

  it('ids that lie (a forged cache for the seed as it is now) only cost time: no block is taken unchecked', async () => {
    const v1 = join(t.path, 'v1.evhd');
    const keys = await openImageKeys(r.keys, 'lab', kek);
    try {
      // block i said to hold the id of block i + 1, and the other way round: every in-place match is wrong
      const honest = update(v1);
      const ids = Buffer.alloc(16 * 4096);
      const blocks = new Uint32Array(4096);
      for (let i = 0; i < 4096; i++) { ids.fill(i & 0xff, i * 16, i * 16 + 15); ids[i * 16 + 15] = i >> 8; blocks[i] = i; }
      assert.ok(writeSeedCache(cacheDir(), v1, seedStamp(v1), keyTag(keys.idKey), { ids, blocks, count: 4096 }));
      const j = update(v1);
      assert.equal(j.seeds[0].cached, true);
      assert.equal(j.blocksFromSeeds, 0, 'a block matched an id it does not have');
      assert.ok(j.blocksFromNetwork >= honest.blocksFromNetwork + honest.blocksFromSeeds, JSON.stringify(j));
    } finally {
      keys.dispose();
    }
  });
});
