/**
 * The request planner: pieces wanted from one file (stored blocks, run records) -> coalesced byte
 * ranges -> requests. Pure: no I/O.
 *
 * Neighbouring pieces merge into one range when the gap between them is at most `gap` bytes
 * (fetching a small gap costs less than the framing of another range or another request); a
 * range never grows past `maxBytes`; a request carries at most `maxRanges` ranges and about
 * `maxBytes` bytes (a single piece is never split).
 */

export interface Span {
  /** Byte offset in the file. */
  offset: number;
  length: number;
}

export interface PlanOptions {
  /** Largest gap merged into a range. */
  gap: number;
  /** Ranges per request (1: single-range requests). */
  maxRanges: number;
  /** Bytes per request (and per range). */
  maxBytes: number;
}

export interface PlannedRequest<P extends Span> {
  ranges: Span[];
  /** The pieces the ranges cover, by offset. */
  pieces: P[];
  /** Bytes the ranges ask for (pieces plus merged gaps). */
  bytes: number;
}

/** Multi-range requests: gaps below the size of a part header merge; many ranges per request. */
export const MULTI_RANGE: PlanOptions = { gap: 256, maxRanges: 96, maxBytes: 128 * 1024 };
/** One range per request: larger gaps merge, since every range is a round trip. */
export const SINGLE_RANGE: PlanOptions = { gap: 48 * 1024, maxRanges: 1, maxBytes: 128 * 1024 };

/** Pieces of a file adding up to at most this are asked for in at most SMALL_REQUESTS requests. */
export const SMALL_FETCH = 4 * 1024 * 1024;
const SMALL_REQUESTS = 8;

/**
 * `opts` for fetching `pieces`: requests of `opts.maxBytes` (128 KiB: what a killed run can lose
 * in flight stays small), except for a fetch of a few MiB (an update's changed blocks), which is
 * split into at most 8 requests, so it costs few round trips even from a server that answers one
 * range per request.
 */
export function sizedFor(pieces: Span[], opts: PlanOptions): PlanOptions {
  const total = pieces.reduce((n, p) => n + p.length, 0);
  if (total > SMALL_FETCH) return opts;
  return { ...opts, maxBytes: Math.max(opts.maxBytes, Math.ceil(total / SMALL_REQUESTS)) };
}

/** Sort by offset and drop pieces that repeat an offset (the same stored block wanted twice). */
export function uniquePieces<P extends Span>(pieces: P[]): P[] {
  const sorted = [...pieces].sort((a, b) => a.offset - b.offset);
  const out: P[] = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (last && p.offset < last.offset + last.length) continue;
    out.push(p);
  }
  return out;
}

export function planRequests<P extends Span>(pieces: P[], opts: PlanOptions): Array<PlannedRequest<P>> {
  const sorted = uniquePieces(pieces);
  const requests: Array<PlannedRequest<P>> = [];
  let cur: PlannedRequest<P> | undefined;
  for (const p of sorted) {
    const range = cur?.ranges[cur.ranges.length - 1];
    const end = range ? range.offset + range.length : 0;
    const grow = p.offset + p.length - end;
    if (cur && range && p.offset - end <= opts.gap && range.length + grow <= opts.maxBytes && cur.bytes + grow <= opts.maxBytes) {
      range.length += grow;
      cur.bytes += grow;
      cur.pieces.push(p);
      continue;
    }
    if (!cur || cur.ranges.length >= opts.maxRanges || cur.bytes + p.length > opts.maxBytes) {
      cur = { ranges: [], pieces: [], bytes: 0 };
      requests.push(cur);
    }
    cur.ranges.push({ offset: p.offset, length: p.length });
    cur.pieces.push(p);
    cur.bytes += p.length;
  }
  return requests;
}

/** The Range header value for `ranges`. */
export function rangeHeader(ranges: Span[]): string {
  return `bytes=${ranges.map((r) => `${r.offset}-${r.offset + r.length - 1}`).join(',')}`;
}
