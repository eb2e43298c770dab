/**
 * Repository files over HTTP(S): coalesced Range requests, several in flight over keep-alive
 * connections, with every way a server may answer handled:
 *
 * - multi-range requests (multipart/byteranges, parsed as a stream by ./multipart.ts) once a HEAD
 *   probe with two ranges showed the origin answers 206 to them;
 * - single-range requests when it does not (nginx with `max_ranges 1` answers 200 to more ranges)
 *   or answers 416 to a multi-range request;
 * - a server that answers 200 to any Range: the whole file is streamed once and every piece still
 *   wanted is picked from it as it passes (memory bounded by the pieces partly received);
 * - If-Range with the file's strong ETag, and the ETag of every reply checked, so bytes of two
 *   versions of a file never mix (ECHANGED);
 * - a Content-Range that is not what was asked, or a file length other than the index says:
 *   EBADREPLY / ETRUNCATED / ECORRUPT, never retried;
 * - network errors, 5xx, replies cut short: retried with backoff for what is still missing.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { MedvError } from '../core/errors.js';
import { PieceCollector } from './collect.js';
import { MultipartParser, byterangesBoundary, parseContentRange } from '../formats/multipart.js';
import { MULTI_RANGE, type PlanOptions, SINGLE_RANGE, type Span, planRequests, rangeHeader, sizedFor, uniquePieces } from './plan.js';
import { type PieceSink, type RemoteFile, type TransferStats, checkFileSize, siblingOf } from './remote.js';

export type RangeMode = 'multi' | 'single' | 'none';

export interface HttpOptions {
  /** Requests in flight per file (4..8 makes sense). */
  concurrency?: number;
  /** Consecutive failed attempts (no byte delivered in between) before giving up. */
  retries?: number;
  /** First backoff delay in ms (doubles, at most 4 s). */
  backoffMs?: number;
  /** Socket idle timeout in ms. */
  timeoutMs?: number;
  /** CA certificates (PEM) an https:// repository must chain to, instead of the system's. */
  ca?: Buffer;
  /**
   * A reply body slower than `bytesPerSecond` once `afterMs` have passed since the request is
   * given up like a stalled one (a mirror that trickles: the next source is faster). Default: none.
   */
  minRate?: { bytesPerSecond: number; afterMs: number };
}

class Retryable extends Error {}

/**
 * What a reply streamed in full holds at once: one socket chunk (at most 64 KiB) and the pieces it
 * completes or starts (each written before the next chunk is read).
 */
const STREAMED_BYTES = 128 * 1024;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What one fetch run shares across files: agents (keep-alive), range support per origin, ETags per URL, counters. */
export class HttpClient {
  readonly concurrency: number;
  readonly retries: number;
  readonly backoffMs: number;
  readonly timeoutMs: number;
  readonly minRate: HttpOptions['minRate'];
  private readonly agents: { http: http.Agent; https: https.Agent };
  readonly modes = new Map<string, RangeMode>();
  readonly etags = new Map<string, string>();
  private probing = new Map<string, Promise<RangeMode>>();

  constructor(readonly stats: TransferStats, opts: HttpOptions = {}) {
    this.concurrency = Math.max(1, Math.min(8, opts.concurrency ?? 4));
    this.retries = opts.retries ?? 10;
    this.backoffMs = opts.backoffMs ?? 200;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.minRate = opts.minRate;
    this.agents = { http: new http.Agent({ keepAlive: true, maxSockets: 8 }), https: new https.Agent({ keepAlive: true, maxSockets: 8, ...(opts.ca ? { ca: opts.ca } : {}) }) };
  }

  file(url: string): HttpFile { return new HttpFile(url, this); }

  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  /** Send a request; resolves with the response once its headers are in. Network errors are Retryable. */
  request(url: string, method: 'GET' | 'HEAD', headers: Record<string, string>): Promise<http.IncomingMessage> {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    this.stats.requests++;
    return new Promise((resolve, reject) => {
      const req = mod.request(u, { method, headers: { 'accept-encoding': 'identity', ...headers }, agent: u.protocol === 'https:' ? this.agents.https : this.agents.http });
      req.setTimeout(this.timeoutMs, () => req.destroy(new Retryable(`no answer from ${u.host} for ${this.timeoutMs / 1000} s`)));
      req.on('response', resolve);
      req.on('error', (e) => reject(e instanceof Retryable ? e : new Retryable(`${u.host}: ${(e as Error).message}`)));
      req.end();
    });
  }

  /**
   * How the origin of `url` answers a request with two ranges, asked once per origin with HEAD
   * (no body moves): 206 multipart -> 'multi'; anything else -> 'single' (a GET then shows
   * whether it honours even one range).
   */
  async rangeMode(url: string): Promise<RangeMode> {
    const origin = new URL(url).origin;
    const known = this.modes.get(origin);
    if (known) return known;
    let p = this.probing.get(origin);
    if (!p) {
      p = (async () => {
        let mode: RangeMode = 'single';
        try {
          const res = await this.request(url, 'HEAD', { range: 'bytes=0-0,2-2' });
          res.resume();
          if (res.statusCode === 206 && byterangesBoundary(res.headers['content-type'])) mode = 'multi';
        } catch {
          // a probe that fails tells nothing: single ranges work everywhere ranges work
        }
        if (!this.modes.has(origin)) this.modes.set(origin, mode);
        return this.modes.get(origin)!;
      })();
      this.probing.set(origin, p);
    }
    return p;
  }

  setMode(url: string, mode: RangeMode): void {
    this.modes.set(new URL(url).origin, mode);
  }
}

function statusError(url: string, status: number | undefined): MedvError {
  if (status === 404 || status === 410) return new MedvError('EHTTP', `${url}: not found (HTTP ${status})`, { file: url, status });
  return new MedvError('EHTTP', `${url}: HTTP ${status}`, { file: url, status });
}

function strongEtag(res: http.IncomingMessage): string | undefined {
  const e = res.headers.etag;
  return typeof e === 'string' && e.startsWith('"') ? e : undefined;
}

export class HttpFile implements RemoteFile {
  constructor(readonly name: string, private readonly client: HttpClient) {}

  sibling(name: string): RemoteFile { return new HttpFile(siblingOf(this.name, name), this.client); }

  /** The ETag of a reply must be the one this file had so far. */
  private checkEtag(res: http.IncomingMessage): void {
    const e = strongEtag(res);
    if (!e) return;
    const known = this.client.etags.get(this.name);
    if (known === undefined) this.client.etags.set(this.name, e);
    else if (known !== e) throw new MedvError('ECHANGED', `${this.name} changed during the transfer (ETag ${known} became ${e}); run the fetch again`, { file: this.name });
  }

  private conditional(): Record<string, string> {
    const e = this.client.etags.get(this.name);
    return e ? { 'if-range': e } : {};
  }

  async readHead(n: number): Promise<{ data: Buffer; size: number }> {
    let failures = 0;
    for (;;) {
      try {
        return await this.readHeadOnce(n);
      } catch (e) {
        if (!(e instanceof Retryable)) throw e;
        if (++failures > this.client.retries) throw new MedvError('ENETWORK', `${e.message} (gave up after ${failures} attempts)`, { file: this.name });
        await sleep(Math.min(4000, this.client.backoffMs * 2 ** (failures - 1)));
      }
    }
  }

  private async readHeadOnce(n: number): Promise<{ data: Buffer; size: number }> {
    const res = await this.client.request(this.name, 'GET', { range: `bytes=0-${n - 1}` });
    try {
      if (res.statusCode !== undefined && res.statusCode >= 500) throw new Retryable(`${this.name}: HTTP ${res.statusCode}`);
      if (res.statusCode === 416) {
        const cr = /\*\/(\d+)/.exec(String(res.headers['content-range'] ?? ''));
        if (cr && Number(cr[1]) === 0) return { data: Buffer.alloc(0), size: 0 };
        throw new MedvError('EBADREPLY', `${this.name}: HTTP 416 for its first ${n} bytes`, { file: this.name });
      }
      if (res.statusCode !== 200 && res.statusCode !== 206) throw statusError(this.name, res.statusCode);
      this.checkEtag(res);
      let size: number;
      if (res.statusCode === 206) {
        const cr = parseContentRange(String(res.headers['content-range'] ?? ''));
        if (!cr || cr.start !== 0 || cr.total === undefined || cr.end !== Math.min(n, cr.total) - 1) {
          throw new MedvError('EBADREPLY', `${this.name}: Content-Range ${JSON.stringify(res.headers['content-range'] ?? null)} for a request of bytes 0-${n - 1}`, { file: this.name });
        }
        size = cr.total;
      } else {
        size = Number(res.headers['content-length']);
        if (!Number.isSafeInteger(size) || size < 0) throw new MedvError('EBADREPLY', `${this.name}: a 200 reply without a Content-Length`, { file: this.name });
      }
      const want = Math.min(n, size);
      const data = Buffer.alloc(want);
      let got = 0;
      for await (const chunk of res as AsyncIterable<Buffer>) {
        this.client.stats.networkBytes += chunk.length;
        const take = Math.min(chunk.length, want - got);
        chunk.copy(data, got, 0, take);
        got += take;
        if (got >= want) break;
      }
      if (got < want) throw new Retryable(`${this.name}: reply ended after ${got} of ${want} bytes`);
      return { data, size };
    } finally {
      res.destroy();
    }
  }

  async fetch<P extends Span>(pieces: P[], size: number, sink: PieceSink<P>): Promise<void> {
    const all = uniquePieces(pieces);
    if (all.length === 0) return;
    const pending = new Set<P>(all);
    let mode = this.client.modes.get(new URL(this.name).origin);
    if (mode === undefined && planRequests(all, MULTI_RANGE).some((r) => r.ranges.length > 1)) mode = await this.client.rangeMode(this.name);
    mode ??= 'single';
    // no range support: one request streams the whole file once for every piece
    const sized = { multi: sizedFor(all, MULTI_RANGE), single: sizedFor(all, SINGLE_RANGE) };
    const plan = (ps: P[]): P[][] => (mode === 'none' ? [ps] : planRequests(ps, mode === 'multi' ? sized.multi : sized.single).map((r) => r.pieces));
    const queue: P[][] = plan(all);
    let failures = 0;
    let fatal: unknown;
    const active = new Set<Promise<void>>();

    const runOne = async (group: P[]): Promise<void> => {
      const want = group.filter((p) => pending.has(p));
      if (want.length === 0) return;
      const delivered = { n: 0 };
      try {
        // admitted for the bytes it asks for, held until every piece it carried is written; a
        // whole file streamed (no range support) holds one chunk and the pieces it completes
        const span = this.bodyRanges(want, mode!).reduce((n, r) => n + r.length, 0);
        const asked = mode === 'none' ? Math.min(span, STREAMED_BYTES) : span;
        const outcome = await this.client.stats.inFlight.with(asked, () => this.requestOnce(want, size, mode!, pending, queue, sink, delivered));
        if (outcome === 'multi-refused') {
          mode = 'single';
          this.client.setMode(this.name, 'single');
          queue.push(...plan(want.filter((p) => pending.has(p))));
          return;
        }
        if (outcome === 'no-ranges') mode = 'none';
        failures = 0;
      } catch (e) {
        if (!(e instanceof Retryable)) throw e;
        if (delivered.n > 0) failures = 0;
        if (++failures > this.client.retries) throw new MedvError('ENETWORK', `${e.message} (gave up after ${failures} attempts)`, { file: this.name });
        await sleep(Math.min(4000, this.client.backoffMs * 2 ** (failures - 1)));
        queue.push(...plan(want.filter((p) => pending.has(p))));
      }
    };

    while (fatal === undefined) {
      while (active.size < this.client.concurrency && queue.length > 0) {
        const p: Promise<void> = runOne(queue.shift()!).catch((e) => { fatal ??= e; }).finally(() => active.delete(p));
        active.add(p);
      }
      if (active.size === 0) break;
      await Promise.race(active);
    }
    if (fatal === undefined && pending.size > 0) fatal = new MedvError('EINTERNAL', `${pending.size} pieces of ${this.name} were never requested`);
    if (fatal !== undefined) {
      await Promise.allSettled([...active]);
      throw fatal;
    }
  }

  /** The byte ranges one request for `want` asks for (one range unless the origin takes several). */
  private bodyRanges(want: Span[], mode: RangeMode): Span[] {
    const ranges = planRequests(want, { gap: mode === 'multi' ? MULTI_RANGE.gap : SINGLE_RANGE.gap, maxRanges: Infinity, maxBytes: Infinity })
      .flatMap((r) => r.ranges);
    return mode !== 'multi' ? [{ offset: ranges[0].offset, length: ranges[ranges.length - 1].offset + ranges[ranges.length - 1].length - ranges[0].offset }] : ranges;
  }

  /**
   * One request for `want`. Delivers what arrives (removing it from `pending`); throws Retryable
   * when the rest is worth asking again. A 200 reply takes over every piece still queued.
   */
  private async requestOnce<P extends Span>(
    want: P[], size: number, mode: RangeMode, pending: Set<P>, queue: P[][], sink: PieceSink<P>, delivered: { n: number },
  ): Promise<'ok' | 'multi-refused' | 'no-ranges'> {
    const single = this.bodyRanges(want, mode);
    const headers: Record<string, string> = mode === 'none' ? {} : { range: rangeHeader(single), ...this.conditional() };
    const sent = Date.now();
    const res = await this.client.request(this.name, 'GET', headers);
    const waits: Array<Promise<void>> = [];
    let collector: PieceCollector<P> | undefined;
    const deliver = (p: P, data: Buffer) => {
      if (!pending.delete(p)) return;
      delivered.n++;
      waits.push(Promise.resolve(sink(p, data)));
    };
    try {
      const status = res.statusCode ?? 0;
      if (status >= 500 || status === 408 || status === 429) throw new Retryable(`${this.name}: HTTP ${status}`);
      if (status === 416) {
        if (single.length > 1) return 'multi-refused';
        const cr = /\*\/(\d+)/.exec(String(res.headers['content-range'] ?? ''));
        if (cr) checkFileSize(this.name, Number(cr[1]), size);
        throw new MedvError('ETRUNCATED', `${this.name} does not hold bytes ${rangeHeader(single).slice(6)} (HTTP 416): shorter than the index says`, { file: this.name });
      }
      if (status !== 200 && status !== 206) throw statusError(this.name, status);
      this.checkEtag(res);
      let feed: (chunk: Buffer) => void;
      let finish: () => void = () => undefined;
      let outcome: 'ok' | 'no-ranges' = 'ok';
      if (status === 200) {
        // Ranges ignored: stream the file once, picking every piece still wanted from it.
        const len = Number(res.headers['content-length']);
        if (Number.isSafeInteger(len)) checkFileSize(this.name, len, size);
        if (headers.range) this.client.setMode(this.name, 'none');
        outcome = 'no-ranges';
        const taken = [...want, ...queue.splice(0).flat()].filter((p) => pending.has(p));
        collector = new PieceCollector(uniquePieces(taken), deliver);
        let at = 0;
        feed = (chunk) => {
          collector!.feed(at, chunk);
          at += chunk.length;
          if (at > size) throw new MedvError('ECORRUPT', `${this.name} is longer than the index says`, { file: this.name, offset: size });
        };
      } else {
        collector = new PieceCollector(want, deliver);
        const boundary = byterangesBoundary(res.headers['content-type']);
        const inside = (s: number, e: number) => single.some((r) => s >= r.offset && e < r.offset + r.length);
        const checkTotal = (total: number | undefined) => { if (total !== undefined) checkFileSize(this.name, total, size); };
        if (boundary) {
          if (single.length === 1) throw new MedvError('EBADREPLY', `${this.name}: multipart reply to a single-range request`, { file: this.name });
          const parser = new MultipartParser(boundary, (cr) => {
            checkTotal(cr.total);
            if (!inside(cr.start, cr.end)) throw new MedvError('EBADREPLY', `${this.name}: part with bytes ${cr.start}-${cr.end}, which were not asked for`, { file: this.name });
          }, (off, data) => collector!.feed(off, data));
          // parts may not repeat without end: the body is bounded by what was asked plus framing
          const limit = single.reduce((n, x) => n + x.length, 0) + single.length * 1024 + 65536;
          let total = 0;
          feed = (chunk) => {
            total += chunk.length;
            if (total > limit) throw new MedvError('EBADREPLY', `${this.name}: multipart reply longer than the ranges asked for`, { file: this.name });
            parser.push(chunk);
          };
          finish = () => parser.end();
        } else {
          const cr = parseContentRange(String(res.headers['content-range'] ?? ''));
          if (!cr) throw new MedvError('EBADREPLY', `${this.name}: 206 reply without a valid Content-Range`, { file: this.name });
          checkTotal(cr.total);
          // A single part must be exactly the (one) range asked for, or cover all of them.
          const first = single[0].offset;
          const last = single[single.length - 1].offset + single[single.length - 1].length - 1;
          const exact = single.length === 1 ? cr.start === first && cr.end === last : cr.start <= first && cr.end >= last && cr.end - cr.start <= last - first + (1 << 20);
          if (!exact) {
            throw new MedvError('EBADREPLY', `${this.name}: server sent bytes ${cr.start}-${cr.end} for a request of ${rangeHeader(single).slice(6)} (wrong Content-Range)`, { file: this.name });
          }
          let at = cr.start;
          feed = (chunk) => {
            if (at + chunk.length > cr.end + 1) throw new MedvError('EBADREPLY', `${this.name}: reply longer than its Content-Range`, { file: this.name });
            collector!.feed(at, chunk);
            at += chunk.length;
          };
        }
      }
      const rate = this.client.minRate;
      let received = 0;
      try {
        for await (const chunk of res as AsyncIterable<Buffer>) {
          this.client.stats.networkBytes += chunk.length;
          received += chunk.length;
          const ms = Date.now() - sent;
          if (rate && ms > rate.afterMs && received * 1000 < rate.bytesPerSecond * ms) throw new Retryable(`${received} bytes in ${(ms / 1000).toFixed(1)} s, slower than ${rate.bytesPerSecond} bytes/s`);
          feed(chunk);
          if (waits.length) await Promise.all(waits.splice(0));
          if (status === 200 && collector.complete) break;
        }
      } catch (e) {
        if (e instanceof MedvError) throw e;
        throw new Retryable(`${this.name}: ${(e as Error).message}`);
      }
      await Promise.all(waits.splice(0));
      if (!collector.complete) {
        if (status === 200 && !res.complete) throw new Retryable(`${this.name}: reply cut short`);
        if (status === 206 && !res.complete) throw new Retryable(`${this.name}: reply cut short`);
        if (status === 200) throw new MedvError('ETRUNCATED', `${this.name} ended before the bytes the index names`, { file: this.name });
        throw new MedvError('EBADREPLY', `${this.name}: reply lacks ${collector.missing.length} of the ranges asked for`, { file: this.name });
      }
      if (status !== 200 || res.complete) finish();
      return outcome;
    } finally {
      await Promise.allSettled(waits);
      res.destroy();
    }
  }
}

export { MULTI_RANGE, SINGLE_RANGE, type PlanOptions };
