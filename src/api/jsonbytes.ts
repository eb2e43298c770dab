/**
 * A strict JSON parser over the bytes of a request body that keeps chosen string values out of the
 * JavaScript heap (issue 18 item 17): a string at one of the `secret` paths is returned as a
 * `SecretText` (its raw bytes copied into sodium secure memory, to be decoded and freed by the
 * caller), never as a string. Every other value is what JSON.parse would give.
 *
 * Strict: RFC 8259 syntax only, no duplicate keys (an earlier secret would otherwise be dropped
 * unfreed, and a duplicate is never needed), nesting at most `maxDepth`, nothing after the value.
 * A secret string may hold no escape (base64 and hex never need one). Errors are EINVAL_ARG.
 * Pure apart from the secure allocations, which are freed on every error.
 */
import { MedvError } from '../core/errors.js';
import { secureAlloc, secureFree } from '../crypto/secure.js';

export class SecretText {
  constructor(readonly bytes: Buffer) {}
  dispose(): void { secureFree(this.bytes); }
}

const bad = (what: string, at: number) => new MedvError('EINVAL_ARG', `the request body is not JSON: ${what} at byte ${at}`);

export function parseJsonBytes(buf: Buffer, secret: string[][] = [], maxDepth = 32): unknown {
  const made: SecretText[] = [];
  let p = 0;
  const ws = () => { while (p < buf.length && (buf[p] === 0x20 || buf[p] === 0x0a || buf[p] === 0x0d || buf[p] === 0x09)) p++; };
  const isSecret = (path: string[]) => secret.some((s) => s.length === path.length && s.every((k, i) => k === path[i]));

  /** The end (index of the closing quote) of the string starting at p (an opening quote); whether it has escapes. */
  const stringEnd = (): { end: number; escaped: boolean } => {
    let i = p + 1;
    let escaped = false;
    for (;;) {
      if (i >= buf.length) throw bad('unterminated string', p);
      const c = buf[i];
      if (c === 0x22) return { end: i, escaped };
      if (c < 0x20) throw bad('control character in a string', i);
      if (c === 0x5c) { escaped = true; i += 2; } else i++;
    }
  };

  const value = (path: string[], depth: number): unknown => {
    ws();
    if (p >= buf.length) throw bad('unexpected end', p);
    const c = buf[p];
    if (c === 0x7b) return object(path, depth + 1);
    if (c === 0x5b) return array(path, depth + 1);
    if (c === 0x22) {
      const { end, escaped } = stringEnd();
      if (isSecret(path)) {
        if (escaped) throw bad('an escape in a key field', p);
        const s = secureAlloc(end - p - 1);
        buf.copy(s, 0, p + 1, end);
        const t = new SecretText(s);
        made.push(t);
        p = end + 1;
        return t;
      }
      const text = JSON.parse(buf.toString('utf8', p, end + 1)) as string;
      p = end + 1;
      return text;
    }
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (buf.toString('latin1', p, Math.min(buf.length, p + word.length)) === word) { p += word.length; return v; }
    }
    // a number: only its own bytes become a string (never what follows it)
    let end = p;
    while (end < buf.length && end - p < 64 && /[-+.eE0-9]/.test(String.fromCharCode(buf[end]))) end++;
    const text = buf.toString('latin1', p, end);
    if (!/^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/.test(text)) throw bad('unexpected character', p);
    p = end;
    return Number(text);
  };

  const object = (path: string[], depth: number): Record<string, unknown> => {
    if (depth > maxDepth) throw bad('nested too deep', p);
    p++;
    const out: Record<string, unknown> = Object.create(null);
    ws();
    if (buf[p] === 0x7d) { p++; return out; }
    for (;;) {
      ws();
      if (buf[p] !== 0x22) throw bad('expected a key', p);
      const { end } = stringEnd();
      const key = JSON.parse(buf.toString('utf8', p, end + 1)) as string;
      p = end + 1;
      if (Object.prototype.hasOwnProperty.call(out, key)) throw bad(`duplicate key ${JSON.stringify(key).slice(0, 40)}`, p);
      ws();
      if (buf[p] !== 0x3a) throw bad("expected ':'", p);
      p++;
      out[key] = value([...path, key], depth);
      ws();
      if (buf[p] === 0x2c) { p++; continue; }
      if (buf[p] === 0x7d) { p++; return out; }
      throw bad("expected ',' or '}'", p);
    }
  };

  const array = (path: string[], depth: number): unknown[] => {
    if (depth > maxDepth) throw bad('nested too deep', p);
    p++;
    const out: unknown[] = [];
    ws();
    if (buf[p] === 0x5d) { p++; return out; }
    for (;;) {
      out.push(value([...path, String(out.length)], depth));
      ws();
      if (buf[p] === 0x2c) { p++; continue; }
      if (buf[p] === 0x5d) { p++; return out; }
      throw bad("expected ',' or ']'", p);
    }
  };

  try {
    const v = value([], 0);
    ws();
    if (p !== buf.length) throw bad('bytes after the value', p);
    return v;
  } catch (e) {
    for (const t of made) t.dispose();
    if (e instanceof MedvError) throw e;
    throw bad((e as Error).message, p);
  }
}
