/**
 * The client side of /api/ (what `medv login`, `medv admin` and `medv workspace` call): JSON
 * requests with a bearer token over the one HTTP agent (./http.ts: credentials never to a remote
 * http:// server, CA pinning, timeouts, retry of idempotent calls), answers bounded, the server's
 * typed errors turned back into MedvErrors with the same code (EDENIED, EPOLICY with its path,
 * ERATELIMIT with retryAfter, ENOKEY, …) through the one status table; a server that cannot be
 * reached (refused, reset, unresolvable, no answer in time) is ENETWORK, so a client can tell
 * "unreachable" from "refused"; an untrusted certificate or an answer that is not the API's is EHTTP.
 */
import * as fs from 'node:fs';
import { dirname } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { writeFileAtomicSync } from '../core/fsio.js';
import type { DataKey } from '../crypto/datakey.js';
import { HttpAgent, readCa, responseError, type HttpResponse } from './http.js';

export { readCa };

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
  /** The body holds a credential (a password): refused to a remote http:// server like a token. */
  credential?: boolean;
  /** Safe to repeat (retried on transient failures). */
  idempotent?: boolean;
}

/** A JSON answer and the server's clock (its Date header), when it sent one. */
export interface ApiAnswer<T> { body: T; serverTime?: Date }

/** One request and its 2xx answer (non-2xx answers are MedvErrors: ./http.ts responseError). */
async function exchange(server: string, method: 'GET' | 'POST' | 'DELETE', path: string, o: RequestOptions, accept: string): Promise<{ res: HttpResponse; base: string }> {
  const base = serverBase(server);
  const headers: Record<string, string> = { Accept: accept };
  if (o.token) headers.Authorization = `Bearer ${o.token}`;
  if (o.body !== undefined) headers['Content-Type'] = 'application/json';
  const agent = new HttpAgent(o.ca ? { ca: readCa(o.ca) } : {});
  let res: HttpResponse;
  try {
    res = await agent.request({
      method, url: `${base}${path}`, headers, body: o.body === undefined ? undefined : JSON.stringify(o.body),
      credential: o.credential, idempotent: o.idempotent ?? method === 'GET',
    });
  } finally {
    agent.close();
  }
  if (res.status < 200 || res.status >= 300) throw responseError(res);
  return { res, base };
}

/** One API call; the answer's body and the server's Date. Non-2xx answers are MedvErrors (./http.ts responseError). */
export async function apiCall<T>(server: string, method: 'GET' | 'POST' | 'DELETE', path: string, o: RequestOptions = {}): Promise<ApiAnswer<T>> {
  const { res, base } = await exchange(server, method, path, o, 'application/json');
  let body: unknown;
  try { body = JSON.parse(res.body.toString('utf8')); } catch { body = undefined; }
  if (body === undefined) throw new MedvError('EHTTP', `${base}${path}: the server answered ${res.status} without JSON (is this a medv server?)`);
  const date = typeof res.headers.date === 'string' ? new Date(res.headers.date) : undefined;
  return { body: body as T, ...(date && !Number.isNaN(date.getTime()) ? { serverTime: date } : {}) };
}

/** A GET whose answer is not JSON (a CSV export, a screenshot): its bytes and content type. */
export async function apiBytes(server: string, path: string, o: RequestOptions = {}): Promise<{ bytes: Buffer; type: string }> {
  const { res } = await exchange(server, 'GET', path, o, '*/*');
  return { bytes: res.body, type: String(res.headers['content-type'] ?? '') };
}

export async function apiRequest<T>(server: string, method: 'GET' | 'POST' | 'DELETE', path: string, o: RequestOptions = {}): Promise<T> {
  return (await apiCall<T>(server, method, path, o)).body;
}

// --- the login a client keeps (medv login --token-out FILE)

export interface SavedLogin { server: string; user: string; token: string; expires: string }

/** `login` as JSON in `file` (named by the user): a 0600 file written then renamed over it (src/core/fsio.ts); missing folders are created 0700. */
export function saveLogin(file: string, login: SavedLogin): void {
  try { fs.mkdirSync(dirname(file), { recursive: true, mode: 0o700 }); } catch (e) { throw fromSystemError(e, dirname(file)); }
  writeFileAtomicSync(file, `${JSON.stringify(login)}\n`, { mode: 0o600 });
}

export async function login(server: string, user: string, password: string, lifetimeSeconds?: number, ca?: string): Promise<SavedLogin> {
  const r = await apiRequest<{ user: string; token: string; expires: string }>(server, 'POST', '/api/login', { ca, credential: true, body: { user, password, ...(lifetimeSeconds ? { lifetime: lifetimeSeconds } : {}) } });
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
  /** The server's clock when it answered (its Date header). */
  serverTime?: Date;
}

const SEALED_B64_MAX = 4096;

function badReply(what: string): MedvError {
  return new MedvError('EBADREPLY', `the server's answer is malformed: ${what}`);
}

/**
 * POST /api/workspaces/grant. EFORBIDDEN (data.status 403) when the user is not entitled, ENOKEY when
 * no keys are published for the image, ENETWORK when the server cannot be reached.
 */
export async function requestGrant(server: string, token: string, body: { workspace: string; client: string; clientKey: Buffer }, ca?: string): Promise<WorkspaceGrant> {
  // idempotent: asking twice releases the same keys to the same client key
  const { body: r, serverTime } = await apiCall<Record<string, unknown>>(server, 'POST', '/api/workspaces/grant', { token, ca, idempotent: true, body: { workspace: body.workspace, client: body.client, clientKey: body.clientKey.toString('base64') } });
  const policy = r.policy as { name?: unknown; version?: unknown } | undefined;
  if (typeof r.workspace !== 'string' || typeof r.image !== 'string') throw badReply('workspace or image');
  if (!policy || typeof policy.name !== 'string' || typeof policy.version !== 'number') throw badReply('policy');
  if (typeof r.settings !== 'object' || r.settings === null || Array.isArray(r.settings)) throw badReply('settings');
  if (r.latestVersion !== null && (typeof r.latestVersion !== 'number' || !Number.isInteger(r.latestVersion) || r.latestVersion < 1)) throw badReply('latestVersion');
  if (typeof r.sealed !== 'string' || r.sealed.length > SEALED_B64_MAX || !/^[A-Za-z0-9+/]+={0,2}$/.test(r.sealed)) throw badReply('sealed');
  return {
    workspace: r.workspace, image: r.image, policy: { name: policy.name, version: policy.version },
    settings: r.settings as Record<string, unknown>, latestVersion: r.latestVersion as number | null, sealed: Buffer.from(r.sealed, 'base64'),
    ...(serverTime ? { serverTime } : {}),
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
  // idempotent: the server keeps the latest report per (client, user, workspace)
  const r = await apiRequest<{ stored?: unknown }>(server, 'POST', '/api/reports', { token, ca, idempotent: true, body: { client, reports } });
  if (typeof r.stored !== 'number') throw badReply('stored');
  return r.stored;
}

/** POST /api/workspaces/wiped: this client has wiped `workspace`, as the administrator ordered. */
export async function confirmWiped(server: string, token: string, body: { client: string; workspace: string }, ca?: string): Promise<void> {
  await apiRequest(server, 'POST', '/api/workspaces/wiped', { token, ca, idempotent: true, body });
}

export interface ClientStatus extends ClientReport {
  client: string;
  user: string;
  /** The server's time of receipt, ISO 8601. */
  received: string;
}

/** GET /api/admin/clients: the latest report of each (client, user, workspace). */
export async function listClients(server: string, adminToken: string, ca?: string): Promise<ClientStatus[]> {
  const out: ClientStatus[] = [];
  // The server answers in pages ({clients, next}); `next` is an opaque cursor for `after`.
  for (let after: string | undefined, pages = 0; ; pages++) {
    if (pages >= 10_000) throw badReply('clients (too many pages)');
    const path = `/api/admin/clients?limit=1000${after !== undefined ? `&after=${encodeURIComponent(after)}` : ''}`;
    const r = await apiRequest<{ clients?: unknown; next?: unknown }>(server, 'GET', path, { token: adminToken, ca, idempotent: true });
    if (!Array.isArray(r.clients)) throw badReply('clients');
    for (const c of r.clients as (ClientStatus & { lastError: string | null })[]) {
      const { lastError, ...rest } = c;
      out.push(lastError === null || lastError === undefined ? rest : { ...rest, lastError });
    }
    if (r.next === undefined || r.next === null) return out;
    if (typeof r.next !== 'string' || r.next === after) throw badReply('clients (next)');
    after = r.next;
  }
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
