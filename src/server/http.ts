/**
 * The HTTP edge of `medv serve`: one Node http server, one router over modules (the image
 * repository, and /api/: users, policies, image keys, client reports), bounds on what a peer can grow,
 * one log line per request, clean shutdown.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { MedvError } from '../core/errors.js';
import { plain } from './static.js';

/** A part of the server: the URL prefixes it owns and its handler. */
export interface ServerModule {
  prefixes: string[];
  handle(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void>;
  /** An `Upgrade:` request (WebSocket) to one of its prefixes; without this, such requests are refused. */
  upgrade?(req: http.IncomingMessage, socket: Duplex, head: Buffer, path: string): void;
  close(): Promise<void>;
}

export interface RequestLog {
  time: string;
  remote: string;
  method: string;
  path: string;
  status: number;
  /** Bytes of the response body. */
  bytes: number;
  /** Upload bytes the server accepted (tus: the advance of Upload-Offset), when the request uploaded. */
  received?: number;
}

export interface HttpServerOptions {
  host: string;
  port: number;
  modules: ServerModule[];
  onLog?: (entry: RequestLog) => void;
  /** Largest request head (request line + headers), bytes. */
  maxHeaderSize?: number;
  /** Open connections at once. */
  maxConnections?: number;
  /** A connection that sends or receives nothing for this long is closed (ms). */
  idleTimeoutMs?: number;
  /** Speak HTTPS with this certificate (chain, PEM) and private key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
}

export interface RunningServer {
  url: string;
  server: http.Server;
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

export async function startHttpServer(o: HttpServerOptions): Promise<RunningServer> {
  const options: http.ServerOptions = {
    maxHeaderSize: o.maxHeaderSize ?? 16 * 1024,
    headersTimeout: 30_000,
    // uploads stream for as long as they make progress; idleness is bounded by the socket timeout
    requestTimeout: 0,
    keepAliveTimeout: 5_000,
  };
  let server: http.Server;
  try {
    server = o.tls ? https.createServer({ ...options, cert: o.tls.cert, key: o.tls.key, minVersion: 'TLSv1.2' }) : http.createServer(options);
  } catch (e) {
    throw new MedvError('EINVAL_ARG', `the TLS certificate or key is not usable: ${(e as Error).message}`, {}, { cause: e });
  }
  server.maxHeadersCount = 64;
  server.maxConnections = o.maxConnections ?? 256;
  server.timeout = o.idleTimeoutMs ?? 120_000;

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    let bytes = 0;
    const write = res.write.bind(res) as (...a: unknown[]) => boolean;
    const end = res.end.bind(res) as (...a: unknown[]) => http.ServerResponse;
    const count = (chunk: unknown) => {
      if (typeof chunk === 'string') bytes += Buffer.byteLength(chunk);
      else if (chunk instanceof Uint8Array) bytes += chunk.length;
    };
    (res as { write: unknown }).write = (chunk: unknown, ...rest: unknown[]) => { count(chunk); return write(chunk, ...rest); };
    (res as { end: unknown }).end = (chunk?: unknown, ...rest: unknown[]) => { if (typeof chunk !== 'function') count(chunk); return end(chunk, ...rest); };
    const path = requestPath(req.url);
    res.once('close', () => {
      const entry: RequestLog = {
        time: new Date().toISOString(),
        remote: req.socket.remoteAddress ?? '',
        method: req.method ?? '',
        path: (path ?? String(req.url)).slice(0, 256),
        status: res.statusCode,
        bytes,
      };
      const before = Number(req.headers['upload-offset']);
      const after = Number(res.getHeader('upload-offset'));
      if (Number.isSafeInteger(after) && (req.method === 'PATCH' || req.method === 'POST')) entry.received = after - (Number.isSafeInteger(before) ? before : 0);
      o.onLog?.(entry);
    });
    if (path === undefined) return plain(res, 400, 'bad request target');
    const mod = o.modules.find((m) => m.prefixes.some((p) => path === p || path.startsWith(p.endsWith('/') ? p : `${p}/`)));
    if (!mod) return plain(res, 404, 'not found');
    mod.handle(req, res, path).catch(() => {
      if (!res.headersSent) plain(res, 500, 'internal error');
      else res.destroy();
    });
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
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
