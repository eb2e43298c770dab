/**
 * The query parameters of every list the admin API and the console show (`?q=…&offset=…&limit=…`),
 * validated once here, at the edge, for both: a bad value is EINVAL_ARG naming the parameter.
 * Pages are bounded (at most MAX_LIMIT rows), text filters are at most 64 characters, names
 * follow the account name rule, times are ISO 8601 dates or date-times in UTC.
 */
import { MedvError } from '../core/errors.js';
import { CLIENT_ID_RE, PRINCIPAL_NAME_RE } from '../api/names.js';
import { REPORT_STATES } from './keyservice.js';
import type { AuditFilter, ClientFilter, HistoryFilter, PageQuery, UserFilter } from './store/index.js';

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 1000;
const MAX_OFFSET = 10_000_000;
const MAX_TEXT = 64;

const bad = (what: string, rule: string, v: string) => new MedvError('EINVAL_ARG', `${what} must be ${rule}, not ${JSON.stringify(v.slice(0, 80))}`, { parameter: what });

function one(params: URLSearchParams, key: string): string | undefined {
  const v = params.get(key);
  return v === null || v === '' ? undefined : v;
}

function integer(params: URLSearchParams, key: string, min: number, max: number): number | undefined {
  const v = one(params, key);
  if (v === undefined) return undefined;
  if (!/^[0-9]{1,10}$/.test(v) || Number(v) < min || Number(v) > max) throw bad(key, `an integer from ${min} to ${max}`, v);
  return Number(v);
}

/** `offset` (default 0) and `limit` (default `defaultLimit`, at most MAX_LIMIT). */
export function pageQuery(params: URLSearchParams, defaultLimit = DEFAULT_LIMIT): PageQuery {
  return { offset: integer(params, 'offset', 0, MAX_OFFSET) ?? 0, limit: integer(params, 'limit', 1, MAX_LIMIT) ?? defaultLimit };
}

/** Free text to match (substring): printable, at most 64 characters. */
export function textParam(params: URLSearchParams, key: string): string | undefined {
  const v = one(params, key)?.trim();
  if (v === undefined || v === '') return undefined;
  if (v.length > MAX_TEXT || /[\x00-\x1f\x7f]/.test(v)) throw bad(key, `at most ${MAX_TEXT} printable characters`, v);
  return v;
}

/** A user, group, workspace, policy or client name (the account name rule: letters, digits, '.', '_', '@', '-'). */
export function nameParam(params: URLSearchParams, key: string): string | undefined {
  const v = one(params, key)?.trim();
  if (v === undefined || v === '') return undefined;
  if (!PRINCIPAL_NAME_RE.test(v)) throw bad(key, "1 to 64 letters, digits, '.', '_', '@' or '-'", v);
  return v;
}

export function intParam(params: URLSearchParams, key: string, min: number, max: number): number | undefined {
  return integer(params, key, min, max);
}

export function enumParam<T extends string>(params: URLSearchParams, key: string, values: readonly T[]): T | undefined {
  const v = one(params, key);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw bad(key, `one of ${values.join(', ')}`, v);
  return v as T;
}

/**
 * A time in UTC: `2026-12-02`, `2026-12-02T10:30` (what a date-time input sends), with seconds,
 * fractions or a zone. `end` turns a bare date into the start of the next day (so `until=2026-12-02`
 * includes that day). Milliseconds since the epoch.
 */
export function timeParam(params: URLSearchParams, key: string, end = false): number | undefined {
  const v = one(params, key)?.trim();
  if (v === undefined) return undefined;
  const m = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)(Z|[+-]\d{2}:\d{2})?)?$/.exec(v);
  const ms = m ? Date.parse(m[2] ? `${m[1]}T${m[2]}${m[3] ?? 'Z'}` : `${m[1]}T00:00:00Z`) : NaN;
  if (!m || !Number.isFinite(ms) || new Date(`${m[1]}T00:00:00Z`).toISOString().slice(0, 10) !== m[1]) {
    throw bad(key, 'a date or date-time such as 2026-12-02 or 2026-12-02T10:30 (UTC)', v);
  }
  return end && !m[2] ? ms + 86400_000 : ms;
}

// --- the filters of each list, for the admin API and the console alike

export const USER_STATUSES = ['active', 'disabled'] as const;

export function userFilter(p: URLSearchParams): UserFilter {
  return { q: textParam(p, 'q'), group: nameParam(p, 'group'), status: enumParam(p, 'status', USER_STATUSES) };
}

export function clientFilter(p: URLSearchParams): ClientFilter {
  return {
    q: textParam(p, 'q'), user: nameParam(p, 'user'), workspace: nameParam(p, 'workspace'),
    state: enumParam(p, 'state', REPORT_STATES), image: nameParam(p, 'image'), version: intParam(p, 'version', 1, 2 ** 31 - 1),
  };
}

export function historyFilter(p: URLSearchParams): HistoryFilter {
  const client = one(p, 'client');
  if (client !== undefined && !CLIENT_ID_RE.test(client)) throw bad('client', "1 to 64 letters, digits, '.', '_' or '-'", client);
  return { client, user: nameParam(p, 'user'), workspace: nameParam(p, 'workspace') };
}

export function auditFilter(p: URLSearchParams): AuditFilter {
  const action = one(p, 'action');
  if (action !== undefined && !/^[a-z][a-z.]{0,39}$/.test(action)) throw bad('action', 'an action such as login, login.fail or policy', action);
  return { user: nameParam(p, 'user'), action, since: timeParam(p, 'since'), until: timeParam(p, 'until', true) };
}
