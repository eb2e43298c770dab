/**
 * A small, ordered XML tree for settings files, read with fast-xml-parser and written by hand.
 *
 * Reading is hostile-input safe: the byte size is bounded before decoding (text.ts), a document
 * that mentions `<!DOCTYPE` anywhere is refused (no DTD, so no entity can be declared or expanded),
 * only the five predefined entities and character references are decoded (by us, never by the
 * parser), the nesting depth and the number of markup items are bounded, and every failure is a
 * MedvError naming the file and the byte offset. The tree keeps element order, attributes in
 * order, comments and text, so a read/modify/write keeps what it does not understand.
 * Pure: no I/O.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { MedvError } from '../../core/errors.js';
import { type DecodedText, type XmlSource, isXmlText } from './text.js';

export interface XmlElement {
  kind: 'element';
  name: string;
  /** Attributes in document order, values decoded. */
  attrs: Array<[string, string]>;
  children: XmlNode[];
  /** Byte offset of the element's `<` in the file it was read from (absent for new elements). */
  at?: number;
}
export interface XmlText { kind: 'text'; value: string }
export interface XmlComment { kind: 'comment'; value: string }
export type XmlNode = XmlElement | XmlText | XmlComment;

export interface XmlDocument {
  /** Comments before the root element (Virtual PC writes one). */
  prolog: XmlComment[];
  root: XmlElement;
  /** Comments after the root element. */
  epilog: XmlComment[];
  /** The `encoding` named by the XML declaration, if any. */
  declaredEncoding?: string;
}

export interface XmlLimits {
  /** Deepest element nesting accepted (the root is depth 1). */
  maxDepth: number;
  /** Most markup items (`<` characters) accepted. */
  maxMarkup: number;
}
export const DEFAULT_XML_LIMITS: XmlLimits = { maxDepth: 32, maxMarkup: 50_000 };

/** XML names (ASCII and Unicode letters; what our writer can write back). */
const NAME = /^[\p{L}_:][\p{L}\p{M}\p{N}._:\-\u00B7]*$/u;

const TEXT = '#text';
const COMMENT = '#comment';
const CDATA = '#cdata';
const ATTRS = ':@';

const parsers = new Map<number, XMLParser>();
/** One parser per depth limit (the parser keeps no state between documents; building options is not free). */
function parser(maxDepth: number): XMLParser {
  let p = parsers.get(maxDepth);
  if (!p) { p = newParser(maxDepth); if (parsers.size < 8) parsers.set(maxDepth, p); }
  return p;
}
const newParser = (maxDepth: number): XMLParser => new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  processEntities: false,
  htmlEntities: false,
  commentPropName: COMMENT,
  cdataPropName: CDATA,
  captureMetaData: true,
  maxNestedTags: maxDepth,
});

/** Decode the predefined entities and character references of a text or attribute value. */
export function decodeEntities(raw: string, where: () => { file?: string; offset?: number; element?: string }): string {
  if (raw.indexOf('&') < 0) return raw;
  return raw.replace(/&([^;&]{0,12});|&/g, (m, ref: string | undefined) => {
    const fail = (why: string): never => { const w = where(); throw new MedvError('EFORMAT', `${w.element ? `<${w.element}>: ` : ''}${why}`, w); };
    if (ref === undefined) return fail('"&" that starts no entity or character reference');
    switch (ref) {
      case 'lt': return '<';
      case 'gt': return '>';
      case 'amp': return '&';
      case 'quot': return '"';
      case 'apos': return "'";
    }
    let cp = NaN;
    if (/^#[0-9]{1,7}$/.test(ref)) cp = Number(ref.slice(1));
    else if (/^#x[0-9a-fA-F]{1,6}$/.test(ref)) cp = parseInt(ref.slice(2), 16);
    else return fail(`entity ${m} is not defined (only &lt; &gt; &amp; &quot; &apos; and character references are)`);
    if (!(cp <= 0x10ffff)) return fail(`character reference ${m} is out of range`);
    const s = String.fromCodePoint(cp);
    if (!isXmlText(s)) return fail(`character reference ${m} names a character XML does not allow`);
    return s;
  });
}

type Raw = Record<string, unknown>;

/**
 * Parse decoded text into an XmlDocument. `decoded` supplies byte offsets for error messages.
 */
export function parseXmlTree(decoded: DecodedText, src: XmlSource = {}, limits: XmlLimits = DEFAULT_XML_LIMITS): XmlDocument {
  const { text } = decoded;
  const file = src.file;
  const err = (code: 'EFORMAT' | 'EUNSUPPORTED', msg: string, charIndex: number, extra: Record<string, unknown> = {}): MedvError =>
    new MedvError(code, msg, { file, offset: decoded.byteOffset(charIndex), ...extra });

  const doctype = text.search(/<!(?:DOCTYPE|ENTITY)/i);
  if (doctype >= 0) throw err('EUNSUPPORTED', 'a DOCTYPE or entity declaration is not allowed (no DTDs, no entity declarations)', doctype);
  let markup = 0;
  for (let i = text.indexOf('<'); i >= 0; i = text.indexOf('<', i + 1)) {
    if (++markup > limits.maxMarkup) throw err('EFORMAT', `too many XML tags (limit ${limits.maxMarkup})`, i);
  }

  // The parser runs first: it stops at once on nesting past the limit (the validator would walk
  // the whole document first). The validator then checks well-formedness, which the parser does not.
  let raw: Raw[] | undefined;
  let parseError: string | undefined;
  try {
    raw = parser(limits.maxDepth).parse(text) as Raw[];
  } catch (e) {
    parseError = e instanceof Error ? e.message : String(e);
    if (/nested/i.test(parseError)) throw err('EFORMAT', `XML nested deeper than ${limits.maxDepth} elements`, 0);
  }
  const valid = XMLValidator.validate(text, { allowBooleanAttributes: false });
  if (valid !== true) {
    const { msg, line, col } = valid.err;
    const l = Number.isInteger(line) ? line : 1; const c = Number.isInteger(col) ? col : 1;
    throw err('EFORMAT', `not well-formed XML: ${msg} (line ${l}, column ${c})`, charIndexOf(text, l, c), { line: l, column: c });
  }
  if (!raw) throw err('EFORMAT', `XML refused: ${String(parseError).replace(/^\[SECURITY\]\s*/, '')}`, 0);
  const lastGt = text.lastIndexOf('>');
  if (text.slice(lastGt + 1).trim() !== '') throw err('EFORMAT', 'text outside the root element', lastGt + 1);
  const meta = XMLParser.getMetaDataSymbol() as unknown as symbol;
  const startOf = (n: Raw): number => {
    const m = (n as Record<symbol, { startIndex?: number } | undefined>)[meta];
    return typeof m?.startIndex === 'number' ? m.startIndex : 0;
  };

  const prolog: XmlComment[] = [];
  const epilog: XmlComment[] = [];
  let root: XmlElement | undefined;
  let declaredEncoding: string | undefined;
  raw.forEach((n, idx) => {
    const key = nodeKey(n);
    if (key === '?xml') {
      if (idx !== 0) throw err('EFORMAT', 'XML declaration allowed only at the start of the document', startOf(n));
      const enc = (n[ATTRS] as Record<string, string> | undefined)?.encoding;
      if (enc !== undefined) declaredEncoding = enc;
      return;
    }
    if (key === TEXT) {
      if (String(n[TEXT]).trim() !== '') throw err('EFORMAT', 'text outside the root element', startOf(n));
      return;
    }
    if (key === COMMENT) {
      (root ? epilog : prolog).push({ kind: 'comment', value: commentText(n) });
      return;
    }
    if (key.startsWith('?')) return; // other processing instructions carry nothing we keep
    if (key === CDATA) throw err('EFORMAT', 'CDATA outside the root element', startOf(n));
    if (root) throw err('EFORMAT', `a second root element <${key}>`, startOf(n));
    root = convertElement(n, key, 1);
  });
  if (!root) throw err('EFORMAT', 'no root element', 0);
  return { prolog, root, epilog, declaredEncoding };

  function convertElement(n: Raw, name: string, depth: number): XmlElement {
    const at = decoded.byteOffset(startOf(n));
    if (depth > limits.maxDepth) throw new MedvError('EFORMAT', `XML nested deeper than ${limits.maxDepth} elements`, { file, offset: at });
    if (!NAME.test(name)) throw new MedvError('EFORMAT', `invalid element name ${JSON.stringify(name.slice(0, 40))}`, { file, offset: at });
    const where = (): { file?: string; offset: number; element: string } => ({ file, offset: at, element: name });
    const attrs: Array<[string, string]> = [];
    const rawAttrs = n[ATTRS] as Record<string, unknown> | undefined;
    if (rawAttrs) {
      for (const [k, v] of Object.entries(rawAttrs)) {
        if (!NAME.test(k)) throw new MedvError('EFORMAT', `<${name}>: invalid attribute name ${JSON.stringify(k.slice(0, 40))}`, { file, offset: at });
        attrs.push([k, decodeEntities(String(v), where)]);
      }
    }
    const children: XmlNode[] = [];
    const kids = Array.isArray(n[name]) ? (n[name] as Raw[]) : [];
    for (const c of kids) {
      const k = nodeKey(c);
      if (k === TEXT) children.push({ kind: 'text', value: decodeEntities(String(c[TEXT]), where) });
      else if (k === CDATA) children.push({ kind: 'text', value: cdataText(c) });
      else if (k === COMMENT) children.push({ kind: 'comment', value: commentText(c) });
      else if (k.startsWith('?')) continue;
      else children.push(convertElement(c, k, depth + 1));
    }
    // Whitespace between child elements is layout, not content: drop it (the writer indents).
    const hasElements = children.some((c) => c.kind === 'element');
    const kept = hasElements ? children.filter((c) => !(c.kind === 'text' && c.value.trim() === '')) : mergeText(children);
    return { kind: 'element', name, attrs, children: kept, at };
  }
}

function mergeText(children: XmlNode[]): XmlNode[] {
  const out: XmlNode[] = [];
  for (const c of children) {
    const last = out[out.length - 1];
    if (c.kind === 'text' && last?.kind === 'text') last.value += c.value;
    else out.push(c.kind === 'text' ? { kind: 'text', value: c.value } : c);
  }
  return out;
}

function nodeKey(n: Raw): string {
  for (const k of Object.keys(n)) if (k !== ATTRS) return k;
  return '';
}

function commentText(n: Raw): string {
  const inner = n[COMMENT];
  if (Array.isArray(inner)) return inner.map((x) => String((x as Raw)[TEXT] ?? '')).join('');
  return String(inner ?? '');
}

function cdataText(n: Raw): string {
  const inner = n[CDATA];
  if (Array.isArray(inner)) return inner.map((x) => String((x as Raw)[TEXT] ?? '')).join('');
  return String(inner ?? '');
}

/** Character index of a 1-based line/column (validator positions count lines on LF). */
function charIndexOf(text: string, line: number, col: number): number {
  let i = 0;
  for (let l = 1; l < line; l++) {
    const nl = text.indexOf('\n', i);
    if (nl < 0) return text.length;
    i = nl + 1;
  }
  return Math.min(text.length, i + Math.max(0, col - 1));
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface XmlWriteOptions {
  newline: '\r\n' | '\n';
  indent: string;
  /** The encoding named in the XML declaration. */
  encodingName: string;
  /** Write empty elements as `<a />` (Virtual PC's style) rather than `<a/>`. */
  spaceBeforeSlash?: boolean;
}

export function escapeText(s: string, newline: string): string {
  let out = s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\r/g, '&#13;');
  if (newline !== '\n') out = out.replace(/\n/g, newline);
  return out;
}

export function escapeAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
    .replace(/\t/g, '&#9;').replace(/\n/g, '&#10;').replace(/\r/g, '&#13;');
}


/** Serialize a document to text (the caller encodes it). Throws EINVAL_ARG for names or values XML cannot hold. */
export function serializeXmlTree(doc: XmlDocument, opts: XmlWriteOptions): string {
  const nl = opts.newline;
  const parts: string[] = [`<?xml version="1.0" encoding="${opts.encodingName}"?>${nl}`];
  for (const c of doc.prolog) parts.push(comment(c.value), nl);
  writeElement(doc.root, 0);
  for (const c of doc.epilog) parts.push(comment(c.value), nl);
  return parts.join('');

  function comment(v: string): string {
    if (v.includes('--') || v.endsWith('-') || !isXmlText(v)) throw new MedvError('EINVAL_ARG', 'a comment XML cannot hold');
    return `<!--${v.replace(/\r?\n/g, nl)}-->`;
  }
  function open(el: XmlElement): string {
    if (!NAME.test(el.name)) throw new MedvError('EINVAL_ARG', `invalid XML element name ${JSON.stringify(el.name)}`);
    let s = `<${el.name}`;
    for (const [k, v] of el.attrs) {
      if (!NAME.test(k)) throw new MedvError('EINVAL_ARG', `invalid XML attribute name ${JSON.stringify(k)} on <${el.name}>`);
      if (!isXmlText(v)) throw new MedvError('EINVAL_ARG', `attribute ${k} of <${el.name}> holds characters XML does not allow`);
      s += ` ${k}="${escapeAttr(v)}"`;
    }
    return s;
  }
  function inline(n: XmlNode): string {
    if (n.kind === 'comment') return comment(n.value);
    if (n.kind === 'text') {
      if (!isXmlText(n.value)) throw new MedvError('EINVAL_ARG', 'text holds characters XML does not allow');
      return escapeText(n.value, nl);
    }
    if (n.children.length === 0) return `${open(n)}${opts.spaceBeforeSlash ? ' ' : ''}/>`;
    return `${open(n)}>${n.children.map(inline).join('')}</${n.name}>`;
  }
  function writeElement(el: XmlElement, depth: number): void {
    const pad = opts.indent.repeat(depth);
    const hasElements = el.children.some((c) => c.kind === 'element');
    const mixed = el.children.some((c) => c.kind === 'text' && c.value.trim() !== '');
    if (!hasElements || mixed) { parts.push(pad, inline(el), nl); return; }
    parts.push(pad, open(el), '>', nl);
    for (const c of el.children) {
      if (c.kind === 'element') writeElement(c, depth + 1);
      else if (c.kind === 'comment') parts.push(opts.indent.repeat(depth + 1), comment(c.value), nl);
    }
    parts.push(pad, `</${el.name}>`, nl);
  }
}

// ---------------------------------------------------------------------------------------------
// Tree helpers

export function attr(el: XmlElement, name: string): string | undefined {
  for (const [k, v] of el.attrs) if (k === name) return v;
  return undefined;
}

export function setAttr(el: XmlElement, name: string, value: string): void {
  const a = el.attrs.find(([k]) => k === name);
  if (a) a[1] = value; else el.attrs.push([name, value]);
}

export function childElements(el: XmlElement, name?: string): XmlElement[] {
  const out: XmlElement[] = [];
  for (const c of el.children) if (c.kind === 'element' && (name === undefined || c.name === name)) out.push(c);
  return out;
}

/** Concatenated text of an element's text children. */
export function textOf(el: XmlElement): string {
  let s = '';
  for (const c of el.children) if (c.kind === 'text') s += c.value;
  return s;
}

/** Replace an element's content with one text node (or nothing for ''). Keeps attributes. */
export function setText(el: XmlElement, value: string): void {
  el.children = value === '' ? [] : [{ kind: 'text', value }];
}

export function newElement(name: string, attrs: Array<[string, string]> = [], children: XmlNode[] = []): XmlElement {
  return { kind: 'element', name, attrs, children };
}

export function cloneNode<T extends XmlNode>(n: T): T {
  if (n.kind !== 'element') return { ...n };
  const e = n as XmlElement;
  return { kind: 'element', name: e.name, attrs: e.attrs.map(([k, v]) => [k, v] as [string, string]), children: e.children.map(cloneNode), at: e.at } as T;
}

export function cloneDocument(d: XmlDocument): XmlDocument {
  return { prolog: d.prolog.map(cloneNode), root: cloneNode(d.root), epilog: d.epilog.map(cloneNode), declaredEncoding: d.declaredEncoding };
}

/** Structural equality, ignoring source offsets and comments. */
export function sameElement(a: XmlElement, b: XmlElement): boolean {
  if (a.name !== b.name || a.attrs.length !== b.attrs.length) return false;
  const ab = [...a.attrs].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
  const bb = [...b.attrs].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
  for (let i = 0; i < ab.length; i++) if (ab[i][0] !== bb[i][0] || ab[i][1] !== bb[i][1]) return false;
  const ac = a.children.filter((c) => c.kind !== 'comment');
  const bc = b.children.filter((c) => c.kind !== 'comment');
  if (ac.length !== bc.length) return false;
  for (let i = 0; i < ac.length; i++) {
    const x = ac[i]; const y = bc[i];
    if (x.kind !== y.kind) return false;
    if (x.kind === 'text' && x.value !== (y as XmlText).value) return false;
    if (x.kind === 'element' && !sameElement(x, y as XmlElement)) return false;
  }
  return true;
}
