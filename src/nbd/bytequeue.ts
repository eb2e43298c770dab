/**
 * A FIFO of received socket chunks, read from the front without concatenating (no O(n^2) copies).
 * Headers are parsed in place when they sit inside one chunk; only a header split across chunks is
 * copied into a small scratch buffer.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Read position inside chunks[0]. */
  private pos = 0;
  private total = 0;
  private readonly scratch: Buffer;
  /** Offset of the bytes returned by the last peek() inside the buffer it returned. */
  peekOffset = 0;

  constructor(maxPeek = 64) {
    this.scratch = Buffer.allocUnsafe(maxPeek);
  }

  get length(): number { return this.total; }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  clear(): void {
    this.chunks = [];
    this.pos = 0;
    this.total = 0;
  }

  /**
   * A buffer holding `n` contiguous bytes at `this.peekOffset` (n <= the scratch size, n <= length).
   * Valid until the next consume/take/push. Does not consume.
   */
  peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length - this.pos >= n) {
      this.peekOffset = this.pos;
      return first;
    }
    if (n > this.scratch.length) throw new RangeError(`peek(${n}) exceeds scratch size`);
    let filled = 0;
    let pos = this.pos;
    for (let i = 0; filled < n; i++) {
      const c = this.chunks[i];
      const k = Math.min(c.length - pos, n - filled);
      c.copy(this.scratch, filled, pos, pos + k);
      filled += k;
      pos = 0;
    }
    this.peekOffset = 0;
    return this.scratch;
  }

  /** Drop `n` bytes from the front (n <= length). */
  consume(n: number): void {
    this.total -= n;
    while (n > 0) {
      const first = this.chunks[0];
      const avail = first.length - this.pos;
      if (avail > n) {
        this.pos += n;
        return;
      }
      n -= avail;
      this.chunks.shift();
      this.pos = 0;
    }
  }

  /** Remove and return `n` bytes (n <= length): a view when they lie in one chunk, else a new buffer. */
  take(n: number): Buffer {
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first.length - this.pos >= n) {
      const view = first.subarray(this.pos, this.pos + n);
      this.consume(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    this.takeInto(out, 0, n);
    return out;
  }

  /** Copy up to `max` bytes into dest at destOffset, consuming them; returns the count copied. */
  takeInto(dest: Buffer, destOffset: number, max: number): number {
    let copied = 0;
    while (copied < max && this.total > 0) {
      const first = this.chunks[0];
      const k = Math.min(first.length - this.pos, max - copied);
      first.copy(dest, destOffset + copied, this.pos, this.pos + k);
      copied += k;
      this.consume(k);
    }
    return copied;
  }

  /** Drop up to `max` bytes; returns the count dropped. */
  skip(max: number): number {
    const n = Math.min(max, this.total);
    this.consume(n);
    return n;
  }
}
