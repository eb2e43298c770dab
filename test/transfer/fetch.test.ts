/**
 * `medv image fetch` against a real nginx (and a server that ignores Range), judged by what a
 * user sees: the disk's content (`medv disk convert` + `qemu-img compare` with the source) and the
 * bytes and requests nginx's access log records, against `zsync` on the same update and server.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, createReadStream, linkSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { tempDir } from '../helpers/cli.js';
import { type Nginx, startNginx } from '../helpers/nginx.js';
import { type Repo, makeRepo, medvAsync, zstdAlone } from './fixture.js';
import { DiskSeed } from '../../src/transfer/seeds.js';
import { fetchImage } from '../../src/transfer/fetch.js';
import { FETCH_IN_FLIGHT_BYTES } from '../../src/transfer/inflight.js';
import { MULTI_RANGE } from '../../src/transfer/plan.js';
import { native } from '../../src/native.js';

describe('transfer: medv image fetch over HTTP', function () {
  this.timeout(120_000);
  const t = tempDir('fetch');
  let r: Repo;
  let nginx: Nginx;
  const multi = { bytes: 0, requests: 0 };

  before(async () => {
    r = makeRepo(t.path, 48, 0.5, 41);
    // zsync's side of the same update: v2 raw and its control file, served by the same nginx
    copyFileSync(r.v2, join(r.repo, 'v2.raw'));
    const z = spawnSync('zsyncmake', ['-b', '4096', '-o', join(r.repo, 'v2.raw.zsync'), '-u', 'v2.raw', join(r.repo, 'v2.raw')], { encoding: 'utf8' });
    assert.equal(z.status, 0, z.stderr);
    nginx = await startNginx(join(t.path, 'nginx'), r.repo);
  });
  after(async () => {
    await nginx?.stop();
    await t.cleanup();
  });

  it('fetches v1 from nginx into an .evhd equal to the source disk (qemu-img compare)', () => {
    const out = join(t.path, 'v1.evhd');
    const res = r.medv(['image', 'fetch', nginx.url('lab_1.ckm.index'), '--out', out, '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.ok(r.sameAs(out, r.v1), 'fetched v1 differs from the source');
    const j = JSON.parse(res.stdout);
    assert.equal(j.blocksFromSeeds, 0);
    // everything came through nginx: the log saw at least the pack's size
    assert.ok(nginx.bytes((u) => u === '/lab_1.ckm') >= statSync(join(r.repo, 'lab_1.ckm')).size - 64);
    // nothing of the partial output is left; the key file and the index copy sit beside the disk
    assert.deepEqual(readdirSync(t.path).filter((n) => n.startsWith('.v1.evhd')), []);
    assert.ok(statSync(join(t.path, 'v1.enc')).isFile());
  });

  it('holds at most inFlightBytes of repository data at once (a request waits for room), and still fetches a correct disk when the bound is below one request', async () => {
    const kek = () => ({ kind: 'hostkey' as const, keyFile: r.hostKey });
    const fetchWith = async (name: string, inFlightBytes?: number) => {
      const out = join(t.path, 'inflight', `${name}.evhd`);
      mkdirSync(join(t.path, 'inflight'), { recursive: true });
      const res = await fetchImage({ source: nginx.url('lab_1.ckm.index'), out, keyDir: r.keys, kek, cacheDir: join(t.path, 'inflight', 'cache'), inFlightBytes });
      assert.ok(r.sameAs(out, r.v1), `${name}: fetched v1 differs from the source`);
      assert.ok(res.blocksFromNetwork > 0 && res.maxInFlightBytes > 0, JSON.stringify(res));
      return res;
    };
    // the default bound, and one of two requests' worth: 4 requests of up to 128 KiB would hold 512 KiB
    const byDefault = await fetchWith('default');
    assert.ok(byDefault.maxInFlightBytes <= FETCH_IN_FLIGHT_BYTES, `${byDefault.maxInFlightBytes} bytes in flight, bound ${FETCH_IN_FLIGHT_BYTES}`);
    const two = 2 * MULTI_RANGE.maxBytes;
    const bounded = await fetchWith('two-requests', two);
    assert.ok(bounded.maxInFlightBytes <= two, `${bounded.maxInFlightBytes} bytes in flight, bound ${two}`);
    // below one request: each request goes alone, and the fetch completes
    const tiny = await fetchWith('tiny', 4096);
    assert.ok(tiny.maxInFlightBytes <= MULTI_RANGE.maxBytes, `${tiny.maxInFlightBytes} bytes in flight with a 4 KiB bound: more than one request at a time`);
    console.log(`      bytes in flight at most: ${byDefault.maxInFlightBytes} (default bound), ${bounded.maxInFlightBytes} (bound ${two}), ${tiny.maxInFlightBytes} (bound 4096)`);
  });

  it('reads a disk seed without mapping its file: none of its pages stay in the process\'s RSS (a 1 GiB update peaked at ~860 MiB)', async function () {
    if (!native.available) this.skip(); // the fallback never maps
    const rssFile = () => Number(/RssFile:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;
    const seed = new DiskSeed(join(t.path, 'v1.evhd'), () => ({ kind: 'hostkey', keyFile: r.hostKey }), { path: 'v1.evhd', kind: 'disk', blocks: 0 });
    try {
      const size = (await seed.device()).size;
      const before = rssFile();
      const buf = Buffer.alloc(2 << 20);
      for (let block = 0; block * 4096 < size; block += buf.length / 4096) await seed.readInto(buf, block);
      const grew = rssFile() - before;
      assert.ok(grew < 4 << 20, `RssFile grew by ${(grew / 1048576).toFixed(1)} MiB reading the ${size >> 20} MiB seed`);
    } finally {
      await seed.close();
    }
  });

  it('fetches from a local path too (no HTTP)', () => {
    const out = join(t.path, 'local-v2.evhd');
    nginx.resetLog();
    const res = r.medv(['image', 'fetch', join(r.repo, 'lab_2.ckm.index'), '--out', out, '--keys', r.keys]);
    assert.equal(res.code, 0, res.stderr);
    assert.ok(r.sameAs(out, r.v2));
    assert.equal(nginx.log().length, 0);
  });

  it('updates v1 -> v2 with v1 as seed: <= 0.35x the bytes zsync moves, <= 1.3x the changed blocks zstd-compressed alone', () => {
    // its own folder: no index of an earlier v2 fetch beside it, only v1's (beside the seed)
    mkdirSync(join(t.path, 'upd'));
    const out = join(t.path, 'upd', 'v2.evhd');
    nginx.resetLog();
    const res = r.medv(['image', 'fetch', nginx.url('lab_2.ckm.index'), '--out', out, '--seed', join(t.path, 'v1.evhd'), '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.ok(r.sameAs(out, r.v2), 'fetched v2 differs from the source');
    const ours = nginx.bytes();
    multi.bytes = ours;
    multi.requests = nginx.log().length;

    nginx.resetLog();
    const zdir = join(t.path, 'zsync');
    mkdirSync(zdir);
    const z = spawnSync('zsync', ['-q', '-i', r.v1, '-o', join(zdir, 'v2.raw'), nginx.url('v2.raw.zsync')], { cwd: zdir, encoding: 'utf8' });
    assert.equal(z.status, 0, z.stderr);
    const zs = nginx.bytes();
    const zreq = nginx.log().length;
    const alone = zstdAlone(r.v2, r.changed, join(t.path, 'alone'));
    const j = JSON.parse(res.stdout);
    console.log(`      medv: ${ours} B in ${multi.requests} requests (index records ${j.indexRecordsFetched} fetched, ${j.indexRecordsReused} reused); zsync: ${zs} B in ${zreq} requests; ${r.changed.length} changed blocks zstd alone: ${alone} B; medv/zsync ${(ours / zs).toFixed(3)}, medv/alone ${(ours / alone).toFixed(3)}`);
    assert.ok(j.blocksFromSeeds > 0.9 * j.blocks, 'the seed gave most blocks');
    assert.ok(ours <= 0.35 * zs, `medv moved ${ours} bytes, zsync ${zs}`);
    assert.ok(ours <= 1.3 * alone, `medv moved ${ours} bytes, the changed blocks compressed alone are ${alone}`);
  });

  it('a localized update (two blocks of one run): only that run\'s record of the index is fetched, never the whole table', () => {
    const v3 = join(t.path, 'v3.raw');
    const data = readFileSync(r.v2);
    const run = data.findIndex((x) => x !== 0) >> 20; // the first run with data
    randomBytes(8192).copy(data, run * 1048576 + 40 * 4096);
    writeFileSync(v3, data);
    const p = r.medv(['image', 'pack', v3, '--name', 'lab', '--version', '3', '--out', r.repo, '--keys', r.keys]);
    assert.equal(p.code, 0, p.stderr);
    nginx.resetLog();
    const out = join(t.path, 'v3.evhd');
    const res = r.medv(['image', 'fetch', nginx.url('lab_3.ckm.index'), '--out', out, '--seed', join(t.path, 'upd', 'v2.evhd'), '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.ok(r.sameAs(out, v3));
    const j = JSON.parse(res.stdout);
    const indexBytes = nginx.bytes((u) => u === '/lab_3.ckm.index');
    const indexSize = statSync(join(r.repo, 'lab_3.ckm.index')).size;
    console.log(`      localized update: index records ${j.indexRecordsFetched} fetched, ${j.indexRecordsReused} reused; ${indexBytes} B of the ${indexSize} B index; ${nginx.bytes()} B in all`);
    assert.ok(j.indexRecordsFetched <= 2, `${j.indexRecordsFetched} records fetched`); // the changed run's, and those that came with the header
    assert.ok(j.indexRecordsReused > 5);
    assert.ok(indexBytes < 0.2 * indexSize, `${indexBytes} bytes of a ${indexSize}-byte index`);
  });

  it('against nginx with max_ranges 1: <= 1.1x the bytes of the multi-range run, in <= 16 requests', async () => {
    const single = await startNginx(join(t.path, 'nginx-single'), r.repo, { maxRanges: 1 });
    try {
      mkdirSync(join(t.path, 'single'));
      const out = join(t.path, 'single', 'v2.evhd');
      const res = r.medv(['image', 'fetch', single.url('lab_2.ckm.index'), '--out', out, '--seed', join(t.path, 'v1.evhd'), '--keys', r.keys]);
      assert.equal(res.code, 0, res.stderr);
      assert.ok(r.sameAs(out, r.v2));
      const bytes = single.bytes();
      const requests = single.log().length;
      console.log(`      max_ranges 1: ${bytes} B in ${requests} requests (multi-range: ${multi.bytes} B in ${multi.requests}); ratio ${(bytes / multi.bytes).toFixed(3)}`);
      assert.ok(multi.bytes > 0);
      assert.ok(bytes <= 1.1 * multi.bytes, `${bytes} bytes against ${multi.bytes}`);
      assert.ok(requests <= 16, `${requests} requests`);
      assert.ok(single.log().every((l) => l.status !== 200 || l.method === 'HEAD'), 'no whole file was sent');
    } finally {
      await single.stop();
    }
  });

  it('a server that answers 200 (the whole file) to every Range still gives a correct disk', async () => {
    let requests = 0;
    const server: Server = createServer((req, res) => {
      requests++;
      const p = join(r.repo, decodeURIComponent(new URL(req.url!, 'http://x').pathname));
      let size: number;
      try { size = statSync(p).size; } catch { res.writeHead(404).end(); return; }
      res.writeHead(200, { 'content-length': size, 'content-type': 'application/octet-stream' });
      if (req.method === 'HEAD') { res.end(); return; }
      createReadStream(p).pipe(res);
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    try {
      const port = (server.address() as { port: number }).port;
      const out = join(t.path, 'v2-norange.evhd');
      const res = await medvAsync(r, ['image', 'fetch', `http://127.0.0.1:${port}/lab_2.ckm.index`, '--out', out, '--seed', join(t.path, 'v1.evhd'), '--keys', r.keys]);
      assert.equal(res.code, 0, res.stderr);
      assert.ok(r.sameAs(out, r.v2));
      assert.ok(requests > 0);
    } finally {
      await new Promise((res) => server.close(res));
    }
  });

  it('a seed holding every other block: the rest comes in multi-range requests (206 multipart/byteranges)', () => {
    const half = join(t.path, 'half.raw');
    const data = readFileSync(r.v1);
    for (let off = 4096; off < data.length; off += 8192) data.fill(0, off, off + 4096);
    writeFileSync(half, data);
    nginx.resetLog();
    const out = join(t.path, 'v1-half.evhd');
    const res = r.medv(['image', 'fetch', nginx.url('lab_1.ckm.index'), '--out', out, '--seed', half, '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.ok(r.sameAs(out, r.v1));
    const j = JSON.parse(res.stdout);
    assert.ok(j.blocksFromSeeds > 0.4 * j.blocks && j.blocksFromNetwork > 0.4 * j.blocks, JSON.stringify(j));
    const multiRange = nginx.log().filter((l) => l.uri === '/lab_1.ckm' && l.status === 206 && l.range.includes(','));
    assert.ok(multiRange.length >= 1, 'no multi-range request');
    // about half the pack moved, not all of it
    const packBytes = nginx.bytes((u) => u === '/lab_1.ckm');
    assert.ok(packBytes < 0.75 * statSync(join(r.repo, 'lab_1.ckm')).size, `${packBytes} bytes of the pack`);
  });

  it('with the packs prestaged as a seed folder, no block bytes cross the network', () => {
    const pre = join(t.path, 'PrestagedImages');
    mkdirSync(pre);
    for (const n of readdirSync(r.repo)) if (n.startsWith('lab_')) linkSync(join(r.repo, n), join(pre, n));
    nginx.resetLog();
    const out = join(t.path, 'v2-prestaged.evhd');
    const res = r.medv(['image', 'fetch', nginx.url('lab_2.ckm.index'), '--out', out, '--seed', pre, '--keys', r.keys, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.ok(r.sameAs(out, r.v2));
    const log = nginx.log();
    console.log(`      prestaged: ${log.length} requests, ${nginx.bytes()} B, all for ${[...new Set(log.map((l) => l.uri))].join(' ')}`);
    assert.equal(nginx.bytes((u) => u.endsWith('.ckm')), 0);
    assert.ok(log.every((l) => l.uri === '/lab_2.ckm.index'));
  });
});
