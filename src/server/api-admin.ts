/**
 * The admin API of what the console shows and does beyond accounts (api.ts has those): every
 * route is one service call the console makes too. "admin" as in api.ts (the admin token or an
 * administrator's login).
 *
 *   GET  /api/admin/overview                                   → Overview (overview.ts)
 *   GET  /api/admin/groups?q&offset&limit                      → {groups, total, offset, limit}
 *   POST /api/admin/users/NAME/groups {groups}                 → the user, with these groups
 *   POST /api/admin/users/NAME/role {role}                     → the user, with this role (admin or user)
 *   GET  /api/admin/policies/summary?q&offset&limit            → {policies, total, offset, limit}
 *   GET  /api/admin/policies/versions?name                     → {name, versions}
 *   GET  /api/admin/policies/document?name&version             → {name, version, published, publisher, unpublished, document}
 *   GET  /api/admin/policies/diff?name&from&to                 → {name, from, to, changes} (policy-diff.ts)
 *   POST /api/admin/policies/preview <document>                → PolicyPreview (policy-preview.ts): who publishing it reaches
 *   GET  /api/admin/policies/unpublish?name                    → PolicyPreview of unpublishing it
 *   POST /api/admin/policies/unpublish {name}                  → {name, version}
 *   GET  /api/admin/images?q                                   → {images}
 *   GET  /api/admin/images/versions?name                       → ImageDetail (catalog.ts)
 *   POST /api/admin/images/prune {name, keep, dryRun?}         → what was (or would be) deleted
 *   POST /api/admin/images/test {name, version}                → 202 TestRecord (imagetest.ts): the test starts
 *   GET  /api/admin/images/test?name&version                   → {test, serial}
 *   POST /api/admin/images/test/stop {name, version}           → {stopping}: the VM stops now (the screenshot is taken first if it was not)
 *   GET  /api/admin/images/test/screenshot?name&version        → the screenshot kept with the version (image/png)
 *   GET  /api/admin/clients/history?client&user&workspace&offset&limit[&format=csv] → {reports, total, offset, limit}
 *   POST /api/admin/controls {action, scope, subject, workspace?, reason} → 201 the order (controls.ts)
 *   POST /api/admin/controls/clear {scope, subject, workspace?, action?}  → {cleared}
 *   GET  /api/admin/controls?scope&subject                     → {controls, wipes}
 *
 * GET /api/admin/clients and /api/admin/audit (api.ts) also answer `format=csv`: every matching
 * row, through sendCsv here. Query parameters are checked by requests.ts (400 naming the bad one).
 */
import type { ServerResponse } from 'node:http';
import { MedvError } from '../core/errors.js';
import { checkGroupName, checkImageName } from '../api/names.js';
import { type Accounts, checkRole } from './accounts.js';
import type { ApiCtx, ApiRoute } from './api.js';
import type { ImageCatalog } from './catalog.js';
import { CONTROL_SCOPES, type ClientControls } from './controls.js';
import { type CsvPage, type CsvTable, HISTORY_CSV, csvExport } from './csv.js';
import type { ImageTests } from './imagetest.js';
import type { KeyService } from './keyservice.js';
import { overview } from './overview.js';
import { PAGE_MAX, enumParam, historyFilter, intParam, nameParam, object, pageQuery, textParam } from './requests.js';
import type { Audit } from './audit.js';

export interface AdminDeps {
  accounts: Accounts;
  audit: Audit;
  keys?: KeyService;
  catalog: ImageCatalog;
  tests?: ImageTests;
  controls?: ClientControls;
  /** The actor of an admin request, or EDENIED/EFORBIDDEN (api.ts). */
  admin(c: ApiCtx): Promise<string>;
  send(res: ServerResponse, status: number, body: unknown): void;
  /** The request's JSON body (bounded). */
  body(c: ApiCtx): Promise<unknown>;
}

const MAX_VERSION = 2 ** 31 - 1;

function required<T>(v: T | undefined, name: string): T {
  if (v === undefined) throw new MedvError('EINVAL_ARG', `the ${name} parameter is required`, { parameter: name });
  return v;
}

/** Does the query ask for CSV (`format=csv`)? */
export function wantsCsv(q: URLSearchParams): boolean {
  return enumParam(q, 'format', ['json', 'csv'] as const) === 'csv';
}

/** Send a CSV export, chunk by chunk, with `headers` (the console adds its own). */
export async function sendCsv<T>(res: ServerResponse, filename: string, table: CsvTable<T>, page: CsvPage<T>, headers: Record<string, string> = {}): Promise<void> {
  const chunks = csvExport(table, page);
  const first = await chunks.next();
  res.writeHead(200, { 'Content-Type': 'text/csv; charset=utf-8', 'Content-Disposition': `attachment; filename="${filename}"`, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...headers });
  if (!first.done) res.write(first.value);
  for await (const c of chunks) if (!res.write(c)) await new Promise((r) => res.once('drain', r));
  res.end();
}

export function adminRoutes(d: AdminDeps): ApiRoute[] {
  const need = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new MedvError('ENOENT', `this server does not ${what}`);
    return v;
  };
  const keys = () => need(d.keys, 'hold client reports');
  const tests = () => need(d.tests, 'run image tests');
  const controls = () => need(d.controls, 'keep client orders');
  const get = (pattern: string, run: (c: ApiCtx) => Promise<void>): ApiRoute => ({ method: 'GET', pattern, async run(c) { await d.admin(c); await run(c); } });
  const post = (pattern: string, status: number, run: (c: ApiCtx, actor: string, body: Record<string, unknown>) => Promise<unknown>): ApiRoute => ({
    method: 'POST', pattern, async run(c) {
      const actor = await d.admin(c);
      d.send(c.res, status, await run(c, actor, object(await d.body(c))));
    },
  });
  return [
    get('/api/admin/overview', async (c) => d.send(c.res, 200, await overview(d.accounts, d.audit, d.catalog))),
    get('/api/admin/groups', async (c) => {
      const p = await d.accounts.groupsPage(textParam(c.query, 'q'), pageQuery(c.query, PAGE_MAX));
      d.send(c.res, 200, { groups: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    }),
    post('/api/admin/users/:name/groups', 200, async (c, actor, b) => {
      if (!Array.isArray(b.groups) || b.groups.length > 64) throw new MedvError('EINVAL_ARG', 'groups must be a list of at most 64 group names');
      return d.accounts.setGroups(c.name, (b.groups as unknown[]).map((g) => checkGroupName(g)), actor, c.address);
    }),
    post('/api/admin/users/:name/role', 200, async (c, actor, b) => d.accounts.setRole(c.name, checkRole(b.role), actor, c.address)),
    get('/api/admin/policies/summary', async (c) => {
      const p = await d.accounts.policiesPage(textParam(c.query, 'q'), pageQuery(c.query, PAGE_MAX));
      d.send(c.res, 200, { policies: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    }),
    get('/api/admin/policies/versions', async (c) => {
      const name = required(nameParam(c.query, 'name'), 'name');
      d.send(c.res, 200, { name, versions: await d.accounts.policyVersions(name) });
    }),
    get('/api/admin/policies/document', async (c) => {
      d.send(c.res, 200, await d.accounts.policyVersion(required(nameParam(c.query, 'name'), 'name'), required(intParam(c.query, 'version', 1, MAX_VERSION), 'version')));
    }),
    get('/api/admin/policies/diff', async (c) => {
      const v = (k: string) => required(intParam(c.query, k, 1, MAX_VERSION), k);
      d.send(c.res, 200, await d.accounts.policyDiff(required(nameParam(c.query, 'name'), 'name'), v('from'), v('to')));
    }),
    { method: 'POST', pattern: '/api/admin/policies/preview', async run(c) { await d.admin(c); d.send(c.res, 200, await d.accounts.previewPolicy(await d.body(c))); } },
    get('/api/admin/policies/unpublish', async (c) => d.send(c.res, 200, await d.accounts.previewUnpublish(required(nameParam(c.query, 'name'), 'name')))),
    post('/api/admin/policies/unpublish', 200, async (c, actor, b) => {
      if (typeof b.name !== 'string') throw new MedvError('EINVAL_ARG', 'the body must be {"name": "<policy>"}');
      return d.accounts.unpublishPolicy(b.name, actor, c.address);
    }),
    get('/api/admin/images', async (c) => d.send(c.res, 200, { images: await d.catalog.list(textParam(c.query, 'q')) })),
    get('/api/admin/images/versions', async (c) => d.send(c.res, 200, await d.catalog.image(checkImageName(required(nameParam(c.query, 'name'), 'name'))))),
    post('/api/admin/images/prune', 200, async (c, actor, b) => {
      const name = checkImageName(b.name);
      if (typeof b.keep !== 'number' || !Number.isInteger(b.keep) || b.keep < 1 || b.keep > 1000) throw new MedvError('EINVAL_ARG', 'keep must be an integer from 1 to 1000');
      return d.catalog.prune(name, b.keep, { dryRun: b.dryRun === true, actor, address: c.address });
    }),
    post('/api/admin/images/test', 202, async (_c, actor, b) => {
      if (typeof b.version !== 'number' || !Number.isInteger(b.version) || b.version < 1 || b.version > MAX_VERSION) throw new MedvError('EINVAL_ARG', `version must be an integer from 1 to ${MAX_VERSION}`);
      return tests().start(checkImageName(b.name), b.version, actor);
    }),
    get('/api/admin/images/test', async (c) => {
      const name = checkImageName(required(nameParam(c.query, 'name'), 'name'));
      const version = required(intParam(c.query, 'version', 1, MAX_VERSION), 'version');
      d.send(c.res, 200, { test: tests().status(name, version) ?? null, serial: tests().serial(name, version) });
    }),
    post('/api/admin/images/test/stop', 200, async (_c, _actor, b) => {
      const version = b.version;
      if (typeof version !== 'number' || !Number.isInteger(version) || version < 1 || version > MAX_VERSION) throw new MedvError('EINVAL_ARG', `version must be an integer from 1 to ${MAX_VERSION}`);
      return { stopping: tests().cancel(checkImageName(b.name), version) };
    }),
    get('/api/admin/images/test/screenshot', async (c) => {
      const name = checkImageName(required(nameParam(c.query, 'name'), 'name'));
      const png = tests().screenshot(name, required(intParam(c.query, 'version', 1, MAX_VERSION), 'version'));
      if (!png) throw new MedvError('ENOENT', `no screenshot is kept for ${name} version ${c.query.get('version')}: test it first`);
      c.res.writeHead(200, { 'Content-Type': 'image/png', 'Content-Length': png.length, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' });
      c.res.end(png);
    }),
    get('/api/admin/clients/history', async (c) => {
      const f = historyFilter(c.query);
      if (wantsCsv(c.query)) return sendCsv(c.res, 'client-history.csv', HISTORY_CSV, offsetPages((p) => keys().historyPage(f, p)));
      const p = await keys().historyPage(f, pageQuery(c.query, PAGE_MAX));
      d.send(c.res, 200, { reports: p.rows, total: p.total, offset: p.offset, limit: p.limit });
    }),
    post('/api/admin/controls', 201, async (c, actor, b) => controls().set(b, actor, c.address)),
    post('/api/admin/controls/clear', 200, async (c, actor, b) => controls().clear(b, actor, c.address)),
    get('/api/admin/controls', async (c) => {
      const scope = enumParam(c.query, 'scope', CONTROL_SCOPES);
      const subject = nameParam(c.query, 'subject');
      const wipes = await controls().wipes(scope === 'client' ? { client: subject } : scope === 'user' ? { user: subject } : {});
      d.send(c.res, 200, { controls: await controls().list(scope, subject), wipes });
    }),
  ];
}

/** A list paged by offset as the cursor pages of csvExport. */
export function offsetPages<T>(page: (p: { offset: number; limit: number }) => Promise<{ rows: T[]; total: number }>): CsvPage<T> {
  return async (cursor) => {
    const offset = Number(cursor ?? 0);
    const p = await page({ offset, limit: PAGE_MAX });
    return { rows: p.rows, next: offset + p.rows.length < p.total && p.rows.length ? String(offset + p.rows.length) : null };
  };
}
