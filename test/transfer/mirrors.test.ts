/**
 * Mirrors as fetchImage sees them (./src/transfer/mirrors.ts): every way a mirror can fail moves
 * the pieces it did not deliver to the next source with one warning, and the disk is the image.
 * The workspace path (policy, real medv serve) is test/workspace/mirrors.test.ts.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, truncateSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fetchImage } from '../../src/transfer/index.js';
import { checkMirrorUrls } from '../../src/transfer/mirrors.js';
import { tempDir } from '../helpers/cli.js';
import { listener } from '../helpers/net.js';
import { type Nginx, startNginx } from '../helpers/nginx.js';
import { type Repo, makeRepo } from './fixture.js';

describe('transfer: mirrors', function () {
  this.timeout(120_000);
  const t = tempDir('fetch-mirrors');
  let r: Repo;
  let origin: Nginx;
  let mirror: Nginx;

  before(async () => {
    r = makeRepo(t.path, 16, 0.5, 71);
    origin = await startNginx(join(t.path, 'nginx-origin'), r.repo);
    // one mirror host: a synced copy at /good/, a truncated copy at /short/
    const m = join(t.path, 'mirror');
    for (const d of ['good', 'short']) mkdirSync(join(m, d), { recursive: true });
    for (const n of ['lab_1.ckm', 'lab_2.ckm']) copyFileSync(join(r.repo, n), join(m, 'good', n));
    copyFileSync(join(r.repo, 'lab_1.ckm'), join(m, 'short', 'lab_1.ckm'));
    truncateSync(join(m, 'short', 'lab_1.ckm'), readFileSync(join(r.repo, 'lab_1.ckm')).length - 1000);
    mirror = await startNginx(join(t.path, 'nginx-mirror'), m);
  });
  after(async () => {
    await origin?.stop();
    await mirror?.stop();
    await t.cleanup();
  });

  it('a redirect, a stalled mirror and a truncated copy each cost one warning; the next mirror serves the pack, the server none of it', async () => {
    const redirect = createServer((_req, res) => { res.writeHead(302, { location: mirror.url('good/lab_1.ckm') }); res.end(); });
    await new Promise<void>((res) => redirect.listen(0, '127.0.0.1', res));
    const stalled = await listener('127.0.0.1');
    const warnings: string[] = [];
    try {
      const out = join(t.path, 'v1.evhd');
      const res = await fetchImage({
        source: origin.url('lab_1.ckm.index'), out, keyDir: r.keys, kek: () => ({ kind: 'hostkey', keyFile: r.hostKey }), cacheDir: r.cache,
        mirrors: [`http://127.0.0.1:${(redirect.address() as AddressInfo).port}/`, `http://127.0.0.1:${stalled.port}/packs`, mirror.url('short/'), mirror.url('good/')],
        mirrorHttp: { timeoutMs: 2000, backoffMs: 10 },
        onWarning: (m) => warnings.push(m),
      });
      assert.equal(warnings.length, 3, warnings.join('\n'));
      assert.match(warnings[0], /HTTP 302/);
      assert.match(warnings[1], /packs\/: no answer .* \[ENETWORK\]/);
      assert.match(warnings[2], /short\/.*\[ETRUNCATED\]/);
      assert.ok(stalled.connections() > 0, 'the stalled mirror was asked');
      assert.equal(origin.bytes((u) => u === '/lab_1.ckm'), 0, 'the server served pack bytes');
      assert.ok(mirror.bytes((u) => u === '/good/lab_1.ckm') > 0);
      // nginx's $bytes_sent counts response headers too; mirrorBytes counts bodies
      assert.ok(res.mirrorBytes > 0 && res.mirrorBytes <= mirror.bytes(), `mirrorBytes ${res.mirrorBytes}`);
      assert.ok(r.sameAs(out, r.v1), 'the fetched disk is v1');
    } finally {
      redirect.close();
      await stalled.close();
    }
  });

  it('a mirror that trickles (its bytes slower than the floor) is left for the next source with one warning', async () => {
    const pack = readFileSync(join(r.repo, 'lab_1.ckm'));
    const timers = new Set<NodeJS.Timeout>();
    const trickle = createServer((req, res) => {
      const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
      if (req.method !== 'GET' || !m) { res.writeHead(200, { 'content-length': pack.length }); res.end(); return; }
      const [a, b] = [Number(m[1]), Math.min(Number(m[2]), pack.length - 1)];
      res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${pack.length}`, 'content-length': b - a + 1 });
      let at = a;
      const tick = setInterval(() => {
        if (at > b || res.destroyed) { clearInterval(tick); timers.delete(tick); res.end(); return; }
        res.write(pack.subarray(at, Math.min(at + 16, b + 1)));
        at += 16;
      }, 50);
      timers.add(tick);
    });
    await new Promise<void>((res) => trickle.listen(0, '127.0.0.1', res));
    const warnings: string[] = [];
    try {
      const out = join(t.path, 'trickled.evhd');
      await fetchImage({
        source: origin.url('lab_1.ckm.index'), out, keyDir: r.keys, kek: () => ({ kind: 'hostkey', keyFile: r.hostKey }), cacheDir: r.cache,
        mirrors: [`http://127.0.0.1:${(trickle.address() as AddressInfo).port}/`, mirror.url('good/')],
        // 320 bytes/s against a floor of 8 KiB/s after 1 s: a loaded machine's nginx is far above it
        mirrorHttp: { minRate: { bytesPerSecond: 8192, afterMs: 1000 }, backoffMs: 10 },
        onWarning: (m) => warnings.push(m),
      });
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0], /slower than 8192 bytes\/s .*\[ENETWORK\]/);
      assert.ok(r.sameAs(out, r.v1));
    } finally {
      for (const x of timers) clearInterval(x);
      trickle.closeAllConnections();
      trickle.close();
    }
  });

  it('medv image fetch --mirror: the pack from the mirror, the index from the repository; a mirror URL with a password is refused without echoing it', async () => {
    origin.resetLog();
    mirror.resetLog();
    const out = join(t.path, 'cli.evhd');
    const res = r.medv(['image', 'fetch', origin.url('lab_2.ckm.index'), '--out', out, '--keys', r.keys, '--mirror', mirror.url('good/'), '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.doesNotMatch(res.stderr, /warning/);
    assert.ok(JSON.parse(res.stdout).mirrorBytes > 0);
    assert.equal(origin.bytes((u) => /\.ckm$/.test(u)), 0, 'the repository served pack bytes');
    assert.ok(r.sameAs(out, r.v2));
    const bad = r.medv(['image', 'fetch', origin.url('lab_2.ckm.index'), '--out', join(t.path, 'no.evhd'), '--keys', r.keys, '--mirror', 'http://user:hunter2@m.example/']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /must not carry a user name or password/);
    assert.doesNotMatch(bad.stderr, /hunter2/);
  });

  it('a caller\'s mirror list is checked: http(s), no credentials, query or fragment, at most 8, no repeats', () => {
    for (const bad of [['ftp://m.example/'], ['http://u:p@m.example/'], ['https://m.example/x?sig=1'], ['https://m.example/#a'], ['/srv/images'],
      ['https://m.example/a', 'https://m.example/a/'], Array.from({ length: 9 }, (_x, i) => `https://m${i}.example/`)]) {
      assert.throws(() => checkMirrorUrls(bad), (e: Error & { code?: string }) => e.code === 'EINVAL_ARG' && !/:p@/.test(e.message), bad.join(' '));
    }
    assert.deepEqual(checkMirrorUrls(['https://cdn.example/medv/images']), ['https://cdn.example/medv/images/']);
  });

  it('a mirror URL with a password is never echoed, whatever else is wrong with it (no slashes, a # / or ? in the password, a long user name)', () => {
    for (const bad of ['https:u:hunter2@m.example/', 'https://u:hun#ter2@m.example/', 'http://u:hun/ter2@m.example/', 'https://u:hun?ter2@m.example/', `https://${'u'.repeat(250)}:hunter2@m.example/`]) {
      assert.throws(() => checkMirrorUrls([bad]), (e: Error & { code?: string }) => e.code === 'EINVAL_ARG' && !/hun/.test(e.message) && /m\.example/.test(e.message), `${bad}: ${(() => { try { checkMirrorUrls([bad]); return ''; } catch (e) { return (e as Error).message; } })()}`);
    }
  });
});

