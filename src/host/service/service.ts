/**
 * `medv host`: the resident host service of one user (and one of root), on `<run root>/host.sock`.
 *
 * - One per run root: `<run root>/host.lock` (flock) is taken before anything else and held for the
 *   service's life; a second service (two commands starting one at once) finds it taken and exits
 *   at once, touching nothing. Under the lock a stale socket (a killed service's) is replaced.
 * - The socket: bound in the 0700 run root and made 0600 (only our uid and root can connect), the
 *   peer's uid checked again per connection (./http.ts); or inherited from systemd (socket
 *   activation: LISTEN_PID/LISTEN_FDS, fd 3; contrib/medv-host.socket), the variables removed so
 *   no child inherits them.
 * - VMs are not its children: each runs under its own supervisor (src/host/supervisor-main.ts), so
 *   a service that dies (even SIGKILL) loses none; the next one reads the run folders
 *   (./tracker.ts) and goes on. Pool members and the spare (./pool.ts) end with it (their stdin
 *   closes); a service that stops waits for them to exit (at most 5 s).
 * - It exits after `idleMs` with no VM running, no request in progress and no event stream open,
 *   and when its socket file is removed or replaced (its run root deleted).
 */
import * as fs from 'node:fs';
import { connect } from 'node:net';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { lockExclusive } from '../../block/flock.js';
import { MedvError } from '../../core/errors.js';
import { ensurePrivateDir, readBoundedSync, writeFileAtomicSync } from '../../core/fsio.js';
import { runRoot } from '../../core/paths.js';
import { EventLog } from './events.js';
import { createHostHttp } from './http.js';
import { KeyCache } from './keys.js';
import { WarmPool } from './pool.js';
import { hostRoutes, type WorkspaceBackend } from './routes.js';
import { VmTracker } from './tracker.js';
import { VmOps } from './vms.js';

export const HOST_SOCKET = 'host.sock';
export const HOST_LOCK = 'host.lock';
const HOST_EPOCH = 'host.epoch';

/** `<run root>/host.sock`. */
export function hostSocketPath(root = runRoot()): string { return join(root, HOST_SOCKET); }

export interface ServiceOptions {
  root?: string;
  /** Warm pool members (default 1; 0: none). */
  pool?: number;
  /** Spare supervisors without QEMU for starts no member fits (./pool.ts; default 1, 0: none). */
  spare?: number;
  /** Memory the pool's members and spare may hold together, MiB (default a quarter of the host's RAM, at most 2048). */
  poolMemoryMiB?: number;
  /** Exit after this long with nothing to do (default 5 minutes). */
  idleMs?: number;
  workspaces?: WorkspaceBackend;
  /** Say `ready <pid>` on this descriptor once listening (the command that started us waits for it). */
  readyFd?: number;
  log?: (line: string) => void;
}

export interface RunningService {
  /** Resolves when the service has stopped (with why). */
  readonly done: Promise<string>;
  stop(why?: string): void;
}

export const DEFAULT_IDLE_MS = 5 * 60_000;

/** Start the service; undefined when another one holds this run root (it is left alone). */
export async function runService(o: ServiceOptions = {}): Promise<RunningService | undefined> {
  const root = o.root ?? runRoot();
  const log = o.log ?? ((line: string) => process.stderr.write(`medv host: ${line}\n`));
  ensurePrivateDir(root, true);
  const lockPath = join(root, HOST_LOCK);
  let lockFd: number;
  try {
    lockFd = lockExclusive(lockPath, 'the host service\'s lock');
  } catch (e) {
    if (e instanceof MedvError && e.code === 'EBUSY') return undefined;
    throw e;
  }

  // Cursors grow across restarts: each service of this run root has the next epoch.
  const epochFile = join(root, HOST_EPOCH);
  const last = Number(readBoundedSync(epochFile, 32, 'host.epoch')?.toString('latin1').trim() ?? '0');
  const epoch = Number.isSafeInteger(last) && last >= 0 && last < 2 ** 20 - 1 ? last + 1 : 1;
  writeFileAtomicSync(epochFile, `${epoch}\n`, { mode: 0o600 });

  const events = new EventLog(epoch);
  const tracker = new VmTracker(root, events);
  const keys = new KeyCache();
  const poolSize = o.pool ?? 1;
  const pool = new WarmPool({
    root, size: poolSize, spare: o.spare ?? 1, memoryMiB: o.poolMemoryMiB ?? Math.min(2048, Math.floor(totalmem() / 1048576 / 4)), log,
    onReady: (m) => events.emit('service', { what: 'pool', supervisorPid: m.supervisorPid, qemuPid: m.qemuPid, memoryMiB: m.shape.memoryMiB, incoming: m.shape.incoming }),
    onSpareReady: (m) => events.emit('service', { what: 'spare', supervisorPid: m.supervisorPid }),
  });
  const vms = new VmOps({ root, pool, keys, tracker, events, log });
  const startedAt = new Date().toISOString();
  const idleMs = o.idleMs ?? DEFAULT_IDLE_MS;
  let lastActivity = Date.now();
  let stopping: ((why: string) => void) | undefined;
  const done = new Promise<string>((r) => { stopping = r; });

  const activated = process.env.LISTEN_PID === String(process.pid) && Number(process.env.LISTEN_FDS) >= 1;
  for (const k of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES']) delete process.env[k];
  const socketPath = hostSocketPath(root);

  const http = createHostHttp(hostRoutes({
    root, vms, keys, events, workspaces: o.workspaces,
    stop: () => service.stop('asked to stop'),
    host: () => ({
      pid: process.pid, startedAt, runRoot: root, socket: socketPath, socketActivated: activated, epoch, cursor: events.cursor,
      idleSeconds: Math.round(idleMs / 1000), pool: pool.status(), keys: keys.status(),
      vms: { total: tracker.list().length, running: tracker.list().filter((s) => !['stopped', 'suspended', 'failed'].includes(s.state)).length },
      connections: http.connections, eventStreams: events.subscriberCount,
    }),
  }), { log, onRequest: () => { lastActivity = Date.now(); } });

  let socketIno: number | undefined;
  if (activated) {
    await new Promise<void>((res, rej) => { http.server.once('error', rej); http.server.listen({ fd: 3 }, () => res()); });
  } else {
    // Under the lock: a socket file here is a dead service's.
    fs.rmSync(socketPath, { force: true });
    await new Promise<void>((res, rej) => { http.server.once('error', rej); http.server.listen(socketPath, () => res()); });
    fs.chmodSync(socketPath, 0o600);
    socketIno = fs.lstatSync(socketPath).ino;
  }
  tracker.start();
  events.emit('service', { what: 'started', pid: process.pid, pool: poolSize });
  pool.use(); // the spare, ready for the first start
  log(`listening on ${socketPath}${activated ? ' (socket activation)' : ''}, pool ${poolSize}, spare ${pool.status().spare.size}, idle exit after ${Math.round(idleMs / 1000)} s`);

  const timer = setInterval(() => {
    if (socketIno !== undefined) {
      let ino: number | undefined;
      try { ino = fs.lstatSync(socketPath).ino; } catch { ino = undefined; }
      if (ino !== socketIno) { service.stop('its socket was removed'); return; }
    }
    if (!tracker.busy() && http.active === 0 && Date.now() - lastActivity > idleMs) service.stop(`idle for ${Math.round(idleMs / 1000)} s with no VM`);
  }, Math.min(5000, Math.max(250, idleMs / 4)));
  timer.unref();

  let stopped = false;
  const service: RunningService = {
    done,
    stop(why = 'asked to stop') {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      log(`stopping: ${why} (VMs keep running)`);
      events.emit('service', { what: 'stopping', why });
      http.server.close();
      events.closeAll();
      http.closeAll();
      const poolClosed = pool.close();
      tracker.stop();
      void Promise.all([keys.close(), poolClosed]).finally(() => {
        if (socketIno !== undefined) {
          try { if (fs.lstatSync(socketPath).ino === socketIno) fs.rmSync(socketPath, { force: true }); } catch { /* gone */ }
        }
        fs.closeSync(lockFd);
        stopping!(why);
      });
    },
  };

  if (o.readyFd !== undefined) {
    try { fs.writeSync(o.readyFd, `ready ${process.pid}\n`); fs.closeSync(o.readyFd); } catch { /* the starter is gone */ }
  }
  return service;
}

/** Is a service listening on this run root's socket? (A connect, nothing sent.) */
export function serviceListening(root = runRoot()): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(hostSocketPath(root));
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}
