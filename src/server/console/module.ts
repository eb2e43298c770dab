/**
 * The console module of `medv serve`: everything under /console/. One gate for every route:
 *
 *   1. /console/assets/… is answered from the fixed asset table (assets.ts), nothing else.
 *   2. Over plain HTTP from another host, nothing is answered but a refusal (403): the same rule as
 *      /api/ (passwords and session cookies never cross a network in clear).
 *   3. The session cookie (session.ts) must name a live session — else a GET goes to the sign-in
 *      page (303) and a POST is refused (403). Bearer tokens are not looked at: an API token,
 *      even an administrator's, opens no console page.
 *   4. The account must be an administrator (asked on every request) — else 403.
 *   5. A POST must come from this site and carry the session's CSRF token (csrf.ts) — else 403.
 *   6. The page runs; every answer gets the headers of headers.ts (CSP, frame-ancestors 'none',
 *      no-referrer, nosniff, no-store).
 * Typed errors become an error page with the status of src/api/status.ts; anything else is 500
 * with no detail.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MedvError } from '../../core/errors.js';
import { httpStatusFor } from '../../api/status.js';
import type { Accounts } from '../accounts.js';
import { plainHttpRefused } from '../api.js';
import { peerOf } from '../peer.js';
import type { ImageCatalog } from '../catalog.js';
import type { ServerModule } from '../http.js';
import type { KeyService } from '../keyservice.js';
import type { Audit } from '../audit.js';
import type { ImageTests } from '../imagetest.js';
import type { ClientControls } from '../controls.js';
import { clearOrder, giveOrder } from './pages/controls.js';
import type { Duplex } from 'node:stream';
import { VncProxy } from './vncproxy.js';
import { imageTestPage, imageTestScreenshot, startImageTest, stopImageTest } from './pages/imagetest.js';
import { ASSETS_PREFIX, Assets } from './assets.js';
import { type Answer, type Ctx, type Services, safeNext } from './context.js';
import { CSRF_FIELD, CSRF_HEADER, csrfToken, csrfValid, sameOrigin } from './csrf.js';
import { pageHeaders } from './headers.js';
import { ErrorPage } from './pages/error.js';
import { signInForm, signIn, logout, logoutEverywhere } from './pages/signin.js';
import { overviewPage } from './pages/overview.js';
import { usersPage, userPage, groupsPage } from './pages/users.js';
import { addUserAction, userAction } from './pages/user-actions.js';
import { policiesPage, policyPage, policyVersionPage, policyDiffPage } from './pages/policies.js';
import { editPolicyPage, newPolicyPage, previewPolicyPage, publishPolicyAction, unpublishPolicyAction, unpublishPolicyPage } from './pages/policy-edit.js';
import { imagesPage, imagePage, imagePruneAction, imagePrunePage } from './pages/images.js';
import { clientsPage, clientPage, clientsCsv, clientHistoryCsv } from './pages/clients.js';
import { auditPage, auditCsv } from './pages/audit.js';
import { ConsoleSessions, type SessionOptions, PRESESSION_COOKIE, SESSION_COOKIE, cookieValue } from './session.js';

export interface ConsoleOptions {
  accounts: Accounts;
  audit: Audit;
  keys?: KeyService;
  catalog: ImageCatalog;
  /** May this account use the console (role admin)? Asked on every request. */
  isAdmin(user: string): Promise<boolean>;
  tests?: ImageTests;
  controls?: ClientControls;
  /** A TLS-terminating proxy is in front (medv serve --allow-plain-http): cookies are Secure. */
  allowPlainHttp?: boolean;
  sessions?: Partial<SessionOptions>;
}

type Access = 'public' | 'admin';
interface Route { method: 'GET' | 'POST'; path: string | RegExp; access: Access; run(ctx: Ctx): Promise<Answer> }

const NAME = '([A-Za-z0-9][A-Za-z0-9._@%-]{0,200})';
const r = (s: string) => new RegExp(`^${s.replaceAll('NAME', NAME).replaceAll('NUM', '([1-9][0-9]{0,9})')}$`);

const ROUTES: Route[] = [
  { method: 'GET', path: '/console/login', access: 'public', run: signInForm },
  { method: 'POST', path: '/console/login', access: 'public', run: signIn },
  { method: 'POST', path: '/console/logout', access: 'admin', run: logout },
  { method: 'POST', path: '/console/logout-all', access: 'admin', run: logoutEverywhere },
  { method: 'GET', path: '/console/', access: 'admin', run: overviewPage },
  { method: 'GET', path: '/console/users', access: 'admin', run: usersPage },
  { method: 'GET', path: r('/console/users/NAME'), access: 'admin', run: userPage },
  { method: 'POST', path: '/console/users', access: 'admin', run: addUserAction },
  { method: 'POST', path: r('/console/users/NAME/(disable|enable|revoke|password|groups|role|delete)'), access: 'admin', run: userAction },
  { method: 'GET', path: '/console/groups', access: 'admin', run: groupsPage },
  { method: 'GET', path: '/console/policies', access: 'admin', run: policiesPage },
  { method: 'GET', path: r('/console/policies/NAME'), access: 'admin', run: policyPage },
  { method: 'GET', path: r('/console/policies/NAME/v/NUM'), access: 'admin', run: policyVersionPage },
  { method: 'GET', path: r('/console/policies/NAME/diff'), access: 'admin', run: policyDiffPage },
  { method: 'GET', path: '/console/new-policy', access: 'admin', run: newPolicyPage },
  { method: 'GET', path: r('/console/policies/NAME/edit'), access: 'admin', run: editPolicyPage },
  { method: 'POST', path: '/console/policies/preview', access: 'admin', run: previewPolicyPage },
  { method: 'POST', path: '/console/policies/publish', access: 'admin', run: publishPolicyAction },
  { method: 'GET', path: r('/console/policies/NAME/unpublish'), access: 'admin', run: unpublishPolicyPage },
  { method: 'POST', path: r('/console/policies/NAME/unpublish'), access: 'admin', run: unpublishPolicyAction },
  { method: 'GET', path: '/console/images', access: 'admin', run: imagesPage },
  { method: 'GET', path: r('/console/images/NAME'), access: 'admin', run: imagePage },
  { method: 'GET', path: r('/console/images/NAME/prune'), access: 'admin', run: imagePrunePage },
  { method: 'GET', path: r('/console/images/NAME/v/NUM/test'), access: 'admin', run: imageTestPage },
  { method: 'POST', path: r('/console/images/NAME/v/NUM/test'), access: 'admin', run: startImageTest },
  { method: 'POST', path: r('/console/images/NAME/v/NUM/test/stop'), access: 'admin', run: stopImageTest },
  { method: 'GET', path: r('/console/images/NAME/v/NUM/screen.png'), access: 'admin', run: imageTestScreenshot },
  { method: 'POST', path: r('/console/images/NAME/prune'), access: 'admin', run: imagePruneAction },
  { method: 'GET', path: '/console/clients', access: 'admin', run: clientsPage },
  { method: 'GET', path: '/console/clients.csv', access: 'admin', run: clientsCsv },
  { method: 'GET', path: r('/console/clients/NAME'), access: 'admin', run: clientPage },
  { method: 'GET', path: r('/console/clients/NAME/history.csv'), access: 'admin', run: clientHistoryCsv },
  { method: 'POST', path: '/console/controls', access: 'admin', run: giveOrder },
  { method: 'POST', path: '/console/controls/clear', access: 'admin', run: clearOrder },
  { method: 'GET', path: '/console/audit', access: 'admin', run: auditPage },
  { method: 'GET', path: '/console/audit.csv', access: 'admin', run: auditCsv },
];

const VNC_PATH = /^\/console\/images\/([A-Za-z0-9][A-Za-z0-9._%-]{0,200})\/v\/([1-9][0-9]{0,9})\/vnc$/;

/** Bodies of console forms (the policy editor's document is the largest). */
export const FORM_MAX = 256 * 1024;

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const type = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') throw new MedvError('EINVAL_ARG', 'console forms are sent as application/x-www-form-urlencoded');
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > FORM_MAX) throw new MedvError('ETOOLARGE', `form larger than ${FORM_MAX} bytes`);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > FORM_MAX) throw new MedvError('ETOOLARGE', `form larger than ${FORM_MAX} bytes`);
    chunks.push(c as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function match(route: Route, path: string): string[] | undefined {
  if (typeof route.path === 'string') return route.path === path ? [] : undefined;
  const m = route.path.exec(path);
  if (!m) return undefined;
  try {
    return m.slice(1).map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}

export function consoleModule(o: ConsoleOptions): ServerModule {
  const assets = new Assets();
  const sessions = new ConsoleSessions(o.accounts.store, o.sessions);
  const services: Services = { accounts: o.accounts, keys: o.keys, catalog: o.catalog, sessions, assets, isAdmin: o.isAdmin, tests: o.tests, controls: o.controls, audit: o.audit };
  const vnc = new VncProxy();

  function send(ctx: Ctx, a: Answer): void {
    if (a.kind === 'sent') return;
    // how long the server took (bench/console reads it; browsers show it in their developer tools)
    const ms = Number(process.hrtime.bigint() - ctx.started) / 1e6;
    const headers: Record<string, string | string[]> = { ...pageHeaders(ctx.secure), 'Server-Timing': `app;dur=${ms.toFixed(1)}` };
    Object.assign(headers, a.headers ?? {});
    if (a.kind === 'redirect') {
      ctx.res.writeHead(303, { ...headers, Location: a.location, 'Content-Length': 0 });
      ctx.res.end();
      return;
    }
    const body = Buffer.from(a.html.html, 'utf8');
    ctx.res.writeHead(a.status ?? 200, { ...headers, 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': body.length });
    ctx.res.end(ctx.req.method === 'HEAD' ? undefined : body);
  }

  function fail(ctx: Ctx, status: number, title: string, message: string): void {
    send(ctx, { kind: 'page', status, html: ErrorPage({ ...ctx.frame, status, title, message }) });
  }

  async function handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    // HTTPS here, or behind a trusted proxy that took it (peer.ts), or behind the proxy --allow-plain-http names
    const secure = peerOf(req).secure || !!o.allowPlainHttp;
    if (path.startsWith(ASSETS_PREFIX)) return assets.serve(req, res, path, secure);
    const url = req.url ?? '';
    const qi = url.indexOf('?');
    const ctx: Ctx = {
      req, res, path, secure, services, params: [], started: process.hrtime.bigint(),
      query: new URLSearchParams(qi < 0 ? '' : url.slice(qi + 1)),
      form: new URLSearchParams(),
      address: peerOf(req).address,
      frame: { assets, csrf: '' },
    };
    if (path === '/console') return send(ctx, { kind: 'redirect', location: '/console/' });
    if (plainHttpRefused(req, o.allowPlainHttp)) {
      return fail(ctx, 403, 'HTTPS required', 'The console does not accept sign-ins or sessions over plain HTTP from another host. Open it over HTTPS (medv serve --tls-cert/--tls-key, or a TLS proxy in front with --allow-plain-http), or from the server itself.');
    }
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const candidates = ROUTES.map((rt) => ({ rt, params: match(rt, path) })).filter((x) => x.params !== undefined);
    if (!candidates.length) return fail(ctx, 404, 'Not found', 'There is no such console page.');
    const found = candidates.find((x) => x.rt.method === method);
    if (!found) {
      res.setHeader('Allow', [...new Set(candidates.map((x) => x.rt.method))].join(', '));
      return fail(ctx, 405, 'Method not allowed', 'This page does not take that kind of request.');
    }
    const { rt } = found;
    ctx.params = found.params!;

    try {
      if (rt.access === 'admin') {
        const session = await sessions.lookup(cookieValue(req, SESSION_COOKIE));
        if (!session) {
          if (method === 'GET') return send(ctx, { kind: 'redirect', location: `/console/login?next=${encodeURIComponent(safeNext(url))}` });
          return fail(ctx, 403, 'Signed out', 'Your session has ended. Sign in again, then repeat what you were doing.');
        }
        ctx.session = session;
        ctx.frame = { assets, user: session.user, csrf: csrfToken(session.id), idleUntil: session.idleUntil };
        if (!(await o.isAdmin(session.user))) {
          return fail(ctx, 403, 'Not an administrator', `The account ${session.user} may not use the console. Ask an administrator, or sign in with an administrator's account.`);
        }
      }
      if (method === 'POST') {
        if (!sameOrigin(req)) return fail(ctx, 403, 'Refused', 'This request came from another site.');
        ctx.form = await readForm(req);
        const secret = ctx.session?.id ?? cookieValue(req, PRESESSION_COOKIE);
        const given = ctx.form.get(CSRF_FIELD) ?? (req.headers[CSRF_HEADER] as string | undefined);
        if (!csrfValid(secret, given ?? undefined)) {
          return fail(ctx, 403, 'Refused', 'The form is missing its security token or the token does not belong to this session. Reload the page and try again.');
        }
      }
      send(ctx, await rt.run(ctx));
    } catch (e) {
      if (res.headersSent) { res.destroy(); return; }
      if (e instanceof MedvError && e.code === 'ETOOLARGE') req.resume();
      const status = e instanceof MedvError ? httpStatusFor(e) : 500;
      const message = e instanceof MedvError && status < 500 ? e.message : 'The server could not answer this request.';
      fail(ctx, status === 401 ? 403 : status, status === 404 ? 'Not found' : status < 500 ? 'Cannot show this' : 'Server error', message);
    }
  }

  /**
   * The live view's WebSocket, /console/images/<image>/v/<N>/vnc?t=<token>: the same gate as a
   * page (no plain HTTP from another host; a live administrator session), plus the browser's
   * Origin must be this server and `t` the session's CSRF token (no other site can open it, even
   * through a browser that would send the cookie); then vncproxy.ts joins it to the VM's socket.
   */
  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, path: string): Promise<void> {
    const m = VNC_PATH.exec(path);
    if (!m) return VncProxy.refuse(socket, 404, 'Not Found');
    if (plainHttpRefused(req, o.allowPlainHttp)) return VncProxy.refuse(socket, 403, 'Forbidden');
    const origin = req.headers.origin;
    const host = req.headers.host;
    if (typeof origin !== 'string' || typeof host !== 'string' || (origin !== `http://${host}` && origin !== `https://${host}`)) return VncProxy.refuse(socket, 403, 'Forbidden');
    const session = await sessions.lookup(cookieValue(req, SESSION_COOKIE)).catch(() => undefined);
    if (!session || !(await o.isAdmin(session.user).catch(() => false))) return VncProxy.refuse(socket, 403, 'Forbidden');
    const qi = (req.url ?? '').indexOf('?');
    if (!csrfValid(session.id, new URLSearchParams(qi < 0 ? '' : req.url!.slice(qi + 1)).get('t') ?? undefined)) return VncProxy.refuse(socket, 403, 'Forbidden');
    let image: string;
    try { image = decodeURIComponent(m[1]); } catch { return VncProxy.refuse(socket, 404, 'Not Found'); }
    const target = o.tests?.vncSocket(image, Number(m[2]));
    if (!target) return VncProxy.refuse(socket, 409, 'Conflict');
    vnc.join(req, socket, head, target);
  }

  return {
    prefixes: ['/console'],
    handle,
    upgrade(req, socket, head, path) {
      upgrade(req, socket, head, path).catch(() => socket.destroy());
    },
    async close() {
      vnc.close();
      sessions.close();
      await o.tests?.close();
    },
  };
}
