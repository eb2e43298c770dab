/**
 * The edge of /api/: every request body and query turned into the typed arguments of a service
 * function (accounts.ts, keyservice.ts, audit.ts), or EINVAL_ARG naming the bad field. Nothing
 * behind this file sees unchecked input. The console (issue 20) parses its forms into the same
 * types with the same rules.
 *
 * Image keys are parsed from the body's bytes (jsonbytes.ts): the key fields go from the request
 * straight into secure memory and are never JavaScript strings (issue 18 item 17).
 */
import { MedvError } from '../core/errors.js';
import { DataKey, DATA_KEY_BYTES, KEY_ID_BYTES } from '../crypto/datakey.js';
import { secureAlloc, secureFree } from '../crypto/secure.js';
import { base64DecodeInto, base64Length, hexDecodeInto } from '../api/bytes.js';
import { SecretText, parseJsonBytes } from '../api/jsonbytes.js';
import { CLIENT_KEY_BYTES, MAX_SIGNERS, SIGNER_BYTES, checkClientKey, type ImageKeySet } from '../api/keyrelease.js';
import { checkClientId, checkGroupName, checkImageName, checkUserName, checkWorkspaceName } from '../api/names.js';
import { type NewUser, PASSWORD_MAX, checkPassword, checkRole } from './accounts.js';
import { decodeAuditCursor } from './audit.js';
import { MAX_REPORTS, MAX_REPORT_AHEAD_MS, REPORT_STATES, type GrantRequest, type ReportInput, type ReportState, decodeClientsCursor } from './keyservice.js';
import { LIMITS, type AuditQuery, type ReportKey } from './store/index.js';

const MAX_VERSION = 2 ** 31 - 1;
/** Rows in one page of a list (clients, audit): the default and the most a request may ask. */
export const PAGE_DEFAULT = 100;
export const PAGE_MAX = 1000;

const arg = (msg: string) => new MedvError('EINVAL_ARG', msg);

export function object(v: unknown, what = 'the request body'): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof SecretText) throw arg(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

function field(o: Record<string, unknown>, k: string, what: string): unknown {
  if (!Object.prototype.hasOwnProperty.call(o, k)) throw arg(`${what} is missing`);
  return o[k];
}

function only(o: Record<string, unknown>, keys: string[], what: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw arg(`${what}${k.slice(0, 40)} is not a field of this request`);
}

function hexBytes(v: unknown, n: number, what: string): Buffer {
  if (typeof v !== 'string' || v.length !== 2 * n || !/^[0-9a-fA-F]+$/.test(v)) throw arg(`${what} must be ${2 * n} hex digits (${n} bytes)`);
  return Buffer.from(v, 'hex');
}

/** Strict padded base64 of exactly `n` bytes (not secret: a public key). */
function base64Bytes(v: unknown, n: number, what: string): Buffer {
  const out = Buffer.alloc(n);
  if (typeof v !== 'string' || v.length !== base64Length(n) || !base64DecodeInto(Buffer.from(v, 'latin1'), out)) throw arg(`${what} must be base64 of ${n} bytes (${base64Length(n)} characters)`);
  return out;
}

// --- accounts

export function parseLogin(b: Record<string, unknown>): { user: string; password: string; lifetimeMs?: number } {
  const user = checkUserName(b.user);
  if (typeof b.password !== 'string' || Buffer.byteLength(b.password) > PASSWORD_MAX) throw arg(`password must be a string of at most ${PASSWORD_MAX} bytes`);
  if (b.lifetime === undefined) return { user, password: b.password };
  if (typeof b.lifetime !== 'number' || !Number.isInteger(b.lifetime) || b.lifetime < 1) throw arg('lifetime must be a whole number of seconds, 1 or more');
  return { user, password: b.password, lifetimeMs: b.lifetime * 1000 };
}

export function parseNewUser(b: Record<string, unknown>): NewUser {
  const name = checkUserName(b.user);
  const password = checkPassword(b.password);
  if (b.groups !== undefined && (!Array.isArray(b.groups) || b.groups.length > 64)) throw arg('groups must be a list of at most 64 group names');
  const groups = [...new Set(((b.groups ?? []) as unknown[]).map((g) => checkGroupName(g)))];
  return { name, password, groups, role: b.role === undefined ? 'user' : checkRole(b.role) };
}

export function parsePassword(b: Record<string, unknown>): string {
  only(b, ['password'], '');
  return checkPassword(b.password);
}

// --- keys and reports

export function parseGrant(b: Record<string, unknown>): GrantRequest {
  const workspace = checkWorkspaceName(field(b, 'workspace', 'workspace'));
  const client = checkClientId(field(b, 'client', 'client'));
  const clientKey = base64Bytes(field(b, 'clientKey', 'clientKey'), CLIENT_KEY_BYTES, 'clientKey');
  checkClientKey(clientKey);
  return { workspace, client, clientKey };
}

export function parseReports(b: Record<string, unknown>, now = Date.now()): { client: string; reports: ReportInput[] } {
  const client = checkClientId(field(b, 'client', 'client'));
  const list = field(b, 'reports', 'reports');
  if (!Array.isArray(list) || list.length < 1 || list.length > MAX_REPORTS) throw arg(`reports must be a list of 1 to ${MAX_REPORTS} reports`);
  const reports = list.map((v, i): ReportInput => {
    const w = `reports[${i}]`;
    const r = object(v, w);
    for (const k of Object.keys(r)) if (!['workspace', 'version', 'state', 'lastError', 'at'].includes(k)) throw arg(`${w}.${k.slice(0, 40)} is not a report field`);
    const workspace = checkWorkspaceName(field(r, 'workspace', `${w}.workspace`), `${w}.workspace`);
    const version = field(r, 'version', `${w}.version`);
    if (version !== null && (typeof version !== 'number' || !Number.isInteger(version) || version < 1 || version > MAX_VERSION)) throw arg(`${w}.version must be null or an integer from 1 to ${MAX_VERSION}`);
    const state = field(r, 'state', `${w}.state`);
    if (typeof state !== 'string' || !(REPORT_STATES as readonly string[]).includes(state)) throw arg(`${w}.state must be one of ${REPORT_STATES.join(', ')}`);
    const lastError = r.lastError;
    if (lastError !== undefined && lastError !== null && (typeof lastError !== 'string' || lastError.length > LIMITS.lastError)) throw arg(`${w}.lastError must be a string of at most ${LIMITS.lastError} characters`);
    const at = field(r, 'at', `${w}.at`);
    const ms = typeof at === 'string' && at.length <= 40 && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/.test(at) ? Date.parse(at) : NaN;
    if (!Number.isFinite(ms) || ms < 0) throw arg(`${w}.at must be an ISO 8601 time such as 2026-12-02T10:00:00Z`);
    if (ms > now + MAX_REPORT_AHEAD_MS) throw arg(`${w}.at is more than a day ahead of the server's clock (check the client's clock)`);
    return { workspace, version: version as number | null, state: state as ReportState, lastError: (lastError as string | null | undefined) ?? null, reportedAt: ms };
  });
  return { client, reports };
}

/** The fields of a key body that are key material: parsed into secure memory, never strings. */
const KEY_FIELDS = [['content', 'key'], ['repository', 'key']];

/**
 * POST /api/admin/image-keys from the body's bytes: {image, content: {id, key}, repository: {id,
 * key}, signers[]}. The caller disposes the DataKeys; every secure buffer is freed on error.
 */
export function parseImageKeys(raw: Buffer): ImageKeySet {
  const body = parseJsonBytes(raw, KEY_FIELDS);
  const secrets: SecretText[] = [];
  const collect = (v: unknown) => {
    if (v instanceof SecretText) secrets.push(v);
    else if (v && typeof v === 'object') for (const x of Object.values(v)) collect(x);
  };
  collect(body);
  const keys: DataKey[] = [];
  try {
    const b = object(body);
    const image = checkImageName(field(b, 'image', 'image'), 'image');
    const signersIn = field(b, 'signers', 'signers');
    if (!Array.isArray(signersIn) || signersIn.length > MAX_SIGNERS) throw arg(`signers must be a list of at most ${MAX_SIGNERS} Ed25519 public keys (64 hex digits each)`);
    const signers = signersIn.map((s, i) => hexBytes(s, SIGNER_BYTES, `signers[${i}]`));
    for (const what of ['content', 'repository']) {
      const o = object(field(b, what, what), what);
      const idText = field(o, 'id', `${what}.id`);
      const id = Buffer.alloc(KEY_ID_BYTES);
      if (typeof idText !== 'string' || !hexDecodeInto(Buffer.from(idText, 'latin1'), id)) throw arg(`${what}.id must be ${2 * KEY_ID_BYTES} hex digits (${KEY_ID_BYTES} bytes)`);
      const text = field(o, 'key', `${what}.key`);
      const key = secureAlloc(DATA_KEY_BYTES);
      if (!(text instanceof SecretText) || !base64DecodeInto(text.bytes, key)) {
        secureFree(key);
        throw arg(`${what}.key must be base64 of ${DATA_KEY_BYTES} bytes (${base64Length(DATA_KEY_BYTES)} characters)`);
      }
      try {
        keys.push(DataKey.adopt(id, key));
      } catch {
        throw arg(`${what}.key is not a usable key (equal halves)`);
      }
    }
    return { image, content: keys[0], repository: keys[1], signers };
  } catch (e) {
    for (const k of keys) k.dispose();
    throw e;
  } finally {
    for (const t of secrets) t.dispose();
  }
}

// --- pages

function count(v: string | null, what: string): number {
  if (v === null) return PAGE_DEFAULT;
  if (!/^[0-9]{1,6}$/.test(v) || Number(v) < 1 || Number(v) > PAGE_MAX) throw arg(`${what} must be a whole number from 1 to ${PAGE_MAX}`);
  return Number(v);
}

/** ?limit=N&after=CURSOR of GET /api/admin/clients. */
export function parseClientsQuery(q: URLSearchParams): { limit: number; after?: ReportKey } {
  const limit = count(q.get('limit'), 'limit');
  const a = q.get('after');
  if (a === null) return { limit };
  const after = decodeClientsCursor(a);
  if (!after) throw arg('after must be the next cursor of an earlier page');
  return { limit, after };
}

/** ?limit=N&before=CURSOR&since=ISO&action=A&actor=NAME of GET /api/admin/audit. */
export function parseAuditQuery(q: URLSearchParams): AuditQuery {
  const out: AuditQuery = { limit: count(q.get('limit'), 'limit') };
  const before = q.get('before');
  if (before !== null) {
    const c = decodeAuditCursor(before);
    if (!c) throw arg('before must be the next cursor of an earlier page');
    out.before = c;
  }
  const since = q.get('since');
  if (since !== null) {
    const t = Date.parse(since);
    if (since.length > 40 || !Number.isFinite(t)) throw arg('since must be an ISO 8601 time such as 2026-12-02T10:00:00Z');
    out.since = t;
  }
  const action = q.get('action');
  if (action !== null) {
    if (!/^[a-z][a-z.]{0,39}$/.test(action)) throw arg('action must be an audit action such as login.fail');
    out.action = action;
  }
  const actor = q.get('actor');
  if (actor !== null) out.actor = checkUserName(actor, 'actor');
  return out;
}
