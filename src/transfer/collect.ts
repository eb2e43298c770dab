/**
 * Pieces out of a byte stream: bytes arrive as (file offset, chunk) from whatever carried them
 * (a single range, parts of a multipart reply, a whole file sent with 200) and each wanted piece
 * is handed on as soon as its last byte is in. Memory: only pieces partly received are held
 * (each at most one stored block or one run record), whatever the stream carries.
 */
import type { Span } from './plan.js';

export class PieceCollector<P extends Span> {
  private readonly sorted: P[];
  private readonly partial = new Map<P, { buf: Buffer; filled: number }>();
  private readonly emitted = new Set<P>();

  /** `pieces` sorted by offset, not overlapping; `deliver` is called once per piece. */
  constructor(pieces: P[], private readonly deliver: (p: P, data: Buffer) => void) {
    this.sorted = pieces;
  }

  get complete(): boolean { return this.emitted.size === this.sorted.length; }
  get missing(): P[] { return this.sorted.filter((p) => !this.emitted.has(p)); }
  /** Offset past which no piece is wanted. */
  get end(): number { const l = this.sorted[this.sorted.length - 1]; return l ? l.offset + l.length : 0; }

  private firstEndingAfter(offset: number): number {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const p = this.sorted[mid];
      if (p.offset + p.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  feed(offset: number, chunk: Buffer): void {
    const end = offset + chunk.length;
    for (let i = this.firstEndingAfter(offset); i < this.sorted.length; i++) {
      const p = this.sorted[i];
      if (p.offset >= end) break;
      if (this.emitted.has(p)) continue;
      const from = Math.max(offset, p.offset);
      const to = Math.min(end, p.offset + p.length);
      let st = this.partial.get(p);
      if (!st) {
        st = { buf: Buffer.allocUnsafe(p.length), filled: 0 };
        this.partial.set(p, st);
      }
      chunk.copy(st.buf, from - p.offset, from - offset, to - offset);
      st.filled += to - from;
      if (st.filled >= p.length) {
        this.partial.delete(p);
        this.emitted.add(p);
        this.deliver(p, st.buf);
      }
    }
  }
}
