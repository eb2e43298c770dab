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
import { ensureDir } from '../core/fsio.js';
import { PACK_HEADER_SIZE } from '../formats/ckm/index.js';
import type { AdminToken } from './auth.js';
import { parseRepoFileName } from '../api/names.js';
import { publishFile } from './publish.js';
import { plain, serveFile } from './static.js';
import { httpStatusFor, httpStatusOf } from '../api/status.js';
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
  /** Called once an upload made a version complete (its pack and index both published, one of them just now). */
  onVersionPublished?: (name: string, version: number) => void;
}

export const IMAGE_REPOSITORY_DEFAULTS = {
  maxUploadSize: 64 * 2 ** 30,
  maxActiveUploads: 4,
  maxPendingUploads: 64,
  uploadExpiryMs: 7 * 24 * 3600 * 1000,
};

/** The tus file store, with every file it makes (an upload and its .json) 0600 whatever the umask. */
class PrivateFileStore extends FileStore {
  override async create(file: Upload): Promise<Upload> {
    const made = await super.create(file);
    for (const name of [file.id, `${file.id}.json`]) {
      const path = join(this.directory, name);
      await fs.promises.chmod(path, 0o600).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
    }
    return made;
  }
}

type TusError = { status_code: number; body: string };
const tusError = (status_code: number, body: string): TusError => ({ status_code, body: `${body}\n` });

export function imageRepository(o: ImageRepositoryOptions): ServerModule {
  const imagesDir = join(o.root, IMAGES_DIR);
  const uploadsDir = join(o.root, UPLOADS_DIR);
  // made with their modes whatever the umask, and refused when someone else could write into them
  ensureDir(imagesDir, { mode: 0o755, forbid: 0o022 });
  ensureDir(uploadsDir, { mode: 0o700, forbid: 0o077 });
  // the folder's real path: a served file must be directly in it (static.ts checks on the descriptor)
  const realImagesDir = fs.realpathSync(imagesDir);
  const store = new PrivateFileStore({ directory: uploadsDir, expirationPeriodInMilliseconds: o.uploadExpiryMs });
  let active = 0;

  const tus = new TusServer({
    path: '/upload',
    datastore: store,
    relativeLocation: true,
    respectForwardedHeaders: false,
    maxSize: o.maxUploadSize,
    disableTerminationForFinishedUploads: true,
    async onUploadCreate(_req, res, upload: Upload) {
      if (upload.sizeIsDeferred || upload.size === undefined) throw tusError(httpStatusOf('EINVAL_ARG'), 'Upload-Length is required');
      const file = upload.metadata?.filename ?? '';
      if (!parseRepoFileName(file)) throw tusError(httpStatusOf('EINVAL_ARG'), `${JSON.stringify(file).slice(0, 100)} is not a repository file name (<NAME>_<N>.ckm or <NAME>_<N>.ckm.index)`);
      if (upload.size < PACK_HEADER_SIZE) throw tusError(httpStatusOf('EINVAL_ARG'), `${file}: ${upload.size} bytes is too small for a pack or an index`);
      const pending = (await fs.promises.readdir(uploadsDir)).filter((f) => f.endsWith('.json')).length;
      if (pending >= o.maxPendingUploads) throw tusError(httpStatusOf('ERATELIMIT'), `${pending} unfinished uploads are waiting; finish or remove them first`);
      try {
        const st = await fs.promises.lstat(join(imagesDir, file));
        if (st.size !== upload.size) throw tusError(httpStatusOf('EEXIST'), `refusing to overwrite ${file}: a file of another size is published under that name`);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      return res;
    },
    async onUploadFinish(_req, res, upload: Upload) {
      const file = upload.metadata?.filename ?? '';
      try {
        const r = await publishFile(join(uploadsDir, upload.id), file, imagesDir);
        const f = parseRepoFileName(file);
        if (f && r.status === 'published' && o.onVersionPublished) {
          const other = f.kind === 'index' ? `${f.name}_${f.version}.ckm` : `${f.name}_${f.version}.ckm.index`;
          if (await fs.promises.lstat(join(imagesDir, other)).then((st) => st.isFile(), () => false)) o.onVersionPublished(f.name, f.version);
        }
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
    if (!o.token.check(req)) return plain(res, httpStatusOf('EDENIED'), 'an admin token is required (Authorization: Bearer …)', { 'WWW-Authenticate': 'Bearer realm="medv"' });
    const rest = path === '/upload' || path === '/upload/' ? '' : path.slice('/upload/'.length);
    if (rest !== '' && !UPLOAD_ID_RE.test(rest)) return plain(res, httpStatusOf('ENOENT'), 'not found');
    if (req.headers['x-http-method-override'] !== undefined) return plain(res, httpStatusOf('EINVAL_ARG'), 'X-HTTP-Method-Override is not accepted');
    // never serve an upload's bytes; creation only at the collection, the rest only on an upload
    const allowed = rest === '' ? ['POST', 'OPTIONS'] : ['HEAD', 'PATCH', 'DELETE', 'OPTIONS'];
    if (!allowed.includes(req.method ?? '')) return plain(res, httpStatusOf('EMETHOD'), 'method not allowed', { Allow: allowed.join(', ') });
    const writes = req.method === 'POST' || req.method === 'PATCH';
    if (writes && active >= o.maxActiveUploads) return plain(res, httpStatusOf('EBUSY'), `${active} uploads in progress; retry shortly`, { 'Retry-After': '1' });
    if (writes) {
      active++;
      res.once('close', () => { active--; });
    }
    await tus.handle(req, res);
  }

  return {
    prefixes: ['/images/', '/upload'],
    streamsBodies: true,
    async handle(req, res, path) {
      if (path.startsWith('/images/')) {
        if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, httpStatusOf('EMETHOD'), 'method not allowed', { Allow: 'GET, HEAD' });
        const file = path.slice('/images/'.length);
        // the raw path must already be a repository file name: no decoding, so no %2e%2e, %2f or NUL
        if (!parseRepoFileName(file)) return plain(res, httpStatusOf('ENOENT'), 'not found');
        return serveFile(req, res, imagesDir, file, realImagesDir);
      }
      if (path === '/upload' || path.startsWith('/upload/')) return handleUpload(req, res, path);
      return plain(res, httpStatusOf('ENOENT'), 'not found');
    },
    async close() {
      clearInterval(cleanup);
    },
  };
}
