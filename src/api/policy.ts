/**
 * Policy documents: validated against POLICY_SCHEMA (ajv, strict mode) at publish time. A refusal
 * names the JSON pointer of the bad field (`/workspaces/0/memory`), so the administrator can find it.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { MedvError } from '../core/errors.js';
import { checkMirrorUrls } from './mirrors.js';
import { POLICY_SCHEMA } from './policy-schema.js';

export interface Policy {
  name: string;
  description?: string;
  users?: string[];
  groups?: string[];
  workspaces: { name: string; image: string; expires?: string; [k: string]: unknown }[];
}

let validator: ValidateFunction | undefined;
function validate(): ValidateFunction {
  if (!validator) {
    const ajv = new Ajv({ strict: true, allErrors: false });
    validator = ajv.compile(POLICY_SCHEMA as unknown as object);
  }
  return validator;
}

function pathOf(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  const esc = (s: string) => s.replaceAll('~', '~0').replaceAll('/', '~1');
  if (e.keyword === 'additionalProperties') return `${e.instancePath}/${esc(String(p.additionalProperty))}`;
  if (e.keyword === 'required') return `${e.instancePath}/${esc(String(p.missingProperty))}`;
  return e.instancePath || '/';
}

function messageOf(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  if (e.keyword === 'additionalProperties') return 'is not a known field';
  if (e.keyword === 'required') return 'is required';
  if (e.keyword === 'enum') return `must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
  if (e.keyword === 'oneOf') return 'does not match any allowed form';
  return e.message ?? 'is invalid';
}

/** The document as a Policy, or EPOLICY with `data.path` (a JSON pointer) and a message. */
export function checkPolicy(doc: unknown): Policy {
  const v = validate();
  if (!v(doc)) {
    // ajv lists a oneOf's branch errors before the oneOf itself: the oneOf names the field
    const errs = v.errors ?? [];
    const e = errs.find((x) => x.keyword === 'oneOf') ?? errs[0];
    const path = e ? pathOf(e) : '/';
    throw new MedvError('EPOLICY', `policy field ${path} ${e ? messageOf(e) : 'is invalid'}`, { path });
  }
  const policy = doc as Policy;
  policy.workspaces.forEach((w, i) => {
    if (w.expires !== undefined) {
      const d = new Date(`${w.expires}T00:00:00Z`);
      if (Number.isNaN(d.getTime()) || d.toISOString().slice(0, 10) !== w.expires) {
        throw new MedvError('EPOLICY', `policy field /workspaces/${i}/expires is not a calendar date`, { path: `/workspaces/${i}/expires` });
      }
    }
  });
  policy.workspaces.forEach((w, i) => {
    const apps = Array.isArray(w.applications) ? (w.applications as Array<{ name: string; argv: string[] }>) : [];
    const an = apps.map((a) => a.name);
    const d = an.findIndex((n, j) => an.indexOf(n) !== j);
    if (d >= 0) throw new MedvError('EPOLICY', `policy field /workspaces/${i}/applications/${d}/name repeats application ${an[d]}`, { path: `/workspaces/${i}/applications/${d}/name` });
    // the schema's pattern is only a first sieve: the client's own rule decides (a port out of range, a bad host, one folder listed twice)
    if (Array.isArray(w.mirrors)) {
      try { checkMirrorUrls(w.mirrors as string[]); } catch (err) {
        throw new MedvError('EPOLICY', `policy field /workspaces/${i}/mirrors: ${(err as Error).message}`, { path: `/workspaces/${i}/mirrors` });
      }
    }
    const e = apps.findIndex((a) => a.argv[0] === '');
    if (e >= 0) throw new MedvError('EPOLICY', `policy field /workspaces/${i}/applications/${e}/argv/0 is empty: it names the program`, { path: `/workspaces/${i}/applications/${e}/argv/0` });
  });
  const names = policy.workspaces.map((w) => w.name);
  const dup = names.findIndex((n, i) => names.indexOf(n) !== i);
  if (dup >= 0) throw new MedvError('EPOLICY', `policy field /workspaces/${dup}/name repeats workspace ${names[dup]}`, { path: `/workspaces/${dup}/name` });
  return policy;
}
