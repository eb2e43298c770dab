/**
 * The host API's client: what `medv vm …`, `medv host …` and `medv workspace …` call (and a
 * script could, as docs/host-api.yaml describes). HTTP/1.1 over `<run root>/host.sock`, JSON in
 * and out; an error answer becomes the MedvError it names (code, message, data), so the CLI's
 * exit status is the same as when it ran the library itself.
 *
 * No service there (ENOENT, ECONNREFUSED: nothing was sent): `hostApi({ start: true })` starts one
 * (`medv host --ready-fd 3`, detached, its output in `<run root>/host.log`) and waits until it
 * says it listens. Two commands doing that at once start two processes, of which one takes the
 * run root's lock and serves and the other exits at once (src/host/service/service.ts); both
 * commands then talk to the one that serves.
 *
 * Kept small (node:http, node:net and the error type): `medv vm list` loads this and little else.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scrubbedEnv } from '../core/env.js';
import { MedvError, type ErrorCode } from '../core/errors.js';
import { runRoot } from '../core/paths.js';

const CLI_MAIN = join(dirname(fileURLToPath(import.meta.url)), '../cli/main.js');
/** Longest a started service may take to listen. */
const START_TIMEOUT_MS = 60_000;

export interface CallOptions {
  /** The body's bytes and type instead of JSON (a passphrase: application/octet-stream). */
  bytes?: Buffer;
  type?: string;
  /** Give up after this long (default: none; a VM start or suspend can take minutes). */
  timeoutMs?: number;
}

function refused(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ECONNREFUSED';
}

export class HostApi {
  constructor(readonly socketPath: string, private readonly root: string, private readonly autoStart: boolean) {}

  /** A JSON request; resolves with the answer's JSON, rejects with the MedvError it names. */
  async call<T = unknown>(method: string, path: string, body?: unknown, o: CallOptions = {}): Promise<T> {
    const res = await this.send(method, path, body, o);
    const data = await readAll(res);
    const text = data.toString('utf8');
    let value: unknown;
    try { value = text ? JSON.parse(text) : undefined; } catch { throw new MedvError('EPROTO', `the host service answered ${res.statusCode} with something that is not JSON`); }
    if ((res.statusCode ?? 500) >= 400) throw errorOf(value, res.statusCode ?? 500);
    return value as T;
  }

  /** A request whose answer is bytes (a screenshot, serial output). */
  async bytes(method: string, path: string): Promise<Buffer> {
    const res = await this.send(method, path, undefined, {});
    const data = await readAll(res);
    if ((res.statusCode ?? 500) >= 400) {
      let value: unknown;
      try { value = JSON.parse(data.toString('utf8')); } catch { value = undefined; }
      throw errorOf(value, res.statusCode ?? 500);
    }
    return data;
  }

  /** A streamed answer (GET /v1/events): the response, to read as it comes. */
  async stream(path: string): Promise<IncomingMessage> {
    const res = await this.send('GET', path, undefined, {});
    if ((res.statusCode ?? 500) >= 400) {
      let value: unknown;
      try { value = JSON.parse((await readAll(res)).toString('utf8')); } catch { value = undefined; }
      throw errorOf(value, res.statusCode ?? 500);
    }
    return res;
  }

  private async send(method: string, path: string, body: unknown, o: CallOptions): Promise<IncomingMessage> {
    const payload = o.bytes ?? (body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8'));
    const type = o.bytes ? (o.type ?? 'application/octet-stream') : 'application/json';
    try {
      return await this.once(method, path, payload, type, o.timeoutMs);
    } catch (e) {
      // Nothing was sent to a socket nobody listens on: safe to start a service and ask again.
      if (!refused(e) || !this.autoStart) {
        if (refused(e)) throw new MedvError('ENOENT', `no host service runs for ${this.root} (medv host, or any medv vm command, starts one)`);
        throw e;
      }
      await startService(this.root);
      return this.once(method, path, payload, type, o.timeoutMs);
    }
  }

  private once(method: string, path: string, payload: Buffer | undefined, type: string, timeoutMs?: number): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      // a connection per request (agent: false): Node 20's global agent keeps connections alive, and
      // one left idle in its pool may be closed by the service (its oldest idle connections make room
      // under a flood, src/host/service/http.ts) just as it is reused: EPIPE on a request never sent
      const req = request({ socketPath: this.socketPath, agent: false, method, path, headers: { host: 'medv', ...(payload ? { 'content-type': type, 'content-length': payload.length } : {}) } });
      req.once('response', resolve);
      req.once('error', (e) => reject((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? new MedvError('EHYPERVISOR', `the host service closed the connection (${method} ${path})`) : e));
      if (timeoutMs) req.setTimeout(timeoutMs, () => req.destroy(new MedvError('ETIMEOUT', `the host service did not answer ${method} ${path} within ${timeoutMs} ms`)));
      req.end(payload);
    });
  }
}

function readAll(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    res.on('data', (c: Buffer) => parts.push(c));
    res.once('end', () => resolve(Buffer.concat(parts)));
    res.once('error', reject);
  });
}

function errorOf(value: unknown, status: number): MedvError {
  const err = (value as { error?: { code?: string; message?: string; data?: Record<string, unknown> } } | undefined)?.error;
  const e = new MedvError((err?.code ?? 'EHTTP') as ErrorCode, err?.message ?? `the host service answered ${status}`);
  Object.assign(e.data, err?.data ?? {}, { status });
  return e;
}

/** The host service of this run root; with `start`, one is started when none listens. */
export function hostApi(o: { root?: string; start?: boolean } = {}): HostApi {
  const root = o.root ?? runRoot();
  return new HostApi(join(root, 'host.sock'), root, o.start ?? true);
}

/** Is a service listening (a connect, nothing sent)? */
export function hostListening(root = runRoot()): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(join(root, 'host.sock'));
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

/** Start `medv host` for this run root, detached; resolves once it (or another that won the race) listens. */
export async function startService(root: string): Promise<void> {
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  const logFile = join(root, 'host.log');
  // Bounded: a log over 4 MiB starts again.
  let logFd: number;
  try {
    const big = (() => { try { return fs.lstatSync(logFile).size > 4 * 1024 * 1024; } catch { return false; } })();
    logFd = fs.openSync(logFile, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW | (big ? fs.constants.O_TRUNC : 0), 0o600);
  } catch (e) {
    throw new MedvError('EUNSAFE', `cannot open the host service's log ${logFile}: ${(e as Error).message}`, { file: logFile });
  }
  let child;
  try {
    // Never our secrets: the service lives on after this command (src/core/env.ts).
    child = spawn(process.execPath, [CLI_MAIN, 'host', '--ready-fd', '3'], { detached: true, cwd: '/', stdio: ['ignore', logFd, logFd, 'pipe'], env: scrubbedEnv() });
  } finally {
    fs.closeSync(logFd);
  }
  child.on('error', () => undefined);
  const said = await new Promise<'ready' | 'exited' | 'timeout'>((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), START_TIMEOUT_MS);
    let text = '';
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (d) => { text += String(d); if (text.includes('ready')) { clearTimeout(timer); resolve('ready'); } });
    child.once('exit', () => { clearTimeout(timer); resolve('exited'); });
  });
  (child.stdio[3] as NodeJS.ReadableStream & { destroy(): void }).destroy();
  child.unref();
  if (said === 'ready') return;
  // Another service won the run root's lock (or this one failed): wait for whichever listens.
  const deadline = Date.now() + (said === 'timeout' ? 0 : 10_000);
  for (;;) {
    if (await hostListening(root)) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  let tail = '';
  try { const b = fs.readFileSync(logFile, 'utf8'); tail = b.slice(-2000).trim().split('\n').slice(-3).join('; '); } catch { /* none */ }
  throw new MedvError('EHYPERVISOR', `the host service did not start${tail ? `: ${tail}` : ''}`);
}
