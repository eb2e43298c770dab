/**
 * The host API's routes (described, path for path, by docs/host-api.yaml; test/host/api.test.ts
 * checks both ways that every route here is in the document and every path there is a route, and
 * validates each response it sees against the document's schemas).
 *
 *   GET    /v1/host                         the service: pid, pool, keys, counts
 *   POST   /v1/host/stop                    stop the service (VMs keep running)
 *   POST   /v1/keys                         a one-time key handle for a passphrase (octet-stream body)
 *   POST   /v1/keys/unlock?for=10m          cache the passphrase (octet-stream body)
 *   POST   /v1/keys/lock                    drop it
 *   GET    /v1/vms                          every VM
 *   POST   /v1/vms                          create a VM from a .vmc or disk and start it
 *   GET    /v1/vms/{name}                   status
 *   DELETE /v1/vms/{name}                   forget a stopped VM (its run folder)
 *   POST   /v1/vms/{name}/start|stop|pause|resume|suspend|discard-state
 *   GET    /v1/vms/{name}/screenshot        image/png
 *   GET    /v1/vms/{name}/serial            the guest's COM1 output so far
 *   GET    /v1/events?since=C&vm=NAME       JSON lines, followed
 *   GET    /v1/workspaces[?clientRoot=]     POST /v1/workspaces/{name}/start|stop, GET /v1/workspaces/{name}
 */
import * as fs from 'node:fs';
import { MedvError } from '../../core/errors.js';
import { checkVmName } from '../../api/names.js';
import { parseCursor, type EventLog } from './events.js';
import type { Ctx, Route } from './http.js';
import { MAX_PASSPHRASE, MAX_UNLOCK_MS, type KeyCache } from './keys.js';
import { checkBody, queryDuration, type BodySpec } from './request.js';
import type { VmOps } from './vms.js';
import type { KekSource } from '../../crypto/kekenv.js';
import type { VmConfig } from '../config.js';
import type { VmState } from '../rundir.js';

/** What a workspace start gets from the service: VM starts through its pool, progress as events. */
export interface WorkspaceContext {
  root: string;
  startVm(config: VmConfig, opts: { kek?: KekSource; root?: string }): Promise<VmState>;
  info(line: string): void;
}

/** The workspace library (src/workspace), handed in by the service's entry: src/host does not import it. */
export interface WorkspaceBackend {
  start(name: string, o: Record<string, unknown>, ctx: WorkspaceContext): Promise<unknown>;
  stop(name: string, o: Record<string, unknown>, ctx: WorkspaceContext): Promise<unknown>;
  status(name: string, o: Record<string, unknown>, ctx: WorkspaceContext): Promise<unknown>;
  list(o: Record<string, unknown>, ctx: WorkspaceContext): Promise<unknown>;
}

export interface RouteDeps {
  root: string;
  vms: VmOps;
  keys: KeyCache;
  events: EventLog;
  host: () => unknown;
  stop: () => void;
  workspaces?: WorkspaceBackend;
}

/** Secret bodies: application/octet-stream, the passphrase's bytes. */
async function secretBody(ctx: Ctx): Promise<Buffer> {
  const type = String(ctx.req.headers['content-type'] ?? '');
  if (!/^application\/octet-stream\b/i.test(type)) throw new MedvError('EINVAL_ARG', 'a passphrase is sent as application/octet-stream (its bytes, no newline)');
  return ctx.raw(MAX_PASSPHRASE);
}

function workspaceBackend(d: RouteDeps): WorkspaceBackend {
  if (!d.workspaces) throw new MedvError('EUNSUPPORTED', 'this host service has no workspace support');
  return d.workspaces;
}

function workspaceContext(d: RouteDeps, workspace?: string): WorkspaceContext {
  return {
    root: d.root,
    startVm: (config, o) => d.vms.startWith(config, o.kek),
    info: (line) => d.events.emit('workspace', { ...(workspace ? { workspace } : {}), message: line }),
  };
}

const WS_START: BodySpec = { clientRoot: 'abspath', update: 'boolean', display: { enum: ['none', 'vnc', 'vnc-tcp', 'window'] }, accel: { enum: ['kvm', 'tcg'] }, userDirs: 'userDirs' };
const WS_STOP: BodySpec = { clientRoot: 'abspath', force: 'boolean', timeoutS: { number: [0, 3600] } };

export function hostRoutes(d: RouteDeps): Route[] {
  const name = (ctx: Ctx) => checkVmName(ctx.params.name);
  return [
    { method: 'GET', path: '/v1/host', handler: () => ({ json: d.host() }) },
    { method: 'POST', path: '/v1/host/stop', handler: () => { setImmediate(d.stop); return { json: { stopping: true } }; } },
    { method: 'POST', path: '/v1/keys', handler: async (ctx) => ({ status: 201, json: await d.keys.handle(await secretBody(ctx)) }) },
    {
      method: 'POST', path: '/v1/keys/unlock', handler: async (ctx) => {
        const ms = queryDuration(ctx.query.get('for'), 'for', MAX_UNLOCK_MS) ?? 600_000;
        const r = await d.keys.unlock(await secretBody(ctx), ms);
        return { json: { unlocked: true, expiresAt: r.until.toISOString() } };
      },
    },
    { method: 'POST', path: '/v1/keys/lock', handler: () => { d.keys.lock(); return { json: { unlocked: false } }; } },
    { method: 'GET', path: '/v1/vms', handler: () => ({ json: d.vms.list() }) },
    { method: 'POST', path: '/v1/vms', handler: async (ctx) => ({ status: 201, json: await d.vms.create(await ctx.json()) }) },
    { method: 'GET', path: '/v1/vms/{name}', handler: (ctx) => ({ json: d.vms.status(name(ctx)) }) },
    { method: 'DELETE', path: '/v1/vms/{name}', handler: (ctx) => ({ json: d.vms.remove(name(ctx)) }) },
    { method: 'POST', path: '/v1/vms/{name}/start', handler: async (ctx) => ({ json: await d.vms.start(name(ctx), await ctx.json()) }) },
    { method: 'POST', path: '/v1/vms/{name}/stop', handler: async (ctx) => ({ json: await d.vms.stop(name(ctx), await ctx.json()) }) },
    { method: 'POST', path: '/v1/vms/{name}/pause', handler: async (ctx) => ({ json: await d.vms.pause(name(ctx)) }) },
    { method: 'POST', path: '/v1/vms/{name}/resume', handler: async (ctx) => ({ json: await d.vms.resume(name(ctx)) }) },
    { method: 'POST', path: '/v1/vms/{name}/suspend', handler: async (ctx) => ({ json: await d.vms.suspend(name(ctx)) }) },
    { method: 'POST', path: '/v1/vms/{name}/discard-state', handler: async (ctx) => ({ json: await d.vms.discardState(name(ctx), await ctx.json()) }) },
    { method: 'GET', path: '/v1/vms/{name}/screenshot', handler: async (ctx) => ({ bytes: await d.vms.screenshot(name(ctx)), type: 'image/png' }) },
    {
      method: 'GET', path: '/v1/vms/{name}/serial', handler: (ctx) => {
        const { fd, size } = d.vms.serial(name(ctx));
        ctx.res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size, 'cache-control': 'no-store' });
        if (size === 0) { fs.closeSync(fd); ctx.res.end(); return 'streamed'; }
        // What the log held when asked (it may grow meanwhile): exactly `size` bytes.
        fs.createReadStream('', { fd, start: 0, end: size - 1 }).on('error', () => ctx.res.destroy()).pipe(ctx.res);
        return 'streamed';
      },
    },
    {
      method: 'GET', path: '/v1/events', handler: (ctx) => {
        const since = parseCursor(ctx.query.get('since'));
        const vm = ctx.query.get('vm');
        if (vm !== null) checkVmName(vm);
        const res = ctx.res;
        d.events.checkRoom();
        res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'x-medv-cursor': String(d.events.cursor) });
        res.flushHeaders();
        const sub = d.events.subscribe(res, { since, filter: vm === null ? undefined : (e) => e.vm === vm || (e.vm === undefined && e.type !== 'serial') });
        res.once('close', () => sub.close());
        return 'streamed';
      },
    },
    { method: 'GET', path: '/v1/workspaces', handler: async (ctx) => ({ json: await workspaceBackend(d).list(checkBody(Object.fromEntries(ctx.query), { clientRoot: 'abspath' }, 'query'), workspaceContext(d)) }) },
    { method: 'GET', path: '/v1/workspaces/{name}', handler: async (ctx) => ({ json: await workspaceBackend(d).status(ctx.params.name, checkBody(Object.fromEntries(ctx.query), { clientRoot: 'abspath' }, 'query'), workspaceContext(d, ctx.params.name)) }) },
    { method: 'POST', path: '/v1/workspaces/{name}/start', handler: async (ctx) => ({ json: await workspaceBackend(d).start(ctx.params.name, checkBody(await ctx.json(), WS_START), workspaceContext(d, ctx.params.name)) }) },
    { method: 'POST', path: '/v1/workspaces/{name}/stop', handler: async (ctx) => ({ json: await workspaceBackend(d).stop(ctx.params.name, checkBody(await ctx.json(), WS_STOP), workspaceContext(d, ctx.params.name)) }) },
  ];
}
