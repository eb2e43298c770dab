/**
 * Hex and base64 between Buffers, byte by byte, with no JavaScript string in between: for key
 * material, which must not linger in the heap as strings (issue 18 item 17). Pure.
 * Node's `buf.toString('base64')` / `Buffer.from(text, 'base64')` make such strings; these do not.
 */

const B64 = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', 'latin1');
const HEX = Buffer.from('0123456789abcdef', 'latin1');
const EQ = 0x3d;

/** Length of the padded base64 text of `n` bytes. */
export const base64Length = (n: number) => 4 * Math.ceil(n / 3);

/** Write the padded base64 of `src` into `out` at `pos`; returns the position after it. */
export function base64EncodeInto(src: Buffer, out: Buffer, pos = 0): number {
  let i = 0;
  for (; i + 3 <= src.length; i += 3) {
    const n = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2];
    out[pos++] = B64[(n >> 18) & 63]; out[pos++] = B64[(n >> 12) & 63];
    out[pos++] = B64[(n >> 6) & 63]; out[pos++] = B64[n & 63];
  }
  const rest = src.length - i;
  if (rest) {
    const n = (src[i] << 16) | (rest === 2 ? src[i + 1] << 8 : 0);
    out[pos++] = B64[(n >> 18) & 63]; out[pos++] = B64[(n >> 12) & 63];
    out[pos++] = rest === 2 ? B64[(n >> 6) & 63] : EQ;
    out[pos++] = EQ;
  }
  return pos;
}

/** Write the lowercase hex of `src` into `out` at `pos`; returns the position after it. */
export function hexEncodeInto(src: Buffer, out: Buffer, pos = 0): number {
  for (const x of src) { out[pos++] = HEX[x >> 4]; out[pos++] = HEX[x & 15]; }
  return pos;
}

/**
 * Decode exactly `out.length` bytes from the padded base64 text `src` (exactly base64Length of it,
 * canonical: unused bits zero). False, with `out` zeroed, for anything else.
 */
export function base64DecodeInto(src: Buffer, out: Buffer): boolean {
  const len = base64Length(out.length);
  if (src.length !== len) return false;
  const v = (c: number) => B64.indexOf(c);
  let o = 0;
  for (let q = 0; q < len; q += 4) {
    const need = Math.min(3, out.length - o);
    const a = v(src[q]);
    const b = v(src[q + 1]);
    const c = need > 1 ? v(src[q + 2]) : (src[q + 2] === EQ ? 0 : -1);
    const d = need > 2 ? v(src[q + 3]) : (src[q + 3] === EQ ? 0 : -1);
    if (a < 0 || b < 0 || c < 0 || d < 0) { out.fill(0); return false; }
    const n = (a << 18) | (b << 12) | (c << 6) | d;
    // canonical: the bits past the last byte are zero
    if ((need === 1 && (n & 0xffff) !== 0) || (need === 2 && (n & 0xff) !== 0)) { out.fill(0); return false; }
    out[o++] = (n >> 16) & 255;
    if (need > 1) out[o++] = (n >> 8) & 255;
    if (need > 2) out[o++] = n & 255;
  }
  return true;
}

/** Decode exactly `out.length` bytes of hex (either case) from `src`; false, `out` zeroed, otherwise. */
export function hexDecodeInto(src: Buffer, out: Buffer, lowercaseOnly = false): boolean {
  if (src.length !== 2 * out.length) return false;
  const nibble = (c: number) => {
    if (c >= 0x30 && c <= 0x39) return c - 0x30;
    if (c >= 0x61 && c <= 0x66) return c - 0x57;
    if (!lowercaseOnly && c >= 0x41 && c <= 0x46) return c - 0x37;
    return -1;
  };
  for (let i = 0; i < out.length; i++) {
    const hi = nibble(src[2 * i]);
    const lo = nibble(src[2 * i + 1]);
    if (hi < 0 || lo < 0) { out.fill(0); return false; }
    out[i] = (hi << 4) | lo;
  }
  return true;
}
