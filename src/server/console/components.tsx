/**
 * Small pieces every console page uses: times, sizes, state badges, tables, filters, pagers,
 * links with query strings. Everything passed in is text and is escaped by the runtime (html.ts).
 */
import { type Child, Html } from './html.js';
import { CSRF_FIELD } from './csrf.js';
import type { PageOf } from '../store/index.js';

/** `base?k=v&…` with empty values left out (values are URL-encoded). */
export function href(base: string, params: Record<string, string | number | undefined | null> = {}): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `${base}?${s}` : base;
}

/** A path segment (user, policy, image, client name) for a console URL. */
export const seg = (name: string) => encodeURIComponent(name);

export function ago(ms: number, now = Date.now()): string {
  const s = Math.round((now - ms) / 1000);
  const a = Math.abs(s);
  const t = a < 90 ? `${a} s` : a < 5400 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} days`;
  return s >= 0 ? `${t} ago` : `in ${t}`;
}

/** A time as `2026-12-02 10:30 UTC`, with "3 h ago" when `relative`. */
export function Time(p: { iso: string | null | undefined; relative?: boolean }): Html {
  if (!p.iso) return <span class="muted">–</span>;
  const d = new Date(p.iso);
  const text = `${p.iso.slice(0, 10)} ${p.iso.slice(11, 16)} UTC`;
  return <time datetime={p.iso} title={p.iso}>{text}{p.relative ? ` (${ago(d.getTime())})` : ''}</time>;
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export const count = (n: number) => n.toLocaleString('en-US');

export type Tone = 'ok' | 'warn' | 'bad' | 'plain';
export function Badge(p: { tone: Tone; children?: Child }): Html {
  return <span class={`badge ${p.tone}`}>{p.children}</span>;
}

const STATE_TONE: Record<string, Tone> = { running: 'ok', stopped: 'plain', suspended: 'plain', updating: 'warn', failed: 'bad', offline: 'warn' };
export function StateBadge(p: { state: string }): Html {
  return <Badge tone={STATE_TONE[p.state] ?? 'plain'}>{p.state}</Badge>;
}

export interface Column { label: string; num?: boolean }

/** A table with a caption, column heads and rows (children: <tr> elements); `empty` when no rows. */
export function DataTable(p: { caption: string; columns: (string | Column)[]; rows: Html[]; empty: string; id?: string }): Html {
  const cols = p.columns.map((c) => (typeof c === 'string' ? { label: c } : c));
  return (
    <div class="table-wrap" id={p.id}>
      <table>
        <caption>{p.caption}</caption>
        <thead><tr>{cols.map((c) => <th scope="col" class={c.num ? 'num' : undefined}>{c.label}</th>)}</tr></thead>
        <tbody>{p.rows.length ? p.rows : <tr><td colspan={cols.length} class="empty">{p.empty}</td></tr>}</tbody>
      </table>
    </div>
  );
}

/** "Rows 51–100 of 1,234" and links to the previous and next pages (the filters kept). */
export function Pager(p: { page: PageOf<unknown>; base: string; params: Record<string, string | number | undefined> }): Html {
  const { offset, limit, total } = p.page;
  const first = total === 0 ? 0 : offset + 1;
  const last = offset + p.page.rows.length;
  const prev = offset > 0 ? href(p.base, { ...p.params, offset: Math.max(0, offset - limit) || undefined }) : undefined;
  const next = last < total ? href(p.base, { ...p.params, offset: offset + limit }) : undefined;
  return (
    <nav class="pager" aria-label="Pages">
      <span>{total === 0 ? 'No rows' : `Rows ${count(first)}–${count(last)} of ${count(total)}`}</span>
      {prev ? <a href={prev} rel="prev">Previous page</a> : ''}
      {next ? <a href={next} rel="next">Next page</a> : ''}
    </nav>
  );
}

/**
 * A GET form of filters for a list. Without JavaScript it reloads the page; with htmx, typing
 * updates the list in place (the server answers the whole page, htmx takes `#results` from it)
 * and the address bar follows, so a filtered view can be bookmarked.
 */
export function Filters(p: { action: string; label: string; children?: Child; clear?: boolean }): Html {
  return (
    <form class="filters" method="get" action={p.action} role="search" aria-label={p.label}
      hx-get={p.action} hx-target="#results" hx-select="#results" hx-swap="outerHTML" hx-push-url="true" hx-trigger="submit, input delay:400ms, change">
      {p.children}
      <button type="submit">Apply</button>
      {p.clear !== false ? <a href={p.action} class="button secondary">Clear</a> : ''}
    </form>
  );
}

export function Field(p: { label: string; name: string; value?: string | number; type?: string; placeholder?: string; size?: number }): Html {
  const id = `f-${p.name}`;
  return (
    <div class="field">
      <label for={id}>{p.label}</label>
      <input id={id} name={p.name} type={p.type ?? 'text'} value={p.value === undefined ? undefined : String(p.value)} placeholder={p.placeholder} size={p.size === undefined ? undefined : String(p.size)} />
    </div>
  );
}

export function Select(p: { label: string; name: string; value?: string; options: (string | [string, string])[] }): Html {
  const id = `f-${p.name}`;
  return (
    <div class="field">
      <label for={id}>{p.label}</label>
      <select id={id} name={p.name}>
        {p.options.map((o) => {
          const [value, text] = typeof o === 'string' ? [o, o || 'any'] : o;
          return <option value={value} selected={value === (p.value ?? '')}>{text}</option>;
        })}
      </select>
    </div>
  );
}

/** The CSRF token of a state-changing form. */
export function Csrf(p: { token: string }): Html {
  return <input type="hidden" name={CSRF_FIELD} value={p.token} />;
}

export function Json(p: { value: unknown }): Html {
  return <pre class="doc"><code>{JSON.stringify(p.value, null, 2)}</code></pre>;
}

/**
 * The pager of a list read by cursor (the audit log, clients): a link to the first page when this
 * is not it, and to the next page when there is one (the filters kept).
 */
export function CursorPager(p: { next: string | null; cursorParam: string; base: string; params: Record<string, string | number | undefined>; first: boolean; shown: number; total?: number }): Html {
  return (
    <nav class="pager" aria-label="Pages">
      <span>{p.total !== undefined ? `${count(p.shown)} shown of ${count(p.total)}` : `${count(p.shown)} shown`}</span>
      {!p.first ? <a href={href(p.base, p.params)}>First page</a> : ''}
      {p.next ? <a href={href(p.base, { ...p.params, [p.cursorParam]: p.next })} rel="next">Next page</a> : ''}
    </nav>
  );
}
