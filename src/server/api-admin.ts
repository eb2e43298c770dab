/**
 * The admin API's read routes (admin token), the same service calls the console's pages make:
 *
 *   GET /api/admin/overview                                    → Overview (overview.ts)
 *   GET /api/admin/users?q&group&status&offset&limit           → {users, total, offset, limit}
 *   GET /api/admin/groups?q&offset&limit                       → {groups, total, offset, limit}
 *   GET /api/admin/policies/summary?q&offset&limit             → {policies, total, offset, limit}
 *   GET /api/admin/policies/versions?name                      → {name, versions}
 *   GET /api/admin/policies/document?name&version              → {name, version, published, publisher, document}
 *   GET /api/admin/policies/diff?name&from&to                  → {name, from, to, changes}
 *   POST /api/admin/policies/preview <document>                → PolicyPreview (policy-preview.ts): who publishing it reaches
 *   GET /api/admin/policies/unpublish?name                     → PolicyPreview of unpublishing it
 *   POST /api/admin/policies/unpublish {name}                  → {name, version}
 *   GET /api/admin/images?q                                    → {images}
 *   GET /api/admin/images/versions?name                        → ImageDetail (catalog.ts)
 *   POST /api/admin/images/test {name, version}               → TestRecord (imagetest.ts): the test starts
 *   GET /api/admin/images/test?name&version                    → {test: TestRecord | null, serial}: its state and serial output
 *   POST /api/admin/images/prune {name, keep, dryRun?}         → {name, keptVersions, kept, deleted, bytesFreed, skipped, clientsOnRemoved}
 *   GET /api/admin/clients?q&user&workspace&state&image&version&offset&limit[&format=csv]
 *                                                              → {clients, total, offset, limit}
 *   GET /api/admin/clients/history?client&user&workspace&offset&limit[&format=csv]
 *                                                              → {reports, total, offset, limit}
 *   POST /api/admin/controls {action: lock|wipe|revoke, scope: client|user, subject, workspace?, reason}
 *                                                              → the order (201); it reaches clients at their next contact
 *   POST /api/admin/controls/clear {scope, subject, workspace?, action?} → {cleared}  ("unlock")
 *   GET /api/admin/controls[?scope&subject]                    → {controls, wipes}: standing orders and confirmed wipes
 *   GET /api/admin/audit?user&action&since&until&offset&limit[&format=csv]
 *                                                              → {entries, total, offset, limit}
 *
 * Lists default to 1000 rows (the most one page holds); `format=csv` exports every matching row
 * (csv.ts). Parameters are checked by listing.ts: a bad one is 400 naming it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MedvError } from '../core/errors.js';
import type { Accounts } from './accounts.js';
import type { ImageCatalog } from './catalog.js';
import type { ImageTests } from './imagetest.js';
import { CONTROL_SCOPES, type ClientControls } from './controls.js';
import { AUDIT_CSV, CLIENTS_CSV, type CsvTable, HISTORY_CSV, csvExport } from './csv.js';
import type { KeyService } from './keyservice.js';
import {
  MAX_LIMIT, auditFilter, clientFilter, enumParam, historyFilter, intParam, nameParam, pageQuery, textParam, userFilter,
} from './listing.js';
import { overview } from './overview.js';
import { checkImageName } from '../api/names.js';
import type { PageOf, PageQuery } from './store/index.js';

export interface AdminReadDeps {
  accounts: Accounts;
  keys?: KeyService;
  catalog: ImageCatalog;
  tests?: ImageTests;
  controls?: ClientControls;
  /** Throws EDENIED unless the request carries the admin token. */
  admin(req: IncomingMessage): string;
  send(res: ServerResponse, status: number, body: unknown): void;
  /** The request's JSON body (bounded). */
  body(req: IncomingMessage): Promise<unknown>;
}

type Run = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

export function queryOf(req: IncomingMessage): URLSearchParams {
  const url = req.url ?? '';
  const q = url.indexOf('?');
  return new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
}

function required<T>(v: T | undefined, name: string): T {
  if (v === undefined) throw new MedvError('EINVAL_ARG', `the ${name} parameter is required`, { parameter: name });
  return v;
}

/** Send a CSV export, chunk by chunk. */
export async function sendCsv<T>(res: ServerResponse, filename: string, table: CsvTable<T>, page: (p: PageQuery) => Promise<PageOf<T>>, headers: Record<string, string> = {}): Promise<void> {
  const chunks = csvExport(table, page);
  const first = await chunks.next();
  res.writeHead(200, { 'Content-Type': 'text/csv; charset=utf-8', 'Content-Disposition': `attachment; filename="${filename}"`, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...headers });
  if (!first.done) res.write(first.value);
  for await (const c of chunks) if (!res.write(c)) await new Promise((r) => res.once('drain', r));
  res.end();
}

export function adminReadRoutes(d: AdminReadDeps): { method: string; path: string; run: Run }[] {
  const keys = () => {
    if (!d.keys) throw new MedvError('ENOENT', 'this server does not hold client reports');
    return d.keys;
  };
  const controls = () => {
    if (!d.controls) throw new MedvError('ENOENT', 'this server does not keep client orders');
    return d.controls;
  };
  const object = (v: unknown): Record<string, unknown> => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new MedvError('EINVAL_ARG', 'the request body must be a JSON object');
    return v as Record<string, unknown>;
  };
  const tests = () => {
    if (!d.tests) throw new MedvError('ENOENT', 'this server does not run image tests');
    return d.tests;
  };
  const page = (req: IncomingMessage) => pageQuery(queryOf(req), MAX_LIMIT);
  const csv = (req: IncomingMessage) => enumParam(queryOf(req), 'format', ['json', 'csv'] as const) === 'csv';
  const get = (path: string, run: Run) => ({ method: 'GET', path, async run(req: IncomingMessage, res: ServerResponse) { d.admin(req); await run(req, res); } });
  return [
    get('/api/admin/overview', async (_req, res) => d.send(res, 200, await overview(d.accounts, d.catalog))),
    get('/api/admin/users', async (req, res) => {
      const p = await d.accounts.usersPage(userFilter(queryOf(req)), page(req));
      d.send(res, 200, { users: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    }),
    get('/api/admin/groups', async (req, res) => {
      const p = await d.accounts.groupsPage(textParam(queryOf(req), 'q'), page(req));
      d.send(res, 200, { groups: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    }),
    get('/api/admin/policies/summary', async (req, res) => {
      const p = await d.accounts.policiesPage(textParam(queryOf(req), 'q'), page(req));
      d.send(res, 200, { policies: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    }),
    get('/api/admin/policies/versions', async (req, res) => {
      const name = required(nameParam(queryOf(req), 'name'), 'name');
      d.send(res, 200, { name, versions: await d.accounts.policyVersions(name) });
    }),
    get('/api/admin/policies/document', async (req, res) => {
      const q = queryOf(req);
      d.send(res, 200, await d.accounts.policyVersion(required(nameParam(q, 'name'), 'name'), required(intParam(q, 'version', 1, 2 ** 31 - 1), 'version')));
    }),
    get('/api/admin/policies/diff', async (req, res) => {
      const q = queryOf(req);
      const v = (k: string) => required(intParam(q, k, 1, 2 ** 31 - 1), k);
      d.send(res, 200, await d.accounts.policyDiff(required(nameParam(q, 'name'), 'name'), v('from'), v('to')));
    }),
    { method: 'POST', path: '/api/admin/policies/preview', async run(req: IncomingMessage, res: ServerResponse) { d.admin(req); d.send(res, 200, await d.accounts.previewPolicy(await d.body(req))); } },
    get('/api/admin/policies/unpublish', async (req, res) => d.send(res, 200, await d.accounts.previewUnpublish(required(nameParam(queryOf(req), 'name'), 'name')))),
    { method: 'POST', path: '/api/admin/policies/unpublish', async run(req: IncomingMessage, res: ServerResponse) {
      const actor = d.admin(req);
      const b = await d.body(req);
      const name = typeof b === 'object' && b !== null ? (b as { name?: unknown }).name : undefined;
      if (typeof name !== 'string') throw new MedvError('EINVAL_ARG', 'the body must be {"name": "<policy>"}');
      d.send(res, 200, await d.accounts.unpublishPolicy(name, actor));
    } },
    get('/api/admin/images', async (req, res) => d.send(res, 200, { images: await d.catalog.list(textParam(queryOf(req), 'q')) })),
    { method: 'POST', path: '/api/admin/images/prune', async run(req: IncomingMessage, res: ServerResponse) {
      const actor = d.admin(req);
      const b = await d.body(req) as { name?: unknown; keep?: unknown; dryRun?: unknown };
      if (typeof b !== 'object' || b === null) throw new MedvError('EINVAL_ARG', 'the body must be {"name", "keep"[, "dryRun"]}');
      const name = checkImageName(b.name);
      if (typeof b.keep !== 'number' || !Number.isInteger(b.keep) || b.keep < 1 || b.keep > 1000) throw new MedvError('EINVAL_ARG', 'keep must be an integer from 1 to 1000');
      d.send(res, 200, await d.catalog.prune(name, b.keep, { dryRun: b.dryRun === true, actor }));
    } },
    { method: 'POST', path: '/api/admin/images/test', async run(req: IncomingMessage, res: ServerResponse) {
      const actor = d.admin(req);
      const b = await d.body(req) as { name?: unknown; version?: unknown };
      if (typeof b !== 'object' || b === null) throw new MedvError('EINVAL_ARG', 'the body must be {"name", "version"}');
      if (typeof b.version !== 'number' || !Number.isInteger(b.version) || b.version < 1 || b.version > 2 ** 31 - 1) throw new MedvError('EINVAL_ARG', 'version must be an integer from 1 to 2^31-1');
      d.send(res, 202, await tests().start(checkImageName(b.name), b.version, actor));
    } },
    get('/api/admin/images/test', async (req, res) => {
      const q = queryOf(req);
      const name = checkImageName(required(nameParam(q, 'name'), 'name'));
      const version = required(intParam(q, 'version', 1, 2 ** 31 - 1), 'version');
      d.send(res, 200, { test: tests().status(name, version) ?? null, serial: tests().serial(name, version) });
    }),
    get('/api/admin/images/versions', async (req, res) => d.send(res, 200, await d.catalog.image(required(nameParam(queryOf(req), 'name'), 'name')))),
    get('/api/admin/clients', async (req, res) => {
      const f = clientFilter(queryOf(req));
      if (csv(req)) return sendCsv(res, 'clients.csv', CLIENTS_CSV, (p) => keys().clientsPage(f, p));
      const p = await keys().clientsPage(f, page(req));
      d.send(res, 200, { clients: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    }),
    get('/api/admin/clients/history', async (req, res) => {
      const f = historyFilter(queryOf(req));
      if (csv(req)) return sendCsv(res, 'client-history.csv', HISTORY_CSV, (p) => keys().historyPage(f, p));
      const p = await keys().historyPage(f, page(req));
      d.send(res, 200, { reports: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    }),
    { method: 'POST', path: '/api/admin/controls', async run(req: IncomingMessage, res: ServerResponse) {
      const actor = d.admin(req);
      d.send(res, 201, await controls().set(object(await d.body(req)) as Parameters<ClientControls['set']>[0], actor));
    } },
    { method: 'POST', path: '/api/admin/controls/clear', async run(req: IncomingMessage, res: ServerResponse) {
      const actor = d.admin(req);
      d.send(res, 200, await controls().clear(object(await d.body(req)) as Parameters<ClientControls['clear']>[0], actor));
    } },
    get('/api/admin/controls', async (req, res) => {
      const q = queryOf(req);
      const scope = enumParam(q, 'scope', CONTROL_SCOPES);
      const subject = nameParam(q, 'subject');
      d.send(res, 200, { controls: await controls().list(scope, subject), wipes: await controls().wipes(scope === 'client' ? { client: subject } : scope === 'user' ? { user: subject } : {}) });
    }),
    get('/api/admin/audit', async (req, res) => {
      const f = auditFilter(queryOf(req));
      if (csv(req)) {
        const pinned = { ...f, until: f.until ?? Date.now() + 1 }; // later entries would shift the pages
        return sendCsv(res, 'audit.csv', AUDIT_CSV, (p) => d.accounts.auditPage(pinned, p));
      }
      const p = await d.accounts.auditPage(f, page(req));
      d.send(res, 200, { entries: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    }),
  ];
}
