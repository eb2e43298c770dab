/**
 * The client's one HTTP agent against real HTTP servers: credentials never leave for a remote
 * http:// server (through the real CLI: `medv login`, `medv admin`, `medv image upload`), transient
 * failures retried and nothing else, Retry-After honoured or reported, timeouts, and one
 * status→code table that agrees with the server's.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { MEDV_BIN, tempDir, type RunResult } from '../helpers/cli.js';
import { listener } from '../helpers/net.js';
import { HTTP_STATUS, codeForStatus, httpStatusFor } from '../../src/api/status.js';
import { HttpAgent, checkCredentialTarget, responseError } from '../../src/client/http.js';
import { NO_RETRY } from '../../src/client/retry.js';
import { apiRequest } from '../../src/client/api.js';
import { MedvError, type ErrorCode } from '../../src/core/errors.js';

/** `medv ARGS` with `env` added, asynchronously (this process keeps serving its listeners meanwhile). */
function medvAsync(args: string[], env: Record<string, string>): Promise<RunResult> {
  const child = spawn(process.execPath, [MEDV_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => { stdout += d; });
  child.stderr!.on('data', (d) => { stderr += d; });
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

/** A non-loopback IPv4 address of this machine, if it has one. */
function outsideAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

/** An HTTP server whose handler sees every request; counts them. */
async function serve(handler: (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void): Promise<{ url: string; count: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => { n++; req.resume(); req.on('end', () => handler(req, res, n)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, count: () => n,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

const fast = { minDelayMs: 5, maxDelayMs: 20, maxRetryAfterMs: 2000 };

describe('client: the one HTTP agent', function () {
  this.timeout(120_000);
  const t = tempDir('client-http');
  after(() => t.cleanup());

  it('medv login, medv admin and medv image upload refuse to send a password or token to a remote http:// server: no connection is made', async function () {
    const host = outsideAddress();
    if (!host) this.skip();
    const l = await listener(host!);
    try {
      const server = `http://${host}:${l.port}`;
      fs.writeFileSync(join(t.path, 'pw'), 'a password that must stay here', { mode: 0o600 });
      fs.writeFileSync(join(t.path, 'token'), 'x'.repeat(43), { mode: 0o600 });
      fs.writeFileSync(join(t.path, 'q_1.ckm'), Buffer.alloc(100));
      const env = { MEDV_CLIENT_ROOT: join(t.path, 'client'), XDG_CONFIG_HOME: join(t.path, 'config'), MEDV_STATE_DIR: join(t.path, 'state') };
      const runs = [
        ['login', '--server', server, '--user', 'alice', '--password-file', join(t.path, 'pw')],
        ['admin', 'user', 'list', '--server', server, '--token-file', join(t.path, 'token')],
        ['image', 'upload', join(t.path, 'q_1.ckm'), '--server', server, '--token-file', join(t.path, 'token')],
      ];
      for (const args of runs) {
        const r = await medvAsync(args, env);
        assert.equal(r.code, 4, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /refusing to send a password or token to http:\/\/.* over plain HTTP.*\[EINSECURE\]/);
      }
      assert.equal(l.connections(), 0, 'no connection reached the remote server');
      assert.equal(l.bytes(), 0);
    } finally {
      await l.close();
    }
  });

  it('loopback may be plain HTTP; localhost is resolved to loopback addresses only', () => {
    for (const ok of ['http://127.0.0.1:1/', 'http://127.1.2.3/', 'http://[::1]:8080/', 'http://localhost:9/', 'https://192.0.2.1/']) checkCredentialTarget(new URL(ok));
    for (const bad of ['http://192.0.2.1/', 'http://10.0.0.1/', 'http://example.com/', 'http://127.0.0.1.nip.io/', 'http://[::2]/', 'http://localhost.example.com/']) {
      assert.throws(() => checkCredentialTarget(new URL(bad)), (e: unknown) => e instanceof MedvError && e.code === 'EINSECURE', bad);
    }
  });

  it('transient answers are retried for idempotent requests only; Retry-After is honoured, and one too long is reported at once', async () => {
    const s = await serve((req, res, n) => {
      if (req.url === '/flaky' && n % 3 !== 0) { res.writeHead(503, { 'Retry-After': '0' }); res.end(); return; }
      if (req.url === '/locked') { res.writeHead(429, { 'Retry-After': '600', 'Content-Type': 'application/json' }); res.end('{"error":{"code":"ERATELIMIT","message":"too many failed logins"}}'); return; }
      if (req.url === '/bad') { res.writeHead(400, { 'Content-Type': 'application/json' }); res.end('{"error":{"code":"EPOLICY","message":"bad field","path":"/workspaces/0"}}'); return; }
      res.writeHead(200, { 'Content-Type': 'application/json' }); res.end('{"ok":true}');
    });
    const agent = new HttpAgent({ retry: { retries: 3, ...fast } });
    try {
      let r = await agent.request({ method: 'GET', url: `${s.url}/flaky` });
      assert.equal(r.status, 200);
      assert.equal(s.count(), 3, 'two 503s, then the answer');
      const before = s.count();
      r = await agent.request({ method: 'POST', url: `${s.url}/flaky`, body: '{}' });
      assert.equal(r.status, 503, 'a POST is not repeated');
      assert.equal(s.count(), before + 1);
      const locked = s.count();
      r = await agent.request({ method: 'GET', url: `${s.url}/locked` });
      assert.equal(r.status, 429);
      assert.equal(s.count(), locked + 1, 'a Retry-After of 10 minutes is not slept through');
      const e = responseError(r);
      assert.equal(e.code, 'ERATELIMIT');
      assert.equal(e.data.retryAfter, 600);
      const bad = s.count();
      const b = responseError(await agent.request({ method: 'GET', url: `${s.url}/bad` }));
      assert.equal(s.count(), bad + 1, 'a 400 is final');
      assert.equal(b.code, 'EPOLICY');
      assert.equal(b.data.path, '/workspaces/0');
    } finally {
      agent.close();
      await s.close();
    }
  });

  it('a server that accepts and never answers: ENETWORK after the headers timeout, retried, then reported', async () => {
    const l = await listener('127.0.0.1');
    const agent = new HttpAgent({ headersTimeoutMs: 200, retry: { retries: 1, ...fast } });
    try {
      await assert.rejects(agent.request({ method: 'GET', url: `http://127.0.0.1:${l.port}/x` }), (e: unknown) => e instanceof MedvError && e.code === 'ENETWORK' && /no answer within 0.2 s/.test(e.message));
      assert.equal(l.connections(), 2, 'one retry');
    } finally {
      agent.close();
      await l.close();
    }
  });

  it('one status→code table: every status the server sends maps back to a code of that status, 413 included', async () => {
    for (const [code, status] of Object.entries(HTTP_STATUS) as [ErrorCode, number][]) {
      const back = codeForStatus(status);
      assert.equal(httpStatusFor(new MedvError(back, 'x', { httpStatus: status })), status, `${code} → ${status} → ${back}`);
    }
    assert.equal(codeForStatus(413), 'ETOOLARGE');
    // an answer without a medv error body (a proxy's, or tus's text) goes through the same table
    const s = await serve((req, res) => { res.writeHead(Number(req.url!.slice(1)), { 'Content-Type': 'text/plain' }); res.end('said the proxy\n'); });
    try {
      for (const [status, code] of [[413, 'ETOOLARGE'], [401, 'EDENIED'], [404, 'ENOENT'], [409, 'EEXIST'], [422, 'EFORMAT'], [502, 'EHTTP']] as const) {
        await assert.rejects(apiRequest(s.url, 'GET', `/${status}`), (e: unknown) => e instanceof MedvError && e.code === code && e.data.status === status, String(status));
      }
    } finally {
      await s.close();
    }
  });

  describe('a kept-alive connection the server closed while it was idle in the pool', () => {
    /**
     * What a busy client meets when the server closed an idle keep-alive connection and the FIN
     * was not read yet: the next request goes out on that pooled socket and is reset before any
     * byte of the answer. Made certain here (no waiting on the server's idle timer): this server
     * answers the first request of a connection (keep-alive) and resets the connection when a
     * second request arrives on it.
     */
    async function resetsReused() {
      let connections = 0;
      const seen: string[] = [];
      const served = new WeakMap<net.Socket, number>();
      const server = http.createServer((req, res) => {
        seen.push(`${req.method} ${req.url}`);
        const n = (served.get(req.socket) ?? 0) + 1;
        served.set(req.socket, n);
        if (n > 1) { req.socket.resetAndDestroy(); return; }
        req.resume();
        req.on('end', () => res.end('ok'));
      });
      server.on('connection', () => { connections++; });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      return {
        url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, seen, connections: () => connections,
        close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
      };
    }

    it('an idempotent request is sent again at once on a new connection, once, even with retries off', async () => {
      const s = await resetsReused();
      const agent = new HttpAgent({ retry: NO_RETRY });
      try {
        assert.equal((await agent.request({ method: 'GET', url: `${s.url}/a` })).body.toString(), 'ok');
        const r = await agent.request({ method: 'PUT', url: `${s.url}/b`, body: 'x' });
        assert.equal(r.status, 200);
        assert.deepEqual(s.seen, ['GET /a', 'PUT /b', 'PUT /b'], 'reset on the reused connection, then sent again');
        assert.equal(s.connections(), 2, 'the second attempt went on a connection of its own');
      } finally {
        agent.close();
        await s.close();
      }
    });

    it('a request that is not idempotent is not sent again: ENETWORK, and the server saw it once', async () => {
      const s = await resetsReused();
      const agent = new HttpAgent({ retry: { ...NO_RETRY, retries: 3 } });
      try {
        await agent.request({ method: 'GET', url: `${s.url}/a` });
        await assert.rejects(agent.request({ method: 'POST', url: `${s.url}/once`, body: '{}' }), (e: unknown) => e instanceof MedvError && e.code === 'ENETWORK');
        assert.deepEqual(s.seen, ['GET /a', 'POST /once']);
      } finally {
        agent.close();
        await s.close();
      }
    });
  });
});
