/**
 * Shared reading and writing for medv's own small XML schemas (ImageState.xml, GlobalImageData.xml):
 * strict (unknown or repeated elements and attributes are errors), every error names the file,
 * the element and its byte offset. Pure: no I/O.
 */
import { MedvError } from '../../core/errors.js';
import { encodeUtf8 } from '../vmc/text.js';
import { type ParseVmcOptions, parseXmlFile } from '../vmc/vmc.js';
import { type XmlDocument, type XmlElement, childElements, newElement, serializeXmlTree, textOf } from '../vmc/xmltree.js';

export class StrictReader {
  constructor(readonly file: string | undefined) {}

  error(code: 'EFORMAT' | 'EVERSION', path: string, msg: string, el?: XmlElement): MedvError {
    return new MedvError(code, `${path}: ${msg}`, { file: this.file, offset: el?.at, element: path });
  }

  /** Children of `el` by name; refuses unknown names, repeats, attributes and stray text. */
  children(el: XmlElement, path: string, allowed: readonly string[], allowedAttrs: readonly string[] = []): Map<string, XmlElement> {
    for (const [k] of el.attrs) if (!allowedAttrs.includes(k)) throw this.error('EFORMAT', path, `unknown attribute ${k}`, el);
    for (const c of el.children) {
      if (c.kind === 'text' && c.value.trim() !== '') throw this.error('EFORMAT', path, 'text where only elements belong', el);
    }
    const out = new Map<string, XmlElement>();
    for (const c of childElements(el)) {
      const p = `${path}/${c.name}`;
      if (!allowed.includes(c.name)) throw this.error('EFORMAT', p, `unknown element (expected one of ${allowed.join(', ')})`, c);
      if (out.has(c.name)) throw this.error('EFORMAT', p, 'appears more than once', c);
      out.set(c.name, c);
    }
    return out;
  }

  /** Trimmed text of a leaf element (no attributes, no child elements). */
  text(el: XmlElement, path: string): string {
    if (el.attrs.length) throw this.error('EFORMAT', path, `unknown attribute ${el.attrs[0][0]}`, el);
    if (childElements(el).length) throw this.error('EFORMAT', path, 'expected a value, found child elements', el);
    return textOf(el).trim();
  }

  integer(el: XmlElement, path: string, min: number, max: number): number {
    const s = this.text(el, path);
    if (!/^[0-9]{1,16}$/.test(s)) throw this.error('EFORMAT', path, `${JSON.stringify(s.slice(0, 40))} is not a whole number`, el);
    const n = Number(s);
    if (n < min || n > max) throw this.error('EFORMAT', path, `${n} is outside ${min}..${max}`, el);
    return n;
  }

  boolean(el: XmlElement, path: string): boolean {
    const s = this.text(el, path);
    if (s === 'true' || s === '1') return true;
    if (s === 'false' || s === '0') return false;
    throw this.error('EFORMAT', path, `${JSON.stringify(s.slice(0, 40))} is not true or false`, el);
  }

  oneOf<T extends string>(el: XmlElement, path: string, values: readonly T[]): T {
    const s = this.text(el, path);
    if (!(values as readonly string[]).includes(s)) throw this.error('EFORMAT', path, `${JSON.stringify(s.slice(0, 40))} is not one of ${values.join(', ')}`, el);
    return s as T;
  }

  /** The root's `version` attribute must be one we know. */
  version(root: XmlElement, name: string, known: readonly number[]): number {
    const v = root.attrs.find(([k]) => k === 'version')?.[1];
    if (v === undefined) throw this.error('EFORMAT', name, 'missing version attribute', root);
    if (!/^[0-9]{1,6}$/.test(v.trim()) || !known.includes(Number(v))) throw this.error('EVERSION', name, `unsupported version ${JSON.stringify(v.slice(0, 20))} (known: ${known.join(', ')})`, root);
    return Number(v);
  }
}

export function parseStrictRoot(buf: Buffer, opts: ParseVmcOptions, rootName: string): { root: XmlElement; r: StrictReader } {
  const { tree } = parseXmlFile(buf, opts);
  const r = new StrictReader(opts.file);
  if (tree.root.name !== rootName) throw r.error('EFORMAT', tree.root.name, `root element is not <${rootName}>`, tree.root);
  return { root: tree.root, r };
}

export function leaf(name: string, value: string): XmlElement {
  return newElement(name, [], value === '' ? [] : [{ kind: 'text', value }]);
}

/** UTF-8, XML declaration, two-space indent, LF line ends. */
export function writeStrict(root: XmlElement): Buffer {
  const doc: XmlDocument = { prolog: [], root, epilog: [] };
  return encodeUtf8(serializeXmlTree(doc, { newline: '\n', indent: '  ', encodingName: 'UTF-8' }));
}
