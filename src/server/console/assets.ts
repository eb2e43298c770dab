/**
 * The console's static files: a FIXED table of names, read into memory once when the server
 * starts. A request never names a file: `/console/assets/<hash>/<name>` is looked up in the table
 * as a whole string, and anything else (another hash, `..`, `%2e`, `%2f`, a backslash, a name not
 * in the table) is 404 without touching the file system. The hash (the first 16 hex digits of
 * the content's SHA-256) is in the URL, so the answer can be cached for a year (`immutable`) and
 * a new server version changes the URL; the ETag is the whole SHA-256 (strong).
 *
 * What is in the table: htmx (node_modules/htmx.org, minified), our stylesheet and our script
 * (src/server/console/static/), and for the image test's live view noVNC's ES modules (listed from
 * node_modules/@novnc/novnc at start) with our vnc.js beside them, under one hash of the whole set.
 * No inline script or style exists anywhere in the console.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assetHeaders } from './headers.js';

export const ASSETS_PREFIX = '/console/assets/';
const MAX_ASSET = 4 << 20;

interface Source { file: string; type: string }

/** The repository's root, from this file's place in dist/src/server/console/. */
const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const req = createRequire(import.meta.url);
/** noVNC's package folder (its ES modules import each other by relative paths). */
const NOVNC = dirname(dirname(req.resolve('@novnc/novnc')));
const MODULE_TYPE = 'text/javascript; charset=utf-8';

const SOURCES: Record<string, Source> = {
  'htmx.min.js': { file: req.resolve('htmx.org/dist/htmx.min.js'), type: 'text/javascript; charset=utf-8' },
  'console.css': { file: `${ROOT}src/server/console/static/console.css`, type: 'text/css; charset=utf-8' },
  'console.js': { file: `${ROOT}src/server/console/static/console.js`, type: 'text/javascript; charset=utf-8' },
};

export type AssetName = keyof typeof SOURCES | 'vnc.js';

/** Every regular `.js` file under `dir` (relative paths, sorted); links and everything else are skipped. */
function modulesUnder(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(join(dir, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...modulesUnder(dir, r));
    else if (e.isFile() && e.name.endsWith('.js')) out.push(r);
  }
  return out;
}

interface Asset { name: string; url: string; type: string; body: Buffer; etag: string }

export class Assets {
  private readonly byName = new Map<string, Asset>();
  /** Keyed by the whole path after ASSETS_PREFIX: `<hash>/<name>`. */
  private readonly byPath = new Map<string, Asset>();

  constructor() {
    for (const [name, src] of Object.entries(SOURCES)) {
      const body = fs.readFileSync(src.file);
      if (body.length > MAX_ASSET) throw new Error(`console asset ${src.file} is larger than ${MAX_ASSET} bytes`);
      const sha = createHash('sha256').update(body).digest('hex');
      const a: Asset = { name, url: `${ASSETS_PREFIX}${sha.slice(0, 16)}/${name}`, type: src.type, body, etag: `"${sha}"` };
      this.byName.set(name, a);
      this.byPath.set(a.url.slice(ASSETS_PREFIX.length), a);
    }
    // the live view: noVNC's modules (core/, vendor/) and our vnc.js that imports ./novnc/core/rfb.js,
    // all under one hash of the whole set, so their relative imports resolve inside it
    const files: [string, Buffer][] = [
      ...['core', 'vendor'].flatMap((d) => modulesUnder(join(NOVNC, d)).map((r): [string, Buffer] => [`novnc/${d}/${r}`, fs.readFileSync(join(NOVNC, d, r))])),
      ['vnc.js', fs.readFileSync(`${ROOT}src/server/console/static/vnc.js`)],
    ];
    const all = createHash('sha256');
    for (const [rel, body] of files) all.update(rel).update('\0').update(createHash('sha256').update(body).digest());
    const bundle = all.digest('hex').slice(0, 16);
    for (const [rel, body] of files) {
      if (body.length > MAX_ASSET) throw new Error(`console asset ${rel} is larger than ${MAX_ASSET} bytes`);
      const a: Asset = { name: rel, url: `${ASSETS_PREFIX}${bundle}/${rel}`, type: MODULE_TYPE, body, etag: `"${createHash('sha256').update(body).digest('hex')}"` };
      this.byPath.set(a.url.slice(ASSETS_PREFIX.length), a);
      if (rel === 'vnc.js') this.byName.set(rel, a);
    }
  }

  /** The URL of an asset (for <script src> and <link href>). */
  url(name: AssetName): string {
    return this.byName.get(name)!.url;
  }

  /** Answer GET/HEAD of `path` (which starts with ASSETS_PREFIX). */
  serve(req: IncomingMessage, res: ServerResponse, path: string, secure: boolean): void {
    const a = this.byPath.get(path.slice(ASSETS_PREFIX.length));
    const headers = assetHeaders(secure);
    if (!a) {
      res.writeHead(404, { ...headers, 'Cache-Control': 'no-store', 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...headers, 'Cache-Control': 'no-store', Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('method not allowed\n');
      return;
    }
    const inm = req.headers['if-none-match'];
    if (typeof inm === 'string' && inm.split(',').some((t) => t.trim() === a.etag)) {
      res.writeHead(304, { ...headers, ETag: a.etag });
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Type': a.type, 'Content-Length': a.body.length, ETag: a.etag });
    res.end(req.method === 'HEAD' ? undefined : a.body);
  }
}
