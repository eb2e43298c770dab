/**
 * `medv image upload`: send packs and indexes to a `medv serve` repository over tus 1.0
 * (https://tus.io/protocols/resumable-upload), resumably, through the one HTTP agent (./http.ts:
 * the admin token never goes to a remote http:// server; timeouts; one status table).
 *
 * - Packs go before indexes (each group by version), so the server, which refuses an index whose
 *   packs are not published, never shows an index without its packs.
 * - One upload: POST /upload/ (Upload-Length, Upload-Metadata filename) creates it; the Location is
 *   kept in a small state file (keyed by server, path, size and mtime) in the state folder; then
 *   PATCH requests of `chunkSize` bytes from the offset the server confirmed. A later run with the
 *   same file HEADs the kept URL and resumes from the server's offset instead of sending
 *   everything again (a 404/410 there: the server forgot it, a new upload starts). The state file
 *   goes when the file is published.
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
import { HttpAgent, type HttpRequest, type HttpResponse, isRetryable, responseError } from './http.js';
import { TRANSIENT_STATUSES, TransientFailure, retryAfterMs, withRetry } from './retry.js';

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
      out.push(await uploadOne(agent, f.path, f.file, f.st, server, stateDir, o, (done) => o.onProgress?.(before + done, total)));
      before += f.st.size;
    }
  } finally {
    if (!o.agent) agent.close();
  }
  return out;
}

const TUS = { 'Tus-Resumable': '1.0.0' };

/** A refusal of the server as a MedvError naming the file (the status table's code). */
function refused(res: HttpResponse, file: string): MedvError {
  const e = responseError(res);
  const why = res.status === 401 ? 'the server refused the admin token' : e.message;
  return new MedvError(e.code, `upload of ${file} refused: ${why} (HTTP ${res.status})`, { ...e.data, file });
}

/** A transient answer is thrown for withRetry; any other non-2xx is final. */
function check(res: HttpResponse, file: string): HttpResponse {
  if (res.status >= 200 && res.status < 300) return res;
  if (TRANSIENT_STATUSES.has(res.status)) throw new TransientFailure(`HTTP ${res.status}`, retryAfterMs(res.headers['retry-after']));
  throw refused(res, file);
}

const offsetOf = (res: HttpResponse): number | undefined => {
  const v = Number(res.headers['upload-offset']);
  return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
};

async function uploadOne(agent: HttpAgent, path: string, file: string, st: fs.Stats, server: string, stateDir: string, o: UploadOptions, progress: (done: number) => void): Promise<UploadedFile> {
  const sf = stateFile(stateDir, server, path, st);
  const auth = { ...TUS, Authorization: `Bearer ${o.token}` };
  // requests inside a unit retried here are not retried again by the agent (idempotent: false)
  const send = (r: Omit<HttpRequest, 'headers'> & { headers?: Record<string, string> }) => agent.request({ idempotent: false, ...r, headers: { ...auth, ...r.headers } });
  const retrying = <T>(unit: (n: number) => Promise<T>) => withRetry(unit, { isTransient: isRetryable });
  const chunk = o.chunkSize ?? 64 * 1024 * 1024;
  let sent = 0;
  let resumed = false;
  let last: HttpResponse | undefined;
  try {
    // the upload's URL: the one a killed run kept (if the server still has it), else a new one
    let url: URL | undefined;
    let offset = 0;
    const saved = readState(sf);
    if (saved) {
      const u = new URL(saved.url, `${server}/`);
      if (u.origin === new URL(server).origin) {
        const head = await send({ method: 'HEAD', url: u, idempotent: true });
        if (head.status === 200 && offsetOf(head) !== undefined && Number(head.headers['upload-length']) === st.size) {
          url = u;
          offset = offsetOf(head)!;
          resumed = offset > 0;
          last = head;
        } else if (![404, 410].includes(head.status)) check(head, file);
      }
    }
    if (!url) {
      const created = await retrying(async () => check(await send({
        method: 'POST', url: `${server}/upload/`,
        headers: { 'Upload-Length': String(st.size), 'Upload-Metadata': `filename ${Buffer.from(file).toString('base64')}` },
      }), file));
      const location = created.headers.location;
      if (typeof location !== 'string') throw new MedvError('EBADREPLY', `upload of ${file}: the server created no upload (no Location)`, { file });
      url = new URL(location, `${server}/`);
      if (url.origin !== new URL(server).origin) throw new MedvError('EBADREPLY', `upload of ${file}: the server named an upload on another origin (${url.origin})`, { file });
      writeState(sf, { url: url.href, server, path, size: st.size, mtimeMs: st.mtimeMs });
      last = created;
    }
    progress(offset);
    // PATCH from the confirmed offset; after a transient failure, ask the server where it is
    while (offset < st.size) {
      last = await retrying(async (n) => {
        if (n > 0) {
          const head = check(await send({ method: 'HEAD', url: url! }), file);
          offset = offsetOf(head) ?? offset;
          if (offset >= st.size) return head;
        }
        const length = Math.min(chunk, st.size - offset);
        const from = offset;
        const res = check(await send({
          method: 'PATCH', url: url!,
          headers: { 'Upload-Offset': String(from), 'Content-Type': 'application/offset+octet-stream' },
          body: { length, open: () => fs.createReadStream(path, { start: from, end: from + length - 1 }) },
          onBodyProgress: (b) => progress(from + b),
        }), file);
        const now = offsetOf(res);
        if (now === undefined || now < from || now > st.size) throw new MedvError('EBADREPLY', `upload of ${file}: the server answered offset ${res.headers['upload-offset']}`, { file });
        sent += now - from;
        offset = now;
        return res;
      });
    }
  } catch (e) {
    // refused for good (not a network failure): the next run starts afresh
    if (e instanceof MedvError && e.code !== 'ENETWORK' && e.code !== 'EHTTP') fs.rmSync(sf, { force: true });
    if (e instanceof TransientFailure) throw new MedvError('ENETWORK', `upload of ${file} failed: the server kept answering ${e.message} (gave up after retries)`, { file });
    throw e;
  }
  let status = last?.headers['medv-publish-status'];
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
  return { file, path, size: st.size, status, sent, resumed };
}
