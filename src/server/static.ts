/**
 * GET/HEAD of one published repository file, with Range, multi-range, ETag, If-Range and the
 * other conditional requests, as a CDN or nginx serves it, from ONE open file descriptor.
 *
 * The file is opened once (O_RDONLY | O_NOFOLLOW | O_NONBLOCK): a symlink is refused by the
 * kernel, a FIFO cannot hang the open. Then everything is decided on that descriptor: fstat must
 * say a regular file, /proc/self/fd/N must say it is directly in DIR/images, the ETag and
 * Last-Modified come from the same fstat, and every byte sent is read from it. A name swapped for
 * a symlink (or another file) after the open changes nothing we send (issue 18 item 12: the old
 * code checked with lstat, then `send` opened the name again and followed links).
 *
 * Answers (RFC 9110; compared with nginx in test/interop/repo-nginx.test.ts):
 * - preconditions first: If-Match (strong) / If-Unmodified-Since → 412; If-None-Match (weak) /
 *   If-Modified-Since → 304;
 * - If-Range holds only when it equals the strong ETag, or (a date) the Last-Modified second
 *   exactly; otherwise the Range is ignored and the whole current file is sent (200): a client
 *   never gets a range of another version;
 * - one range → 206 with Content-Range; several → 206 multipart/byteranges (as nginx: in request
 *   order, not merged), at most MAX_RANGES; more ranges, bad syntax, or ranges adding up to more
 *   than the file → 200 with the whole file; no range inside the file → 416;
 * - ETag: strong, "inode-size-mtime_ms" (published files are never rewritten in place, so these
 *   change whenever the bytes can).
 * The caller has already checked the name (names.ts).
 */
import * as fs from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { httpStatusOf } from '../api/status.js';
import { parseRanges, type ByteRange } from './range.js';

export const MAX_RANGES = 256;
const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

export function strongEtag(st: fs.Stats | fs.BigIntStats): string {
  // whole milliseconds: a BigIntStats and a Stats of the same file give the same tag
  const mtime = BigInt(Math.floor(Number(st.mtimeMs)));
  return `"${BigInt(st.ino).toString(16)}-${BigInt(st.size).toString(16)}-${mtime.toString(16)}"`;
}

export function plain(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  const body = Buffer.from(`${text}\n`);
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': body.length, 'X-Content-Type-Options': 'nosniff', ...headers });
  res.end(body);
}

/** The entity tags of an If-Match / If-None-Match header ('*' as itself). */
function etagList(v: string): string[] {
  return v.trim() === '*' ? ['*'] : [...v.matchAll(/(?:W\/)?"[^"]*"/g)].map((m) => m[0]);
}

const weak = (t: string) => t.replace(/^W\//, '');
/** Seconds: HTTP dates have no finer grain. */
const second = (ms: number) => Math.floor(ms / 1000) * 1000;

/** 412 or 304 when a precondition says so (RFC 9110 §13.2.2), else undefined. */
function preconditions(req: IncomingMessage, etag: string, modified: number): 412 | 304 | undefined {
  const h = req.headers;
  const ifMatch = h['if-match'];
  if (ifMatch !== undefined) {
    const tags = etagList(ifMatch);
    if (!tags.includes('*') && !tags.includes(etag)) return 412;
  } else if (h['if-unmodified-since'] !== undefined) {
    const t = Date.parse(h['if-unmodified-since']);
    if (Number.isFinite(t) && modified > t) return 412;
  }
  const ifNoneMatch = h['if-none-match'];
  if (ifNoneMatch !== undefined) {
    const tags = etagList(ifNoneMatch);
    if (tags.includes('*') || tags.some((x) => weak(x) === etag)) return 304;
  } else if (h['if-modified-since'] !== undefined) {
    const t = Date.parse(h['if-modified-since']);
    if (Number.isFinite(t) && modified <= t) return 304;
  }
  return undefined;
}

/** If-Range holds when it equals the strong ETag, or (a date) the Last-Modified second exactly. */
function ifRangeHolds(value: string, etag: string, modified: number): boolean {
  const v = value.trim();
  if (v.startsWith('"') || v.startsWith('W/')) return v === etag;
  const t = Date.parse(v);
  return Number.isFinite(t) && t === modified;
}

/**
 * Open `dir/file` for serving: the descriptor of a regular file that is directly in `realDir`
 * (the real path of `dir`), or undefined (404) for anything else.
 */
async function openServed(dir: string, realDir: string, file: string): Promise<{ fh: fs.promises.FileHandle; st: fs.BigIntStats } | undefined> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(join(dir, file), OPEN_FLAGS);
  } catch {
    return undefined; // ENOENT, ELOOP (a symlink), EACCES, …
  }
  try {
    const st = await fh.stat({ bigint: true });
    if (!st.isFile()) throw new Error('not a regular file');
    if (await fs.promises.readlink(`/proc/self/fd/${fh.fd}`) !== join(realDir, file)) throw new Error('not directly in the folder');
    return { fh, st };
  } catch {
    await fh.close().catch(() => undefined);
    return undefined;
  }
}

/** Serve `file` from folder `dir` (whose real path is `realDir`, resolved once by the caller). */
export async function serveFile(req: IncomingMessage, res: ServerResponse, dir: string, file: string, realDir: string = dir): Promise<void> {
  const opened = await openServed(dir, realDir, file);
  if (!opened) return plain(res, httpStatusOf('ENOENT'), 'not found');
  const { fh, st } = opened;
  try {
    const size = Number(st.size);
    const etag = strongEtag(st);
    const modified = second(Number(st.mtimeMs));
    const common = { ETag: etag, 'Last-Modified': new Date(modified).toUTCString(), 'Cache-Control': 'public, max-age=0', 'Accept-Ranges': 'bytes' };
    const pre = preconditions(req, etag, modified);
    if (pre === 412) return plain(res, httpStatusOf('EPRECONDITION'), 'precondition failed', common);
    if (pre === 304) { res.writeHead(304, common); res.end(); return; }

    const ifRange = req.headers['if-range'];
    const useRange = req.headers.range !== undefined && (ifRange === undefined || (typeof ifRange === 'string' && ifRangeHolds(ifRange, etag, modified)));
    const ranges = useRange ? parseRanges(req.headers.range, size, MAX_RANGES) : 'ignore';
    if (ranges === 'unsatisfiable') return plain(res, httpStatusOf('ERANGE'), 'range not satisfiable', { ...common, 'Content-Range': `bytes */${size}` });
    const head = req.method === 'HEAD';
    if (ranges === 'ignore' || ranges.length === 1) {
      const r: ByteRange = ranges === 'ignore' ? { start: 0, end: size - 1 } : ranges[0];
      const partial = ranges !== 'ignore';
      res.writeHead(partial ? 206 : 200, {
        ...common,
        'Content-Type': 'application/octet-stream',
        'Content-Length': String(r.end - r.start + 1),
        ...(partial ? { 'Content-Range': `bytes ${r.start}-${r.end}/${size}` } : {}),
      });
      if (head || size === 0) { res.end(); return; }
      const stream = fs.createReadStream(null as unknown as string, { fd: fh, start: r.start, end: r.end, autoClose: false, highWaterMark: 256 * 1024 });
      await pipeline(stream, res).catch(() => res.destroy());
      return;
    }
    await serveMultipart(res, fh, size, ranges, common, head);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** 206 multipart/byteranges, each part read from the descriptor. */
async function serveMultipart(res: ServerResponse, fh: fs.promises.FileHandle, size: number, ranges: ByteRange[], common: Record<string, string>, head: boolean): Promise<void> {
  const boundary = `medv-${randomBytes(12).toString('hex')}`;
  const heads = ranges.map((r, i) => Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${r.start}-${r.end}/${size}\r\n\r\n`));
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const length = heads.reduce((n, h) => n + h.length, 0) + ranges.reduce((n, r) => n + r.end - r.start + 1, 0) + tail.length;
  res.writeHead(206, { ...common, 'Content-Type': `multipart/byteranges; boundary=${boundary}`, 'Content-Length': String(length) });
  if (head) { res.end(); return; }
  async function* body(): AsyncGenerator<Buffer> {
    for (let i = 0; i < ranges.length; i++) {
      yield heads[i];
      const buf = Buffer.alloc(Math.min(1 << 20, ranges[i].end - ranges[i].start + 1));
      for (let pos = ranges[i].start; pos <= ranges[i].end;) {
        const n = Math.min(buf.length, ranges[i].end - pos + 1);
        const { bytesRead } = await fh.read(buf, 0, n, pos);
        if (bytesRead === 0) throw new Error('file shrank while being served');
        yield Buffer.from(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
    }
    yield tail;
  }
  await pipeline(Readable.from(body()), res).catch(() => res.destroy());
}
