/**
 * The host API as a test sees it: docs/host-api.yaml loaded and compiled (ajv, JSON Schema 2020-12
 * as OpenAPI 3.1 uses), a client over the unix socket that validates every answer it gets against
 * the document (status, content type, body), and `startHost` to run `medv host` for a test's run root.
 *
 *   const api = checkedApi(join(runRoot, 'host.sock'));
 *   const vm = await api.json('POST', '/v1/vms', { source: img, memoryMiB: 32 });   // 201, VmState checked
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { MEDV_BIN, REPO_ROOT } from './cli.js';

const require = createRequire(import.meta.url);

export interface ApiDoc { paths: Record<string, Record<string, any>>; components: { schemas: Record<string, unknown>; responses: Record<string, any> } }

let cached: { doc: ApiDoc; ajv: InstanceType<typeof Ajv2020> } | undefined;

/** docs/host-api.yaml, parsed, and an ajv that knows its component schemas. */
export function apiDoc(): { doc: ApiDoc; ajv: InstanceType<typeof Ajv2020> } {
  if (cached) return cached;
  // js-yaml comes with mocha (the document is the repository's, not a runtime input).
  const yaml = require('js-yaml') as { load(text: string): unknown };
  const doc = yaml.load(readFileSync(join(REPO_ROOT, 'docs/host-api.yaml'), 'utf8')) as ApiDoc;
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  ajv.addSchema({ $id: 'api', components: doc.components } as object);
  cached = { doc, ajv };
  return cached;
}

/** Every `METHOD /path` the document describes. */
export function documentedRoutes(): string[] {
  const { doc } = apiDoc();
  const out: string[] = [];
  for (const [path, item] of Object.entries(doc.paths)) for (const m of ['get', 'post', 'delete', 'put', 'patch']) if (item[m]) out.push(`${m.toUpperCase()} ${path}`);
  return out.sort();
}

/** The document's path template that `path` (no query) is an instance of. */
function templateOf(path: string): string | undefined {
  const { doc } = apiDoc();
  return Object.keys(doc.paths).find((t) => {
    const a = t.split('/');
    const b = path.split('/');
    return a.length === b.length && a.every((s, i) => (s.startsWith('{') ? b[i] !== '' : s === b[i]));
  });
}

/** Check one answer against the document: the status is listed for the operation, the type is one it names, a JSON body fits its schema. */
export function checkAnswer(method: string, path: string, status: number, type: string, body: Buffer): void {
  const { doc, ajv } = apiDoc();
  const template = templateOf(path.split('?')[0]);
  assert.ok(template, `${path} is not in docs/host-api.yaml`);
  const op = doc.paths[template][method.toLowerCase()];
  assert.ok(op, `${method} ${template} is not in docs/host-api.yaml`);
  let resp = op.responses[String(status)];
  assert.ok(resp, `${method} ${template} answered ${status}, which docs/host-api.yaml does not list (${Object.keys(op.responses).join(', ')}): ${body.toString('utf8').slice(0, 300)}`);
  if (resp.$ref) resp = doc.components.responses[String(resp.$ref).split('/').pop()!];
  const mediaType = type.split(';')[0].trim();
  const content = resp.content?.[mediaType];
  assert.ok(content, `${method} ${template} ${status}: content type ${mediaType} is not documented (${Object.keys(resp.content ?? {}).join(', ')})`);
  if (mediaType === 'application/json' || mediaType === 'application/x-ndjson') {
    const docs = mediaType === 'application/json' ? [JSON.parse(body.toString('utf8'))] : body.toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const schema = JSON.parse(JSON.stringify(content.schema).replace(/"#\/components\//g, '"api#/components/'));
    const validate = ajv.compile(schema);
    for (const d of docs) assert.ok(validate(d), `${method} ${template} ${status}: the body does not fit the document: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(d).slice(0, 600)}`);
  }
}

export interface Answer { status: number; type: string; body: Buffer; headers: IncomingMessage['headers'] }

/** A client of the host API whose every answer is checked against the document. */
export interface CheckedApi {
  raw(method: string, path: string, body?: Buffer, headers?: Record<string, string>): Promise<Answer>;
  /** A JSON request; the answer must have `expect` (default 2xx); its JSON. */
  json(method: string, path: string, body?: unknown, expect?: number): Promise<any>;
  /** Follow /v1/events until `until` returns true (every line checked); resolves with the events seen. */
  events(query: string, until: (e: any) => boolean, opts?: { timeoutMs?: number; ready?: (cursor: number) => void }): Promise<any[]>;
}

export function checkedApi(socketPath: string): CheckedApi {
  const raw = (method: string, path: string, body?: Buffer, headers: Record<string, string> = {}) => new Promise<Answer>((resolve, reject) => {
    // agent: false, as src/host/api.ts: a kept-alive connection the service evicted under a flood would be reused
    const req = request({ socketPath, agent: false, method, path, headers: { host: 'medv', ...(body ? { 'content-length': String(body.length) } : {}), ...headers } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.once('end', () => {
        const a = { status: res.statusCode!, type: String(res.headers['content-type'] ?? ''), body: Buffer.concat(parts), headers: res.headers };
        try { checkAnswer(method, path, a.status, a.type, a.body); resolve(a); } catch (e) { reject(e); }
      });
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end(body);
  });
  return {
    raw,
    async json(method, path, body, expect) {
      const a = await raw(method, path, body === undefined ? undefined : Buffer.from(JSON.stringify(body)), body === undefined ? {} : { 'content-type': 'application/json' });
      if (expect !== undefined) assert.equal(a.status, expect, `${method} ${path}: ${a.body.toString('utf8')}`);
      else assert.ok(a.status >= 200 && a.status < 300, `${method} ${path} answered ${a.status}: ${a.body.toString('utf8')}`);
      return JSON.parse(a.body.toString('utf8'));
    },
    events(query, until, opts = {}) {
      return new Promise((resolve, reject) => {
        const seen: any[] = [];
        const path = `/v1/events${query ? `?${query}` : ''}`;
        const timer = setTimeout(() => { req.destroy(); reject(new Error(`no matching event within ${opts.timeoutMs ?? 60_000} ms; saw: ${JSON.stringify(seen).slice(-2000)}`)); }, opts.timeoutMs ?? 60_000);
        const req = request({ socketPath, agent: false, method: 'GET', path, headers: { host: 'medv' } }, (res) => {
          if (res.statusCode !== 200) { clearTimeout(timer); reject(new Error(`GET ${path}: ${res.statusCode}`)); return; }
          opts.ready?.(Number(res.headers['x-medv-cursor']));
          let partial = '';
          res.on('data', (c: Buffer) => {
            partial += c.toString('utf8');
            let nl: number;
            while ((nl = partial.indexOf('\n')) >= 0) {
              const line = partial.slice(0, nl + 1);
              partial = partial.slice(nl + 1);
              try { checkAnswer('GET', path, 200, 'application/x-ndjson', Buffer.from(line)); } catch (e) { clearTimeout(timer); req.destroy(); reject(e); return; }
              const e = JSON.parse(line);
              seen.push(e);
              if (until(e)) { clearTimeout(timer); req.destroy(); resolve(seen); return; }
            }
          });
          res.once('error', () => undefined);
        });
        req.once('error', (e) => { clearTimeout(timer); reject(e); });
        req.end();
      });
    },
  };
}

/** `medv host ARGS` for a run root, in the background; resolves once it listens. */
export async function startHost(env: Record<string, string | undefined>, args: string[] = []): Promise<ChildProcess> {
  const child = spawn(process.execPath, [MEDV_BIN, 'host', '--ready-fd', '3', ...args], {
    env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`medv host did not become ready: ${err}`)), 60_000);
    (child.stdio[3] as NodeJS.ReadableStream).on('data', (d) => { if (String(d).includes('ready')) { clearTimeout(timer); resolve(); } });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`medv host exited ${code}: ${err}`)); });
  });
  return child;
}
