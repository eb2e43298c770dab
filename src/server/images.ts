/**
 * The image repository module of `medv serve`:
 *   GET/HEAD /images/<NAME>_<N>.ckm[.index]   published files (static.ts)
 *   /upload/…                                  tus uploads, admin token only, checked and published
 *                                              atomically into DIR/images (publish.ts)
 * Layout under the root: DIR/images (served), DIR/.uploads (tus storage, never served).
 */
import * as fs from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Server as TusServer, type Upload } from '@tus/server';
import { FileStore } from '@tus/file-store';
import { MedvError } from '../core/errors.js';
import { PACK_HEADER_SIZE } from '../formats/ckm/index.js';
import type { AdminToken } from './auth.js';
import { parseRepoFileName } from '../api/names.js';
import { publishFile } from './publish.js';
import { plain, serveFile } from './static.js';
import { httpStatusFor } from '../api/status.js';
import type { ServerModule } from './http.js';

export const IMAGES_DIR = 'images';
export const UPLOADS_DIR = '.uploads';
const UPLOAD_ID_RE = /^[0-9a-f]{32}$/;

export interface ImageRepositoryOptions {
  root: string;
  token: AdminToken;
  /** Largest file an upload may declare (bytes). */
  maxUploadSize: number;
  /** Upload requests (POST/PATCH) in progress at once; more get 503 and retry. */
  maxActiveUploads: number;
  /** Unfinished uploads kept in DIR/.uploads; a new one past this gets 429. */
  maxPendingUploads: number;
  /** Unfinished uploads older than this are removed (ms). */
  uploadExpiryMs: number;
}

export const IMAGE_REPOSITORY_DEFAULTS = {
  maxUploadSize: 64 * 2 ** 30,
  maxActiveUploads: 4,
  maxPendingUploads: 64,
  uploadExpiryMs: 7 * 24 * 3600 * 1000,
};

type TusError = { status_code: number; body: string };
const tusError = (status_code: number, body: string): TusError => ({ status_code, body: `${body}\n` });

export function imageRepository(o: ImageRepositoryOptions): ServerModule {
  const imagesDir = join(o.root, IMAGES_DIR);
  const uploadsDir = join(o.root, UPLOADS_DIR);
  fs.mkdirSync(imagesDir, { recursive: true });
  fs.mkdirSync(uploadsDir, { recursive: true, mode: 0o700 });
  const store = new FileStore({ directory: uploadsDir, expirationPeriodInMilliseconds: o.uploadExpiryMs });
  let active = 0;

  const tus = new TusServer({
    path: '/upload',
    datastore: store,
    relativeLocation: true,
    respectForwardedHeaders: false,
    maxSize: o.maxUploadSize,
    disableTerminationForFinishedUploads: true,
    async onUploadCreate(_req, res, upload: Upload) {
      if (upload.sizeIsDeferred || upload.size === undefined) throw tusError(400, 'Upload-Length is required');
      const file = upload.metadata?.filename ?? '';
      if (!parseRepoFileName(file)) throw tusError(400, `${JSON.stringify(file).slice(0, 100)} is not a repository file name (<NAME>_<N>.ckm or <NAME>_<N>.ckm.index)`);
      if (upload.size < PACK_HEADER_SIZE) throw tusError(400, `${file}: ${upload.size} bytes is too small for a pack or an index`);
      const pending = (await fs.promises.readdir(uploadsDir)).filter((f) => f.endsWith('.json')).length;
      if (pending >= o.maxPendingUploads) throw tusError(429, `${pending} unfinished uploads are waiting; finish or remove them first`);
      try {
        const st = await fs.promises.lstat(join(imagesDir, file));
        if (st.size !== upload.size) throw tusError(409, `refusing to overwrite ${file}: a file of another size is published under that name`);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      return res;
    },
    async onUploadFinish(_req, res, upload: Upload) {
      const file = upload.metadata?.filename ?? '';
      try {
        const r = await publishFile(join(uploadsDir, upload.id), file, imagesDir);
        return { res, headers: { 'Medv-Published': r.file, 'Medv-Publish-Status': r.status } };
      } catch (e) {
        const status = httpStatusFor(e);
        throw tusError(status, e instanceof MedvError ? e.message : 'internal error');
      } finally {
        // published (a hard link now holds it) or refused: the upload itself goes either way, so a
        // resumed client starts again instead of being told a refused upload is complete
        await store.remove(upload.id).catch(() => undefined);
      }
    },
  });

  const cleanup = setInterval(() => { tus.cleanUpExpiredUploads().catch(() => undefined); }, 3600_000);
  cleanup.unref();
  tus.cleanUpExpiredUploads().catch(() => undefined);

  async function handleUpload(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (!o.token.check(req)) return plain(res, 401, 'an admin token is required (Authorization: Bearer …)', { 'WWW-Authenticate': 'Bearer realm="medv"' });
    const rest = path === '/upload' || path === '/upload/' ? '' : path.slice('/upload/'.length);
    if (rest !== '' && !UPLOAD_ID_RE.test(rest)) return plain(res, 404, 'not found');
    if (req.headers['x-http-method-override'] !== undefined) return plain(res, 400, 'X-HTTP-Method-Override is not accepted');
    // never serve an upload's bytes; creation only at the collection, the rest only on an upload
    const allowed = rest === '' ? ['POST', 'OPTIONS'] : ['HEAD', 'PATCH', 'DELETE', 'OPTIONS'];
    if (!allowed.includes(req.method ?? '')) return plain(res, 405, 'method not allowed', { Allow: allowed.join(', ') });
    const writes = req.method === 'POST' || req.method === 'PATCH';
    if (writes && active >= o.maxActiveUploads) return plain(res, 503, `${active} uploads in progress; retry shortly`, { 'Retry-After': '1' });
    if (writes) {
      active++;
      res.once('close', () => { active--; });
    }
    await tus.handle(req, res);
  }

  return {
    prefixes: ['/images/', '/upload'],
    async handle(req, res, path) {
      if (path.startsWith('/images/')) {
        if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, 405, 'method not allowed', { Allow: 'GET, HEAD' });
        const file = path.slice('/images/'.length);
        // the raw path must already be a repository file name: no decoding, so no %2e%2e, %2f or NUL
        if (!parseRepoFileName(file)) return plain(res, 404, 'not found');
        return serveFile(req, res, imagesDir, file);
      }
      if (path === '/upload' || path.startsWith('/upload/')) return handleUpload(req, res, path);
      return plain(res, 404, 'not found');
    },
    async close() {
      clearInterval(cleanup);
    },
  };
}
