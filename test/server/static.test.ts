/**
 * `medv serve` as a static repository, judged by curl and Node's HTTP client: whole files, single
 * and multiple ranges, ETag / If-Range, HEAD, 404, and nothing outside DIR/images ever served.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run as spawnSyncOk, runMedv, tempDir } from '../helpers/cli.js';
import { curl, header, startServe, type ServeProcess } from './helpers.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Split a multipart/byteranges body into its parts (Content-Range and bytes). */
function parseMultipart(body: Buffer, contentType: string): { range: string; data: Buffer }[] {
  const boundary = /boundary=([^;\s]+)/.exec(contentType)![1];
  const sep = Buffer.from(`--${boundary}`);
  const parts: { range: string; data: Buffer }[] = [];
  let at = body.indexOf(sep);
  while (at >= 0) {
    const start = at + sep.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const headEnd = body.indexOf('\r\n\r\n', start);
    const head = body.subarray(start, headEnd).toString('latin1');
    const next = body.indexOf(sep, headEnd);
    parts.push({ range: /Content-Range:\s*bytes (\S+)/i.exec(head)![1], data: body.subarray(headEnd + 4, next - 2) });
    at = next;
  }
  return parts;
}

/** A raw request line on a TCP socket (what curl and fetch would normalise away); resolves with the whole answer. */
function rawRequest(url: string, target: string): Promise<Buffer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(u.port), u.hostname, () => s.end(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

describe('server: medv serve static files', function () {
  this.timeout(60_000);
  const t = tempDir('serve-static');
  const root = join(t.path, 'repo');
  const images = join(root, 'images');
  const SECRET = `SECRET-${randomBytes(8).toString('hex')}`;
  const outside = mkdtempSync(join(tmpdir(), 'medv-secret-'));
  const content = randomBytes(300_000);
  let s: ServeProcess;

  before(async () => {
    mkdirSync(images, { recursive: true });
    writeFileSync(join(images, 'lab_1.ckm'), content);
    // secrets beside DIR/images, beside DIR, and in /tmp; a symlink with a valid name pointing out
    writeFileSync(join(root, 'secret_1.ckm'), SECRET);
    writeFileSync(join(t.path, 'secret_1.ckm'), SECRET);
    writeFileSync(join(outside, 'secret_1.ckm'), SECRET);
    symlinkSync(join(outside, 'secret_1.ckm'), join(images, 'link_1.ckm'));
    symlinkSync('../secret_1.ckm', join(images, 'rel_1.ckm'));
    writeFileSync(join(images, '.hidden_1.ckm'), SECRET);
    s = await startServe(root);
    // an upload in progress lives in DIR/.uploads
    writeFileSync(join(root, '.uploads', '0123456789abcdef0123456789abcdef'), SECRET);
  });
  after(async () => {
    assert.equal(await s.stop(), 0, 'clean exit on SIGTERM');
    await t.cleanup();
    rmSync(outside, { recursive: true, force: true });
  });

  it('GET serves the file (sha256), HEAD its length and no body, with a strong ETag and Last-Modified', async () => {
    const r = curl([`${s.url}/images/lab_1.ckm`]);
    assert.equal(r.status, 200);
    assert.equal(sha(r.body), sha(content));
    const h = curl(['-I', `${s.url}/images/lab_1.ckm`]);
    assert.equal(h.status, 200);
    assert.ok(!h.body.includes(content.subarray(0, 32)), 'HEAD sends no file bytes');
    assert.equal((await s.waitForLog((x) => x.method === 'HEAD')).bytes, 0);
    assert.equal(header(h.headers, 'Content-Length'), String(content.length));
    assert.match(header(h.headers, 'ETag')!, /^"[0-9a-f-]+"$/);
    assert.ok(header(h.headers, 'Last-Modified'));
    assert.equal(header(h.headers, 'Accept-Ranges'), 'bytes');
    // the request log: one line per request with method, path, status, bytes
    const e = await s.waitForLog((x) => x.method === 'GET' && x.path === '/images/lab_1.ckm' && x.status === 200);
    assert.equal(e.bytes, content.length);
  });

  it('a single range: 206 with Content-Range and exactly those bytes; past the end: 416', () => {
    const r = curl(['-r', '1000-1999', `${s.url}/images/lab_1.ckm`]);
    assert.equal(r.status, 206);
    assert.equal(header(r.headers, 'Content-Range'), `bytes 1000-1999/${content.length}`);
    assert.ok(r.body.equals(content.subarray(1000, 2000)));
    const tail = curl(['-r', '-100', `${s.url}/images/lab_1.ckm`]);
    assert.ok(tail.body.equals(content.subarray(content.length - 100)));
    assert.equal(curl(['-r', `${content.length + 5}-`, `${s.url}/images/lab_1.ckm`]).status, 416);
  });

  it('several ranges: 206 multipart/byteranges, every part exactly its bytes (curl and fetch)', async () => {
    const r = curl(['-r', '0-9,5000-6999,299990-', `${s.url}/images/lab_1.ckm`]);
    assert.equal(r.status, 206);
    const parts = parseMultipart(r.body, header(r.headers, 'Content-Type')!);
    assert.deepEqual(parts.map((p) => p.range), [`0-9/${content.length}`, `5000-6999/${content.length}`, `299990-299999/${content.length}`]);
    assert.ok(parts[0].data.equals(content.subarray(0, 10)));
    assert.ok(parts[1].data.equals(content.subarray(5000, 7000)));
    assert.ok(parts[2].data.equals(content.subarray(299990)));
    assert.equal(Number(header(r.headers, 'Content-Length')), r.body.length);
    const f = await fetch(`${s.url}/images/lab_1.ckm`, { headers: { Range: 'bytes=100-199, 200000-200099' } });
    assert.equal(f.status, 206);
    const fp = parseMultipart(Buffer.from(await f.arrayBuffer()), f.headers.get('content-type')!);
    assert.ok(fp[1].data.equals(content.subarray(200000, 200100)));
  });

  it('If-Range: the current ETag gives the range; after the file changes, the old ETag gives 200 and the whole new file', async () => {
    const etag = header(curl(['-I', `${s.url}/images/lab_1.ckm`]).headers, 'ETag')!;
    let r = curl(['-r', '10-19', '-H', `If-Range: ${etag}`, `${s.url}/images/lab_1.ckm`]);
    assert.equal(r.status, 206);
    assert.ok(r.body.equals(content.subarray(10, 20)));
    r = curl(['-r', '10-19,30-39', '-H', `If-Range: ${etag}`, `${s.url}/images/lab_1.ckm`]);
    assert.equal(r.status, 206);
    // a weak form of the same tag is not a strong match
    assert.equal(curl(['-r', '10-19', '-H', `If-Range: W/${etag}`, `${s.url}/images/lab_1.ckm`]).status, 200);
    // If-Range with a date: Last-Modified exactly gives the range, any other date the whole file
    const lastModified = header(r.headers, 'Last-Modified')!;
    assert.equal(curl(['-r', '10-19', '-H', `If-Range: ${lastModified}`, `${s.url}/images/lab_1.ckm`]).status, 206);
    assert.equal(curl(['-r', '10-19', '-H', `If-Range: ${new Date(Date.parse(lastModified) + 3600_000).toUTCString()}`, `${s.url}/images/lab_1.ckm`]).status, 200);
    // the file is replaced (another version published under the name after a prune)
    const other = randomBytes(content.length);
    unlinkSync(join(images, 'lab_1.ckm'));
    writeFileSync(join(images, 'lab_1.ckm'), other);
    for (const range of ['10-19', '10-19,30-39']) {
      r = curl(['-r', range, '-H', `If-Range: ${etag}`, `${s.url}/images/lab_1.ckm`]);
      assert.equal(r.status, 200, range);
      assert.equal(sha(r.body), sha(other));
    }
    const newTag = header(r.headers, 'ETag')!;
    assert.notEqual(newTag, etag);
    // If-None-Match on the new tag: 304
    assert.equal(curl(['-H', `If-None-Match: ${newTag}`, `${s.url}/images/lab_1.ckm`]).status, 304);
    unlinkSync(join(images, 'lab_1.ckm'));
    writeFileSync(join(images, 'lab_1.ckm'), content);
  });

  it('404 for a missing file, other names, dotfiles and folders; 405 for other methods', () => {
    for (const p of ['/images/lab_2.ckm', '/images/', '/images', '/', '/images/lab_1.ckmx', '/images/lab_01.ckm', '/images/.hidden_1.ckm', '/admin.token', '/.uploads/0123456789abcdef0123456789abcdef']) {
      const r = curl([`${s.url}${p}`]);
      assert.equal(r.status, 404, p);
      assert.ok(!r.body.includes(SECRET), p);
    }
    assert.equal(curl(['-X', 'PUT', '--data', 'x', `${s.url}/images/lab_1.ckm`]).status, 405);
    assert.equal(curl(['-X', 'DELETE', `${s.url}/images/lab_1.ckm`]).status, 405);
  });

  it('path traversal, encoded separators, symlinks and NUL never leak a byte from outside DIR/images', async () => {
    const rel = outside.slice(1);
    const targets = [
      '/images/../secret_1.ckm', '/images/../../secret_1.ckm', '/images/..%2fsecret_1.ckm', '/images/..%2Fsecret_1.ckm',
      '/images/%2e%2e%2fsecret_1.ckm', '/images/%2e%2e/secret_1.ckm', '/images/%2E%2E%2F%2E%2E%2Fsecret_1.ckm',
      `/images/%2f${rel}%2fsecret_1.ckm`, `/images//${rel}/secret_1.ckm`, `/images/..%2f..%2f..%2f..%2f..%2f..%2f${rel}/secret_1.ckm`,
      '/images/link_1.ckm', '/images/rel_1.ckm', '/images/lab_1.ckm%00', '/images/lab_1.ckm/..', '/images/./secret_1.ckm',
      '/%2e%2e/secret_1.ckm', '/images/%5c..%5csecret_1.ckm', '/upload/../images/../secret_1.ckm',
    ];
    for (const p of targets) {
      const r = curl([`${s.url}${p}`]);
      assert.ok(r.status === 404 || r.status === 400, `${p}: ${r.status}`);
      assert.ok(!r.body.includes(SECRET), p);
    }
    for (const p of ['/images/lab_1.ckm\0', '/images/..\\secret_1.ckm', `/images/../../../../../../..${outside}/secret_1.ckm`, `http://x/images/../secret_1.ckm`]) {
      const raw = await rawRequest(s.url, p);
      assert.match(raw.toString('latin1'), /^HTTP\/1\.1 40[04]/, JSON.stringify(p));
      assert.ok(!raw.includes(SECRET), p);
    }
    // the secret files are still there (nothing was refused for lack of a target)
    assert.equal(readFileSync(join(outside, 'secret_1.ckm'), 'utf8'), SECRET);
  });

  it('a name flipped between a regular file and a symlink while requests run: the symlink\'s target is never served', async () => {
    // another process swaps images/race_1.ckm, as fast as it can, between a regular file and a
    // symlink to a secret outside DIR/images (each swap one atomic rename)
    const secret = join(outside, 'race-secret');
    writeFileSync(secret, Buffer.alloc(4096, SECRET));
    writeFileSync(join(images, '.race-regular'), Buffer.alloc(4096, 'R'));
    const stop = join(t.path, 'stop-race');
    const flipper = spawn('python3', ['-c', `
import os, sys
d, secret, stop = sys.argv[1:4]
name = os.path.join(d, 'race_1.ckm')
print('ready', flush=True)
n = 0
while not os.path.exists(stop):
    n += 1
    tmp = os.path.join(d, '.race-%d' % n)
    if n % 2:
        os.link(os.path.join(d, '.race-regular'), tmp)
    else:
        os.symlink(secret, tmp)
    os.rename(tmp, name)
print(n, flush=True)
`, images, secret, stop], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    flipper.stdout!.on('data', (d) => { out += d; });
    const done = new Promise<void>((r) => flipper.once('exit', () => r()));
    await new Promise<void>((r) => { const check = () => (out.includes('ready') ? r() : flipper.stdout!.once('data', check)); check(); });
    const seen = new Map<number, number>();
    try {
      const secretBytes = Buffer.from(SECRET.slice(0, 16));
      for (let round = 0; round < 60; round++) {
        const answers = await Promise.all(['bytes=0-99', undefined, 'bytes=0-9,100-199', 'bytes=-50', undefined, undefined, 'bytes=10-20', undefined].map(async (range) => {
          const r = await fetch(`${s.url}/images/race_1.ckm`, { headers: range ? { Range: range } : {} });
          return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
        }));
        for (const a of answers) {
          seen.set(a.status, (seen.get(a.status) ?? 0) + 1);
          assert.ok(!a.body.includes(secretBytes), `the secret was served (status ${a.status})`);
          if (a.status === 200 || a.status === 206) assert.ok(a.body.includes(Buffer.alloc(10, 'R')), 'a served answer holds the regular file');
        }
      }
    } finally {
      writeFileSync(stop, '');
      await done;
    }
    console.log(`      ${out.trim().split('\n').pop()} swaps; answers ${JSON.stringify(Object.fromEntries(seen))}`);
    assert.ok((seen.get(200) ?? 0) + (seen.get(206) ?? 0) > 0, 'the regular file was served some of the time');
    assert.ok((seen.get(404) ?? 0) > 0, 'the symlink was met some of the time');
  });

  it('a FIFO with a repository name is 404 at once (the open does not wait for a writer)', () => {
    spawnSyncOk('mkfifo', [join(images, 'fifo_1.ckm')]);
    assert.equal(curl(['-m', '10', `${s.url}/images/fifo_1.ckm`]).status, 404);
    assert.equal(curl([`${s.url}/images/lab_1.ckm`]).status, 200);
  });

  it('conditional requests: If-None-Match and If-Modified-Since give 304, If-Match and If-Unmodified-Since 412', () => {
    const h = curl(['-I', `${s.url}/images/lab_1.ckm`]).headers;
    const etag = header(h, 'ETag')!;
    const lm = header(h, 'Last-Modified')!;
    const before = new Date(Date.parse(lm) - 3600_000).toUTCString();
    assert.equal(curl(['-H', `If-None-Match: "x", ${etag}`, `${s.url}/images/lab_1.ckm`]).status, 304);
    assert.equal(curl(['-H', `If-None-Match: W/${etag}`, `${s.url}/images/lab_1.ckm`]).status, 304, 'If-None-Match compares weakly');
    assert.equal(curl(['-H', `If-Modified-Since: ${lm}`, `${s.url}/images/lab_1.ckm`]).status, 304);
    assert.equal(curl(['-H', `If-Modified-Since: ${before}`, `${s.url}/images/lab_1.ckm`]).status, 200);
    assert.equal(curl(['-H', 'If-Match: "other"', `${s.url}/images/lab_1.ckm`]).status, 412);
    assert.equal(curl(['-H', `If-Match: W/${etag}`, `${s.url}/images/lab_1.ckm`]).status, 412, 'If-Match compares strongly');
    assert.equal(curl(['-r', '0-9,20-29', '-H', `If-Match: ${etag}`, `${s.url}/images/lab_1.ckm`]).status, 206, 'several ranges with a precondition that holds');
    assert.equal(curl(['-H', `If-Unmodified-Since: ${before}`, `${s.url}/images/lab_1.ckm`]).status, 412);
    assert.equal(curl(['-r', '0-9', '-H', `If-Unmodified-Since: ${lm}`, `${s.url}/images/lab_1.ckm`]).status, 206);
  });

  it('the admin token: generated mode 0600 on first start; a token file others can read is refused (exit 4); a busy port is exit 9', async () => {
    assert.equal(statSync(s.adminTokenFile).mode & 0o777, 0o600);
    assert.equal(s.adminTokenFile, join(root, 'admin.token'));
    assert.ok(readFileSync(s.adminTokenFile, 'utf8').trim().length >= 32);
    const open = join(t.path, 'open.token');
    writeFileSync(open, 'a-long-enough-token-0123456789', { mode: 0o644 });
    let r = runMedv(['serve', '--root', join(t.path, 'r2'), '--port', '0', '--admin-token-file', open]);
    assert.equal(r.code, 4);
    assert.match(r.stderr, /^medv: admin token file permissions 644 are too open.*\[EINSECURE\]\n$/);
    const port = new URL(s.url).port;
    r = runMedv(['serve', '--root', join(t.path, 'r3'), '--port', port, '--json']);
    assert.equal(r.code, 9);
    assert.equal(JSON.parse(r.stdout).error.code, 'EBUSY');
  });

  it('bounds what a peer sends: an oversized header gets 431, the server keeps serving', () => {
    const r = curl(['-H', `X-Big: ${'a'.repeat(40_000)}`, `${s.url}/images/lab_1.ckm`]);
    assert.equal(r.status, 431);
    assert.equal(curl([`${s.url}/images/lab_1.ckm`]).status, 200);
  });
});
