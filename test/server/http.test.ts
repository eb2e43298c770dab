/**
 * The HTTP edge of a real `medv serve` process under hostile peers, on real sockets: requests whose
 * client vanishes mid-body never crash it (issue 18 item 11), and a slow-body / slow-header flood
 * from one address or from many does not shut an honest client out (item 14). Deadlines are made
 * short with the server's own options so the test takes seconds, not minutes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/cli.js';
import { type ServeProcess, startServe } from './helpers.js';

/** A raw request on its own TCP connection (from `localAddress`); resolves with what came back once the server closes or `waitMs` passes. */
export function rawExchange(url: string, bytes: Buffer | string, o: { localAddress?: string; end?: boolean; destroyAfterWrite?: boolean } = {}): Promise<{ data: Buffer; closedByServer: boolean }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect({ port: Number(u.port), host: u.hostname, localAddress: o.localAddress });
    const chunks: Buffer[] = [];
    s.on('error', () => undefined);
    s.on('data', (d) => chunks.push(d));
    s.once('connect', () => {
      s.write(bytes);
      if (o.destroyAfterWrite) { s.destroy(); resolve({ data: Buffer.alloc(0), closedByServer: false }); }
      else if (o.end) s.end();
    });
    s.once('close', () => resolve({ data: Buffer.concat(chunks), closedByServer: true }));
  });
}

/** GET or POST with Node's http client from `localAddress`; resolves with status and body, rejects on a connection error. */
function request(url: string, o: { method?: string; body?: string; localAddress: string }): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: o.method ?? 'GET', localAddress: o.localAddress, agent: false, headers: o.body ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(o.body) } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/**
 * Connections from `localAddress` that reconnect when the server cuts them, until stop(); what each
 * does once connected is `behave` (which returns what to undo when it closes).
 */
abstract class Flood {
  private sockets = new Set<net.Socket>();
  private stopped = false;
  opened = 0;
  closed = 0;
  constructor(readonly url: string, readonly localAddress: string) {}

  start(n: number): Promise<void> {
    return Promise.all(Array.from({ length: n }, () => this.open())).then(() => undefined);
  }

  protected abstract behave(s: net.Socket): () => void;

  private open(): Promise<void> {
    const u = new URL(this.url);
    return new Promise((resolve) => {
      const s = net.connect({ port: Number(u.port), host: u.hostname, localAddress: this.localAddress });
      this.sockets.add(s);
      let undo: (() => void) | undefined;
      s.on('error', () => undefined);
      s.once('connect', () => { this.opened++; undo = this.behave(s); resolve(); });
      s.once('close', () => {
        undo?.();
        this.sockets.delete(s);
        this.closed++;
        resolve();
        if (!this.stopped) setTimeout(() => { void this.open(); }, 50);
      });
    });
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.sockets) s.destroy();
  }
}

/**
 * A slow peer: sends `head`, then one byte per `everyMs` for as long as the server keeps it.
 * Counts whether any of its connections got a 2xx.
 */
class Slowloris extends Flood {
  answered2xx = 0;
  constructor(url: string, localAddress: string, readonly head: string, readonly everyMs: number) { super(url, localAddress); }

  protected behave(s: net.Socket): () => void {
    s.on('data', (d) => { if (/^HTTP\/1\.1 2/.test(d.toString('latin1'))) this.answered2xx++; });
    s.write(this.head);
    const timer = setInterval(() => { if (!s.destroyed) s.write('x'); }, this.everyMs);
    return () => clearInterval(timer);
  }
}

/**
 * Keep-alive connections that each send a small GET, read its whole answer, pause `pauseMs` and
 * send the next: between answers each one is an idle keep-alive connection, which the server may
 * close to make room.
 */
class KeepAliveFlood extends Flood {
  constructor(url: string, localAddress: string, readonly path: string, readonly pauseMs: number) { super(url, localAddress); }

  protected behave(s: net.Socket): () => void {
    let buf = Buffer.alloc(0);
    let timer: NodeJS.Timeout | undefined;
    const ask = () => { if (!s.destroyed) s.write(`GET ${this.path} HTTP/1.1\r\nHost: x\r\n\r\n`); };
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      const length = /content-length: *(\d+)/i.exec(buf.subarray(0, end).toString('latin1'));
      if (end < 0 || !length || buf.length < end + 4 + Number(length[1])) return;
      buf = buf.subarray(end + 4 + Number(length[1]));
      // the answer is whole: the connection now idles until the next request
      timer = setTimeout(ask, this.pauseMs);
    });
    ask();
    return () => clearTimeout(timer);
  }
}

describe('server: the HTTP edge under hostile peers', function () {
  this.timeout(120_000);
  const t = tempDir('serve-edge');
  const root = join(t.path, 'repo');
  const content = randomBytes(200_000);
  let s: ServeProcess;

  before(async () => {
    mkdirSync(join(root, 'images'), { recursive: true });
    writeFileSync(join(root, 'images', 'lab_1.ckm'), content);
    s = await startServe(root, [
      '--header-timeout', '2s', '--body-timeout', '2s', '--upload-stall-timeout', '2s',
      '--max-connections', '64', '--max-connections-per-address', '8',
    ]);
  });
  after(async () => {
    assert.equal(await s.stop(), 0, 'clean exit on SIGTERM');
    await t.cleanup();
  });

  async function stillServes(localAddress = '127.0.0.1'): Promise<void> {
    const r = await request(`${s.url}/images/lab_1.ckm`, { localAddress });
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(content));
  }

  it('an unauthenticated chunked POST over 64 KiB gets 413 and the server keeps serving', async () => {
    const chunk = Buffer.alloc(16 * 1024, 0x20);
    const body = Buffer.concat(Array.from({ length: 6 }, () => Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')])));
    for (const path of ['/api/login', '/api/admin/users', '/api/reports']) {
      const head = `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`;
      const r = await rawExchange(s.url, Buffer.concat([Buffer.from(head), body, Buffer.from('0\r\n\r\n')]), { end: true });
      const text = r.data.toString('latin1');
      assert.match(text, /^HTTP\/1\.1 (413|401)/, `${path}: ${text.slice(0, 80)}`);
      await stillServes();
    }
    assert.equal(s.child.exitCode, null, 'the server is still running');
    assert.equal(s.stderr(), '', 'nothing on stderr');
  });

  it('clients that vanish mid-body, mid-answer or right after their request never crash it', async () => {
    const json = `{"user":"vanish-${randomBytes(4).toString('hex')}","password":"not-the-password"}`;
    const cases: string[] = [
      // the body stops half-way and the client is gone
      `POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"user":`,
      `POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${(70_000).toString(16)}\r\n${'x'.repeat(65_000)}`,
      `POST /upload/ HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 100\r\nContent-Length: 100\r\n\r\nabc`,
      `GET /images/lab_1.ckm HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc`,
      // a whole request, and the client leaves before the answer
      `POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${json.length}\r\n\r\n${json}`,
      `GET /images/lab_1.ckm HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9,100-199\r\n\r\n`,
    ];
    for (const c of cases) {
      await Promise.all(Array.from({ length: 5 }, () => rawExchange(s.url, c, { destroyAfterWrite: true })));
      await stillServes();
    }
    // a login is still answered (the vanished clients' hashing finished, nothing crashed)
    const r = await request(`${s.url}/api/login`, { method: 'POST', body: '{"user":"someone","password":"not-the-password"}', localAddress: '127.0.0.4' });
    assert.equal(r.status, 401);
    assert.equal(s.child.exitCode, null);
    assert.equal(s.stderr(), '');
  });

  it('a slow body is cut at its deadline with 408; a refused body is not read forever', async () => {
    const slow = await rawExchange(s.url, 'POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{', { localAddress: '127.0.0.5' });
    assert.ok(slow.closedByServer);
    assert.match(slow.data.toString('latin1'), /^HTTP\/1\.1 408 /);
    // an upload without the token: 401, then the connection goes even though the body never ends
    const refused = await rawExchange(s.url, 'PATCH /upload/0123456789abcdef0123456789abcdef HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 99999999\r\n\r\nabc', { localAddress: '127.0.0.5' });
    assert.ok(refused.closedByServer);
    assert.match(refused.data.toString('latin1'), /^HTTP\/1\.1 401 /);
    // a head that never ends
    const head = await rawExchange(s.url, 'GET /images/lab_1.ckm HTTP/1.1\r\nHost: x\r\n', { localAddress: '127.0.0.5' });
    assert.ok(head.closedByServer);
    assert.doesNotMatch(head.data.toString('latin1'), /^HTTP\/1\.1 2/);
  });

  it('300 slow-body connections from one address, slow heads, and a flood from 40 addresses: an honest client is served throughout', async () => {
    const body = 'POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{';
    const one = new Slowloris(s.url, '127.0.0.2', body, 1000);
    const heads = new Slowloris(s.url, '127.0.0.3', 'GET /images/lab_1.ckm HTTP/1.1\r\nHost: x\r\n', 1000);
    const many = Array.from({ length: 40 }, (_, i) => new Slowloris(s.url, `127.0.1.${i + 1}`, body, 1000));
    try {
      await one.start(300);
      await heads.start(50);
      await Promise.all(many.map((m) => m.start(4)));
      // while every one of them keeps trying: the honest client, several times, from its own address
      for (let i = 0; i < 5; i++) {
        await stillServes('127.0.0.9');
        const login = await request(`${s.url}/api/login`, { method: 'POST', body: `{"user":"honest-${i}","password":"not-the-password"}`, localAddress: '127.0.0.9' });
        assert.equal(login.status, 401);
      }
    } finally {
      for (const f of [one, heads, ...many]) f.stop();
    }
    const all = [one, heads, ...many];
    console.log(`      flood: ${all.reduce((n, f) => n + f.opened, 0)} connections opened, ${all.reduce((n, f) => n + f.closed, 0)} closed`);
    for (const f of all) assert.equal(f.answered2xx, 0, 'no slow request was ever answered with 2xx');
    assert.ok(one.closed >= 300 - 8, `the server closed the connections of the one address past its limit (${one.closed} closed)`);
    await stillServes();
  });

  it('every slot held by keep-alive connections that send a GET each second: an honest newcomer is served (idle connections make room)', async () => {
    // 8 addresses x 8 connections fill the 64 slots; between its requests each connection is idle
    const floods = Array.from({ length: 8 }, (_, i) => new KeepAliveFlood(s.url, `127.0.2.${i + 1}`, '/api/no-such-route', 1000));
    try {
      await Promise.all(floods.map((f) => f.start(8)));
      for (let i = 0; i < 5; i++) await stillServes('127.0.0.10');
    } finally {
      for (const f of floods) f.stop();
    }
    await stillServes();
  });
});
