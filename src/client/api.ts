/**
 * The client side of /api/ (what `medv login` and `medv admin` call): JSON requests with a bearer
 * token, answers bounded, the server's typed errors turned back into MedvErrors with the same code
 * (EDENIED, EPOLICY with its path, ERATELIMIT with retryAfter, ENOKEY, …); a server that cannot be
 * reached (refused, reset, unresolvable, no answer within 60 s) is ENETWORK, so a client can tell
 * "unreachable" from "refused"; an untrusted certificate or an answer that is not the API's is EHTTP.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import { dirname } from 'node:path';
import { type ErrorCode, MedvError, fromSystemError } from '../core/errors.js';
import { writeFileAtomicSync } from '../core/fsio.js';
import type { DataKey } from '../crypto/datakey.js';

const MAX_ANSWER = 16 * 1024 * 1024;
const KNOWN: ErrorCode[] = ['EINVAL_ARG', 'ENOENT', 'EEXIST', 'EDENIED', 'EINSECURE', 'EPOLICY', 'ERATELIMIT', 'ETOOLARGE', 'ENOKEY', 'EEXPIRED'];
const BY_STATUS: Record<number, ErrorCode> = { 400: 'EINVAL_ARG', 401: 'EDENIED', 403: 'EDENIED', 404: 'ENOENT', 409: 'EEXIST', 413: 'ETOOLARGE', 429: 'ERATELIMIT' };

export function serverBase(server: string): string {
  let u: URL;
  try { u = new URL(server); } catch { throw new MedvError('EINVAL_ARG', `--server ${JSON.stringify(server).slice(0, 120)} is not a URL`); }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new MedvError('EINVAL_ARG', `--server must be an http:// or https:// URL, not ${u.protocol}`);
  if (u.username || u.password) throw new MedvError('EINVAL_ARG', '--server must not carry a user name or password');
  return u.href.replace(/\/+$/, '');
}

export interface RequestOptions {
  token?: string;
  body?: unknown;
  /** PEM file of the CA that signed an https server's certificate (instead of the system's CAs). */
  ca?: string;
}

/** A CA certificate file (PEM, at most 1 MiB) to pin a server to. */
export function readCa(file: string): Buffer {
  try {
    const st = fs.statSync(file);
    if (!st.isFile() || st.size > 1 << 20) throw new MedvError('EINVAL_ARG', '--ca must be a PEM file of at most 1 MiB', { file });
    return fs.readFileSync(file);
  } catch (e) {
    throw fromSystemError(e, file);
  }
}

/** One request with Node's http/https (https with a pinned CA when `ca` is given); resolves with status, headers and body. */
function send(url: URL, method: string, headers: Record<string, string>, body: string | undefined, ca: Buffer | undefined): Promise<{ status: number; headers: IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, { method, headers: body === undefined ? headers : { ...headers, 'Content-Length': String(Buffer.byteLength(body)) }, ...(ca ? { ca } : {}), timeout: 60_000 }, (res) => {
      const chunks: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n > MAX_ANSWER) { req.destroy(new MedvError('EHTTP', `${url.origin}${url.pathname}: answer larger than ${MAX_ANSWER} bytes`)); return; }
        chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new MedvError('ENETWORK', `${url.origin}: no answer within 60 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

export async function apiRequest<T>(server: string, method: 'GET' | 'POST', path: string, o: RequestOptions = {}): Promise<T> {
  const base = serverBase(server);
  if (o.ca && !base.startsWith('https:')) throw new MedvError('EINVAL_ARG', '--ca is for an https:// server');
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (o.token) headers.Authorization = `Bearer ${o.token}`;
  if (o.body !== undefined) headers['Content-Type'] = 'application/json';
  let res: { status: number; headers: IncomingHttpHeaders; text: string };
  try {
    res = await send(new URL(`${base}${path}`), method, headers, o.body === undefined ? undefined : JSON.stringify(o.body), o.ca ? readCa(o.ca) : undefined);
  } catch (e) {
    if (e instanceof MedvError) throw e;
    const err = e as NodeJS.ErrnoException;
    const tls = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(String(err.code));
    if (tls) throw new MedvError('EHTTP', `${base}: ${err.code ?? err.message} (the server's certificate is not trusted: give its CA with --ca)`);
    throw new MedvError('ENETWORK', `${base}: ${err.code ?? err.message} (the server cannot be reached)`);
  }
  const text = res.text;
  let body: unknown;
  try { body = JSON.parse(text); } catch { body = undefined; }
  if (res.status >= 200 && res.status < 300) {
    if (body === undefined) throw new MedvError('EHTTP', `${base}${path}: the server answered ${res.status} without JSON (is this a medv server?)`);
    return body as T;
  }
  const err = (body as { error?: { code?: string; message?: string; path?: string; retryAfter?: number } } | undefined)?.error;
  const code: ErrorCode = err?.code && KNOWN.includes(err.code as ErrorCode) ? err.code as ErrorCode : BY_STATUS[res.status] ?? 'EHTTP';
  const message = typeof err?.message === 'string' ? err.message.slice(0, 500).replace(/[\x00-\x1f]/g, ' ') : `HTTP ${res.status}`;
  const data: Record<string, unknown> = { status: res.status };
  if (typeof err?.path === 'string') data.path = err.path.slice(0, 200);
  if (code === 'ERATELIMIT') data.retryAfter = Number(res.headers['retry-after']) || err?.retryAfter;
  throw new MedvError(code, `${message}${code === 'EHTTP' ? ` (${base}${path})` : ''}`, data);
}

// --- the login a client keeps (medv login --token-out FILE)

export interface SavedLogin { server: string; user: string; token: string; expires: string }

/** `login` as JSON in `file` (named by the user): a 0600 file written then renamed over it (src/core/fsio.ts); missing folders are created 0700. */
export function saveLogin(file: string, login: SavedLogin): void {
  try { fs.mkdirSync(dirname(file), { recursive: true, mode: 0o700 }); } catch (e) { throw fromSystemError(e, dirname(file)); }
  writeFileAtomicSync(file, `${JSON.stringify(login)}\n`, { mode: 0o600 });
}

export async function login(server: string, user: string, password: string, lifetimeSeconds?: number, ca?: string): Promise<SavedLogin> {
  const r = await apiRequest<{ user: string; token: string; expires: string }>(server, 'POST', '/api/login', { ca, body: { user, password, ...(lifetimeSeconds ? { lifetime: lifetimeSeconds } : {}) } });
  return { server: serverBase(server), user: r.user, token: r.token, expires: r.expires };
}

// --- workspace keys and client reports

export interface WorkspaceGrant {
  workspace: string;
  image: string;
  policy: { name: string; version: number };
  settings: Record<string, unknown>;
  latestVersion: number | null;
  /** crypto_box_seal of the image keys to the client key: open with keyrelease.ts openReleasedKeys. */
  sealed: Buffer;
}

const SEALED_B64_MAX = 4096;

function badReply(what: string): MedvError {
  return new MedvError('EBADREPLY', `the server's answer is malformed: ${what}`);
}

/**
 * POST /api/workspaces/grant. EDENIED (data.status 403) when the user is not entitled, ENOKEY when
 * no keys are published for the image, ENETWORK when the server cannot be reached.
 */
export async function requestGrant(server: string, token: string, body: { workspace: string; client: string; clientKey: Buffer }, ca?: string): Promise<WorkspaceGrant> {
  const r = await apiRequest<Record<string, unknown>>(server, 'POST', '/api/workspaces/grant', { token, ca, body: { workspace: body.workspace, client: body.client, clientKey: body.clientKey.toString('base64') } });
  const policy = r.policy as { name?: unknown; version?: unknown } | undefined;
  if (typeof r.workspace !== 'string' || typeof r.image !== 'string') throw badReply('workspace or image');
  if (!policy || typeof policy.name !== 'string' || typeof policy.version !== 'number') throw badReply('policy');
  if (typeof r.settings !== 'object' || r.settings === null || Array.isArray(r.settings)) throw badReply('settings');
  if (r.latestVersion !== null && (typeof r.latestVersion !== 'number' || !Number.isInteger(r.latestVersion) || r.latestVersion < 1)) throw badReply('latestVersion');
  if (typeof r.sealed !== 'string' || r.sealed.length > SEALED_B64_MAX || !/^[A-Za-z0-9+/]+={0,2}$/.test(r.sealed)) throw badReply('sealed');
  return {
    workspace: r.workspace, image: r.image, policy: { name: policy.name, version: policy.version },
    settings: r.settings as Record<string, unknown>, latestVersion: r.latestVersion as number | null, sealed: Buffer.from(r.sealed, 'base64'),
  };
}

export interface ClientReport {
  workspace: string;
  version: number | null;
  state: 'running' | 'stopped' | 'suspended' | 'updating' | 'failed' | 'offline';
  lastError?: string;
  /** The client's time of the report, ISO 8601. */
  at: string;
}

/** POST /api/reports (1 to 64 reports); resolves with the number the server stored. */
export async function sendReports(server: string, token: string, client: string, reports: ClientReport[], ca?: string): Promise<number> {
  const r = await apiRequest<{ stored?: unknown }>(server, 'POST', '/api/reports', { token, ca, body: { client, reports } });
  if (typeof r.stored !== 'number') throw badReply('stored');
  return r.stored;
}

export interface ClientStatus extends ClientReport {
  client: string;
  user: string;
  /** The server's time of receipt, ISO 8601. */
  received: string;
}

/** GET /api/admin/clients: the latest report of each (client, user, workspace). */
export async function listClients(server: string, adminToken: string, ca?: string): Promise<ClientStatus[]> {
  const r = await apiRequest<{ clients?: unknown }>(server, 'GET', '/api/admin/clients', { token: adminToken, ca });
  if (!Array.isArray(r.clients)) throw badReply('clients');
  return (r.clients as (ClientStatus & { lastError: string | null })[]).map((c) => {
    const { lastError, ...rest } = c;
    return lastError === null || lastError === undefined ? rest : { ...rest, lastError };
  });
}

/** POST /api/admin/image-keys: the console's keys of an image, for the server to release to entitled clients. */
export async function publishImageKeys(server: string, adminToken: string, keys: { image: string; content: DataKey; repository: DataKey; signers: Buffer[] }, ca?: string): Promise<{ replaced: boolean }> {
  const body = {
    image: keys.image,
    content: { id: keys.content.keyId.toString('hex'), key: keys.content.key.toString('base64') },
    repository: { id: keys.repository.keyId.toString('hex'), key: keys.repository.key.toString('base64') },
    signers: keys.signers.map((s) => s.toString('hex')),
  };
  const r = await apiRequest<{ replaced?: unknown }>(server, 'POST', '/api/admin/image-keys', { token: adminToken, ca, body });
  return { replaced: r.replaced === true };
}
