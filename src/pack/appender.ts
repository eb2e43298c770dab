/**
 * Appending to a file through two 4 MiB buffers: one fills while the other is written, so the
 * packer never waits for the disk unless both are full. `reserve` hands out room in the buffer to
 * write into directly (the packer seals each block straight into it). A failed write surfaces at
 * the next reserve, append or flush.
 */
import type * as fs from 'node:fs';
import { fromSystemError } from '../core/errors.js';

const BUFFER = 4 * 1024 * 1024;

export class Appender {
  private readonly bufs = [Buffer.allocUnsafeSlow(BUFFER), Buffer.allocUnsafeSlow(BUFFER)];
  private cur = 0;
  private used = 0;
  private writing: Promise<void> | undefined;
  /** File offset of the next byte appended. */
  position: number;
  private flushedTo: number;

  constructor(private readonly fh: fs.promises.FileHandle, start: number, private readonly file: string) {
    this.position = start;
    this.flushedTo = start;
  }

  /** `n` bytes of room at `position` to fill before the next call, or undefined when the buffer is full (use reserve). */
  reserveNow(n: number): Buffer | undefined {
    if (n > BUFFER || this.used + n > BUFFER) return undefined;
    const b = this.bufs[this.cur].subarray(this.used, this.used + n);
    this.used += n;
    this.position += n;
    return b;
  }

  async reserve(n: number): Promise<Buffer> {
    const now = this.reserveNow(n);
    if (now) return now;
    await this.flush(false);
    return this.reserveNow(n)!;
  }

  async append(b: Buffer): Promise<void> {
    if (b.length > BUFFER) {
      await this.flush(true);
      await this.write(b, this.flushedTo);
      this.flushedTo += b.length;
      this.position += b.length;
      return;
    }
    (await this.reserve(b.length)).set(b);
  }

  /** Start writing what is buffered; with `wait`, until everything appended is written. */
  async flush(wait = true): Promise<void> {
    await this.writing;
    this.writing = undefined;
    if (this.used > 0) {
      const at = this.flushedTo;
      const data = this.bufs[this.cur].subarray(0, this.used);
      this.flushedTo += this.used;
      this.cur ^= 1;
      this.used = 0;
      this.writing = this.write(data, at);
      this.writing.catch(() => undefined); // awaited by the next flush
    }
    if (wait) {
      await this.writing;
      this.writing = undefined;
    }
  }

  private async write(b: Buffer, at: number): Promise<void> {
    try {
      for (let done = 0; done < b.length;) done += (await this.fh.write(b, done, b.length - done, at + done)).bytesWritten;
    } catch (e) {
      throw fromSystemError(e, this.file);
    }
  }
}
