/**
 * What changed between two policy documents, field by field (pure). Lists of names (users,
 * groups) compare as sets, lists of named objects (workspaces, applications) are matched by name,
 * so inserting a workspace shows as one addition rather than every later workspace changed.
 * A path reads like a JSON pointer with names in brackets: `/workspaces[desk]/memory`.
 */
export type DiffKind = 'added' | 'removed' | 'changed';
export interface DiffEntry { path: string; kind: DiffKind; before?: unknown; after?: unknown }

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const esc = (k: string) => k.replaceAll('~', '~0').replaceAll('/', '~1');
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

function named(list: unknown[]): Map<string, unknown> | undefined {
  const m = new Map<string, unknown>();
  for (const x of list) {
    if (!isObject(x) || typeof x.name !== 'string' || m.has(x.name)) return undefined;
    m.set(x.name, x);
  }
  return m;
}

function walk(a: unknown, b: unknown, path: string, out: DiffEntry[]): void {
  if (same(a, b)) return;
  if (isObject(a) && isObject(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const p = `${path}/${esc(k)}`;
      if (!(k in b)) out.push({ path: p, kind: 'removed', before: a[k] });
      else if (!(k in a)) out.push({ path: p, kind: 'added', after: b[k] });
      else walk(a[k], b[k], p, out);
    }
    return;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    if ([...a, ...b].every((x) => typeof x === 'string')) {
      for (const x of a) if (!b.includes(x)) out.push({ path, kind: 'removed', before: x });
      for (const x of b) if (!a.includes(x)) out.push({ path, kind: 'added', after: x });
      return;
    }
    const ma = named(a);
    const mb = named(b);
    if (ma && mb) {
      for (const [k, v] of ma) if (!mb.has(k)) out.push({ path: `${path}[${k}]`, kind: 'removed', before: v });
      for (const [k, v] of mb) {
        if (!ma.has(k)) out.push({ path: `${path}[${k}]`, kind: 'added', after: v });
        else walk(ma.get(k), v, `${path}[${k}]`, out);
      }
      return;
    }
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (i >= b.length) out.push({ path: `${path}/${i}`, kind: 'removed', before: a[i] });
      else if (i >= a.length) out.push({ path: `${path}/${i}`, kind: 'added', after: b[i] });
      else walk(a[i], b[i], `${path}/${i}`, out);
    }
    return;
  }
  out.push({ path: path || '/', kind: 'changed', before: a, after: b });
}

/** The changes from `before` to `after`, in document order. */
export function diffPolicies(before: unknown, after: unknown): DiffEntry[] {
  const out: DiffEntry[] = [];
  walk(before, after, '', out);
  return out;
}
