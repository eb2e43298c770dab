/**
 * A streaming parser of `multipart/byteranges` bodies (RFC 9110 §14.6): what a server sends for
 * a request with several ranges. Pure: bytes in, (offset, bytes) out, no I/O.
 *
 * Bounded: part bodies are passed through as they arrive (never buffered here); only delimiters
 * and part headers are held (each state refuses more than MAX_HEAD bytes of them, plus the one
 * chunk being looked at), so a hostile body cannot grow memory.
 * Anything malformed (no delimiter, a part without a valid Content-Range, a body that ends inside
 * a part) is EBADREPLY.
 */
import { MedvError } from '../core/errors.js';

const MAX_HEAD = 8192;
const CRLF = Buffer.from('\r\n');

export interface ContentRange { start: number; end: number; total?: number }

/** Parse `bytes a-b/total` (total may be `*`). undefined when malformed. */
export function parseContentRange(v: string | undefined): ContentRange | undefined {
  if (!v) return undefined;
  const m = /^\s*bytes\s+(\d{1,15})-(\d{1,15})\/(\d{1,15}|\*)\s*$/i.exec(v);
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) return undefined;
  return { start, end, total: m[3] === '*' ? undefined : Number(m[3]) };
}

/** The boundary of a `multipart/byteranges; boundary=…` Content-Type, else undefined. */
export function byterangesBoundary(contentType: string | undefined): string | undefined {
  if (!contentType || !/^\s*multipart\/byteranges\s*;/i.test(contentType)) return undefined;
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))/i.exec(contentType);
  return m ? (m[1] ?? m[2]) : undefined;
}

type State = 'preamble' | 'delimiter-end' | 'headers' | 'body' | 'after-body' | 'done';

export class MultipartParser {
  private readonly delimiter: Buffer;
  private state: State = 'preamble';
  private held: Buffer = Buffer.alloc(0);
  private part?: ContentRange;
  private pos = 0;
  /** Parts seen so far. */
  parts = 0;

  constructor(
    boundary: string,
    private readonly onPart: (range: ContentRange) => void,
    private readonly onData: (offset: number, data: Buffer) => void,
  ) {
    this.delimiter = Buffer.from(`--${boundary}`, 'latin1');
  }

  private fail(message: string): never {
    throw new MedvError('EBADREPLY', `multipart/byteranges reply: ${message}`);
  }

  get finished(): boolean { return this.state === 'done'; }

  push(chunk: Buffer): void {
    let data = chunk;
    while (data.length > 0) {
      if (this.state === 'done') return; // epilogue: ignored
      if (this.state === 'body') {
        const p = this.part!;
        const left = p.end + 1 - this.pos;
        const n = Math.min(left, data.length);
        this.onData(this.pos, data.subarray(0, n));
        this.pos += n;
        data = data.subarray(n);
        if (this.pos > p.end) this.state = 'after-body';
        continue;
      }
      this.held = this.held.length ? Buffer.concat([this.held, data]) : data;
      data = Buffer.alloc(0);
      const rest = this.step();
      if (rest === undefined) return; // need more bytes
      data = rest;
      this.held = Buffer.alloc(0);
    }
  }

  /** Consume from `held`; returns what is left after the structure parsed, or undefined to wait for more. */
  private step(): Buffer | undefined {
    const h = this.held;
    switch (this.state) {
      case 'preamble':
      case 'after-body': {
        if (this.state === 'after-body') {
          // exactly CRLF then the delimiter
          const want = Buffer.concat([CRLF, this.delimiter]);
          if (h.length < want.length) {
            if (!want.subarray(0, h.length).equals(h)) this.fail('part body is not followed by the boundary');
            return undefined;
          }
          if (!h.subarray(0, want.length).equals(want)) this.fail('part body is not followed by the boundary');
          this.state = 'delimiter-end';
          return h.subarray(want.length);
        }
        const at = h.indexOf(this.delimiter);
        if (at < 0) {
          if (h.length > 1024) this.fail('no boundary at the start of the body');
          return undefined;
        }
        this.state = 'delimiter-end';
        return h.subarray(at + this.delimiter.length);
      }
      case 'delimiter-end': {
        if (h.length < 2) return undefined;
        if (h[0] === 0x2d && h[1] === 0x2d) {
          if (this.parts === 0) this.fail('no parts');
          this.state = 'done';
          return Buffer.alloc(0);
        }
        // transport padding (spaces, tabs) is allowed before the CRLF
        let i = 0;
        while (i < h.length && (h[i] === 0x20 || h[i] === 0x09)) i++;
        if (i > 256) this.fail('bad boundary line');
        if (h.length < i + 2) return undefined;
        if (h[i] !== 0x0d || h[i + 1] !== 0x0a) this.fail('bad boundary line');
        this.state = 'headers';
        return h.subarray(i + 2);
      }
      case 'headers': {
        const end = h.indexOf('\r\n\r\n');
        const emptyHeaders = h.length >= 2 && h[0] === 0x0d && h[1] === 0x0a;
        if (emptyHeaders) this.fail('part without a Content-Range');
        if (end < 0) {
          if (h.length > MAX_HEAD) this.fail('part header too long');
          return undefined;
        }
        const lines = h.subarray(0, end).toString('latin1').split('\r\n');
        let range: ContentRange | undefined;
        for (const line of lines) {
          const m = /^content-range\s*:(.*)$/i.exec(line);
          if (m) range = parseContentRange(m[1]);
        }
        if (!range) this.fail('part without a valid Content-Range');
        this.part = range;
        this.pos = range.start;
        this.parts++;
        this.onPart(range);
        this.state = 'body';
        return h.subarray(end + 4);
      }
      default:
        return undefined;
    }
  }

  /** The body ended: it must have ended after the closing delimiter. */
  end(): void {
    if (this.state !== 'done') this.fail(this.state === 'body' ? 'body ended inside a part' : 'body ended before the closing boundary');
  }
}
