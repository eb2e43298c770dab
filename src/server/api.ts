/**
 * The /api/ module of `medv serve` (JSON in and out; every route in docs/api.md):
 *
 *   POST   /api/login {user, password[, lifetime]}      → {user, token, expires}          anyone
 *   POST   /api/logout                                  → {ok}                            user token
 *   GET    /api/whoami                                  → {user, role, groups, expires}   user token
 *   GET    /api/policies                                → {user, policies}                user token
 *   POST   /api/workspaces/grant {workspace, client, clientKey} → {…, sealed}            user token
 *   POST   /api/reports {client, reports}               → {stored, refused}               user token
 *   POST   /api/admin/users {user, password, groups[, role]} → 201 user                  admin
 *   GET    /api/admin/users[?q&group&status&role&offset&limit] → {users, total, offset, limit} admin
 *   GET    /api/admin/users/NAME                        → user                            admin
 *   DELETE /api/admin/users/NAME                        → {user, groups, tokens, clients, reports}
 *   POST   /api/admin/users/NAME/disable | /enable      → user                            admin
 *   POST   /api/admin/users/NAME/password {password}    → {user, tokensRevoked}           admin
 *   POST   /api/admin/users/NAME/revoke                 → {user, tokensRevoked}           admin
 *   POST   /api/admin/policies <document>               → 201 {name, version}             admin
 *   GET    /api/admin/policies                          → {policies}                      admin
 *   GET    /api/admin/audit[?limit&before&since&until&action&actor&user][&format=csv] → {entries, next}  admin
 *   POST   /api/admin/image-keys {image, content, repository, signers} → {image, replaced} admin
 *   GET    /api/admin/clients[?limit&after&q&client&user&workspace&state&image&version][&format=csv]
 *                                                       → {clients, total, next}          admin
 *   POST   /api/workspaces/wiped {client, workspace}    → {ok}: a client wiped a workspace user token
 *   …and the console's admin routes: api-admin.ts (overview, groups, policies, images, history, controls)
 *
 * "admin" is the admin token, or the login token of an account whose role is admin (the audit
 * names that account); a user token there is 403 EFORBIDDEN, no or another token 401 EDENIED.
 * Each handler parses its input at the edge (requests.ts) and calls one service function
 * (accounts.ts, keyservice.ts, audit.ts): the console calls the same functions.
 *
 * Errors: {error: {code, message[, path][, retryAfter]}} with the status of src/api/status.ts.
 * Bodies are at most 64 KiB (reports: 512 KiB). Credentials (password, either token) are refused
 * over plain HTTP unless the connection comes from a loopback address (a local client, or a
 * TLS-terminating proxy beside the server), from a trusted proxy that says it took HTTPS
 * (X-Forwarded-Proto), or `allowPlainHttp` is set.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MedvError } from '../core/errors.js';
import type { Accounts } from './accounts.js';
import type { Audit } from './audit.js';
import type { AdminToken } from './auth.js';
import type { ServerModule } from './http.js';
import type { KeyService } from './keyservice.js';
import { adminRoutes, sendCsv, wantsCsv } from './api-admin.js';
import type { ImageCatalog } from './catalog.js';
import type { ImageTests } from './imagetest.js';
import type { ClientControls } from './controls.js';
import { AUDIT_CSV, CLIENTS_CSV } from './csv.js';
import { encodeAuditCursor } from './audit.js';
import { httpStatusFor } from '../api/status.js';
import { isLoopback, peerOf } from './peer.js';
import {
  PAGE_MAX, object, pageQuery, parseAuditQuery, parseClientsQuery, parseGrant, parseImageKeys, parseLogin, parseNewUser, parsePassword, parseReports, userFilter,
} from './requests.js';
import { checkUserName } from '../api/names.js';

export const API_MAX_BODY = 64 * 1024;
/** POST /api/reports: 64 reports of up to 1024 characters of lastError each, JSON-escaped. */
export const REPORTS_MAX_BODY = 512 * 1024;

export interface ApiOptions {
  accounts: Accounts;
  audit: Audit;
  token: AdminToken;
  /** Image keys and client reports (without it the key routes answer 404). */
  keys?: KeyService;
  /** Accept credentials over plain HTTP from any address (a TLS proxy on another host). */
  allowPlainHttp?: boolean;
  /** The images of the repository and their tests; lock, wipe, revoke (api-admin.ts). */
  catalog: ImageCatalog;
  tests?: ImageTests;
  controls?: ClientControls;
}

/** Credentials must not travel over plain HTTP from another host (the rule of /api/ and /console/). */
export function plainHttpRefused(req: IncomingMessage, allowPlainHttp?: boolean): boolean {
  const peer = peerOf(req);
  return !peer.secure && !allowPlainHttp && !isLoopback(peer.via);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...headers });
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
    if (e.code === 'EDENIED') headers['WWW-Authenticate'] = 'Bearer realm="medv"';
    if (e.code === 'EMETHOD' && Array.isArray(e.data.allow)) headers.Allow = (e.data.allow as string[]).join(', ');
  } else {
    body = { code: 'EINTERNAL', message: 'internal error' };
  }
  send(res, status, { error: body }, headers);
}

/** The raw body, at most `max` bytes (ETOOLARGE beyond, before reading more). */
async function readBody(req: IncomingMessage, max: number): Promise<{ raw: Buffer; chunks: Buffer[] }> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) throw new MedvError('ETOOLARGE', `request body larger than ${max} bytes`);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > max) throw new MedvError('ETOOLARGE', `request body larger than ${max} bytes`);
    chunks.push(c as Buffer);
  }
  return { raw: Buffer.concat(chunks), chunks };
}

async function readJson(req: IncomingMessage, max = API_MAX_BODY): Promise<unknown> {
  const { raw } = await readBody(req, max);
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw new MedvError('EINVAL_ARG', 'the request body is not JSON');
  }
}

function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string' || h.length > 4200) return undefined;
  return /^Bearer[ ]+(\S+)\s*$/i.exec(h)?.[1];
}

export interface ApiCtx {
  req: IncomingMessage;
  res: ServerResponse;
  /** The client's address (peer.ts). */
  address: string;
  /** `:name` of the route, checked. */
  name: string;
  query: URLSearchParams;
}
export type ApiRoute = { method: string; pattern: string; run: (c: ApiCtx) => Promise<void> };
type Ctx = ApiCtx;
type Route = ApiRoute;

/** Match `path` against `pattern` (segments; `:name` is one segment, a user name); the parameter or undefined. */
function match(pattern: string, path: string): { name: string } | undefined {
  const p = pattern.split('/');
  const a = path.split('/');
  if (p.length !== a.length || p.some((seg, i) => seg !== ':name' && seg !== a[i])) return undefined;
  const at = p.indexOf(':name');
  if (at < 0) return { name: '' };
  let v: string;
  try { v = decodeURIComponent(a[at]); } catch { return undefined; }
  return { name: checkUserName(v) };
}

export function accountsApi(o: ApiOptions): ServerModule {
  const { accounts, audit } = o;
  /** The actor of an admin request: "admin" (the admin token) or an admin account's name. */
  const admin = async (c: Ctx): Promise<string> => {
    if (o.token.check(c.req)) return 'admin';
    const t = bearer(c.req);
    let session;
    try {
      session = await accounts.authenticate(t);
    } catch {
      await audit.refused({ actor: 'anonymous', action: 'admin.denied', target: new URL(c.req.url ?? '/', 'http://x').pathname.slice(0, 200), address: c.address, detail: { token: t === undefined ? 'none' : 'not valid' } });
      throw new MedvError('EDENIED', 'the admin token, or the login of an administrator, is required (Authorization: Bearer …)');
    }
    if (session.role !== 'admin') {
      await audit.refused({ actor: session.user, action: 'admin.denied', target: new URL(c.req.url ?? '/', 'http://x').pathname.slice(0, 200), address: c.address, detail: { role: session.role } });
      throw new MedvError('EFORBIDDEN', `user ${session.user} is not an administrator`);
    }
    return session.user;
  };
  const user = (c: Ctx) => accounts.authenticate(bearer(c.req));
  const keys = () => {
    if (!o.keys) throw new MedvError('ENOENT', 'this server does not hold image keys');
    return o.keys;
  };
  const routes: Route[] = [
    { method: 'POST', pattern: '/api/login', async run(c) {
      const b = parseLogin(object(await readJson(c.req)));
      send(c.res, 200, await accounts.login(b.user, b.password, c.address, b.lifetimeMs));
    } },
    { method: 'POST', pattern: '/api/logout', async run(c) {
      await accounts.logout(await user(c), c.address);
      send(c.res, 200, { ok: true });
    } },
    { method: 'GET', pattern: '/api/whoami', async run(c) {
      const s = await user(c);
      send(c.res, 200, { user: s.user, role: s.role, groups: (await accounts.getUser(s.user)).groups, expires: new Date(s.expires).toISOString() });
    } },
    { method: 'GET', pattern: '/api/policies', async run(c) {
      const s = await user(c);
      send(c.res, 200, { user: s.user, policies: await accounts.policiesFor(s.user) });
    } },
    { method: 'POST', pattern: '/api/workspaces/grant', async run(c) {
      const s = await user(c);
      send(c.res, 200, await keys().grant(s.user, parseGrant(object(await readJson(c.req))), c.address));
    } },
    { method: 'POST', pattern: '/api/reports', async run(c) {
      const s = await user(c);
      const b = parseReports(object(await readJson(c.req, REPORTS_MAX_BODY)));
      send(c.res, 200, await keys().report(s.user, b.client, b.reports, c.address));
    } },
    { method: 'POST', pattern: '/api/admin/users', async run(c) {
      const actor = await admin(c);
      send(c.res, 201, await accounts.addUser(parseNewUser(object(await readJson(c.req))), actor, c.address));
    } },
    { method: 'GET', pattern: '/api/admin/users', async run(c) {
      await admin(c);
      const p = await accounts.usersPage(userFilter(c.query), pageQuery(c.query, PAGE_MAX));
      send(c.res, 200, { users: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    } },
    { method: 'GET', pattern: '/api/admin/users/:name', async run(c) {
      await admin(c);
      send(c.res, 200, await accounts.getUser(c.name));
    } },
    { method: 'DELETE', pattern: '/api/admin/users/:name', async run(c) {
      send(c.res, 200, await accounts.deleteUser(c.name, await admin(c), c.address));
    } },
    { method: 'POST', pattern: '/api/admin/users/:name/disable', async run(c) {
      send(c.res, 200, await accounts.setDisabled(c.name, true, await admin(c), c.address));
    } },
    { method: 'POST', pattern: '/api/admin/users/:name/enable', async run(c) {
      send(c.res, 200, await accounts.setDisabled(c.name, false, await admin(c), c.address));
    } },
    { method: 'POST', pattern: '/api/admin/users/:name/password', async run(c) {
      const actor = await admin(c);
      send(c.res, 200, await accounts.setPassword(c.name, parsePassword(object(await readJson(c.req))), actor, c.address));
    } },
    { method: 'POST', pattern: '/api/admin/users/:name/revoke', async run(c) {
      send(c.res, 200, await accounts.revokeTokens(c.name, await admin(c), c.address));
    } },
    { method: 'POST', pattern: '/api/admin/policies', async run(c) {
      const actor = await admin(c);
      send(c.res, 201, await accounts.publishPolicy(await readJson(c.req), actor, c.address));
    } },
    { method: 'GET', pattern: '/api/admin/policies', async run(c) {
      await admin(c);
      send(c.res, 200, { policies: await accounts.listPolicies() });
    } },
    { method: 'GET', pattern: '/api/admin/audit', async run(c) {
      await admin(c);
      const q = parseAuditQuery(c.query);
      if (!wantsCsv(c.query)) { send(c.res, 200, await audit.list(q)); return; }
      // entries made during the export would shift the pages: it ends where it began
      const fixed = { ...q, until: Math.min(q.until ?? Infinity, Date.now() + 1), limit: PAGE_MAX };
      await sendCsv(c.res, 'audit.csv', AUDIT_CSV, async (before) => {
        const p = await audit.list({ ...fixed, ...(before ? { before: decodeCursor(before) } : {}) });
        return { rows: p.entries, next: p.next };
      });
    } },
    { method: 'POST', pattern: '/api/admin/image-keys', async run(c) {
      const actor = await admin(c);
      const service = keys();
      const { raw, chunks } = await readBody(c.req, API_MAX_BODY);
      let set;
      try {
        set = parseImageKeys(raw);
      } finally {
        // the body held keys: no copy of it stays behind in memory
        raw.fill(0);
        for (const ch of chunks) ch.fill(0);
      }
      try {
        send(c.res, 200, await service.publish(set, actor, c.address));
      } finally {
        set.content.dispose();
        set.repository.dispose();
      }
    } },
    { method: 'GET', pattern: '/api/admin/clients', async run(c) {
      await admin(c);
      const q = parseClientsQuery(c.query);
      if (!wantsCsv(c.query)) { send(c.res, 200, await keys().listClients(q)); return; }
      await sendCsv(c.res, 'clients.csv', CLIENTS_CSV, async (after) => {
        const p = await keys().listClients({ ...q, limit: PAGE_MAX, ...(after ? { after: parseClientsQuery(new URLSearchParams({ after })).after } : {}) });
        return { rows: p.clients, next: p.next };
      });
    } },
    { method: 'POST', pattern: '/api/workspaces/wiped', async run(c) {
      const s = await user(c);
      if (!o.controls) throw new MedvError('ENOENT', 'no such API endpoint');
      send(c.res, 200, await o.controls.wiped(s.user, object(await readJson(c.req)), c.address));
    } },
    ...adminRoutes({ accounts, audit, keys: o.keys, catalog: o.catalog, tests: o.tests, controls: o.controls, admin, send, body: (c) => readJson(c.req) }),
  ];

  return {
    prefixes: ['/api/'],
    async handle(req, res, path) {
      try {
        const address = peerOf(req).address;
        let found: { route: Route; name: string } | undefined;
        const allow: string[] = [];
        for (const r of routes) {
          const m = match(r.pattern, path);
          if (!m) continue;
          allow.push(r.method);
          if (r.method === req.method) found = { route: r, name: m.name };
        }
        if (!allow.length) throw new MedvError('ENOENT', 'no such API endpoint');
        if (!found) throw new MedvError('EMETHOD', 'method not allowed', { allow });
        if (plainHttpRefused(req, o.allowPlainHttp)) {
          throw new MedvError('EINSECURE', 'passwords and tokens are not accepted over plain HTTP from another host: use HTTPS (a TLS proxy in front of medv serve, named with --trust-proxy) or run medv serve with --allow-plain-http behind one');
        }
        const q = (req.url ?? '').indexOf('?');
        const query = new URLSearchParams(q < 0 ? '' : (req.url ?? '').slice(q + 1, q + 1 + 2048));
        await found.route.run({ req, res, address, name: found.name, query });
      } catch (e) {
        if (res.headersSent) { res.destroy(); return; }
        // a body we refused to read is drained for a moment, then the connection closed (http.ts)
        sendError(res, e);
      }
    },
    async close() {
      accounts.close();
      audit.close();
      o.keys?.close();
      await accounts.store.close();
    },
  };
}

/** A cursor of GET /api/admin/audit (an audit page's `next`). */
function decodeCursor(v: string): { time: number; id: string } {
  const q = parseAuditQuery(new URLSearchParams({ before: v }));
  return q.before!;
}
