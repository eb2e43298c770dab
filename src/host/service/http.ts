/**
 * The host API's HTTP/1.1 server on the unix socket (the Docker engine pattern): a route table
 * (./routes.ts), JSON in and out, errors as `{"error":{"code","message"}}` with the status of
 * src/api/status.ts, and bounds on everything a peer controls:
 *
 * - who: the peer's uid (SO_PEERCRED, src/native.ts) must be ours or root; a peer of another uid is
 *   disconnected before a byte is read. (Without the addon the socket's mode decides: 0600 in a
 *   0700 folder, only our uid and root can connect at all.)
 * - how long: the request head within HEADERS_TIMEOUT_MS, the whole request within
 *   REQUEST_TIMEOUT_MS, an idle kept-alive connection KEEP_ALIVE_MS;
 * - how big: a head of MAX_HEADER_BYTES, a body of the route's bound (64 KiB of JSON, a passphrase
 *   of 4 KiB): 431/413, the rest never read; a malformed request: 400, connection closed;
 * - how many: MAX_CONNECTIONS open; when more come, the oldest connections with no request in
 *   progress are closed to make room, so a thousand connections opened and held (with nothing or
 *   half a request sent) never stop a client that sends a request.
 */
import * as http from 'node:http';
import type { Socket } from 'node:net';
import { MedvError } from '../../core/errors.js';
import { httpStatusOf } from '../../api/status.js';
import { native } from '../../native.js';

export const HEADERS_TIMEOUT_MS = 10_000;
export const REQUEST_TIMEOUT_MS = 30_000;
export const KEEP_ALIVE_MS = 5_000;
export const MAX_HEADER_BYTES = 16 * 1024;
export const MAX_JSON_BODY = 64 * 1024;
export const MAX_CONNECTIONS = 256;

export type Method = 'GET' | 'POST' | 'DELETE';

export interface Ctx {
  params: Record<string, string>;
  query: URLSearchParams;
  req: http.IncomingMessage;
  res: http.ServerResponse;
  /** The JSON body (undefined when there is none), at most MAX_JSON_BODY bytes. */
  json(): Promise<unknown>;
  /** The raw body (application/octet-stream), at most `max` bytes. The caller wipes it. */
  raw(max: number): Promise<Buffer>;
}

/** What a handler answers: JSON (status 200 unless said), bytes, or nothing (it wrote the response itself: a stream). */
export type Reply = { status?: number; json: unknown } | { status?: number; bytes: Buffer; type: string } | 'streamed';

export interface Route { method: Method; path: string; handler: (ctx: Ctx) => Promise<Reply> | Reply }

interface Conn { since: number; active: number }

function errorBody(e: unknown): { status: number; body: { error: { code: string; message: string; data?: Record<string, unknown> } } } {
  if (e instanceof MedvError) {
    const j = e.toJSON();
    return { status: httpStatusOf(e.code), body: { error: { code: j.code, message: j.message.split('\n')[0], ...(Object.keys(j.data).length ? { data: j.data } : {}) } } };
  }
  return { status: 500, body: { error: { code: 'EINTERNAL', message: String((e as Error)?.message ?? e).split('\n')[0] } } };
}

function send(res: http.ServerResponse, status: number, body: Buffer, type: string): void {
  if (res.headersSent) { res.destroy(); return; }
  res.writeHead(status, { 'content-type': type, 'content-length': body.length, 'cache-control': 'no-store' });
  res.end(body);
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  send(res, status, Buffer.from(`${JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`, 'utf8'), 'application/json');
}

/** Read a body of at most `max` bytes (413 beyond, the rest never read). */
function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) return Promise.reject(new MedvError('ETOOLARGE', `request body of ${declared} bytes; at most ${max}`, { max }));
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > max) { for (const p of parts) p.fill(0); c.fill(0); req.pause(); reject(new MedvError('ETOOLARGE', `request body over ${max} bytes`, { max })); return; }
      parts.push(c);
    });
    req.on('end', () => { const b = Buffer.concat(parts); for (const p of parts) p.fill(0); resolve(b); });
    req.on('error', reject);
  });
}

/** Match `/v1/vms/{name}/stop` against a path; the parameters, or undefined. */
function match(pattern: string, path: string): Record<string, string> | undefined {
  const a = pattern.split('/');
  const b = path.split('/');
  if (a.length !== b.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < a.length; i++) {
    if (a[i].startsWith('{') && a[i].endsWith('}')) {
      let v: string;
      try { v = decodeURIComponent(b[i]); } catch { return undefined; }
      if (v === '') return undefined;
      params[a[i].slice(1, -1)] = v;
    } else if (a[i] !== b[i]) return undefined;
  }
  return params;
}

/** The peer of a unix socket connection may use the API: our uid or root (SO_PEERCRED), or unknown without the addon. */
function peerAllowed(socket: Socket): boolean {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return true;
  const cred = native.peerCredentials(fd);
  if (!cred) return true;
  const me = process.getuid?.() ?? 0;
  return cred.uid === me || cred.uid === 0;
}

export interface HostHttp {
  server: http.Server;
  /** Requests in progress (event streams included). */
  readonly active: number;
  readonly connections: number;
  closeAll(): void;
}

export function createHostHttp(routes: readonly Route[], opts: { log: (line: string) => void; onRequest?: () => void }): HostHttp {
  const conns = new Map<Socket, Conn>();
  let active = 0;
  let refusedLogged = 0;
  const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES, keepAliveTimeout: KEEP_ALIVE_MS, requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS, connectionsCheckingInterval: 1000 });
  server.on('connection', (socket: Socket) => {
    if (!peerAllowed(socket)) {
      if (refusedLogged++ < 100) opts.log('refused a connection from another user (SO_PEERCRED)');
      socket.destroy();
      return;
    }
    socket.on('error', () => undefined);
    conns.set(socket, { since: Date.now(), active: 0 });
    socket.once('close', () => conns.delete(socket));
    if (conns.size > MAX_CONNECTIONS) {
      // Make room: the oldest connections that have no request in progress go first.
      const idle = [...conns].filter(([s, c]) => c.active === 0 && s !== socket).sort((x, y) => x[1].since - y[1].since);
      for (const [s] of idle.slice(0, conns.size - MAX_CONNECTIONS)) s.destroy();
    }
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable) { socket.destroy(); return; }
    const code = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    const body = JSON.stringify({ error: { code: code.startsWith('431') ? 'ETOOLARGE' : code.startsWith('408') ? 'ETIMEOUT' : 'EINVAL_ARG', message: `malformed request: ${code.slice(4)}` } });
    socket.end(`HTTP/1.1 ${code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const conn = conns.get(req.socket);
    if (conn) conn.active++;
    active++;
    opts.onRequest?.();
    let done = false;
    const finish = () => { if (done) return; done = true; active--; if (conn) conn.active--; opts.onRequest?.(); };
    res.once('close', finish);
    void handle(req, res).catch((e) => { try { const { status, body } = errorBody(e); sendJson(res, status, body); } catch { res.destroy(); } });
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let url: URL;
    try { url = new URL(req.url ?? '/', 'http://medv'); } catch { throw new MedvError('EINVAL_ARG', 'malformed request target'); }
    const candidates = routes.map((r) => ({ r, params: match(r.path, url.pathname) })).filter((x) => x.params);
    const hit = candidates.find((x) => x.r.method === req.method);
    if (!hit) {
      if (candidates.length) {
        res.setHeader('allow', [...new Set(candidates.map((x) => x.r.method))].join(', '));
        throw new MedvError('EMETHOD', `${req.method} is not allowed on ${url.pathname}`);
      }
      throw new MedvError('ENOENT', `no such API path: ${url.pathname.slice(0, 200)}`);
    }
    let bodyRead = false;
    const ctx: Ctx = {
      params: hit.params!, query: url.searchParams, req, res,
      async json() {
        bodyRead = true;
        const type = String(req.headers['content-type'] ?? '');
        const bytes = await readBody(req, MAX_JSON_BODY);
        if (bytes.length === 0) return undefined;
        if (!/^application\/json\b/i.test(type)) throw new MedvError('EINVAL_ARG', 'the request body must be application/json');
        try { return JSON.parse(bytes.toString('utf8')); } catch { throw new MedvError('EINVAL_ARG', 'the request body is not JSON'); }
      },
      async raw(max) {
        bodyRead = true;
        return readBody(req, max);
      },
    };
    let reply: Reply;
    try {
      reply = await hit.r.handler(ctx);
    } catch (e) {
      // A body that was not (all) read: the connection cannot carry another request.
      if (!bodyRead || (e instanceof MedvError && e.code === 'ETOOLARGE')) res.setHeader('connection', 'close');
      throw e;
    }
    if (!bodyRead && (req.headers['content-length'] ?? '0') !== '0') res.setHeader('connection', 'close');
    if (reply === 'streamed') return;
    if ('json' in reply) sendJson(res, reply.status ?? 200, reply.json);
    else send(res, reply.status ?? 200, reply.bytes, reply.type);
  }

  return {
    server,
    get active() { return active; },
    get connections() { return conns.size; },
    closeAll() { for (const s of conns.keys()) s.destroy(); },
  };
}
