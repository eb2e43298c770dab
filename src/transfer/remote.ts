/**
 * A file of a repository, local or remote: the two things a fetch asks of it. `readHead` (the
 * first bytes, to learn an index's header and the file's size) and `fetch` (deliver each wanted
 * piece once, in any order). Local paths read with pread; http(s) URLs go through ./http.ts.
 */
import * as fs from 'node:fs';
import { MedvError, fromSystemError } from '../core/errors.js';
import { InFlight } from './inflight.js';
import { type Span, planRequests } from './plan.js';

export interface TransferStats {
  /** Body bytes received over the network. */
  networkBytes: number;
  /** HTTP requests sent (HEAD probes included). */
  requests: number;
  /** Bytes read from local repository files (a path instead of a URL). */
  localBytes: number;
  /** The bound on repository bytes held at once, shared by every file of one fetch (./inflight.ts). */
  inFlight: InFlight;
}

export function newStats(inFlightBytes?: number): TransferStats { return { networkBytes: 0, requests: 0, localBytes: 0, inFlight: new InFlight(inFlightBytes) }; }

export type PieceSink<P> = (piece: P, data: Buffer) => Promise<void> | void;

export interface RemoteFile {
  /** URL or path, for messages. */
  readonly name: string;
  /** Up to `n` first bytes, and the file's size. */
  readHead(n: number): Promise<{ data: Buffer; size: number }>;
  /**
   * Deliver every piece once. `size` is the file length the caller expects (an index says it);
   * a file of another length is ETRUNCATED (shorter) or ECORRUPT (longer) before any piece.
   */
  fetch<P extends Span>(pieces: P[], size: number, sink: PieceSink<P>): Promise<void>;
  /** The file `name` beside this one (same folder, same way of reaching it). */
  sibling(name: string): RemoteFile;
}

export function checkFileSize(name: string, actual: number, expected: number): void {
  if (actual < expected) throw new MedvError('ETRUNCATED', `${name} is ${actual} bytes, the index says ${expected}`, { file: name, offset: actual });
  if (actual > expected) throw new MedvError('ECORRUPT', `${name} is ${actual} bytes, ${actual - expected} more than the index says`, { file: name, offset: expected });
}

/** A repository file on a local (or mounted) file system. */
export class LocalFile implements RemoteFile {
  constructor(readonly name: string, private readonly stats: TransferStats) {}

  sibling(name: string): RemoteFile { return new LocalFile(siblingOf(this.name, name), this.stats); }

  private async open(): Promise<{ fh: fs.promises.FileHandle; size: number }> {
    let fh: fs.promises.FileHandle | undefined;
    try {
      fh = await fs.promises.open(this.name, 'r');
      const st = await fh.stat();
      if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'not a regular file', { file: this.name });
      return { fh, size: st.size };
    } catch (e) {
      await fh?.close().catch(() => undefined);
      throw fromSystemError(e, this.name);
    }
  }

  private async readAt(fh: fs.promises.FileHandle, offset: number, length: number): Promise<Buffer> {
    const b = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(b, done, length - done, offset + done);
      if (bytesRead === 0) throw new MedvError('ETRUNCATED', `${this.name} shrank while being read`, { file: this.name, offset: offset + done });
      done += bytesRead;
    }
    this.stats.localBytes += length;
    return b;
  }

  async readHead(n: number): Promise<{ data: Buffer; size: number }> {
    const { fh, size } = await this.open();
    try {
      return { data: await this.readAt(fh, 0, Math.min(n, size)), size };
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  async fetch<P extends Span>(pieces: P[], size: number, sink: PieceSink<P>): Promise<void> {
    if (pieces.length === 0) return;
    const { fh, size: actual } = await this.open();
    try {
      checkFileSize(this.name, actual, size);
      for (const req of planRequests(pieces, { gap: 0, maxRanges: 1, maxBytes: 1 << 20 })) {
        const r = req.ranges[0];
        await this.stats.inFlight.with(r.length, async () => {
          const buf = await this.readAt(fh, r.offset, r.length);
          for (const p of req.pieces) await sink(p, buf.subarray(p.offset - r.offset, p.offset - r.offset + p.length));
        });
      }
    } finally {
      await fh.close().catch(() => undefined);
    }
  }
}

export function isUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

/** `sibling` resolved next to `base` (a URL or a path). */
export function siblingOf(base: string, sibling: string): string {
  if (isUrl(base)) return new URL(encodeURIComponent(sibling), base).toString();
  const slash = base.lastIndexOf('/');
  return slash < 0 ? sibling : `${base.slice(0, slash + 1)}${sibling}`;
}
