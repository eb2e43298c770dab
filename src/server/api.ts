/**
 * The accounts and policies API of `medv serve`, under /api/ (JSON in and out):
 *
 *   POST /api/login {user, password[, lifetime]}  → {user, token, expires}      anyone
 *   POST /api/logout                              → {ok}                        user token
 *   GET  /api/whoami                              → {user, groups, expires}     user token
 *   GET  /api/policies                            → {policies: [...]}           user token
 *   POST /api/admin/users {user, password, groups} → {user, groups, created}    admin token
 *   GET  /api/admin/users, /groups, /overview, /images…, /audit, /clients…  (api-admin.ts)  admin token
 *   POST /api/admin/policies <policy document>    → {name, version}             admin token
 *   GET  /api/admin/policies                      → {policies: [...]}           admin token
 *   POST /api/admin/image-keys {image, content:{id, key}, repository:{id, key}, signers}
 *                                                 → {image, replaced}           admin token
 *   POST /api/workspaces/grant {workspace, client, clientKey}
 *                                                 → {workspace, image, policy:{name, version}, settings,
 *                                                    latestVersion, sealed}     user token
 *   POST /api/reports {client, reports: [{workspace, version, state, lastError?, at}]}
 *                                                 → {stored}                    user token
 *
 * Key release (keyservice.ts, keyrelease.ts): a grant answers 403 EDENIED "user U is not entitled
 * to workspace W" (the same whether or not W exists, no key material), 409 ENOKEY when no keys are
 * published for the workspace's image, else the image keys sealed to the client's X25519 key.
 *
 * Errors: {error: {code, message[, path][, retryAfter]}} with the status of status.ts. Bodies are
 * at most 64 KiB (reports: 512 KiB). Credentials (password, either token) are refused over plain HTTP unless the
 * connection comes from a loopback address (the same host: a local client, or a TLS-terminating
 * proxy beside the server) or `allowPlainHttp` is set.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MedvError } from '../core/errors.js';
import type { Accounts } from './accounts.js';
import type { AdminToken } from './auth.js';
import type { ServerModule } from './http.js';
import type { KeyService } from './keyservice.js';
import { adminReadRoutes } from './api-admin.js';
import type { ImageCatalog } from './catalog.js';
import type { ImageTests } from './imagetest.js';
import type { ClientControls } from './controls.js';
import { httpStatusFor } from '../api/status.js';

export const API_MAX_BODY = 64 * 1024;
/** POST /api/reports: 64 reports of up to 1024 characters of lastError each, JSON-escaped. */
export const REPORTS_MAX_BODY = 512 * 1024;

export interface ApiOptions {
  accounts: Accounts;
  token: AdminToken;
  /** Image keys and client reports (without it the key routes answer 404). */
  keys?: KeyService;
  /** Accept credentials over plain HTTP from any address (a TLS proxy on another host). */
  allowPlainHttp?: boolean;
  /** The images of the repository (GET /api/admin/images…) and their tests. */
  catalog: ImageCatalog;
  tests?: ImageTests;
  /** Lock, wipe, revoke (controls.ts). */
  controls?: ClientControls;
}

export function isLoopback(addr: string | undefined): boolean {
  if (!addr) return false;
  return addr === '::1' || /^127\./.test(addr) || /^::ffff:127\./i.test(addr);
}

/** Credentials must not travel over plain HTTP from another host (the rule of /api/ and /console/). */
export function plainHttpRefused(req: IncomingMessage, allowPlainHttp?: boolean): boolean {
  const secure = (req.socket as { encrypted?: boolean }).encrypted === true;
  return !secure && !allowPlainHttp && !isLoopback(req.socket.remoteAddress);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store', ...headers });
  res.end(text);
}

function sendError(res: ServerResponse, e: unknown): void {
  const status = httpStatusFor(e);
  const headers: Record<string, string> = {};
  let body: Record<string, unknown>;
  if (e instanceof MedvError) {
    body = { code: e.code, message: e.message };
    if (e.code === 'EPOLICY') body.path = e.data.path;
    if (e.code === 'ERATELIMIT') { body.retryAfter = e.data.retryAfter; headers['Retry-After'] = String(e.data.retryAfter ?? 1); }
    if (e.code === 'EDENIED' && status === 401) headers['WWW-Authenticate'] = 'Bearer realm="medv"';
    if (e.code === 'ETOOLARGE') headers.Connection = 'close';
  } else {
    body = { code: 'EINTERNAL', message: 'internal error' };
  }
  send(res, status, { error: body }, headers);
}

/** The JSON body; with `wipe`, the raw bytes are zeroed once parsed (a body that carries keys). */
async function readJson(req: IncomingMessage, wipe = false, max = API_MAX_BODY): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) throw new MedvError('ETOOLARGE', `request body larger than ${max} bytes`);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > max) throw new MedvError('ETOOLARGE', `request body larger than ${max} bytes`);
    chunks.push(c as Buffer);
  }
  const raw = Buffer.concat(chunks);
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw new MedvError('EINVAL_ARG', 'the request body is not JSON');
  } finally {
    if (wipe) { raw.fill(0); for (const c of chunks) c.fill(0); }
  }
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string' || h.length > 4200) return undefined;
  return /^Bearer[ ]+(\S+)\s*$/i.exec(h)?.[1];
}

function object(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new MedvError('EINVAL_ARG', 'the request body must be a JSON object');
  return v as Record<string, unknown>;
}

type Route = { method: string; path: string; run: (req: IncomingMessage, res: ServerResponse) => Promise<void> };

export function accountsApi(o: ApiOptions): ServerModule {
  const { accounts } = o;
  const admin = (req: IncomingMessage) => {
    if (!o.token.check(req)) throw new MedvError('EDENIED', 'the admin token is required (Authorization: Bearer …)');
    return 'admin';
  };
  const keys = () => {
    if (!o.keys) throw new MedvError('ENOENT', 'this server does not hold image keys');
    return o.keys;
  };
  const routes: Route[] = [
    { method: 'POST', path: '/api/login', async run(req, res) {
      const b = object(await readJson(req));
      let lifetime: number | undefined;
      if (b.lifetime !== undefined) {
        if (typeof b.lifetime !== 'number' || !Number.isInteger(b.lifetime) || b.lifetime < 1) throw new MedvError('EINVAL_ARG', 'lifetime must be a whole number of seconds, 1 or more');
        lifetime = b.lifetime * 1000;
      }
      send(res, 200, await accounts.login(b.user, b.password, req.socket.remoteAddress ?? '', lifetime));
    } },
    { method: 'POST', path: '/api/logout', async run(req, res) {
      await accounts.logout(await accounts.authenticate(bearer(req)));
      send(res, 200, { ok: true });
    } },
    { method: 'GET', path: '/api/whoami', async run(req, res) {
      const s = await accounts.authenticate(bearer(req));
      send(res, 200, { user: s.user, groups: await accounts.store.groupsOf(s.user), expires: new Date(s.expires).toISOString() });
    } },
    { method: 'GET', path: '/api/policies', async run(req, res) {
      const s = await accounts.authenticate(bearer(req));
      send(res, 200, { user: s.user, policies: await accounts.policiesFor(s.user) });
    } },
    { method: 'POST', path: '/api/admin/users', async run(req, res) {
      const actor = admin(req);
      const b = object(await readJson(req));
      send(res, 201, await accounts.addUser(b.user, b.password, b.groups, actor));
    } },
    { method: 'POST', path: '/api/admin/policies', async run(req, res) {
      const actor = admin(req);
      send(res, 201, await accounts.publishPolicy(await readJson(req), actor));
    } },
    { method: 'GET', path: '/api/admin/policies', async run(req, res) {
      admin(req);
      send(res, 200, { policies: await accounts.listPolicies() });
    } },
    { method: 'POST', path: '/api/admin/image-keys', async run(req, res) {
      const actor = admin(req);
      send(res, 200, await keys().publish(object(await readJson(req, true)), actor));
    } },
    { method: 'POST', path: '/api/workspaces/grant', async run(req, res) {
      const s = await accounts.authenticate(bearer(req));
      send(res, 200, await keys().grant(s.user, object(await readJson(req))));
    } },
    { method: 'POST', path: '/api/reports', async run(req, res) {
      const s = await accounts.authenticate(bearer(req));
      send(res, 200, await keys().report(s.user, object(await readJson(req, false, REPORTS_MAX_BODY))));
    } },
    { method: 'POST', path: '/api/workspaces/wiped', async run(req, res) {
      const s = await accounts.authenticate(bearer(req));
      if (!o.controls) throw new MedvError('ENOENT', 'no such API endpoint');
      send(res, 200, await o.controls.wiped(s.user, object(await readJson(req))));
    } },
    ...adminReadRoutes({ accounts, keys: o.keys, catalog: o.catalog, tests: o.tests, controls: o.controls, admin, send, body: (req) => readJson(req) }),
  ];

  return {
    prefixes: ['/api/'],
    async handle(req, res, path) {
      try {
        const same = routes.filter((r) => r.path === path);
        if (!same.length) throw new MedvError('ENOENT', 'no such API endpoint');
        const route = same.find((r) => r.method === req.method);
        if (!route) {
          send(res, 405, { error: { code: 'EINVAL_ARG', message: 'method not allowed' } }, { Allow: same.map((r) => r.method).join(', ') });
          return;
        }
        if (plainHttpRefused(req, o.allowPlainHttp)) {
          throw new MedvError('EINSECURE', 'passwords and tokens are not accepted over plain HTTP from another host: use HTTPS (a TLS proxy in front of medv serve) or run medv serve with --allow-plain-http behind one');
        }
        await route.run(req, res);
      } catch (e) {
        if (res.headersSent) { res.destroy(); return; }
        sendError(res, e);
        // a body we refused to read: do not wait for the rest of it
        if (e instanceof MedvError && e.code === 'ETOOLARGE') req.resume();
      }
    },
    async close() {
      accounts.close();
      o.keys?.close();
      await accounts.store.close();
    },
  };
}
