/**
 * The transmission phase of one connection, and how it ends. Its parts, one file each:
 * framing.ts (the request stream), budget.ts (what a request holds), dispatch.ts (checks, the
 * device, FLUSH ordering), replies.ts (the reply queue; slabs.ts and sendfile.ts for READs). This
 * file admits requests, counts the device operations in flight, and runs the end.
 *
 * Admission: before a request is taken off the stream, the bytes it will hold (its WRITE payload
 * until the device wrote it; its READ data from the device read until the kernel took the reply;
 * its reply header) are taken from this connection's allowance and from the server-wide ByteBudget,
 * and it must fit under maxInFlight. Otherwise the socket stops being read until bytes come back, so
 * a client that sends requests and never reads replies holds at most its allowance.
 *
 * The end: graceful (shutdown(), the client's DISC or its end of the stream) stops reading, answers
 * what is in flight, writes every queued reply, then calls `finish(false)`; hard (a stream out of
 * sync, a READ that failed after part of its reply went out) at once, `finish(true)`. When the
 * socket closes, everything the connection holds goes back to the server's budget at once.
 */
import type * as net from 'node:net';
import type { BlockDevice } from '../block/device.js';
import type { BufferPool } from '../block/pool.js';
import type { MedvError } from '../core/errors.js';
import { Allowance, type ByteBudget, requestBytes } from './budget.js';
import type { ByteQueue } from './bytequeue.js';
import { type DispatchOwner, Dispatcher } from './dispatch.js';
import { RequestReader } from './framing.js';
import type { Negotiated } from './handshake.js';
import { REPLY_OVERHEAD } from './options.js';
import type * as P from './protocol.js';
import { Replies, type ReplyOwner } from './replies.js';

export interface TransmissionSetup extends Negotiated {
  device: BlockDevice;
  maxInFlight: number;
  /** This connection's allowance of held bytes. */
  maxBytes: number;
  budget: ByteBudget;
  pool: BufferPool;
  log: (msg: string) => void;
}

type State = 'open' | 'closing' | 'closed';

export class Transmission {
  private state: State = 'open';
  readonly allowance: Allowance;
  private readonly reader: RequestReader;
  private readonly replies: Replies;
  private readonly dispatcher: Dispatcher;
  private inflight = 0;
  private paused = false;
  private pumping = false;
  private settledResolve: (() => void) | undefined;

  constructor(
    private readonly socket: net.Socket,
    q: ByteQueue,
    private readonly s: TransmissionSetup,
    /** End the connection once everything queued is written (graceful) or at once (hard). */
    private readonly finish: (hard: boolean) => void,
  ) {
    this.allowance = new Allowance(s.budget, s.maxBytes, () => this.maybeResume());
    const owner: ReplyOwner & DispatchOwner = {
      allowance: this.allowance,
      closing: () => this.state === 'closing',
      written: () => this.progress(),
      opStarted: () => { this.inflight++; },
      opSettled: () => this.opSettled(),
      hardClose: () => this.hardClose(),
      disconnect: () => this.beginClosing(),
      log: s.log,
    };
    this.replies = new Replies(socket, s.device, s.pool, s.structured, owner);
    this.dispatcher = new Dispatcher(s, s.device, s.pool, this.replies, owner);
    this.reader = new RequestReader(q, s.pool, {
      admit: (req) => this.admit(req),
      refuseWrite: (req, held) => this.refuseWrite(req, held),
      request: (req, payload, pooled, held) => this.dispatcher.dispatch(req, payload, pooled, held),
      refused: (req, e) => this.replies.error(req.type, req.handleHi, req.handleLo, e, REPLY_OVERHEAD),
      lost: (e) => {
        s.log(`nbd: ${e.message}, disconnecting`);
        this.hardClose();
      },
      ended: () => this.beginClosing(),
    });
  }

  /** Bytes held now (tests and logs). */
  get heldBytes(): number { return this.allowance.heldBytes; }

  /** Resolves once no device operation of this connection is running. */
  settled(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => { this.settledResolve = r; });
  }

  // --- input -----------------------------------------------------------------------------------

  /** See RequestReader.directTarget (userbuffer.ts). */
  directTarget(): Buffer | undefined { return this.reader.directTarget(); }

  isDirectTarget(buf: Buffer): boolean { return this.reader.isDirectTarget(buf); }

  /** `n` bytes arrived in the direct target. */
  receivedDirect(n: number): void {
    this.reader.receivedDirect(n);
    this.pump();
  }

  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      this.reader.read();
    } catch (e) {
      // A bug, not a protocol error (those are handled where they are detected): never crash the process.
      this.s.log(`nbd: internal error, dropping connection: ${(e as Error)?.stack ?? e}`);
      this.hardClose();
    } finally {
      this.pumping = false;
    }
  }

  /** Take the bytes `req` will hold, or stop reading until they (and a slot in flight) are free. */
  private admit(req: P.Request): number | undefined {
    const need = requestBytes(req, this.s.info.sizes.maximum);
    if (this.inflight >= this.s.maxInFlight || !this.allowance.fits(need)) {
      if (!this.paused) {
        this.paused = true;
        this.socket.pause();
      }
      return undefined;
    }
    this.allowance.take(need);
    return need;
  }

  /** A refused WRITE keeps only its reply's bytes: its payload is skipped, never buffered. */
  private refuseWrite(req: P.Request, held: number): MedvError | undefined {
    const refused = this.dispatcher.check(req);
    if (refused) this.allowance.give(held - REPLY_OVERHEAD);
    return refused;
  }

  private maybeResume(): void {
    if (this.state !== 'open' || !this.paused) return;
    this.paused = false;
    this.socket.resume();
    this.pump();
  }

  // --- progress ----------------------------------------------------------------------------------

  private opSettled(): void {
    this.inflight--;
    if (this.inflight === 0 && this.settledResolve) {
      const r = this.settledResolve;
      this.settledResolve = undefined;
      r();
    }
    this.progress();
  }

  /** Bytes came back or replies went out: read on, or end once all is answered. */
  private progress(): void {
    if (this.state === 'closing') this.maybeFinish();
    else this.maybeResume();
  }

  // --- the end -----------------------------------------------------------------------------------

  /** Stop taking requests; end the connection once in-flight requests are answered. */
  shutdown(): void {
    if (this.state !== 'open') return;
    this.beginClosing();
  }

  /** The client shut its side (a soft end, like DISC): requests it sent are still answered. */
  onPeerEnd(): void {
    if (this.state !== 'open') return;
    this.reader.end();
    this.pump();
  }

  private beginClosing(): void {
    this.state = 'closing';
    this.allowance.give(this.reader.stop()); // a payload being received: no reply will be sent for it
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.state !== 'closing' || this.inflight > 0) return;
    this.replies.flush();
    // Range replies wait for earlier writes: finish once they went out too (a write's callback comes back here).
    if (!this.replies.idle) return;
    this.state = 'closed';
    this.replies.close();
    this.finish(false);
  }

  private hardClose(): void {
    this.state = 'closed';
    this.replies.close();
    this.allowance.give(this.reader.stop());
    this.finish(true);
  }

  /** The socket is gone: everything this connection holds goes back to the budget at once. */
  onClose(): void {
    this.state = 'closed';
    this.allowance.give(this.reader.stop());
    this.replies.discard();
    this.allowance.releaseAll();
  }
}
