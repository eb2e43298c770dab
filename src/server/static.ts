/**
 * GET/HEAD of one published repository file, with Range, multi-range, ETag, If-Range and
 * Last-Modified, as a CDN or nginx serves it.
 *
 * What `send` (1.x) does and what we add:
 * - single range: `send` answers 206 with Content-Range; an unsatisfiable range 416;
 * - several ranges: `send` merges overlapping/adjacent ones and, when more than one remains,
 *   answers 200 with the whole file. We answer 206 multipart/byteranges instead (as nginx does),
 *   at most MAX_RANGES ranges; more ranges, ranges adding up to more than the file, or a
 *   multi-range request with If-None-Match/If-Modified-Since/If-Match/If-Unmodified-Since get
 *   `send`'s answer (200 with the whole file, 304 or 412);
 * - ETag: `send` makes a weak one (W/"size-mtime") and matches If-Range by substring and dates
 *   by `<=`. We set a strong ETag (inode, size, mtime: published files are never rewritten
 *   in place, so these change whenever the bytes can; mtime in whole milliseconds) and decide If-Range ourselves by exact
 *   comparison (strong ETag, or a date equal to Last-Modified): a stale If-Range drops the Range
 *   header, so the client gets 200 with the whole current file, never a range of another version.
 * The caller has already checked the name (names.ts); here the file must be a regular file directly
 * in the folder: symlinks and anything else are 404.
 */
import * as fs from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import send from 'send';
import { parseRanges, type ByteRange } from './range.js';

export const MAX_RANGES = 256;

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

function hasConditional(req: IncomingMessage): boolean {
  const h = req.headers;
  return h['if-none-match'] !== undefined || h['if-modified-since'] !== undefined || h['if-match'] !== undefined || h['if-unmodified-since'] !== undefined;
}

/** If-Range holds when it equals the strong ETag, or (a date) the Last-Modified second exactly. */
function ifRangeHolds(value: string, st: fs.BigIntStats): boolean {
  const v = value.trim();
  if (v.startsWith('"') || v.startsWith('W/')) return v === strongEtag(st);
  const t = Date.parse(v);
  return Number.isFinite(t) && t === Math.floor(Number(st.mtimeMs) / 1000) * 1000;
}

export async function serveFile(req: IncomingMessage, res: ServerResponse, dir: string, file: string): Promise<void> {
  const path = join(dir, file);
  let st: fs.BigIntStats;
  try {
    st = await fs.promises.lstat(path, { bigint: true });
  } catch {
    return plain(res, 404, 'not found');
  }
  if (!st.isFile()) return plain(res, 404, 'not found');
  const ifRange = req.headers['if-range'] as string | undefined;
  if (req.headers.range !== undefined && ifRange !== undefined && !ifRangeHolds(ifRange, st)) delete req.headers.range;
  const ranges = req.headers.range !== undefined ? parseRanges(req.headers.range, Number(st.size), MAX_RANGES) : 'ignore';
  if (ranges === 'ignore') delete req.headers.range;
  if (Array.isArray(ranges) && ranges.length > 1 && !hasConditional(req)) {
    if (await serveMultipart(req, res, path, st, ranges)) return;
  }
  await new Promise<void>((resolve) => {
    const stream = send(req, file, { root: dir, etag: false, lastModified: true, dotfiles: 'deny', index: false, maxAge: 0 });
    stream.on('headers', (r: ServerResponse, _p: string, s: fs.Stats) => { r.setHeader('ETag', strongEtag(s)); });
    stream.on('directory', () => plain(res, 404, 'not found'));
    res.once('close', resolve);
    stream.pipe(res);
  });
}

/** 206 multipart/byteranges; false when the file changed since it was looked at (the caller falls back to `send`). */
async function serveMultipart(req: IncomingMessage, res: ServerResponse, path: string, seen: fs.BigIntStats, ranges: ByteRange[]): Promise<boolean> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch {
    return false;
  }
  try {
    const st = await fh.stat({ bigint: true });
    if (!st.isFile() || strongEtag(st) !== strongEtag(seen)) return false;
    const size = Number(st.size);
    const boundary = `medv-${randomBytes(12).toString('hex')}`;
    const heads = ranges.map((r, i) => Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${r.start}-${r.end}/${size}\r\n\r\n`));
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    const length = heads.reduce((n, h) => n + h.length, 0) + ranges.reduce((n, r) => n + r.end - r.start + 1, 0) + tail.length;
    res.writeHead(206, {
      'Content-Type': `multipart/byteranges; boundary=${boundary}`,
      'Content-Length': length,
      'Accept-Ranges': 'bytes',
      ETag: strongEtag(st),
      'Last-Modified': new Date(Number(st.mtimeMs)).toUTCString(),
    });
    if (req.method === 'HEAD') { res.end(); return true; }
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
    return true;
  } finally {
    await fh.close().catch(() => undefined);
  }
}
