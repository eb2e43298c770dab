/**
 * `medv image upload`: send packs and indexes to a `medv serve` repository over tus, resumably.
 *
 * - Packs go before indexes (each group by version), so the server, which refuses an index whose
 *   packs are not published, never shows an index without its packs.
 * - Resume: the upload URL of each file is kept in a small state file (keyed by server, path, size
 *   and mtime) in the state folder; a later run with the same file resumes from the server's offset
 *   instead of sending everything again. The state file goes when the file is published.
 * - The server answers 401 (token), 400 (name), 409 (other bytes published under that name),
 *   422 (content, or an index whose packs are missing); those are not retried. Network errors,
 *   5xx and 423 are retried a few times.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { basename, join, resolve } from 'node:path';
import { Upload, type DetailedError } from 'tus-js-client';
import { type ErrorCode, MedvError, fromSystemError } from '../core/errors.js';
import { ensureDir, readBoundedSync, writeFileAtomicSync } from '../core/fsio.js';
import { uploadStateDir } from '../core/paths.js';
import { type RepoFileName, parseRepoFileName } from '../api/names.js';

export interface UploadOptions {
  /** Server base URL, e.g. http://host:8080 */
  server: string;
  token: string;
  /** Folder for resume state (default src/core/paths.ts uploadStateDir()). */
  stateDir?: string;
  /** Bytes per PATCH request. */
  chunkSize?: number;
  /** Delays between retries of a failed request (ms). */
  retryDelays?: number[];
  onProgress?: (done: number, total: number) => void;
}

export interface UploadedFile {
  file: string;
  path: string;
  size: number;
  /** 'published', 'identical' (already there with the same bytes) */
  status: string;
  /** Bytes of the file this run sent (less than size when it resumed). */
  sent: number;
  resumed: boolean;
}

/** Packs first, then indexes; each by name then version. */
export function uploadOrder<T extends RepoFileName>(files: T[]): T[] {
  return [...files].sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'pack' ? -1 : 1) || a.name.localeCompare(b.name) || a.version - b.version);
}

function normalizeServer(server: string): string {
  let u: URL;
  try { u = new URL(server); } catch { throw new MedvError('EINVAL_ARG', `--server ${JSON.stringify(server)} is not a URL`); }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new MedvError('EINVAL_ARG', `--server must be an http:// or https:// URL, not ${u.protocol}`);
  return u.href.replace(/\/+$/, '');
}

interface State { url: string; server: string; path: string; size: number; mtimeMs: number }

function stateFile(stateDir: string, server: string, path: string, st: fs.Stats): string {
  const key = createHash('sha256').update(`${server}\n${path}\n${st.size}\n${st.mtimeMs}`).digest('hex').slice(0, 32);
  return join(stateDir, `${key}.json`);
}

function readState(file: string): State | undefined {
  try {
    const buf = readBoundedSync(file, 8192, 'upload state');
    if (!buf) return undefined;
    const s = JSON.parse(buf.toString('utf8')) as State;
    return typeof s.url === 'string' ? s : undefined;
  } catch {
    return undefined;
  }
}

function writeState(file: string, s: State): void {
  writeFileAtomicSync(file, JSON.stringify(s), { mode: 0o600 });
}

const STATUS_CODE: Record<number, ErrorCode> = { 400: 'EINVAL_ARG', 401: 'EDENIED', 403: 'EDENIED', 409: 'EEXIST', 413: 'EINVAL_ARG', 422: 'EFORMAT' };

function fromTusError(e: unknown, file: string): MedvError {
  const d = e as DetailedError;
  const res = d?.originalResponse;
  if (res) {
    const status = res.getStatus();
    const body = (res.getBody() ?? '').toString().trim().split('\n')[0].slice(0, 300);
    const code = STATUS_CODE[status] ?? 'EHTTP';
    const why = status === 401 ? 'the server refused the admin token' : body || `HTTP ${status}`;
    return new MedvError(code, `upload of ${file} refused: ${why} (HTTP ${status})`, { file, status });
  }
  const cause = (d?.causingError as Error | undefined)?.message ?? (e as Error)?.message ?? String(e);
  return new MedvError('EHTTP', `upload of ${file} failed: ${cause}`, { file });
}

export async function uploadFiles(paths: string[], o: UploadOptions): Promise<UploadedFile[]> {
  const server = normalizeServer(o.server);
  const stateDir = o.stateDir ?? uploadStateDir();
  const files = paths.map((p) => {
    const named = parseRepoFileName(basename(p));
    if (!named) throw new MedvError('EINVAL_ARG', `${p}: not a repository file (<NAME>_<N>.ckm or <NAME>_<N>.ckm.index)`, { file: p });
    let st: fs.Stats;
    try { st = fs.statSync(p); } catch (e) { throw fromSystemError(e, p); }
    if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'not a regular file', { file: p });
    return { ...named, path: resolve(p), st };
  });
  // Ours and written by nobody else: a state file names the URL the admin token is sent to.
  ensureDir(stateDir, { parents: true, forbid: 0o022 });
  const total = files.reduce((n, f) => n + f.st.size, 0);
  let before = 0;
  const out: UploadedFile[] = [];
  for (const f of uploadOrder(files)) {
    out.push(await uploadOne(f.path, f.file, f.st, server, stateDir, o, (done) => o.onProgress?.(before + done, total)));
    before += f.st.size;
  }
  return out;
}

async function uploadOne(path: string, file: string, st: fs.Stats, server: string, stateDir: string, o: UploadOptions, progress: (done: number) => void): Promise<UploadedFile> {
  const sf = stateFile(stateDir, server, path, st);
  const saved = readState(sf);
  let startOffset: number | undefined;
  let sent = 0;
  const lastResponse = await new Promise<{ getHeader(h: string): string | undefined }>((resolveUpload, reject) => {
    const up: Upload = new Upload(fs.createReadStream(path), {
      endpoint: `${server}/upload/`,
      uploadUrl: saved?.url ?? null,
      uploadSize: st.size,
      chunkSize: o.chunkSize ?? 64 * 1024 * 1024,
      metadata: { filename: file },
      headers: { Authorization: `Bearer ${o.token}` },
      retryDelays: o.retryDelays ?? [0, 1000, 3000, 5000],
      storeFingerprintForResuming: false,
      onShouldRetry(err) {
        const status = err.originalResponse?.getStatus();
        return !status || status >= 500 || status === 423;
      },
      onUploadUrlAvailable() {
        if (up.url) writeState(sf, { url: up.url, server, path, size: st.size, mtimeMs: st.mtimeMs });
      },
      onAfterResponse(req, res) {
        // the offset the server had when this run first heard from it: what resuming saved
        const off = Number(res.getHeader('Upload-Offset'));
        if (startOffset === undefined && Number.isSafeInteger(off) && req.getMethod() === 'HEAD') startOffset = off;
      },
      onProgress(done) { progress(done); },
      onChunkComplete(chunk) { sent += chunk; },
      onSuccess(payload) { resolveUpload(payload.lastResponse); },
      onError(err) { reject(fromTusError(err, file)); },
    });
    up.start();
  }).catch((e) => {
    // refused for good (not a network failure): the next run starts afresh
    if (e instanceof MedvError && e.code !== 'EHTTP') fs.rmSync(sf, { force: true });
    throw e;
  });
  let status = lastResponse.getHeader('Medv-Publish-Status');
  if (!status) {
    // the server had the whole upload before this run (its finishing was interrupted): only a
    // published file of the right size counts
    const head = await fetch(`${server}/images/${file}`, { method: 'HEAD' }).catch((e) => { throw new MedvError('EHTTP', `${server}: ${(e as Error).message}`); });
    fs.rmSync(sf, { force: true });
    if (head.status !== 200 || Number(head.headers.get('content-length')) !== st.size) {
      throw new MedvError('EHTTP', `upload of ${file} completed earlier but the file is not published (HTTP ${head.status}); run the upload again`, { file });
    }
    status = 'published';
  }
  fs.rmSync(sf, { force: true });
  return { file, path, size: st.size, status, sent, resumed: (startOffset ?? 0) > 0 };
}
