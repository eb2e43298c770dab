/**
 * Host data seeds (src/transfer/hostseeds.ts) as a library: the walk's rules and bounds, the id
 * cache's invalidation, and a file or folder swapped after the walk. Through the CLI with a real
 * server: test/workspace/sources.test.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { HostDataSeed } from '../../src/transfer/hostseeds.js';
import type { SeedReport } from '../../src/transfer/seeds.js';
import { tempDir } from '../helpers/cli.js';

describe('transfer: host data seeds', function () {
  this.timeout(60_000);
  const t = tempDir('hostseeds');
  const data = () => join(t.path, 'data');
  const cache = () => join(t.path, 'cache');
  const idKey = randomBytes(32);
  const scan = async (limits: Parameters<typeof HostDataSeed.scan>[1]['limits'] = {}) => {
    const report: SeedReport = { path: data(), kind: 'host', blocks: 0 };
    return { seed: await HostDataSeed.scan(data(), { idKey, cacheDir: cache(), report, limits }), report };
  };
  const big = randomBytes(100 * 4096 + 123);

  before(() => {
    fs.mkdirSync(join(data(), 'a', 'b'), { recursive: true });
    fs.writeFileSync(join(data(), 'top.bin'), big);
    fs.writeFileSync(join(data(), 'a', 'mid.bin'), randomBytes(20 * 4096));
    fs.writeFileSync(join(data(), 'a', 'b', 'deep.txt'), 'deep\n');
    fs.writeFileSync(join(data(), 'empty'), '');
    fs.symlinkSync(join(data(), 'a'), join(data(), 'link-to-dir'));
    fs.symlinkSync('/etc/hostname', join(data(), 'link-to-file'));
    assert.equal(spawnSync('mkfifo', [join(data(), 'fifo')]).status, 0);
  });
  after(() => t.cleanup());

  it('regular files only: links (to files or folders) and FIFOs are skipped, empty files carry nothing; blocks read back are the file\'s', async () => {
    const { seed, report } = await scan();
    assert.deepEqual({ files: report.files, hashed: report.hashedFiles, cached: report.cachedFiles, skipped: report.skipped }, { files: 3, hashed: 3, cached: 0, skipped: 3 });
    const top = seed.files.findIndex((f) => f.name === 'top.bin');
    assert.equal(seed.files[top].ids.count, 101);
    assert.ok((await seed.read(top, 7)).equals(big.subarray(7 * 4096, 8 * 4096)));
    const tail = await seed.read(top, 100);
    assert.ok(tail.subarray(0, 123).equals(big.subarray(100 * 4096)) && tail.subarray(123).every((b) => b === 0), 'the last block is zero-padded');
    seed.close();
  });

  it('the id cache: a second walk hashes only the small file; a file rewritten at the same size is hashed again', async () => {
    let { report } = await scan();
    assert.deepEqual([report.hashedFiles, report.cachedFiles], [1, 2]);
    fs.writeFileSync(join(data(), 'a', 'mid.bin'), randomBytes(20 * 4096));
    ({ report } = await scan());
    assert.deepEqual([report.hashedFiles, report.cachedFiles], [2, 1]);
  });

  it('bounds: files, depth and bytes stop the walk with the reason', async () => {
    assert.match((await scan({ maxFiles: 2 })).report.limited ?? '', /stopped after 2 files/);
    const shallow = await scan({ maxDepth: 0 });
    assert.equal(shallow.report.files, 1);
    assert.match((await scan({ maxBytes: 4096 })).report.limited ?? '', /more than 4096 bytes/);
  });

  it('bounds: entries of any kind (empty files, folders, links: none of them a file counted) stop the walk too, a huge folder included', async () => {
    const many = join(t.path, 'many');
    fs.mkdirSync(join(many, 'dirs'), { recursive: true });
    for (let i = 0; i < 40; i++) fs.writeFileSync(join(many, `empty-${i}`), '');
    for (let i = 0; i < 40; i++) fs.mkdirSync(join(many, 'dirs', `d${i}`));
    const report: SeedReport = { path: many, kind: 'host', blocks: 0 };
    await HostDataSeed.scan(many, { idKey, cacheDir: cache(), report, limits: { maxFiles: 10, maxEntries: 30 } });
    assert.match(report.limited ?? '', /stopped after 30 entries/);
    assert.equal(report.files, 0);
  });

  it('a file swapped after the walk is not read (ECHANGED), nor one behind a folder swapped for a link (EUNSAFE)', async () => {
    const { seed } = await scan();
    const mid = seed.files.findIndex((f) => f.name === 'mid.bin');
    const deep = seed.files.findIndex((f) => f.name === 'deep.txt');
    fs.writeFileSync(join(t.path, 'other'), randomBytes(20 * 4096));
    fs.renameSync(join(t.path, 'other'), join(data(), 'a', 'mid.bin'));
    await assert.rejects(seed.read(mid, 0), (e: Error & { code?: string }) => e.code === 'ECHANGED');
    fs.renameSync(join(data(), 'a', 'b'), join(t.path, 'b-moved'));
    fs.symlinkSync(join(t.path, 'b-moved'), join(data(), 'a', 'b'));
    await assert.rejects(seed.read(deep, 0), (e: Error & { code?: string }) => e.code === 'EUNSAFE');
    seed.close();
  });
});
