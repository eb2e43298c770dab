/**
 * The HTTP edge of `medv serve`: one Node http(s) server, one router over modules, the peer of
 * each request (peer.ts), bounds on what a peer can hold (connections.ts) and how long it may take
 * to send a request, one log line per request, clean shutdown.
 *
 * Deadlines (every one configurable; `medv serve --header-timeout/--body-timeout/--upload-stall-timeout`):
 * - the request head must arrive within `headersTimeoutMs` (TLS: the handshake too);
 * - a body a module reads whole (JSON) must arrive within `bodyTimeoutMs` of the head;
 * - a body a module streams (uploads) must make progress: no byte for `stallTimeoutMs` ends it;
 * - a body nobody reads (a refused request, a GET with a body) is drained for at most `lingerMs`
 *   after the answer is sent, then the connection is closed;
 * - a connection idle for `idleTimeoutMs` is closed; between requests, after `keepAliveTimeoutMs`.
 * A request past a deadline gets 408 (when nothing was answered yet) and its connection is closed.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { httpStatusOf } from '../api/status.js';
import { MedvError } from '../core/errors.js';
import { Connections } from './connections.js';
import { TrustedProxies, setPeer } from './peer.js';
import { plain } from './static.js';

/** A part of the server: the URL prefixes it owns and its handler. */
export interface ServerModule {
  prefixes: string[];
  /** Its request bodies stream for as long as they make progress (uploads), rather than arriving whole within the body deadline. */
  streamsBodies?: boolean;
  handle(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void>;
  /** An `Upgrade:` request (WebSocket) to one of its prefixes; without this, such requests are refused. */
  upgrade?(req: http.IncomingMessage, socket: Duplex, head: Buffer, path: string): void;
  close(): Promise<void>;
}

export interface RequestLog {
  time: string;
  /** The client's address (through trusted proxies, see peer.ts). */
  remote: string;
  method: string;
  path: string;
  status: number;
  /** Bytes of the response body. */
  bytes: number;
  /** Upload bytes the server accepted (tus: the advance of Upload-Offset), when the request uploaded. */
  received?: number;
}

export interface HttpLimits {
  /** Largest request head (request line + headers), bytes. */
  maxHeaderSize: number;
  maxHeadersCount: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  stallTimeoutMs: number;
  lingerMs: number;
  idleTimeoutMs: number;
  keepAliveTimeoutMs: number;
  /** Open connections at once, and from one address (trusted proxies excepted). */
  maxConnections: number;
  maxConnectionsPerAddress: number;
}

export const HTTP_LIMITS: HttpLimits = {
  maxHeaderSize: 16 * 1024,
  maxHeadersCount: 64,
  headersTimeoutMs: 20_000,
  bodyTimeoutMs: 30_000,
  stallTimeoutMs: 60_000,
  lingerMs: 2_000,
  idleTimeoutMs: 120_000,
  keepAliveTimeoutMs: 5_000,
  maxConnections: 512,
  maxConnectionsPerAddress: 32,
};

export interface HttpServerOptions {
  host: string;
  port: number;
  modules: ServerModule[];
  onLog?: (entry: RequestLog) => void;
  limits?: Partial<HttpLimits>;
  /** Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed. */
  trustProxy?: TrustedProxies;
  /** Speak HTTPS with this certificate (chain, PEM) and private key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
}

export interface RunningServer {
  url: string;
  server: http.Server;
  connections: Connections;
  /** Stop accepting, let requests in flight finish for up to `graceMs`, then cut the rest. */
  close(graceMs?: number): Promise<void>;
}

/**
 * The path of a request target, undecoded. Only origin-form (`/…`) is accepted; the query is
 * dropped. Anything else gets 400 from the caller.
 */
export function requestPath(url: string | undefined): string | undefined {
  if (!url || url[0] !== '/' || url.length > 2048) return undefined;
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  if (/[\x00-\x20\x7f\\#]/.test(path)) return undefined;
  // no dot segments, plain or encoded: no route needs them
  if (path.split('/').some((seg) => /^(\.|%2e){1,2}$/i.test(seg))) return undefined;
  return path;
}

/** Count the bytes of a response body as it is written. */
function countBytes(res: http.ServerResponse): () => number {
  let bytes = 0;
  const write = res.write.bind(res) as (...a: unknown[]) => boolean;
  const end = res.end.bind(res) as (...a: unknown[]) => http.ServerResponse;
  const count = (chunk: unknown) => {
    if (typeof chunk === 'string') bytes += Buffer.byteLength(chunk);
    else if (chunk instanceof Uint8Array) bytes += chunk.length;
  };
  (res as { write: unknown }).write = (chunk: unknown, ...rest: unknown[]) => { count(chunk); return write(chunk, ...rest); };
  (res as { end: unknown }).end = (chunk?: unknown, ...rest: unknown[]) => { if (typeof chunk !== 'function') count(chunk); return end(chunk, ...rest); };
  return () => bytes;
}

export async function startHttpServer(o: HttpServerOptions): Promise<RunningServer> {
  const limits: HttpLimits = { ...HTTP_LIMITS, ...o.limits };
  const trust = o.trustProxy ?? new TrustedProxies();
  const options: http.ServerOptions = {
    maxHeaderSize: limits.maxHeaderSize,
    headersTimeout: limits.headersTimeoutMs,
    // bodies are bounded per module below (uploads stream for as long as they make progress)
    requestTimeout: 0,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // how often Node looks for connections past headersTimeout
    connectionsCheckingInterval: Math.max(250, Math.min(30_000, Math.floor(limits.headersTimeoutMs / 4))),
  };
  let server: http.Server;
  try {
    server = o.tls
      ? https.createServer({ ...options, cert: o.tls.cert, key: o.tls.key, minVersion: 'TLSv1.2', handshakeTimeout: limits.headersTimeoutMs })
      : http.createServer(options);
  } catch (e) {
    throw new MedvError('EINVAL_ARG', `the TLS certificate or key is not usable: ${(e as Error).message}`, {}, { cause: e });
  }
  server.maxHeadersCount = limits.maxHeadersCount;
  server.timeout = limits.idleTimeoutMs;
  const connections = new Connections({ total: limits.maxConnections, perAddress: limits.maxConnectionsPerAddress }, trust);
  server.on('connection', (socket: Socket) => { connections.admit(socket); });

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    // Everything a handler or the log needs from the socket is read now: it may be gone later.
    const socket = req.socket;
    const peer = trust.peer(socket.remoteAddress ?? '', req, o.tls !== undefined);
    setPeer(req, peer);
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    const bytes = countBytes(res);
    const path = requestPath(req.url);
    const timers: NodeJS.Timeout[] = [];
    const clear = () => { for (const t of timers.splice(0)) clearTimeout(t); };
    connections.setPhase(socket, req.complete ? 'answer' : 'body');
    // A request nobody reads (a GET) ends only when Node drains it after the answer is finished:
    // that late 'end' must not mark the now idle keep-alive connection as being answered (it
    // then could never make room: keep-alive floods shut every newcomer out).
    req.once('end', () => { if (!res.writableFinished) connections.setPhase(socket, 'answer'); });
    res.once('finish', () => {
      clear();
      connections.setPhase(socket, 'idle');
      // a body nobody read: drain it for a moment (so the client reads our answer), then hang up
      if (!req.complete) {
        const t = setTimeout(() => { if (!req.complete) socket.destroy(); }, limits.lingerMs);
        t.unref();
      }
    });
    res.once('close', () => {
      clear();
      const entry: RequestLog = {
        time: new Date().toISOString(),
        remote: peer.address,
        method: req.method ?? '',
        path: (path ?? String(req.url)).slice(0, 256),
        status: res.statusCode,
        bytes: bytes(),
      };
      const before = Number(req.headers['upload-offset']);
      const after = Number(res.getHeader('upload-offset'));
      if (Number.isSafeInteger(after) && (req.method === 'PATCH' || req.method === 'POST')) entry.received = after - (Number.isSafeInteger(before) ? before : 0);
      o.onLog?.(entry);
    });
    const tooSlow = (what: string) => {
      if (req.complete) return;
      if (!res.headersSent) {
        plain(res, httpStatusOf('ETIMEOUT'), `${what}; the connection is closed`, { Connection: 'close' });
        res.once('finish', () => socket.destroy());
      } else {
        socket.destroy();
      }
    };

    const mod = path === undefined ? undefined : o.modules.find((m) => m.prefixes.some((p) => path === p || path.startsWith(p.endsWith('/') ? p : `${p}/`)));
    if (!req.complete) {
      if (mod?.streamsBodies) {
        let seen = socket.bytesRead;
        const check = () => {
          if (req.complete || res.writableFinished) return;
          if (socket.bytesRead === seen) return tooSlow(`no byte of the request body for ${limits.stallTimeoutMs / 1000} s`);
          seen = socket.bytesRead;
          timers.push(setTimeout(check, limits.stallTimeoutMs).unref());
        };
        timers.push(setTimeout(check, limits.stallTimeoutMs).unref());
      } else {
        timers.push(setTimeout(() => tooSlow(`the request body did not arrive within ${limits.bodyTimeoutMs / 1000} s`), limits.bodyTimeoutMs).unref());
      }
    }
    if (path === undefined) return plain(res, httpStatusOf('EINVAL_ARG'), 'bad request target');
    if (!mod) return plain(res, httpStatusOf('ENOENT'), 'not found');
    mod.handle(req, res, path).catch(() => {
      if (!res.headersSent) plain(res, httpStatusOf('EINTERNAL'), 'internal error');
      else res.destroy();
    });
  });
  // WebSocket upgrades (the console's live view): the module decides; the peer is known as for a request
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    setPeer(req, trust.peer(req.socket.remoteAddress ?? '', req, o.tls !== undefined));
    const path = requestPath(req.url);
    const mod = path === undefined ? undefined : o.modules.find((m) => m.prefixes.some((p) => path === p || path.startsWith(p.endsWith('/') ? p : `${p}/`)));
    if (!mod?.upgrade) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    mod.upgrade(req, socket, head, path!);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    const fail = (e: NodeJS.ErrnoException) => {
      const where = `${o.host}:${o.port}`;
      if (e.code === 'EADDRINUSE') reject(new MedvError('EBUSY', `cannot listen on ${where}: the address is in use`, {}, { cause: e }));
      else if (e.code === 'EACCES') reject(new MedvError('EINVAL_ARG', `cannot listen on ${where}: permission denied (ports below 1024 need privileges)`, {}, { cause: e }));
      else if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') reject(new MedvError('EINVAL_ARG', `cannot listen on ${where}: no such local address`, {}, { cause: e }));
      else reject(e);
    };
    server.once('error', fail);
    server.listen(o.port, o.host, () => { server.off('error', fail); resolve(); });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `${o.tls ? 'https' : 'http'}://${host}:${addr.port}`,
    server,
    connections,
    async close(graceMs = 5_000) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), graceMs);
      await closed;
      clearTimeout(timer);
      for (const m of o.modules) await m.close();
    },
  };
}
