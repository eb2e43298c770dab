/**
 * Newline-delimited JSON, the one framing of every line protocol medv speaks: the supervisor's
 * control socket (host/protocol.ts), QMP (hypervisor/qmp.ts), the supervisor's start answer on
 * fd 3 (host/client.ts). Lines are bounded in bytes: a peer that sends a longer line, or that
 * keeps sending without a newline, never makes us hold more than `max` bytes (plus the chunk at
 * hand); the reader stops and reports it once, and the caller ends the connection.
 */
import { MedvError } from './errors.js';

/** Default bound of one line: 64 KiB. */
export const MAX_LINE = 64 * 1024;

const NL = 0x0a;

/** Splits a byte stream into lines (without the newline; a trailing '\r' is kept), refusing any line over `max` bytes. */
export class LineReader {
  private parts: Buffer[] = [];
  private size = 0;
  private failed = false;

  constructor(private readonly onLine: (line: string) => void, private readonly onOverflow: () => void, readonly max = MAX_LINE) {}

  /** Feed bytes (or text, taken as UTF-8). After an overflow, everything is ignored. */
  push(chunk: Buffer | string): void {
    let buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    while (!this.failed) {
      const nl = buf.indexOf(NL);
      if (nl < 0) {
        if (this.size + buf.length > this.max) return this.overflow();
        if (buf.length) { this.parts.push(buf); this.size += buf.length; }
        return;
      }
      if (this.size + nl > this.max) return this.overflow();
      const line = this.parts.length ? Buffer.concat([...this.parts, buf.subarray(0, nl)]) : buf.subarray(0, nl);
      this.parts = [];
      this.size = 0;
      buf = buf.subarray(nl + 1);
      const text = line.toString('utf8');
      if (text.trim()) this.onLine(text);
    }
  }

  /** Bytes held of an unfinished line. */
  get pending(): number { return this.size; }

  private overflow(): void {
    this.failed = true;
    this.parts = [];
    this.size = 0;
    this.onOverflow();
  }
}

/**
 * Lines parsed as JSON: `onValue` gets each value; a line that is not JSON, or an over-long line,
 * goes to `onError` as EPROTO (`what` names the peer: "QEMU", "the supervisor"). After an
 * over-long line nothing more is read; after a bad line, reading goes on only if `onError`
 * returns true.
 */
export class JsonLineReader {
  private readonly lines: LineReader;
  private stopped = false;

  constructor(onValue: (value: unknown) => void, onError: (e: MedvError, kind: 'not-json' | 'too-long') => boolean | void, what: string, max = MAX_LINE) {
    this.lines = new LineReader((line) => {
      if (this.stopped) return;
      let v: unknown;
      try { v = JSON.parse(line); } catch {
        if (onError(new MedvError('EPROTO', `${what} sent a line that is not JSON`), 'not-json') !== true) this.stopped = true;
        return;
      }
      onValue(v);
    }, () => { this.stopped = true; onError(new MedvError('EPROTO', `${what} sent a line longer than ${max} bytes`, { max }), 'too-long'); }, max);
  }

  push(chunk: Buffer | string): void {
    if (!this.stopped) this.lines.push(chunk);
  }
}
