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
import { CLIENT_ID_RE, PRINCIPAL_NAME_RE, checkClientId, checkGroupName, checkImageName, checkUserName, checkWorkspaceName } from '../api/names.js';
import { type NewUser, PASSWORD_MAX, checkPassword, checkRole } from './accounts.js';
import { decodeAuditCursor } from './audit.js';
import { MAX_REPORTS, MAX_REPORT_AHEAD_MS, REPORT_STATES, type GrantRequest, type ReportInput, type ReportState, decodeClientsCursor } from './keyservice.js';
import { LIMITS, ROLES, type AuditQuery, type ClientQuery, type HistoryFilter, type PageQuery, type UserFilter } from './store/index.js';

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

// --- pages: the query parameters of every list the admin API and the console show

const bad = (what: string, rule: string, v: string) => new MedvError('EINVAL_ARG', `${what} must be ${rule}, not ${JSON.stringify(v.slice(0, 80))}`, { parameter: what });

function one(q: URLSearchParams, key: string): string | undefined {
  const v = q.get(key);
  return v === null || v === '' ? undefined : v;
}

function count(v: string | null, what: string, dflt = PAGE_DEFAULT): number {
  if (v === null || v === '') return dflt;
  if (!/^[0-9]{1,6}$/.test(v) || Number(v) < 1 || Number(v) > PAGE_MAX) throw arg(`${what} must be a whole number from 1 to ${PAGE_MAX}`);
  return Number(v);
}

export function intParam(q: URLSearchParams, key: string, min: number, max: number): number | undefined {
  const v = one(q, key);
  if (v === undefined) return undefined;
  if (!/^[0-9]{1,10}$/.test(v) || Number(v) < min || Number(v) > max) throw bad(key, `an integer from ${min} to ${max}`, v);
  return Number(v);
}

/** `offset` (default 0) and `limit` (default `dflt`, at most PAGE_MAX): the lists small enough to count (users, groups, policies, a client's history). */
export function pageQuery(q: URLSearchParams, dflt = PAGE_DEFAULT): PageQuery {
  return { offset: intParam(q, 'offset', 0, 10_000_000) ?? 0, limit: count(q.get('limit'), 'limit', dflt) };
}

/** Free text to match (a substring): printable, at most 64 characters. */
export function textParam(q: URLSearchParams, key: string): string | undefined {
  const v = one(q, key)?.trim();
  if (v === undefined || v === '') return undefined;
  if (v.length > 64 || /[\x00-\x1f\x7f]/.test(v)) throw bad(key, 'at most 64 printable characters', v);
  return v;
}

/** A user, group, workspace, policy or image name to filter by (the widest name rule: letters, digits, '.', '_', '@', '-'). */
export function nameParam(q: URLSearchParams, key: string): string | undefined {
  const v = one(q, key)?.trim();
  if (v === undefined || v === '') return undefined;
  if (!PRINCIPAL_NAME_RE.test(v)) throw bad(key, "1 to 64 letters, digits, '.', '_', '@' or '-'", v);
  return v;
}

export function enumParam<T extends string>(q: URLSearchParams, key: string, values: readonly T[]): T | undefined {
  const v = one(q, key);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw bad(key, `one of ${values.join(', ')}`, v);
  return v as T;
}

/**
 * A time: `2026-12-02`, `2026-12-02T10:30` (what a date-time input sends; UTC), with seconds,
 * fractions or a zone. `end` turns a bare date into the start of the next day (so `until=2026-12-02`
 * includes that day). Milliseconds since the epoch.
 */
export function timeParam(q: URLSearchParams, key: string, end = false): number | undefined {
  const v = one(q, key)?.trim();
  if (v === undefined) return undefined;
  const m = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)(Z|[+-]\d{2}:\d{2})?)?$/.exec(v);
  const ms = m ? Date.parse(m[2] ? `${m[1]}T${m[2]}${m[3] ?? 'Z'}` : `${m[1]}T00:00:00Z`) : NaN;
  if (!m || !Number.isFinite(ms) || new Date(`${m[1]}T00:00:00Z`).toISOString().slice(0, 10) !== m[1]) {
    throw bad(key, 'a date or date-time such as 2026-12-02 or 2026-12-02T10:30 (UTC)', v);
  }
  return end && !m[2] ? ms + 86400_000 : ms;
}

export const USER_STATUSES = ['active', 'disabled'] as const;

export function userFilter(q: URLSearchParams): UserFilter {
  return { q: textParam(q, 'q'), group: nameParam(q, 'group'), status: enumParam(q, 'status', USER_STATUSES), role: enumParam(q, 'role', ROLES) };
}

export function historyFilter(q: URLSearchParams): HistoryFilter {
  const client = one(q, 'client');
  if (client !== undefined && !CLIENT_ID_RE.test(client)) throw bad('client', "1 to 64 letters, digits, '.', '_' or '-'", client);
  return { client, user: nameParam(q, 'user'), workspace: nameParam(q, 'workspace') };
}

/** ?limit&after=CURSOR and the filters of GET /api/admin/clients (q: a substring of the client id). */
export function parseClientsQuery(q: URLSearchParams): ClientQuery {
  const out: ClientQuery = {
    limit: count(q.get('limit'), 'limit'),
    q: textParam(q, 'q'), client: undefined, user: nameParam(q, 'user'), workspace: nameParam(q, 'workspace'),
    state: enumParam(q, 'state', REPORT_STATES), image: nameParam(q, 'image'), version: intParam(q, 'version', 1, MAX_VERSION),
  };
  const c = one(q, 'client');
  if (c !== undefined) out.client = checkClientId(c, 'client');
  const a = q.get('after');
  if (a !== null) {
    const after = decodeClientsCursor(a);
    if (!after) throw arg('after must be the next cursor of an earlier page');
    out.after = after;
  }
  return out;
}

/**
 * ?limit&before=CURSOR&since&until&action&actor&user of GET /api/admin/audit: `action` is an
 * action, or a family with `.*` (`login.*`: login, login.fail, login.limited), `user` the actor or
 * the target, `actor` the actor only; times as timeParam (a bare `until` date includes that day).
 */
export function parseAuditQuery(q: URLSearchParams): AuditQuery {
  const out: AuditQuery = { limit: count(q.get('limit'), 'limit') };
  const before = one(q, 'before');
  if (before !== undefined) {
    const c = decodeAuditCursor(before);
    if (!c) throw arg('before must be the next cursor of an earlier page');
    out.before = c;
  }
  out.since = timeParam(q, 'since');
  out.until = timeParam(q, 'until', true);
  const action = one(q, 'action');
  if (action !== undefined) {
    if (!/^[a-z][a-z.]{0,37}(\.\*)?$/.test(action)) throw arg('action must be an audit action such as login.fail, or a family such as login.*');
    out.action = action;
  }
  const actor = one(q, 'actor');
  if (actor !== undefined) out.actor = checkUserName(actor, 'actor');
  out.user = nameParam(q, 'user');
  for (const k of Object.keys(out) as (keyof AuditQuery)[]) if (out[k] === undefined) delete out[k];
  return out;
}
