/// <reference types="@kitajs/html/htmx.d.ts" />
/**
 * The console's JSX runtime (tsconfig: "jsx": "react-jsx", "jsxImportSource": "#console-html",
 * mapped to this file by package.json "imports"). Pages are `.tsx` files compiled by tsc to calls
 * of `jsx()` below, which build HTML strings on the server.
 *
 * Why not @kitajs/html's own runtime: it escapes attribute values but NOT children — a `{name}`
 * between tags is pasted as HTML unless the element carries `safe` (its README says so; their
 * editor plugin is what catches a forgotten `safe`). Here escaping is the default and cannot be
 * forgotten: every string child is escaped; only an `Html` value (what `jsx()` returns) is taken
 * as markup, and nothing outside this file can make one from a string except `doctype()`.
 * @kitajs/html still provides the typed tags and attributes (its JSX.IntrinsicElements, with the
 * htmx attributes), so a misspelt attribute is a compile error.
 *
 * Refused at render time (a bug in our code, never user input): `style` attributes and `on*`
 * handlers (the CSP forbids both), `<script>` with content or without `src`, `<style>`, attribute
 * names outside [A-Za-z0-9_:.-], attribute values that are objects, children that are promises or
 * plain objects.
 */
import type {} from '@kitajs/html';

/** Markup made by this runtime. A plain string is never markup. */
export class Html {
  /** @internal */
  constructor(readonly html: string) {}
  toString(): string {
    return this.html;
  }
}

export type Child = Html | string | number | boolean | null | undefined | readonly Child[];

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text → HTML text or attribute value (all five characters, so it is safe in both). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const VOID = new Set(['area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track', 'wbr']);
const ATTR_NAME = /^[A-Za-z_:][A-Za-z0-9_:.-]*$/;

function renderChild(c: unknown, out: string[]): void {
  if (c === null || c === undefined || typeof c === 'boolean') return;
  if (c instanceof Html) out.push(c.html);
  else if (typeof c === 'string') out.push(escapeHtml(c));
  else if (typeof c === 'number' || typeof c === 'bigint') out.push(String(c));
  else if (Array.isArray(c)) for (const x of c) renderChild(x, out);
  else throw new TypeError(`console html: a child of type ${Object.prototype.toString.call(c)} cannot be rendered (render data first, then markup)`);
}

function renderAttributes(tag: string, props: Record<string, unknown>): string {
  let s = '';
  for (const [k, v] of Object.entries(props)) {
    if (k === 'children' || v === undefined || v === null || v === false) continue;
    if (!ATTR_NAME.test(k) || /^on/i.test(k) || k === 'style') throw new TypeError(`console html: attribute ${JSON.stringify(k)} on <${tag}> is not allowed`);
    if (v === true) { s += ` ${k}`; continue; }
    let text: string;
    if (typeof v === 'string') text = v;
    else if (typeof v === 'number' || typeof v === 'bigint') text = String(v);
    else if (v instanceof Date) text = v.toISOString();
    else throw new TypeError(`console html: attribute ${k} on <${tag}> must be a string, number or date`);
    s += ` ${k}="${escapeHtml(text)}"`;
  }
  return s;
}

type Component = (props: Record<string, unknown>) => Html;

export function jsx(tag: string | Component, props: Record<string, unknown>): Html {
  if (typeof tag === 'function') return tag(props);
  if (tag === 'style' || (tag === 'script' && (props.children !== undefined || typeof props.src !== 'string'))) {
    throw new TypeError(`console html: inline <${tag}> is not allowed (the CSP refuses it): serve a file from assets.ts`);
  }
  const attrs = renderAttributes(tag, props);
  if (VOID.has(tag)) {
    if (props.children !== undefined) throw new TypeError(`console html: <${tag}> cannot have children`);
    return new Html(`<${tag}${attrs}>`);
  }
  const out: string[] = [`<${tag}${attrs}>`];
  renderChild(props.children, out);
  out.push(`</${tag}>`);
  return new Html(out.join(''));
}

export const jsxs = jsx;

export function Fragment(props: { children?: Child }): Html {
  const out: string[] = [];
  renderChild(props.children, out);
  return new Html(out.join(''));
}

/** A whole document: the doctype, then `root` (an <html> element). */
export function doctype(root: Html): Html {
  return new Html(`<!doctype html>${root.html}`);
}

type KitaTags = globalThis.JSX.IntrinsicElements;
type Unsafe = 'children' | 'safe' | 'attrs' | 'of' | 'style';

// eslint-disable-next-line @typescript-eslint/no-namespace
export namespace JSX {
  export type Element = Html;
  export type IntrinsicElements = { [K in keyof KitaTags]: Omit<KitaTags[K], Unsafe> & { children?: Child } };
  export interface ElementChildrenAttribute { children: unknown }
}
