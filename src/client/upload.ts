/**
 * `medv image upload`: send packs and indexes to a `medv serve` repository over tus 1.0
 * (https://tus.io/protocols/resumable-upload), resumably: the protocol is tus-js-client's, its
 * requests go through the one HTTP agent and its retries follow ./retry.ts (./tus-stack.ts: the
 * admin token never goes to a remote http:// server, nor to another origin than --server;
 * timeouts; bounded answers; one status table).
 *
 * - Packs go before indexes (each group by version), so the server, which refuses an index whose
 *   packs are not published, never shows an index without its packs.
 * - One upload: POST /upload/ (Upload-Length, Upload-Metadata filename) creates it; the Location is
 *   kept in a small state file (keyed by server, path, size and mtime) in the state folder; then
 *   PATCH requests of `chunkSize` bytes from the offset the server confirmed, read from the file
 *   held open. A later run with the same file HEADs the kept URL and resumes from the server's
 *   offset instead of sending everything again (a 4xx there: the server forgot it, a new upload
 *   starts). The state file goes when the file is published.
 * - Failures: a transient one (network error, 5xx, 423 while the server still holds an earlier
 *   request's lock, 429/503 with Retry-After) is retried with ./retry.ts's rules, each retry asking
 *   the server for its offset first (a PATCH is never blindly repeated); 401 (token), 400 (name),
 *   409 (other bytes published under that name), 413 (too large) and 422 (content, or an index
 *   whose packs are missing) are final, mapped through the one status table.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { basename, join, resolve } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { ensureDir, readBoundedSync, writeFileAtomicSync } from '../core/fsio.js';
import { uploadStateDir } from '../core/paths.js';
import { type RepoFileName, parseRepoFileName } from '../api/names.js';
import { type DetailedError, type HttpRequest as TusRequest, type HttpResponse as TusResponse, Upload } from 'tus-js-client';
import { HttpAgent, type HttpResponse, TransientAnswer, responseError } from './http.js';
import { AgentHttpStack, type OpenFile, fdReader, tusRetry } from './tus-stack.js';

export interface UploadOptions {
  /** Server base URL, e.g. http://host:8080 */
  server: string;
  token: string;
  /** Folder for resume state (default src/core/paths.ts uploadStateDir()). */
  stateDir?: string;
  /** Bytes per PATCH request. */
  chunkSize?: number;
  /** The agent to send with (default: a new one, closed at the end). */
  agent?: HttpAgent;
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
  const agent = o.agent ?? new HttpAgent();
  try {
    for (const f of uploadOrder(files)) {
      out.push(await uploadOne(agent, f.path, f.file, server, stateDir, o, (done) => o.onProgress?.(before + done, total)));
      before += f.st.size;
    }
  } finally {
    if (!o.agent) agent.close();
  }
  return out;
}

/** A refusal of the server as a MedvError naming the file (the status table's code). */
function refused(res: HttpResponse, file: string): MedvError {
  const e = responseError(res);
  const why = res.status === 401 ? 'the server refused the admin token' : e.message;
  return new MedvError(e.code, `upload of ${file} refused: ${why} (HTTP ${res.status})`, { ...e.data, file });
}

const offsetOf = (res: TusResponse, name = 'Upload-Offset'): number | undefined => {
  const v = Number(res.getHeader(name));
  return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
};

/**
 * What tus-js-client does not check: offsets within the file, the kept upload's length ours, and
 * each PATCH taking at least one byte (a server that never does would have it send forever).
 */
function checkAnswer(req: TusRequest, res: TusResponse, file: string, size: number): void {
  if (res.getStatus() < 200 || res.getStatus() > 299) return;
  const offset = offsetOf(res);
  const from = req.getMethod() === 'PATCH' ? Number(req.getHeader('Upload-Offset')) : 0;
  const bad = req.getMethod() === 'HEAD' ? offset === undefined || offset > size || offsetOf(res, 'Upload-Length') !== size
    : req.getMethod() === 'PATCH' && (offset === undefined || offset <= from || offset > size);
  if (bad) throw new MedvError('EBADREPLY', `upload of ${file}: the server answered offset ${res.getHeader('Upload-Offset')} of length ${res.getHeader('Upload-Length')} for a file of ${size} bytes`, { file });
}

/** Why tus-js-client gave up, as a MedvError. */
function failure(e: unknown, file: string): MedvError {
  const d = e as Partial<DetailedError>;
  const cause = d.causingError ?? e;
  if (cause instanceof TransientAnswer) return new MedvError('ENETWORK', `upload of ${file} failed: the server kept answering HTTP ${cause.response.status} (gave up after retries)`, { file });
  if (cause instanceof MedvError) return cause.data.file ? cause : new MedvError(cause.code, cause.message, { ...cause.data, file });
  const res = d.originalResponse?.getUnderlyingObject() as HttpResponse | undefined;
  if (res && (res.status < 200 || res.status > 299)) return refused(res, file);
  const said = String((e as Error)?.message ?? e).split(/, (?:caused by|originated from) /)[0];
  return new MedvError('EBADREPLY', `upload of ${file}: ${said}`, { file });
}

async function uploadOne(agent: HttpAgent, path: string, file: string, server: string, stateDir: string, o: UploadOptions, progress: (done: number) => void): Promise<UploadedFile> {
  // held open: the bytes sent are those of the file stat'ed here, whatever becomes of its name
  let fd: number;
  try { fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK); } catch (e) { throw fromSystemError(e, path); }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'not a regular file', { file: path });
    const sf = stateFile(stateDir, server, path, st);
    // the upload a killed run kept; tus-js-client HEADs it (a 404 there: a new upload starts)
    let kept = readState(sf)?.url;
    let startOffset: number | undefined;
    let sent = 0;
    let last: HttpResponse;
    try {
      last = await new Promise<HttpResponse>((resolveUpload, reject) => {
        const input: OpenFile = { fd, size: st.size };
        const up: Upload = new Upload(input as unknown as Buffer /* any input: fdReader reads it */, {
          endpoint: `${server}/upload/`,
          uploadUrl: kept ?? null,
          chunkSize: o.chunkSize ?? 64 * 1024 * 1024,
          metadata: { filename: file },
          headers: { Authorization: `Bearer ${o.token}` },
          httpStack: new AgentHttpStack(agent, new URL(server).origin),
          fileReader: fdReader,
          ...tusRetry(agent.retry),
          storeFingerprintForResuming: false,
          // called within tus-js-client's promise chain: a failed write fails the upload (an
          // urlStorage's rejection would go unhandled there)
          onUploadUrlAvailable() {
            if (up.url && up.url !== kept) writeState(sf, { url: up.url, server, path, size: st.size, mtimeMs: st.mtimeMs });
            kept = up.url ?? undefined;
          },
          onAfterResponse(req, res) {
            // the offset the server had when this run first heard from it: what resuming saved
            startOffset ??= req.getMethod() === 'HEAD' ? offsetOf(res) ?? 0 : 0;
            checkAnswer(req, res, file, st.size);
          },
          onProgress(done) { progress(done); },
          onChunkComplete(chunk) { sent += chunk; },
          onSuccess({ lastResponse }) { resolveUpload(lastResponse.getUnderlyingObject() as HttpResponse); },
          onError(e) { reject(e); },
        });
        up.start();
      });
    } catch (e) {
      const err = failure(e, file);
      // refused for good (not a network failure): the next run starts afresh
      if (err.code !== 'ENETWORK' && err.code !== 'EHTTP') fs.rmSync(sf, { force: true });
      throw err;
    }
    let status = last.headers['medv-publish-status'];
    if (typeof status !== 'string' || !status) {
      // the server had the whole upload before this run (its finishing was interrupted): only a
      // published file of the right size counts
      const head = await agent.request({ method: 'HEAD', url: `${server}/images/${file}` });
      fs.rmSync(sf, { force: true });
      if (head.status !== 200 || Number(head.headers['content-length']) !== st.size) {
        throw new MedvError('EHTTP', `upload of ${file} completed earlier but the file is not published (HTTP ${head.status}); run the upload again`, { file });
      }
      status = 'published';
    }
    fs.rmSync(sf, { force: true });
    return { file, path, size: st.size, status, sent, resumed: (startOffset ?? 0) > 0 };
  } finally {
    fs.closeSync(fd);
  }
}
