/**
 * The edge of the host API: request bodies and query values checked once, by a small spec per
 * route (the same fields as docs/host-api.yaml's schemas). Unknown fields are refused, so a typo
 * is an error rather than a setting silently ignored. Failures are EINVAL_ARG (400).
 */
import { isAbsolute } from 'node:path';
import { MedvError } from '../../core/errors.js';
import { checkVmName } from '../../api/names.js';
import { parseDuration } from '../../core/units.js';

export type FieldSpec =
  | 'string' | 'boolean' | 'name' | 'abspath' | 'ports' | 'driveMap' | 'key' | 'userDirs' | 'x11'
  | { int: [number, number] } | { enum: readonly string[] } | { number: [number, number] };

export type BodySpec = Record<string, FieldSpec>;

const bad = (what: string, why: string) => new MedvError('EINVAL_ARG', `${what}: ${why}`);

function check(v: unknown, spec: FieldSpec, what: string): unknown {
  if (typeof spec === 'object') {
    if ('enum' in spec) { if (typeof v !== 'string' || !spec.enum.includes(v)) throw bad(what, `must be one of ${spec.enum.join(', ')}`); return v; }
    const [lo, hi] = 'int' in spec ? spec.int : spec.number;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || ('int' in spec && !Number.isSafeInteger(v))) throw bad(what, `must be a${'int' in spec ? 'n integer' : ' number'} from ${lo} to ${hi}`);
    return v;
  }
  switch (spec) {
    case 'string': if (typeof v !== 'string' || v.length > 4096 || v.includes('\0')) throw bad(what, 'must be a string'); return v;
    case 'boolean': if (typeof v !== 'boolean') throw bad(what, 'must be true or false'); return v;
    case 'name': if (typeof v !== 'string') throw bad(what, 'must be a name'); return checkVmName(v);
    case 'abspath': if (typeof v !== 'string' || !isAbsolute(v) || v.includes('\0') || v.length > 4096) throw bad(what, 'must be an absolute path'); return v;
    case 'ports':
      if (!Array.isArray(v) || v.length > 64 || !v.every((p) => Number.isSafeInteger(p) && p >= 1 && p <= 65535)) throw bad(what, 'must be a list of port numbers 1-65535');
      return v;
    case 'driveMap': {
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw bad(what, 'must map drive letters to absolute folders');
      const out: Record<string, string> = {};
      for (const [k, p] of Object.entries(v)) {
        if (!/^[A-Za-z]:?$/.test(k)) throw bad(what, `${JSON.stringify(k)} is not a drive letter`);
        out[k[0].toUpperCase()] = check(p, 'abspath', `${what}.${k}`) as string;
      }
      return out;
    }
    case 'key': return checkBody(v, { handle: 'string', hostKey: 'abspath', wrapKeyFile: 'abspath' }, what);
    case 'userDirs': return checkBody(v, { data: 'abspath', config: 'abspath', state: 'abspath', cache: 'abspath' }, what);
    case 'x11': return checkBody(v, { display: 'string', xauthority: 'abspath' }, what);
  }
}

/** `body` (a JSON object or nothing) checked against `spec`; every field optional, none unknown. */
export function checkBody<T = Record<string, unknown>>(body: unknown, spec: BodySpec, what = 'request body'): T {
  if (body === undefined || body === null) return {} as T;
  if (typeof body !== 'object' || Array.isArray(body)) throw bad(what, 'must be a JSON object');
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body)) {
    const spec1 = Object.hasOwn(spec, k) ? spec[k] : undefined;
    if (!spec1) throw bad(what, `unknown field ${JSON.stringify(k.slice(0, 60))}`);
    if (v !== undefined && v !== null) out[k] = check(v, spec1, `${what === 'request body' ? '' : `${what}.`}${k}`);
  }
  return out as T;
}

/** A duration in a query (`30`, `90s`, `10m`), in milliseconds, at most `maxMs`. */
export function queryDuration(v: string | null, what: string, maxMs: number): number | undefined {
  if (v === null || v === '') return undefined;
  return parseDuration(v, what, { max: maxMs });
}
