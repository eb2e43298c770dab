/**
 * One client connection: the handshake, then transmission, over one socket; and how it ends.
 *
 * - The handshake must reach transmission within `handshakeTimeoutMs`, and its replies are not read
 *   ahead of the client by more than HANDSHAKE_OUTPUT_LIMIT bytes (a client that sends options and
 *   never reads the answers stops being read).
 * - Ending: gracefully (answer what is in flight, end our side, and destroy the socket if the peer
 *   has not closed its side END_GRACE_MS later), or at once (destroy) for hostile input, timeouts
 *   and server shutdown past its grace period. When the socket closes, everything the connection
 *   holds goes back to the server's budget at once.
 */
import type * as net from 'node:net';
import type { BlockDevice } from '../block/device.js';
import type { ByteBudget } from './budget.js';
import { ByteQueue } from './bytequeue.js';
import { Handshake } from './handshake.js';
import type { NbdServerOptions, ServerLimits } from './options.js';
import type { BufferPool } from '../block/pool.js';
import * as P from './protocol.js';
import { Transmission } from './transmission.js';
import { readIntoUserBuffers } from './userbuffer.js';

/** Size of a receive buffer outside WRITE payloads (what Node allocates per read by default). */
const READ_CHUNK = 64 * 1024;
/** Time allowed for a peer to close its side after we ended ours. */
const END_GRACE_MS = 2000;
/** Unsent handshake replies above which the socket stops being read. */
const HANDSHAKE_OUTPUT_LIMIT = 256 * 1024;

export interface ConnectionShared {
  device: BlockDevice;
  opts: NbdServerOptions;
  limits: ServerLimits;
  budget: ByteBudget;
  pool: BufferPool;
  log: (msg: string) => void;
  /** Called once when the connection leaves the handshake (to transmission or closed). */
  leftHandshake: () => void;
}

export class Connection {
  private readonly q = new ByteQueue(P.OPTION_HEADER_SIZE + P.REQUEST_SIZE);
  private handshake: Handshake | undefined;
  private tx: Transmission | undefined;
  private isClosed = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private endTimer: NodeJS.Timeout | undefined;
  private handshakePaused = false;
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  private readonly socket: net.Socket;

  /** `accepted` comes from a server created with `pauseOnConnect` (see userbuffer.ts). */
  constructor(accepted: net.Socket, private readonly sh: ConnectionShared) {
    this.closed = new Promise((r) => { this.resolveClosed = r; });
    const direct = readIntoUserBuffers(accepted, {
      // A WRITE payload being received takes the bytes straight into its buffer; anything else
      // goes into a fresh chunk that the queue then owns (as Node's own reads would).
      buffer: () => this.tx?.directTarget() ?? Buffer.allocUnsafe(READ_CHUNK),
      received: (n, buf) => {
        if (this.tx?.isDirectTarget(buf)) this.tx.receivedDirect(n);
        else this.onData(buf.subarray(0, n));
      },
    }, true);
    const socket = this.socket = direct ?? accepted;
    if (!direct) {
      socket.on('data', (chunk: Buffer) => this.onData(chunk));
      socket.resume();
    }
    socket.setNoDelay?.(true);
    socket.on('drain', () => this.onDrain());
    socket.on('error', (e) => sh.log(`nbd: connection error: ${e.message}`));
    socket.on('end', () => this.onEnd());
    socket.on('close', () => this.onClose());
    this.handshakeTimer = setTimeout(() => this.disconnect(`no transmission after ${sh.limits.handshakeTimeoutMs} ms`), sh.limits.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.handshake = new Handshake({
      write: (b) => { if (!this.isClosed) this.socket.write(b); },
      disconnect: (reason) => this.disconnect(reason),
      end: () => this.endGracefully(),
    }, sh.device, sh.opts, sh.limits.sizes);
  }

  get inHandshake(): boolean { return this.handshake !== undefined; }

  /** Server shutdown: a connection in the handshake is dropped; one in transmission finishes what is in flight. */
  shutdown(): void {
    if (this.isClosed) return;
    if (this.tx) this.tx.shutdown();
    else this.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Resolves once no device operation started for this connection is running. */
  settled(): Promise<void> { return this.tx ? this.tx.settled() : Promise.resolve(); }

  private onData(chunk: Buffer): void {
    if (this.isClosed) return;
    this.q.push(chunk);
    if (this.tx) return this.tx.pump();
    this.pumpHandshake();
  }

  private pumpHandshake(): void {
    const hs = this.handshake;
    if (!hs) return;
    let done;
    try {
      done = hs.pump(this.q);
    } catch (e) {
      this.sh.log(`nbd: internal error in the handshake: ${(e as Error)?.stack ?? e}`);
      return this.disconnect('internal error');
    }
    if (done) {
      this.leaveHandshake();
      this.sh.log(`nbd: client connected (size ${done.info.size}, ${done.info.readOnly ? 'read-only' : 'read-write'}`
        + `${done.structured ? ', structured replies' : ''}${done.allocationContext ? ', base:allocation' : ''})`);
      const l = this.sh.limits;
      this.tx = new Transmission(this.socket, this.q, {
        ...done, device: this.sh.device, maxInFlight: l.maxInFlight, maxBytes: l.maxConnectionBytes,
        budget: this.sh.budget, pool: this.sh.pool, log: this.sh.log,
      }, (hard) => (hard ? this.destroy() : this.endGracefully()));
      if (this.handshakePaused) {
        this.handshakePaused = false;
        this.socket.resume();
      }
      this.tx.pump();
      return;
    }
    if (!this.isClosed && this.handshake && this.socket.writableLength > HANDSHAKE_OUTPUT_LIMIT && !this.handshakePaused) {
      this.handshakePaused = true;
      this.socket.pause();
    }
  }

  private onDrain(): void {
    if (this.handshakePaused) {
      this.handshakePaused = false;
      this.socket.resume();
      this.pumpHandshake();
    }
  }

  private leaveHandshake(): void {
    if (!this.handshake) return;
    this.handshake = undefined;
    clearTimeout(this.handshakeTimer);
    this.sh.leftHandshake();
  }

  private disconnect(reason: string): void {
    if (this.isClosed) return;
    this.sh.log(`nbd: ${reason}, disconnecting`);
    this.q.clear();
    this.destroy();
  }

  private endGracefully(): void {
    if (this.isClosed || this.endTimer) return;
    this.socket.end();
    this.endTimer = setTimeout(() => this.destroy(), END_GRACE_MS);
    this.endTimer.unref();
  }

  private onEnd(): void {
    if (this.tx) this.tx.onPeerEnd();
    else this.disconnect('client closed during the handshake');
  }

  private onClose(): void {
    this.isClosed = true;
    this.q.clear();
    this.leaveHandshake();
    this.tx?.onClose();
    if (this.endTimer) clearTimeout(this.endTimer);
    this.resolveClosed();
  }
}
