/**
 * The listening side: the socket file, admission of connections, and shutdown.
 *
 * The socket file never exists with the process umask's modes where others can reach it: it is bound
 * inside a fresh private (0700) directory next to the target, made 0600 there, then renamed into
 * place (rename is atomic), and the directory removed. A socket path that does not fit a unix socket
 * address (107 bytes) is refused before anything is created. A stale socket file (nobody listening)
 * is replaced; a live one or a non-socket is refused with EEXIST.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import type { BlockDevice } from '../block/device.js';
import { MedvError } from '../core/errors.js';
import { rename, renameSync } from '../core/fsio.js';
import { ByteBudget } from './budget.js';
import { Connection } from './connection.js';
import { resolveLimits, type NbdServerOptions } from './options.js';
import { BufferPool } from '../block/pool.js';

export type { NbdServerOptions } from './options.js';

export interface NbdServer {
  readonly socketPath: string;
  /** Number of open client connections. */
  connections(): number;
  /** Bytes held for clients now (payloads, read data, unsent replies), over all connections. */
  heldBytes(): number;
  /** Stop listening; let connections finish their in-flight requests for up to `closeGraceMs`, then
   *  destroy the rest; remove the socket file. Does NOT close the device. */
  close(): Promise<void>;
}

/** sun_path holds 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;
/** Bytes of idle WRITE payload buffers kept per server. */
const POOL_LIMIT = 64 * 1024 * 1024;
const PRIVATE_PREFIX = '.medv-nbd-';

/** Refuse a socket path the kernel would truncate (EINVAL_ARG), before anything is created. */
export function checkSocketPath(path: string): void {
  const n = Buffer.byteLength(path);
  if (n === 0) throw new MedvError('EINVAL_ARG', 'the socket path is empty');
  if (n > MAX_SOCKET_PATH) {
    throw new MedvError('EINVAL_ARG', `socket path is ${n} bytes; a unix socket path holds at most ${MAX_SOCKET_PATH} (use a shorter path)`, { file: path });
  }
}

/** Remove a stale socket file left by a dead server; refuse to touch a live one or a non-socket. */
async function clearStaleSocket(path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = await fs.promises.lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new MedvError('EEXIST', `${path} exists and is not a socket`, { file: path });
  const live = await new Promise<boolean>((res) => {
    const s = net.connect(path);
    s.once('connect', () => { s.destroy(); res(true); });
    s.once('error', () => res(false));
  });
  if (live) throw new MedvError('EEXIST', `a server is already listening on ${path}`, { file: path });
  await fs.promises.unlink(path).catch(() => undefined);
}

function listen(server: net.Server, path: string): Promise<void> {
  return new Promise<void>((res, rej) => {
    const onError = (e: Error) => rej(e);
    server.once('error', onError);
    server.listen(path, () => { server.off('error', onError); res(); });
  });
}

/**
 * Bind `server` so that `path` appears as a 0600 socket in one step. Returns the socket's inode,
 * so that close() removes only its own file.
 */
async function listenPrivately(server: net.Server, path: string): Promise<number> {
  const dir = dirname(resolve(path));
  let tmp: string;
  try {
    tmp = await fs.promises.mkdtemp(join(dir, PRIVATE_PREFIX)); // mode 0700 whatever the umask
  } catch (e) {
    throw new MedvError('EIO', `cannot create a private directory next to ${path}: ${(e as Error).message}`, { file: path }, { cause: e });
  }
  const inner = join(tmp, 's');
  try {
    if (Buffer.byteLength(inner) > MAX_SOCKET_PATH) {
      throw new MedvError('EINVAL_ARG', `the directory of ${path} is too deep to bind a socket safely (${Buffer.byteLength(inner)} bytes with the private directory; at most ${MAX_SOCKET_PATH}): use a shorter path`, { file: path });
    }
    await listen(server, inner);
    try {
      await fs.promises.chmod(inner, 0o600);
      await rename(inner, path); // a socket node, moved in one step (src/core/fsio.ts keeps every rename)
    } catch (e) {
      server.close();
      throw e;
    }
    return (await fs.promises.lstat(path)).ino;
  } catch (e) {
    if (e instanceof MedvError) throw e;
    throw new MedvError('EIO', `cannot listen on ${path}: ${(e as Error).message}`, { file: path }, { cause: e });
  } finally {
    await fs.promises.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * A socket that listens before there is anything to serve: clients that connect meanwhile wait
 * (nothing is read from them or sent to them, so an NBD client waits in its handshake) until
 * serve() hands over the device, or are disconnected by close(). This lets a VM's supervisor start
 * QEMU while it is still opening (and locking) the disk: no guest I/O can happen before serve().
 */
export interface NbdListener {
  readonly socketPath: string;
  /**
   * Give the socket another name (same file system), before or after serve(): the bound socket and
   * its clients stay; only its name moves (a pooled VM's, from the pool's folder into its run
   * folder, once QEMU has connected). close() and the server remove the new name.
   */
  relocate(to: string): void;
  /** Serve `device` to the clients waiting and to every later one. Once only. */
  serve(device: BlockDevice, opts: Omit<NbdServerOptions, 'socketPath'>): NbdServer;
  /** Disconnect the waiting clients, stop listening and remove the socket file (when not serving). */
  close(): Promise<void>;
}

/** Clients held before serve(); more are refused (only the run folder's owner can connect). */
const MAX_WAITING = 16;

/** Bind a 0600 unix socket at `socketPath` now; serve a device on it later (NbdListener). `log` is told of clients held. */
export async function bindNbd(socketPath: string, opts: { log?: (line: string) => void } = {}): Promise<NbdListener> {
  checkSocketPath(socketPath);
  if (basename(socketPath).startsWith(PRIVATE_PREFIX)) throw new MedvError('EINVAL_ARG', `socket names starting with ${PRIVATE_PREFIX} are reserved`, { file: socketPath });
  await clearStaleSocket(socketPath);
  const waiting: net.Socket[] = [];
  let accept: ((socket: net.Socket) => void) | undefined;
  let closed = false;
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
    if (accept) { accept(socket); return; }
    if (closed || waiting.length >= MAX_WAITING) { socket.destroy(); return; }
    socket.on('error', () => undefined);
    waiting.push(socket);
    log(`nbd: a client waits on ${socketPath} until the disk is open`);
  });
  let log: (line: string) => void = opts.log ?? (() => undefined);
  server.on('error', (e) => log(`nbd: server error: ${e.message}`));
  const ino = await listenPrivately(server, socketPath);
  let served: NbdServer | undefined;
  const where = { path: socketPath };
  return {
    get socketPath() { return where.path; },
    relocate(to) {
      if (closed) throw new MedvError('EINVAL_ARG', `${where.path} is closed`, { file: where.path });
      checkSocketPath(to);
      renameSync(where.path, to); // a socket node: the same bound socket under its new name
      where.path = to;
    },
    serve(device, opts) {
      if (served || closed) throw new MedvError('EINVAL_ARG', `${where.path} is already ${closed ? 'closed' : 'serving'}`, { file: where.path });
      log = opts.log ?? log;
      const serving = startServing(server, ino, device, { ...opts, socketPath: where.path }, where);
      served = serving.server;
      accept = (socket) => { socket.removeAllListeners('error'); serving.admit(socket); };
      for (const socket of waiting.splice(0)) {
        if (socket.destroyed) continue;
        accept(socket);
      }
      return served;
    },
    async close() {
      if (served) return served.close();
      closed = true;
      for (const socket of waiting.splice(0)) socket.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      const st = await fs.promises.lstat(where.path).catch(() => undefined);
      if (st?.isSocket() && st.ino === ino) await fs.promises.unlink(where.path).catch(() => undefined);
    },
  };
}

/** Serve `device` over NBD on a unix socket (mode 0600). Resolves once the socket is listening. */
export async function serveNbd(device: BlockDevice, opts: NbdServerOptions): Promise<NbdServer> {
  resolveLimits(device, opts); // options are checked before anything is created
  const listener = await bindNbd(opts.socketPath);
  const server = listener.serve(device, opts);
  (opts.log ?? (() => undefined))(`nbd: listening on ${opts.socketPath}`);
  return server;
}

/** The serving side of a bound listener: admission, connections, shutdown. */
function startServing(server: net.Server, ino: number, device: BlockDevice, opts: NbdServerOptions, where: { path: string } = { path: opts.socketPath }): { server: NbdServer; admit: (socket: net.Socket) => void } {
  const log = opts.log ?? (() => undefined);
  const limits = resolveLimits(device, opts);
  const conns = new Set<Connection>();
  const budget = new ByteBudget(limits.maxTotalBytes);
  const pool = new BufferPool(POOL_LIMIT);
  let handshakes = 0;
  let closing: Promise<void> | undefined;

  const admit = (socket: net.Socket) => {
    if (closing || handshakes >= limits.maxHandshakes) {
      if (!closing) log(`nbd: ${handshakes} clients already in the handshake, refusing another`);
      socket.destroy();
      return;
    }
    handshakes++;
    let left = false;
    const conn = new Connection(socket, {
      device, opts, limits, budget, pool, log,
      leftHandshake: () => { if (!left) { left = true; handshakes--; } },
    });
    conns.add(conn);
    void conn.closed.then(() => conns.delete(conn));
  };
  const nbd: NbdServer = {
    get socketPath() { return where.path; },
    connections: () => conns.size,
    heldBytes: () => budget.inUse,
    close(): Promise<void> {
      closing ??= (async () => {
        const stopped = new Promise<void>((r) => server.close(() => r()));
        const all = [...conns];
        for (const c of all) c.shutdown();
        const timer = setTimeout(() => {
          for (const c of conns) c.destroy();
        }, limits.closeGraceMs);
        await Promise.all(all.map((c) => c.closed));
        clearTimeout(timer);
        await Promise.all(all.map((c) => c.settled()));
        await stopped;
        const st = await fs.promises.lstat(where.path).catch(() => undefined);
        if (st?.isSocket() && st.ino === ino) await fs.promises.unlink(where.path).catch(() => undefined);
        log(`nbd: stopped listening on ${where.path}`);
      })();
      return closing;
    },
  };
  return { server: nbd, admit };
}
