/**
 * The one HTTP agent of the client: everything `medv login`, `medv admin`, `medv image upload` and
 * `medv workspace` send to a server goes through `HttpAgent.request`, so each rule below holds for
 * every call site at once.
 *
 * - Credentials only over TLS or to this machine: a request that carries a password or a token
 *   (an Authorization header, or `credential: true` for a body that holds one) to a plain http://
 *   URL is refused before any connection is made (EINSECURE), unless the host is a loopback
 *   literal (127.0.0.0/8, ::1) or `localhost`, which is then resolved to loopback addresses only
 *   (a resolver that answers anything else is refused too).
 * - CA pinning: with `ca` (the PEM the login was given), an https:// server must chain to that CA
 *   instead of the system's; `ca` with an http:// URL is EINVAL_ARG.
 * - Timeouts: connecting (TCP and TLS) `connectTimeoutMs`; from the request sent to the answer's
 *   headers `headersTimeoutMs`; no byte either way for `idleTimeoutMs` while the body flows.
 * - Retry (./retry.ts): idempotent requests (GET, HEAD, PUT, DELETE, or `idempotent: true`) are
 *   retried with backoff on transient failures only; a request with a streamed body is retried
 *   only when it can be reopened (`body.open`).
 * - A kept-alive connection the server closed while it sat idle in the pool (a server closes idle
 *   ones after a few seconds; a client whose event loop was busy has not seen the FIN yet) fails
 *   before any byte of the answer: an idempotent request is then sent again at once, once, on a
 *   new connection, whatever the retry policy (the standard rule: RFC 9110 9.2.2, as Go's
 *   net/http and undici do). Anything else that fails on a reused connection is an ordinary failure.
 * - Answers are bounded (`maxBody`, default 16 MiB) and returned whatever their status;
 *   `responseError` turns a non-2xx answer into a MedvError through the one status→code table
 *   (src/api/status.ts), preferring the code a medv server names in its JSON error body.
 * - Failures to reach a server are ENETWORK; a certificate that is not trusted is EHTTP with a
 *   hint about --ca. No redirect is followed.
 */
import * as dns from 'node:dns';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { isIP } from 'node:net';
import type { Readable } from 'node:stream';
import { type ErrorCode, MedvError, fromSystemError } from '../core/errors.js';
import { HTTP_STATUS, codeForStatus } from '../api/status.js';
import { DEFAULT_RETRY, NO_RETRY, type RetryPolicy, TRANSIENT_STATUSES, TransientFailure, isTransientNetworkError, retryAfterMs, withRetry } from './retry.js';

export interface HttpAgentOptions {
  /** PEM of the CA an https:// server must chain to (instead of the system's CAs). */
  ca?: Buffer;
  connectTimeoutMs?: number;
  headersTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Retry policy of idempotent requests (default DEFAULT_RETRY). */
  retry?: RetryPolicy;
}

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

/** A body sent from a stream: `open()` is called once per attempt. */
export interface StreamBody { length: number; open(): Readable }

export interface HttpRequest {
  method: HttpMethod;
  url: string | URL;
  headers?: Record<string, string>;
  body?: Buffer | string | StreamBody;
  /** The body holds a password or token (an Authorization header counts by itself). */
  credential?: boolean;
  /** Safe to send twice (default: GET, HEAD, PUT, DELETE). */
  idempotent?: boolean;
  /** Largest answer body kept (default 16 MiB); a longer one is EHTTP. */
  maxBody?: number;
  /** Bytes of the request body handed to the socket so far (uploads). */
  onBodyProgress?: (bytes: number) => void;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  url: URL;
}

export const DEFAULT_MAX_BODY = 16 * 1024 * 1024;
const IDEMPOTENT: ReadonlySet<HttpMethod> = new Set(['GET', 'HEAD', 'PUT', 'DELETE']);
const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/;

/** A loopback address literal (127.0.0.0/8, ::1, ::ffff:127.x). */
export function isLoopbackAddress(addr: string): boolean {
  const a = addr.replace(/^\[|\]$/g, '').toLowerCase();
  if (isIP(a) === 4) return a.startsWith('127.');
  if (isIP(a) === 6) return a === '::1' || /^::ffff:127\./.test(a) || /^0{0,4}(:0{0,4}){6}:0{0,3}1$/.test(a);
  return false;
}

/** `localhost` and its subdomains (RFC 6761), which this agent resolves to loopback addresses only. */
const isLocalhostName = (h: string) => /^(.+\.)?localhost\.?$/i.test(h);

/** EINSECURE unless a credential may go to `url`: https, or http to this machine. */
export function checkCredentialTarget(url: URL): void {
  if (url.protocol === 'https:') return;
  const host = url.hostname;
  if (url.protocol === 'http:' && (isLoopbackAddress(host) || isLocalhostName(host))) return;
  throw new MedvError('EINSECURE', `refusing to send a password or token to ${url.origin} over plain HTTP: only this machine (127.0.0.1, ::1, localhost) may be reached without TLS; use https:// (with --ca for a private CA)`, { server: url.origin });
}

/** A resolver that returns loopback addresses only (for `localhost` when a credential rides on the request). */
function loopbackLookup(hostname: string, options: dns.LookupOptions, cb: (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void): void {
  dns.lookup(hostname, { ...options, all: true }, (err, addrs) => {
    if (err) { cb(err, ''); return; }
    const ok = addrs.filter((a) => isLoopbackAddress(a.address));
    if (ok.length === 0) {
      const e: NodeJS.ErrnoException = new Error(`${hostname} does not resolve to a loopback address: refusing to send a credential there over plain HTTP`);
      e.code = 'EINSECURE';
      cb(e, '');
      return;
    }
    if (options.all) cb(null, ok);
    else cb(null, ok[0].address, ok[0].family);
  });
}

/** A CA certificate file (PEM, at most 1 MiB) to pin a server to. */
export function readCa(file: string): Buffer {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size > 1 << 20) throw new MedvError('EINVAL_ARG', '--ca must be a PEM file of at most 1 MiB', { file });
    return fs.readFileSync(fd);
  } catch (e) {
    throw fromSystemError(e, file);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Why a server could not be reached, as a MedvError (ENETWORK; EHTTP for an untrusted certificate). */
export function networkError(e: unknown, url: URL): MedvError {
  if (e instanceof MedvError) return e;
  const err = e as NodeJS.ErrnoException;
  const what = err?.code ?? err?.message ?? String(e);
  if (err?.code === 'EINSECURE') return new MedvError('EINSECURE', err.message, { server: url.origin });
  if (TLS_CODES.test(String(err?.code))) return new MedvError('EHTTP', `${url.origin}: ${what} (the server's certificate is not trusted: give its CA with --ca)`, { server: url.origin });
  const transient = isTransientNetworkError(e) || e instanceof TimeoutError;
  return new MedvError('ENETWORK', `${url.origin}: ${err instanceof TimeoutError ? err.message : what} (the server cannot be reached)`, { server: url.origin, transient });
}

/**
 * Worth another try (./retry.ts's rules, for a caller that runs a larger unit under withRetry): a
 * TransientFailure, a transient network error, or an ENETWORK this agent raised for one.
 */
export function isRetryable(e: unknown): boolean {
  return e instanceof TransientFailure || isTransientNetworkError(e) || e instanceof TimeoutError || (e instanceof MedvError && e.code === 'ENETWORK' && e.data.transient === true);
}

class TimeoutError extends Error {
  readonly code = 'ETIMEDOUT';
}

/** A reset (or a write into a closed socket) on a connection reused from the pool, before any byte of the answer. */
class StaleConnection extends Error {
  readonly code: string;
  constructor(readonly original: NodeJS.ErrnoException) {
    super(original.message, { cause: original });
    this.code = original.code ?? 'ECONNRESET';
  }
}
const STALE_CODES: ReadonlySet<string | undefined> = new Set(['ECONNRESET', 'EPIPE']);

/** A transient answer, carried through withRetry (and tus-js-client's retries); the last one is the answer. */
export class TransientAnswer extends TransientFailure {
  constructor(readonly response: HttpResponse) {
    super(`HTTP ${response.status}`, retryAfterMs(response.headers['retry-after']));
  }
}

/** Error codes a medv server may name in `{error: {code}}`: those of the status table. */
const SERVER_CODES = new Set<string>(Object.keys(HTTP_STATUS));

const clean = (s: string, max: number) => s.slice(0, max).replace(/[\x00-\x1f\x7f]/g, ' ').trim();

/**
 * A non-2xx answer as a MedvError: the code the server's JSON error names when it is one of the
 * status table's, else the table's code for the status (src/api/status.ts), else EHTTP. The
 * message is the server's (JSON `error.message`, or the first line of a text body), cleaned of
 * control characters; data carries `status`, and `path`/`retryAfter` when the server gave them.
 */
export function responseError(res: HttpResponse): MedvError {
  let err: { code?: unknown; message?: unknown; path?: unknown; retryAfter?: unknown } | undefined;
  const text = res.body.subarray(0, 64 * 1024).toString('utf8');
  try { err = (JSON.parse(text) as { error?: typeof err })?.error; } catch { err = undefined; }
  const named = typeof err?.code === 'string' && SERVER_CODES.has(err.code) ? err.code as ErrorCode : undefined;
  const code = named ?? codeForStatus(res.status);
  const said = typeof err?.message === 'string' ? clean(err.message, 500) : err === undefined ? clean(text.split('\n')[0] ?? '', 300) : '';
  const data: Record<string, unknown> = { status: res.status };
  if (typeof err?.path === 'string') data.path = clean(err.path, 200);
  const after = retryAfterMs(res.headers['retry-after']);
  if (after !== undefined) data.retryAfter = Math.ceil(after / 1000);
  else if (typeof err?.retryAfter === 'number') data.retryAfter = err.retryAfter;
  const message = said || `HTTP ${res.status}`;
  return new MedvError(code, code === 'EHTTP' ? `${message} (${res.url.origin}${res.url.pathname}: HTTP ${res.status})` : message, data);
}

export class HttpAgent {
  private readonly agents: { http: http.Agent; https: https.Agent };
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly retry: RetryPolicy;

  constructor(readonly options: HttpAgentOptions = {}) {
    this.connectTimeoutMs = options.connectTimeoutMs ?? 15_000;
    this.headersTimeoutMs = options.headersTimeoutMs ?? 60_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.agents = { http: new http.Agent({ keepAlive: true, maxSockets: 8 }), https: this.httpsAgent({ keepAlive: true, maxSockets: 8 }) };
  }

  /** An HTTPS agent with this client's TLS settings (the pinned CA): the pool's and a fresh connection's alike. */
  private httpsAgent(o: https.AgentOptions): https.Agent {
    return new https.Agent({ ...o, ...(this.options.ca ? { ca: this.options.ca } : {}) });
  }

  /** Close idle connections (the agent may still be used afterwards). */
  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  /**
   * Send `r` (retried as ./retry.ts says when idempotent) and return the answer, whatever its
   * status. Throws EINSECURE (a credential to a remote http:// server), EINVAL_ARG (a bad URL),
   * ENETWORK / EHTTP when no answer came.
   */
  async request(r: HttpRequest): Promise<HttpResponse> {
    let url: URL;
    try { url = new URL(r.url); } catch { throw new MedvError('EINVAL_ARG', `${JSON.stringify(String(r.url)).slice(0, 120)} is not a URL`); }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new MedvError('EINVAL_ARG', `the server must be an http:// or https:// URL, not ${url.protocol}`);
    if (url.username || url.password) throw new MedvError('EINVAL_ARG', 'the server URL must not carry a user name or password');
    const credential = r.credential === true || Object.keys(r.headers ?? {}).some((h) => h.toLowerCase() === 'authorization');
    if (credential) checkCredentialTarget(url);
    if (this.options.ca && url.protocol !== 'https:') throw new MedvError('EINVAL_ARG', '--ca is for an https:// server');
    const idempotent = r.idempotent ?? IDEMPOTENT.has(r.method);
    const policy = idempotent ? this.retry : NO_RETRY;
    const localhost = credential && url.protocol === 'http:' && isLocalhostName(url.hostname);
    try {
      return await withRetry(async () => {
        let res: HttpResponse;
        try {
          res = await this.once(url, r, localhost, false);
        } catch (e) {
          if (!(e instanceof StaleConnection)) throw e;
          if (!idempotent) throw e.original;
          res = await this.once(url, r, localhost, true);
        }
        if (TRANSIENT_STATUSES.has(res.status)) throw new TransientAnswer(res);
        return res;
      }, { policy, isTransient: isRetryable });
    } catch (e) {
      if (e instanceof TransientAnswer) return e.response;
      throw networkError(e, url);
    }
  }

  /** One attempt; `fresh`: on a new connection of its own, never one from the pool. */
  private once(url: URL, r: HttpRequest, loopbackOnly: boolean, fresh: boolean): Promise<HttpResponse> {
    const headers: Record<string, string> = { 'accept-encoding': 'identity', ...r.headers };
    let body: Buffer | Readable | undefined;
    if (typeof r.body === 'string') body = Buffer.from(r.body, 'utf8');
    else if (Buffer.isBuffer(r.body)) body = r.body;
    else if (r.body) body = r.body.open();
    if (r.body !== undefined) headers['content-length'] = String(Buffer.isBuffer(body) ? body.length : (r.body as StreamBody).length);
    const max = r.maxBody ?? DEFAULT_MAX_BODY;
    const https_ = url.protocol === 'https:';
    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      const timers: NodeJS.Timeout[] = [];
      const done = (e: unknown, v?: HttpResponse) => {
        if (settled) return;
        settled = true;
        for (const t of timers) clearTimeout(t);
        if (body && !Buffer.isBuffer(body)) body.destroy();
        if (e) reject(e); else resolve(v!);
      };
      const pooled = https_ ? this.agents.https : this.agents.http;
      const agent = !fresh ? pooled : https_ ? this.httpsAgent({ keepAlive: false }) : new http.Agent({ keepAlive: false });
      const req = (https_ ? https : http).request(url, {
        method: r.method, headers, agent,
        ...(loopbackOnly ? { lookup: loopbackLookup as unknown as typeof dns.lookup } : {}),
      });
      let answered = false;
      const fail = (msg: string) => req.destroy(new TimeoutError(`${url.origin}: ${msg}`));
      req.on('socket', (s) => {
        if (!s.connecting) return;
        const t = setTimeout(() => fail(`no connection within ${this.connectTimeoutMs / 1000} s`), this.connectTimeoutMs);
        timers.push(t);
        s.once(https_ ? 'secureConnect' : 'connect', () => clearTimeout(t));
      });
      req.setTimeout(this.idleTimeoutMs, () => fail(`nothing sent or received for ${this.idleTimeoutMs / 1000} s`));
      req.on('finish', () => timers.push(setTimeout(() => fail(`no answer within ${this.headersTimeoutMs / 1000} s`), this.headersTimeoutMs)));
      req.on('error', (e: NodeJS.ErrnoException) => done(req.reusedSocket && !answered && STALE_CODES.has(e.code) ? new StaleConnection(e) : e));
      req.on('response', (res) => {
        answered = true;
        for (const t of timers.splice(0)) clearTimeout(t);
        const chunks: Buffer[] = [];
        let n = 0;
        res.on('data', (c: Buffer) => {
          n += c.length;
          if (n > max) { req.destroy(); done(new MedvError('EHTTP', `${url.origin}${url.pathname}: answer larger than ${max} bytes`)); return; }
          chunks.push(c);
        });
        res.on('end', () => done(undefined, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), url }));
        res.on('error', (e) => done(e));
        res.on('aborted', () => done(Object.assign(new Error(`${url.origin}: the answer was cut short`), { code: 'ECONNRESET' })));
      });
      if (body === undefined || Buffer.isBuffer(body)) {
        req.end(body);
        if (body) r.onBodyProgress?.(body.length);
      } else {
        let sent = 0;
        body.on('data', (c: Buffer) => { sent += c.length; r.onBodyProgress?.(sent); });
        body.on('error', (e) => { req.destroy(); done(e); });
        body.pipe(req);
      }
    });
  }
}
