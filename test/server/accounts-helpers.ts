/**
 * Shared by the store, API and admin CLI tests: the two backends (SQLite in the root folder, a
 * database in a real PostgreSQL cluster started by the suite), JSON requests as a peer sends them
 * (Node's fetch), and a scan of files for secrets in clear.
 */
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { type Postgres, startPostgres } from '../helpers/postgres.js';

export type Backend = 'sqlite' | 'postgres';
export const BACKENDS: Backend[] = ['sqlite', 'postgres'];

/** One PostgreSQL cluster per test file, started on first use. */
let cluster: Promise<Postgres> | undefined;
export function postgres(): Promise<Postgres> {
  return (cluster ??= startPostgres());
}
export async function stopPostgres(): Promise<void> {
  if (!cluster) return;
  const c = cluster;
  cluster = undefined;
  await (await c).stop();
}

/** `--db URL` for a fresh database on `backend` (none for SQLite: the root folder holds it). */
export async function dbArgs(backend: Backend, name: string): Promise<{ args: string[]; url?: string; db?: string }> {
  if (backend === 'sqlite') return { args: [] };
  const url = (await postgres()).createDatabase(name);
  return { args: ['--db', url], url, db: new URL(url).pathname.slice(1) };
}

export interface Answer { status: number; headers: Headers; body: any; text: string }

/**
 * One JSON request on its own connection (no keep-alive pool: a test that blocks its event loop
 * in spawnSync would otherwise reuse a socket the server closed meanwhile), from `localAddress`
 * when given (another 127.x address is another client to the server).
 */
export function api(base: string, method: string, path: string, o: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string>; localAddress?: string } = {}): Promise<Answer> {
  const body = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
  const headers: Record<string, string> = { ...o.headers };
  if (o.token) headers.Authorization = `Bearer ${o.token}`;
  if (body !== undefined) { headers['Content-Type'] = 'application/json'; headers['Content-Length'] = String(Buffer.byteLength(body)); }
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, { method, headers, localAddress: o.localAddress, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: any;
        try { parsed = JSON.parse(text); } catch { parsed = undefined; }
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') h.set(k, v);
        resolve({ status: res.statusCode ?? 0, headers: h, body: parsed, text });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export const password = () => `pw-${randomBytes(12).toString('hex')}`;
export const unique = (p: string) => `${p}-${randomBytes(4).toString('hex')}`;

/** Every regular file under `dir` (recursively). */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** The needles found in any file under `dirs`, each with a file that holds it. */
export function scan(dirs: string[], needles: Buffer[]): Map<string, string> {
  const found = new Map<string, string>();
  for (const f of dirs.flatMap(filesUnder)) {
    if (statSync(f).size > 256 * 1024 * 1024) continue;
    const data = readFileSync(f);
    for (const n of needles) if (!found.has(n.toString('latin1')) && data.includes(n)) found.set(n.toString('latin1'), f);
  }
  return found;
}
