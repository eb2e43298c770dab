/**
 * Console benchmark (not a test): each console page's server time with 10,000 users, 1,000
 * clients and 100,000 reports (plus 100,000 audit entries), in SQLite and in PostgreSQL.
 *
 * The database is filled through the store's own tables (one Argon2id hash shared by every seeded
 * user: hashing 10,000 passwords would take an hour and measure nothing), an image is packed in
 * two versions into the repository, then a real `medv serve` is started on it, an administrator
 * signs in through the sign-in form, and every page is requested `--runs` times (after 3 warm-up
 * requests) over one keep-alive connection. The time is the server's own (`Server-Timing: app`,
 * from the request's arrival to the answer's last byte handed to Node), so the client's overhead
 * is left out; the round trip is printed beside it. The peer, in the same run: the `/api/` route
 * that answers the same question from the same service (JSON instead of HTML), requested in turn
 * with the page; the ratio of their round trips is what the console's rendering costs. Target:
 * p95 <= 100 ms per page.
 *
 * Usage: node dist/bench/console/bench.js [--runs 40] [--sqlite-only]
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Store, HISTORY_PER_KEY } from '../../src/server/store/index.js';
import { hashPassword } from '../../src/server/accounts.js';
import { encodeClientsCursor } from '../../src/server/keyservice.js';
import { encodeAuditCursor } from '../../src/server/audit.js';
import { runMedv } from '../../test/helpers/cli.js';
import { arg } from '../args.js';
import { makeUsrDisk, mutateDisk } from '../../test/pack/images.js';
import { startServe } from '../../test/server/helpers.js';
import { startPostgres } from '../../test/helpers/postgres.js';

const RUNS = Number(arg('runs', '40'));
const USERS = 10_000;
const CLIENTS = 1_000;
const REPORTS = 100_000;
const AUDIT = 100_000;
const GROUPS = 100;
const POLICIES = 20;
const WORKSPACES_PER_CLIENT = 2;
const DAY = 86400_000;

const work = mkdtempSync(join(tmpdir(), 'medv-bench-console-'));

function packImage(): string {
  const dir = join(work, 'PackedImages');
  const hostKey = join(work, 'host.key');
  writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
  const v1 = join(work, 'v1.raw');
  const v2 = join(work, 'v2.raw');
  makeUsrDisk(v1, 8 * 1048576, 0.5, 11);
  copyFileSync(v1, v2);
  mutateDisk(v2, 0.03, 12);
  for (const [disk, v] of [[v1, '1'], [v2, '2']]) {
    const r = runMedv(['image', 'pack', disk, '--name', 'lab', '--version', v, '--out', dir, '--keys', join(work, 'keys'), '--host-key', hostKey], { MEDV_PASSPHRASE: '' });
    if (r.code !== 0) throw new Error(r.stderr);
  }
  return dir;
}

async function batches<T>(rows: T[], size: number, insert: (chunk: T[]) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < rows.length; i += size) await insert(rows.slice(i, i + size));
}

/** The world of the benchmark, written straight into the store's tables. */
async function seed(root: string, db: string | undefined, adminPassword: string): Promise<void> {
  const store = await Store.open(root, db);
  const k = store.db;
  const now = Date.now();
  const hash = await hashPassword(adminPassword);
  const group = (i: number) => `group-${String(i).padStart(3, '0')}`;
  const user = (i: number) => `user-${String(i).padStart(5, '0')}`;
  const client = (i: number) => `client-${String(i).padStart(4, '0')}`;
  await batches([...Array(GROUPS).keys()].map((i) => ({ name: group(i), created: now })), 500, (c) => k.insertInto('groups').values(c).execute());
  await batches([...Array(USERS).keys()].map((i) => ({ name: user(i), password_hash: hash, created: now - i * 1000, disabled: i % 97 === 0 ? 1 : 0 })), 500, (c) => k.insertInto('users').values(c).execute());
  await store.addUser('bench.admin', hash, [], 'admin');
  // every user in one group, a third in a second one ((7i+1) mod 100 never equals i mod 100)
  await batches([...Array(USERS).keys()].flatMap((i) => [{ user_name: user(i), group_name: group(i % GROUPS) }, ...(i % 3 === 0 ? [{ user_name: user(i), group_name: group((i * 7 + 1) % GROUPS) }] : [])]),
    500, (c) => k.insertInto('membership').values(c).execute());
  for (let p = 0; p < POLICIES; p++) {
    for (let v = 1; v <= 3; v++) {
      const doc = { name: `policy-${p}`, groups: [group(p * 5), group(p * 5 + 1)], users: [user(p)], workspaces: [{ name: `desk-${p % 4}`, image: 'lab', memory: 512 * v, offlineDays: 7 }, { name: `lab-${p % 2}`, image: 'lab' }] };
      await store.publishPolicy(doc.name, JSON.stringify(doc), { users: doc.users, groups: doc.groups }, 'bench.admin', now - (3 - v) * DAY);
    }
  }
  // 1,000 clients of the first 1,000 users, two workspaces each; 100,000 reports in their history
  const grants = [];
  const latest = [];
  for (let c = 0; c < CLIENTS; c++) {
    for (let w = 0; w < WORKSPACES_PER_CLIENT; w++) {
      const ws = w === 0 ? `desk-${c % 4}` : `lab-${c % 2}`;
      grants.push({ client: client(c), user_name: user(c), workspace: ws, image: 'lab', policy_name: `policy-${c % POLICIES}`, policy_version: 3, offline_days: 7, granted_at: now - (c % 9) * DAY });
      latest.push({ client: client(c), user_name: user(c), workspace: ws, version: 1 + (c % 2), state: ['running', 'stopped', 'failed', 'offline'][c % 4], last_error: c % 4 === 2 ? `QEMU exited: error ${c}` : null, reported_at: now - c * 60_000, received_at: now - c * 60_000 });
    }
  }
  await batches(grants, 500, (c) => k.insertInto('client_grants').values(c).execute());
  await batches(latest, 500, (c) => k.insertInto('client_reports').values(c).execute());
  const perKey = REPORTS / latest.length;
  assert.ok(perKey <= HISTORY_PER_KEY);
  const history = [];
  for (const r of latest) for (let i = 0; i < perKey; i++) history.push({ id: randomBytes(16).toString('hex'), client: r.client, user_name: r.user_name, workspace: r.workspace, version: r.version, state: r.state, last_error: r.last_error, reported_at: r.reported_at - i * 3600_000, received_at: r.received_at - i * 3600_000 });
  await batches(history, 1000, (c) => k.insertInto('client_report_history').values(c).execute());
  const actions = ['login', 'login.fail', 'keys.release', 'logout', 'user.add', 'policy.publish'];
  const audit = [...Array(AUDIT).keys()].map((i) => ({ id: randomBytes(16).toString('hex'), time: now - i * 30_000, actor: user(i % USERS), action: actions[i % actions.length], target: i % 6 === 2 ? `desk-${i % 4}` : user(i % USERS), detail: JSON.stringify({ address: `10.0.${(i >> 8) & 255}.${i & 255}`, via: 'api' }) }));
  await batches(audit, 1000, (c) => k.insertInto('audit').values(c).execute());
  await store.close();
}

/** Each page, and the `/api/` route that answers the same question from the same service (the peer: JSON, no HTML). */
const PAGES: [string, string, string][] = [
  ['overview', '/console/', '/api/admin/overview'],
  ['users', '/console/users', '/api/admin/users'],
  ['users ?q=', '/console/users?q=user-012', '/api/admin/users?q=user-012'],
  ['users ?group=', '/console/users?group=group-007', '/api/admin/users?group=group-007'],
  ['users, last page', '/console/users?offset=9950', '/api/admin/users?offset=9950'],
  ['user', '/console/users/user-00042', '/api/admin/users/user-00042'],
  ['groups', '/console/groups', '/api/admin/groups'],
  ['policies', '/console/policies', '/api/admin/policies/summary'],
  ['policy versions', '/console/policies/policy-3', '/api/admin/policies/versions?name=policy-3'],
  ['policy version', '/console/policies/policy-3/v/2', '/api/admin/policies/document?name=policy-3&version=2'],
  ['policy diff', '/console/policies/policy-3/diff?from=1&to=3', '/api/admin/policies/diff?name=policy-3&from=1&to=3'],
  ['images', '/console/images', '/api/admin/images'],
  ['image', '/console/images/lab', '/api/admin/images/versions?name=lab'],
  ['clients', '/console/clients', '/api/admin/clients'],
  ['clients ?user=', '/console/clients?user=user-00500', '/api/admin/clients?user=user-00500'],
  ['clients ?state=', '/console/clients?state=failed', '/api/admin/clients?state=failed'],
  ['clients, deep page', `/console/clients?after=${encodeClientsCursor(['client-0975', 'user-00975', 'desk-3'])}`, `/api/admin/clients?after=${encodeClientsCursor(['client-0975', 'user-00975', 'desk-3'])}`],
  ['client + history', '/console/clients/client-0500', '/api/admin/clients/history?client=client-0500'],
  ['audit', '/console/audit', '/api/admin/audit'],
  ['audit ?user=', '/console/audit?user=user-00042', '/api/admin/audit?user=user-00042'],
  ['audit ?action=', '/console/audit?action=login.fail', '/api/admin/audit?action=login.fail'],
  ['audit ?since', '/console/audit?since=2026-01-01&until=2026-12-31', '/api/admin/audit?since=2026-01-01&until=2026-12-31'],
  ['audit, deep page', '/console/audit?before=AUDIT_DEEP', '/api/admin/audit?before=AUDIT_DEEP'],
];

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];

async function signIn(base: string, pw: string): Promise<string> {
  const form = await fetch(`${base}/console/login`);
  const pre = form.headers.get('set-cookie')!.split(';')[0];
  const csrf = /name="_csrf" value="([^"]+)"/.exec(await form.text())![1];
  const r = await fetch(`${base}/console/login`, { method: 'POST', redirect: 'manual', headers: { cookie: pre, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ _csrf: csrf, user: 'bench.admin', password: pw }) });
  assert.equal(r.status, 303);
  return r.headers.getSetCookie().find((c) => c.startsWith('medv_console='))!.split(';')[0];
}

interface Row { p50: number; p95: number; max: number; rtt95: number; api95: number }

async function measure(backend: string, db: string | undefined, packed: string): Promise<Map<string, Row>> {
  const root = join(work, `root-${backend}`);
  mkdirSync(join(root, 'images'), { recursive: true });
  for (const f of ['lab_1.ckm', 'lab_1.ckm.index', 'lab_2.ckm', 'lab_2.ckm.index']) copyFileSync(join(packed, f), join(root, 'images', f));
  const pw = `bench-${randomBytes(8).toString('hex')}`;
  const t0 = performance.now();
  await seed(root, db, pw);
  process.stderr.write(`${backend}: seeded in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  const srv = await startServe(root, db ? ['--db', db] : []);
  const out = new Map<string, Row>();
  try {
    const cookie = await signIn(srv.url, pw);
    const token = readFileSync(srv.adminTokenFile, 'utf8').trim();
    // a cursor 90,000 entries into the audit log (the 90,000th newest of the seeded entries)
    const deep = await Store.open(root, db);
    const row = await deep.db.selectFrom('audit').select(['time', 'id']).orderBy('time', 'desc').orderBy('id', 'desc').offset(90_000).limit(1).executeTakeFirstOrThrow();
    await deep.close();
    const cursor = encodeAuditCursor(Number(row.time), row.id);
    const get = async (path: string, headers: Record<string, string>): Promise<{ ms: number; r: Response }> => {
      const t = performance.now();
      const r = await fetch(`${srv.url}${path.replace('AUDIT_DEEP', cursor)}`, { headers });
      await r.arrayBuffer();
      assert.equal(r.status, 200, `${path}: ${r.status}`);
      return { ms: performance.now() - t, r };
    };
    for (const [label, page, peer] of PAGES) {
      const server: number[] = [];
      const rtt: number[] = [];
      const api: number[] = [];
      // the page and its API peer alternate, so both see the same load on this shared machine
      for (let i = 0; i < RUNS + 3; i++) {
        const c = await get(page, { cookie });
        const j = await get(peer, { authorization: `Bearer ${token}` });
        if (i < 3) continue;
        server.push(Number(/dur=([\d.]+)/.exec(c.r.headers.get('server-timing') ?? '')?.[1]));
        rtt.push(c.ms);
        api.push(j.ms);
      }
      out.set(label, { p50: pct(server, 0.5), p95: pct(server, 0.95), max: Math.max(...server), rtt95: pct(rtt, 0.95), api95: pct(api, 0.95) });
    }
  } finally {
    await srv.stop();
  }
  return out;
}

async function main(): Promise<void> {
  const packed = packImage();
  const results: [string, Map<string, Row>][] = [];
  results.push(['sqlite', await measure('sqlite', undefined, packed)]);
  if (!process.argv.includes('--sqlite-only')) {
    const pg = await startPostgres();
    try {
      results.push(['postgres', await measure('postgres', pg.createDatabase('bench_console'), packed)]);
    } finally {
      await pg.stop();
    }
  }
  const f = (n: number) => n.toFixed(1).padStart(6);
  const x = (n: number) => `${n.toFixed(2)}x`.padStart(6);
  console.log(`\nconsole pages, ms (${RUNS} requests each; ${USERS.toLocaleString('en-US')} users, ${CLIENTS.toLocaleString('en-US')} clients, ${REPORTS.toLocaleString('en-US')} reports, ${AUDIT.toLocaleString('en-US')} audit entries)`);
  console.log("server p50/p95/max: the console's own time (Server-Timing); rtt95: the page's round trip; api95: the round trip of the /api/ route that answers");
  console.log('the same question (JSON, same service, same run, requests alternating); ratio: rtt95 / api95 (what rendering HTML costs over the JSON peer)');
  console.log(`${'page'.padEnd(20)}${results.map(([b]) => `| ${b.padEnd(9)}p50    p95    max  rtt95  api95  ratio `).join('')}${results.length > 1 ? '| p95 pg/sqlite' : ''}`);
  let worst = 0;
  for (const [label] of PAGES) {
    const rows = results.map(([, m]) => m.get(label)!);
    for (const r of rows) worst = Math.max(worst, r.p95);
    const cells = rows.map((r) => `|    ${f(r.p50)} ${f(r.p95)} ${f(r.max)} ${f(r.rtt95)} ${f(r.api95)} ${x(r.rtt95 / r.api95)} `).join('');
    console.log(`${label.padEnd(20)}${cells}${rows.length > 1 ? `| ${x(rows[1].p95 / rows[0].p95)}` : ''}`);
  }
  console.log(`\nworst p95: ${worst.toFixed(1)} ms (target <= 100 ms): ${worst <= 100 ? 'met' : 'NOT met'}`);
  rmSync(work, { recursive: true, force: true });
}

main().catch((e) => { console.error(e); rmSync(work, { recursive: true, force: true }); process.exit(1); });
