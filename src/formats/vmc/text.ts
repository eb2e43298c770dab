/**
 * Bytes <-> text for the XML files of a workspace (.vmc, ImageState.xml, GlobalImageData.xml).
 * Accepted: UTF-16LE with a byte-order mark (as Virtual PC writes .vmc files) and UTF-8 with or
 * without one. Anything else (UTF-16BE, UTF-32, UTF-16 without a BOM, invalid UTF-8, lone
 * surrogates, characters XML 1.0 forbids) is refused with a typed error naming the byte offset.
 * Pure: no I/O.
 */
import { MedvError } from '../../core/errors.js';

/** Where the bytes came from, for error messages. */
export interface XmlSource {
  /** File name (or description) the bytes came from. */
  file?: string;
}

export type XmlEncoding = 'utf-16le' | 'utf-8';

export interface DecodedText {
  text: string;
  encoding: XmlEncoding;
  /** Length of the byte-order mark in bytes (0 when there was none). */
  bomBytes: number;
  /** Byte offset in the original file of the character at `index` of `text`. */
  byteOffset(index: number): number;
}

/** Upper bound for any XML file we read: 4 MiB (real .vmc files are ~10-30 KB). */
export const MAX_XML_BYTES = 4 * 1024 * 1024;

export function decodeXmlBytes(buf: Buffer, src: XmlSource = {}, maxBytes = MAX_XML_BYTES): DecodedText {
  const file = src.file;
  if (buf.length > maxBytes) {
    throw new MedvError('EFORMAT', `XML file too large (${buf.length} bytes, limit ${maxBytes})`, { file, offset: maxBytes });
  }
  if (buf.length === 0) throw new MedvError('ETRUNCATED', 'empty XML file', { file, offset: 0 });
  if (buf.length >= 4 && buf.readUInt32LE(0) === 0x0000feff) {
    throw new MedvError('EUNSUPPORTED', 'UTF-32 text is not supported (expected UTF-16LE with a byte-order mark, or UTF-8)', { file, offset: 0 });
  }
  if (buf.length >= 2 && buf[0] === 0xff && buf[1] === 0xfe) {
    const body = buf.subarray(2);
    if (body.length % 2 !== 0) throw new MedvError('ETRUNCATED', 'UTF-16LE text has an odd number of bytes', { file, offset: buf.length - 1 });
    const text = body.toString('utf16le');
    checkXmlChars(text, file, (i) => 2 + 2 * i);
    return { text, encoding: 'utf-16le', bomBytes: 2, byteOffset: (i) => 2 + 2 * i };
  }
  if (buf.length >= 2 && buf[0] === 0xfe && buf[1] === 0xff) {
    throw new MedvError('EUNSUPPORTED', 'UTF-16BE text is not supported (expected UTF-16LE with a byte-order mark, or UTF-8)', { file, offset: 0 });
  }
  if (buf.length >= 2 && ((buf[0] === 0x3c && buf[1] === 0x00) || (buf[0] === 0x00 && buf[1] === 0x3c))) {
    throw new MedvError('EUNSUPPORTED', 'UTF-16 text without a byte-order mark is not supported', { file, offset: 0 });
  }
  const bomBytes = buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf ? 3 : 0;
  const bad = firstInvalidUtf8(buf, bomBytes);
  if (bad >= 0) throw new MedvError('EFORMAT', 'invalid UTF-8 byte sequence', { file, offset: bad });
  const text = buf.toString('utf8', bomBytes);
  // Offsets are asked for in document order while a tree is built: count on from the last one.
  let lastIndex = 0; let lastByte = bomBytes;
  const byteOffset = (i: number): number => {
    const to = Math.max(0, Math.min(i, text.length));
    if (to < lastIndex) { lastIndex = 0; lastByte = bomBytes; }
    lastByte += Buffer.byteLength(text.slice(lastIndex, to), 'utf8');
    lastIndex = to;
    return lastByte;
  };
  checkXmlChars(text, file, byteOffset);
  return { text, encoding: 'utf-8', bomBytes, byteOffset };
}

/** UTF-16LE with a byte-order mark: what Virtual PC writes. */
export function encodeUtf16leBom(text: string): Buffer {
  return Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
}

export function encodeUtf8(text: string): Buffer {
  return Buffer.from(text, 'utf8');
}

/** Offset of the first byte of an invalid (or overlong, or surrogate) UTF-8 sequence, or -1. */
export function firstInvalidUtf8(buf: Buffer, start = 0): number {
  let i = start;
  while (i < buf.length) {
    const b = buf[i];
    if (b < 0x80) { i++; continue; }
    let need: number; let min: number; let cp: number;
    if (b >= 0xc2 && b <= 0xdf) { need = 1; min = 0x80; cp = b & 0x1f; }
    else if (b >= 0xe0 && b <= 0xef) { need = 2; min = 0x800; cp = b & 0x0f; }
    else if (b >= 0xf0 && b <= 0xf4) { need = 3; min = 0x10000; cp = b & 0x07; }
    else return i;
    for (let k = 1; k <= need; k++) {
      const c = buf[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += need + 1;
  }
  return -1;
}

/** True for a code unit sequence XML 1.0 allows as a character at `i`; returns the width (1 or 2) or 0. */
function xmlCharWidth(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === 0x09 || c === 0x0a || c === 0x0d) return 1;
  if (c < 0x20) return 0;
  if (c >= 0xd800 && c <= 0xdbff) {
    const d = text.charCodeAt(i + 1);
    return d >= 0xdc00 && d <= 0xdfff ? 2 : 0;
  }
  if (c >= 0xdc00 && c <= 0xdfff) return 0;
  if (c === 0xfffe || c === 0xffff) return 0;
  return 1;
}

/** Refuse characters XML 1.0 forbids (C0 controls but tab/LF/CR, lone surrogates, U+FFFE/U+FFFF). */
export function checkXmlChars(text: string, file: string | undefined, byteOffset: (i: number) => number): void {
  for (let i = 0; i < text.length;) {
    const w = xmlCharWidth(text, i);
    if (w === 0) {
      throw new MedvError('EFORMAT', `character U+${text.charCodeAt(i).toString(16).toUpperCase().padStart(4, '0')} is not allowed in XML`, { file, offset: byteOffset(i) });
    }
    i += w;
  }
}

/** True when every character of `s` may appear in an XML document. */
export function isXmlText(s: string): boolean {
  for (let i = 0; i < s.length;) {
    const w = xmlCharWidth(s, i);
    if (w === 0) return false;
    i += w;
  }
  return true;
}
