/**
 * The transmission phase of one connection: requests are parsed as they arrive, validated once
 * (validateRequest), run concurrently against the device and answered as they complete, in any
 * order: simple replies, or structured replies for READ and BLOCK_STATUS once the client
 * negotiated them.
 *
 * Memory: before a request is admitted, the bytes it will hold (its WRITE payload until the device
 * wrote it; its READ data from the device read until the kernel took the reply; its reply header)
 * are taken from this connection's allowance and from the server-wide ByteBudget. When either is
 * short, the socket stops being read until bytes come back, so a client that sends requests and
 * never reads replies holds at most its allowance.
 *
 * Ordering: NBD_CMD_FLUSH waits for every write-type request of this connection received before it,
 * then calls device.flush(), which makes all completed writes (of every connection: they share the
 * device) durable. So a flush covers every write replied to before the flush arrived (proto.md,
 * "Ordering of messages and writes"), and CAN_MULTI_CONN is safe to advertise.
 */
import type * as net from 'node:net';
import type { BlockDevice } from '../block/device.js';
import { readInto, writeThenFlush, writeZeroesByWriting } from '../block/emulate.js';
import { validateRequest, type RequestOp } from '../block/validate.js';
import { MedvError } from '../core/errors.js';
import { rangeCached, sendfileSocket, sendRange } from './sendfile.js';
import type { ByteBudget } from './budget.js';
import type { ByteQueue } from './bytequeue.js';
import { nbdErrno } from './errno.js';
import { toDescriptors } from './extents.js';
import type { Negotiated } from './handshake.js';
import { MAX_DESCRIPTORS, REPLY_OVERHEAD, STATUS_RESERVE } from './options.js';
import type { BufferPool } from '../block/pool.js';
import * as P from './protocol.js';

/** Replies totalling at most this many bytes are coalesced into one buffer before writing. */
const COALESCE_LIMIT = 256 * 1024;
/** READs from this size are sent from the page cache when the device has them as a file range (sendfile.ts). */
const DIRECT_MIN = 64 * 1024;
/** When the socket fills up midway through a range reply, this much of the rest goes through Node:
 *  its write's callback says when the socket takes more. */
const PROBE = 4096;
/** READs below this size are offered to the device's readIntoNow(), straight into an output slab. */
const NOW_MAX = 64 * 1024;
/** Size of an output slab: replies read now are laid out one after another in it, header then data. */
const SLAB_SIZE = 256 * 1024;
const EMPTY = Buffer.alloc(0);

/**
 * Memory the replies of readIntoNow() are built in: consecutive replies are adjacent, so a turn's
 * worth of them goes to the socket as one buffer, without a copy. `refs` counts the replies in it
 * the kernel has not taken yet; once that is 0 the slab goes back to the server's buffer pool (an
 * idle connection holds none). Every byte in use belongs to a reply whose bytes were taken from the
 * allowance at admission, so a connection's slabs exceed its held bytes by at most one slab's slack.
 */
interface Slab {
  buf: Buffer;
  used: number;
  refs: number;
}

/** One queued reply: its buffers, or (`range`) a READ the device sends from the page cache. */
interface Reply {
  bufs: Buffer[];
  /** Bytes given back once the kernel took the reply. */
  release: number;
  /** A buffer of the pool among `bufs`, returned once written. */
  pooled?: Buffer;
  /** The slab `bufs` lies in (a reply read now). */
  slab?: Slab;
  range?: { hi: number; lo: number; offset: number; length: number };
}

export interface TransmissionSetup extends Negotiated {
  device: BlockDevice;
  maxInFlight: number;
  /** This connection's allowance of held bytes. */
  maxBytes: number;
  budget: ByteBudget;
  pool: BufferPool;
  log: (msg: string) => void;
}

type State = 'request' | 'payload' | 'skip' | 'closing' | 'closed';

/** Flags each command accepts (FUA is valid on every command once negotiated; DF only with structured replies). */
function allowedFlags(type: number, structured: boolean): number {
  switch (type) {
    case P.NBD_CMD_READ: return P.NBD_CMD_FLAG_FUA | (structured ? P.NBD_CMD_FLAG_DF : 0);
    case P.NBD_CMD_WRITE_ZEROES: return P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE;
    case P.NBD_CMD_BLOCK_STATUS: return P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_REQ_ONE;
    default: return P.NBD_CMD_FLAG_FUA;
  }
}

function opOf(type: number): RequestOp | undefined {
  switch (type) {
    case P.NBD_CMD_READ: return 'read';
    case P.NBD_CMD_WRITE: return 'write';
    case P.NBD_CMD_WRITE_ZEROES: return 'zero';
    case P.NBD_CMD_TRIM: return 'trim';
    case P.NBD_CMD_FLUSH: return 'flush';
    case P.NBD_CMD_BLOCK_STATUS: return 'status';
    default: return undefined;
  }
}

export class Transmission {
  private state: State = 'request';
  private readonly req: P.Request = { flags: 0, type: 0, handleHi: 0, handleLo: 0, offset: 0, length: 0 };
  /** The error to answer once a refused WRITE's payload is skipped. */
  private skipError: MedvError | undefined;
  private payload: Buffer | null = null;
  private payloadFill = 0;
  /** The part of `payload` lent to the socket for the next read (userbuffer.ts). */
  private direct: Buffer | undefined;
  private skipLeft = 0;
  private inflight = 0;
  /** Bytes this connection holds (taken from the budget too, unless the connection is gone). */
  private held = 0;
  private gone = false;
  /** Write-type requests in flight, for FLUSH ordering. */
  private readonly writes = new Set<Promise<unknown>>();
  /** Replies not yet handed to the socket, in order. */
  private out: Reply[] = [];
  private outScheduled = false;
  /** Where the next reply read now goes. */
  private slab: Slab | undefined;
  /** The socket's descriptor, for READ replies sent from the page cache (sendfile.ts), or -1. */
  private readonly sockFd: number;
  /** A range reply is partly sent (or must be read after all): nothing else is written before its rest. */
  private barrier = false;
  /** awaitWritten() is waiting. */
  private awaiting = false;
  private paused = false;
  private pumping = false;
  /** The client shut its sending side: finish what it sent, then close. */
  private peerEnded = false;
  private settledResolve: (() => void) | undefined;
  private readonly wake = () => this.maybeResume();
  private readonly target: { size: number; readOnly: boolean; description: string };

  constructor(
    private readonly socket: net.Socket,
    private readonly q: ByteQueue,
    private readonly s: TransmissionSetup,
    /** End the connection once everything queued is written (graceful) or at once (hard). */
    private readonly finish: (hard: boolean) => void,
  ) {
    this.target = { size: s.info.size, readOnly: s.info.readOnly, description: s.device.description };
    this.sockFd = sendfileSocket(socket);
  }

  /** Bytes held now (tests and logs). */
  get heldBytes(): number { return this.held; }

  /** Resolves once no device operation of this connection is running. */
  settled(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((r) => { this.settledResolve = r; });
  }

  // --- input -----------------------------------------------------------------------------------

  /**
   * Where the next socket read may go directly: the unfilled rest of the WRITE payload being
   * received, once no queued bytes are ahead of it. Undefined otherwise.
   */
  directTarget(): Buffer | undefined {
    if (this.state !== 'payload' || !this.payload || this.q.length !== 0) return undefined;
    const rest = this.payload.subarray(this.payloadFill);
    this.direct = rest;
    return rest;
  }

  /** Whether `buf` is the buffer directTarget() handed out last (and still the current payload's). */
  isDirectTarget(buf: Buffer): boolean {
    return this.direct !== undefined && buf === this.direct && this.state === 'payload';
  }

  /** `n` bytes arrived in the direct target. */
  receivedDirect(n: number): void {
    this.direct = undefined;
    this.payloadFill += n;
    this.pump();
  }

  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      this.pumpLoop();
    } catch (e) {
      // A bug, not a protocol error (those are handled where they are detected): never crash the process.
      this.s.log(`nbd: internal error, dropping connection: ${(e as Error)?.stack ?? e}`);
      this.hardClose();
    } finally {
      this.pumping = false;
    }
  }

  /** Bytes a request will hold from admission until its reply is sent. */
  private need(req: P.Request): number {
    const max = this.s.info.sizes.maximum;
    switch (req.type) {
      case P.NBD_CMD_READ:
      case P.NBD_CMD_WRITE:
        return REPLY_OVERHEAD + (req.length <= max ? req.length : 0);
      case P.NBD_CMD_BLOCK_STATUS:
        return STATUS_RESERVE;
      default:
        return REPLY_OVERHEAD;
    }
  }

  private admits(need: number): boolean {
    if (this.inflight >= this.s.maxInFlight || this.held + need > this.s.maxBytes) return false;
    if (this.s.budget.fits(need)) return true;
    this.s.budget.wait(this.wake);
    return false;
  }

  private take(n: number): void {
    this.held += n;
    if (!this.gone) this.s.budget.take(n);
  }

  private give(n: number): void {
    if (n === 0) return;
    this.held -= n;
    if (!this.gone) this.s.budget.give(n);
  }

  private pumpLoop(): void {
    const q = this.q;
    for (;;) {
      switch (this.state) {
        case 'request': {
          if (q.length < P.REQUEST_SIZE) {
            if (this.peerEnded) this.beginClosing();
            return;
          }
          const req = this.req;
          try {
            P.decodeRequest(q.peek(P.REQUEST_SIZE), q.peekOffset, req);
          } catch (e) {
            // Out of sync: the stream cannot be trusted any more (proto.md allows a hard disconnect).
            this.s.log(`nbd: ${(e as Error).message}, disconnecting`);
            return this.hardClose();
          }
          const need = this.need(req);
          if (!this.admits(need)) {
            this.pause();
            return;
          }
          q.consume(P.REQUEST_SIZE);
          this.take(need);
          if (req.type === P.NBD_CMD_WRITE) {
            const refused = this.check(req);
            if (refused) {
              // The payload is skipped, never buffered; the error is answered after it.
              this.give(need - REPLY_OVERHEAD);
              this.skipError = refused;
              this.skipLeft = req.length;
              this.state = 'skip';
              break;
            }
            if (q.length >= req.length) {
              this.dispatch(req.type, req.flags, req.handleHi, req.handleLo, req.offset, req.length, q.take(req.length), false, need);
            } else {
              this.payload = this.s.pool.get(req.length);
              this.payloadFill = q.takeInto(this.payload, 0, q.length);
              this.state = 'payload';
            }
            break;
          }
          this.dispatch(req.type, req.flags, req.handleHi, req.handleLo, req.offset, req.length, null, false, need);
          break;
        }
        case 'payload': {
          const payload = this.payload!;
          if (this.payloadFill < payload.length) {
            if (q.length === 0) {
              if (this.peerEnded) this.beginClosing();
              return;
            }
            this.payloadFill += q.takeInto(payload, this.payloadFill, payload.length - this.payloadFill);
            if (this.payloadFill < payload.length) return;
          }
          this.payload = null;
          this.state = 'request';
          const req = this.req;
          this.dispatch(req.type, req.flags, req.handleHi, req.handleLo, req.offset, req.length, payload, true, this.need(req));
          break;
        }
        case 'skip': {
          if (this.skipLeft > 0 && q.length === 0) {
            if (this.peerEnded) this.beginClosing();
            return;
          }
          this.skipLeft -= q.skip(this.skipLeft);
          if (this.skipLeft > 0) return;
          this.state = 'request';
          const req = this.req;
          const e = this.skipError!;
          this.skipError = undefined;
          this.replyError(req.type, req.handleHi, req.handleLo, e, REPLY_OVERHEAD);
          break;
        }
        case 'closing':
        case 'closed':
          q.clear();
          return;
      }
    }
  }

  private pause(): void {
    if (!this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private maybeResume(): void {
    if (this.state !== 'request' || !this.paused) return;
    this.paused = false;
    this.socket.resume();
    this.pump();
  }

  /** The request's error (validated once, here), or undefined. */
  private check(req: P.Request): MedvError | undefined {
    const { type, flags } = req;
    if ((flags & ~allowedFlags(type, this.s.structured)) !== 0) {
      return new MedvError('EINVAL_ARG', `flags 0x${flags.toString(16)} are not valid for ${P.commandName(type)}`);
    }
    const op = opOf(type);
    if (!op) return new MedvError('EUNSUPPORTED', `unsupported ${P.commandName(type)}`);
    if (op === 'trim' && this.s.device.capabilities.trim === 'none' && !this.target.readOnly) {
      return new MedvError('EUNSUPPORTED', 'TRIM is not supported by this export');
    }
    if (op === 'status' && !this.s.allocationContext) {
      return new MedvError('EINVAL_ARG', 'BLOCK_STATUS without a negotiated metadata context');
    }
    try {
      validateRequest(this.target, req.offset, req.length, op, this.s.info.sizes.maximum);
    } catch (e) {
      return e as MedvError;
    }
    return undefined;
  }

  /** Run a validated request against the device; `held` bytes were taken for it at admission. */
  private dispatch(type: number, flags: number, hi: number, lo: number, offset: number, length: number,
    payload: Buffer | null, pooled: boolean, held: number): void {
    if (type === P.NBD_CMD_DISC) {
      this.give(held);
      this.s.log('nbd: client disconnected');
      this.beginClosing();
      return;
    }
    const refused = type === P.NBD_CMD_WRITE ? undefined : this.check(this.req);
    if (refused) {
      this.s.log(`nbd: ${refused.message}`);
      this.give(held - REPLY_OVERHEAD);
      return this.replyError(type, hi, lo, refused, REPLY_OVERHEAD);
    }
    const dev = this.s.device;
    const fua = (flags & P.NBD_CMD_FLAG_FUA) !== 0;
    let op: Promise<Buffer | void>;
    let isWrite = false;
    try {
      switch (type) {
        case P.NBD_CMD_READ: {
          if (length < NOW_MAX && length > 0 && dev.readIntoNow && this.replyReadNow(dev, hi, lo, offset, length, held)) return;
          if (length >= DIRECT_MIN && this.sockFd >= 0 && rangeCached(dev, offset, length)) {
            // All in the page cache: the device sends it when its turn comes (flushOut), no buffer of ours.
            let header: Buffer;
            if (this.s.structured) {
              header = P.encodeOffsetDataHeader(P.NBD_REPLY_FLAG_DONE, hi, lo, offset, length);
            } else {
              header = Buffer.allocUnsafe(P.SIMPLE_REPLY_SIZE);
              P.writeSimpleReply(header, 0, 0, hi, lo);
            }
            this.enqueue({ bufs: [header], release: held, range: { hi, lo, offset, length } });
            return;
          }
          // Read straight into a reused buffer; it goes back to the pool once the kernel took the
          // reply (a failed read's buffer is dropped: a layer may still be filling it).
          const buf = this.s.pool.get(length);
          op = readInto(dev, buf, offset).then(() => buf);
          break;
        }
        case P.NBD_CMD_WRITE: {
          const data = payload!;
          op = writeThenFlush(dev, offset, data, fua ? { fua } : undefined);
          // Back to the pool only on success: a failed write may still have sub-writes reading it.
          if (pooled) op.then(() => this.s.pool.put(data), () => undefined);
          isWrite = true;
          break;
        }
        case P.NBD_CMD_TRIM:
          op = dev.discard(offset, length);
          if (fua) op = op.then(() => dev.flush());
          isWrite = true;
          break;
        case P.NBD_CMD_WRITE_ZEROES:
          // NO_HOLE or not, writeZeroes reads back as zeros; whether it deallocates is the device's choice.
          op = this.writeZeroes(offset, length, fua);
          isWrite = true;
          break;
        case P.NBD_CMD_FLUSH:
          op = this.flushAfter([...this.writes]);
          break;
        case P.NBD_CMD_BLOCK_STATUS:
          op = this.blockStatus(hi, lo, offset, length, (flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0);
          break;
        default:
          throw new MedvError('EINTERNAL', `unexpected ${P.commandName(type)}`);
      }
    } catch (e) {
      op = Promise.reject(e);
    }
    this.inflight++;
    if (isWrite) {
      const tracked = op;
      this.writes.add(tracked);
      op.then(() => this.writes.delete(tracked), () => this.writes.delete(tracked));
    }
    op.then(
      (data) => this.complete(type, hi, lo, offset, data ?? null, held),
      (e) => {
        const errno = nbdErrno(e);
        if (!(e instanceof MedvError) || errno === P.NBD_EIO) {
          this.s.log(`nbd: ${P.commandName(type)} [${offset}, +${length}) failed: ${(e as Error)?.message ?? e}`);
        }
        this.complete(type, hi, lo, offset, e instanceof Error ? e : new Error(String(e)), held);
      },
    );
  }

  /**
   * Answer a READ at once when the device has the data at hand (readIntoNow): its reply, header and
   * data, is laid out in the output slab after the previous one. False when the device declined
   * (the slab space is given back and the caller reads as usual).
   */
  private replyReadNow(dev: BlockDevice, hi: number, lo: number, offset: number, length: number, held: number): boolean {
    const headerSize = this.s.structured ? P.OFFSET_DATA_HEADER_SIZE : P.SIMPLE_REPLY_SIZE;
    const size = headerSize + length;
    let slab = this.slab;
    if (slab && slab.used + size > slab.buf.length) {
      // Full: it goes back to the pool once its last reply is written (dropSlab).
      this.slab = slab = undefined;
    }
    if (!slab) this.slab = slab = { buf: this.s.pool.get(SLAB_SIZE), used: 0, refs: 0 };
    const at = slab.used;
    if (!dev.readIntoNow!(slab.buf.subarray(at + headerSize, at + size), offset)) {
      if (slab.refs === 0) this.dropSlab(slab);
      return false;
    }
    if (this.s.structured) P.writeOffsetDataHeader(slab.buf, at, P.NBD_REPLY_FLAG_DONE, hi, lo, offset, length);
    else P.writeSimpleReply(slab.buf, at, 0, hi, lo);
    slab.used = at + size;
    slab.refs++;
    this.enqueue({ bufs: [slab.buf.subarray(at, at + size)], release: held, slab });
    return true;
  }

  /** A slab none of whose replies is waiting any more goes back to the pool. */
  private dropSlab(slab: Slab): void {
    if (slab === this.slab) this.slab = undefined;
    this.s.pool.put(slab.buf);
  }

  private async writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    const dev = this.s.device;
    const options = fua ? { fua } : undefined;
    if (dev.capabilities.zero === 'none') return writeZeroesByWriting(dev, offset, length, options);
    await dev.writeZeroes(offset, length, dev.capabilities.fua === 'native' ? options : undefined);
    if (fua && dev.capabilities.fua !== 'native') await dev.flush();
  }

  private async flushAfter(writes: Array<Promise<unknown>>): Promise<void> {
    if (writes.length) await Promise.allSettled(writes);
    await this.s.device.flush();
  }

  /** The whole BLOCK_STATUS reply chunk for base:allocation. */
  private async blockStatus(hi: number, lo: number, offset: number, length: number, one: boolean): Promise<Buffer> {
    const dev = this.s.device;
    const extents = dev.extents ? await dev.extents(offset, length) : [{ length, hole: false, zero: false }];
    const descriptors = toDescriptors(extents, offset, length, this.s.info.sizes.minimum, one ? 1 : MAX_DESCRIPTORS);
    return P.encodeBlockStatusChunk(P.NBD_REPLY_FLAG_DONE, hi, lo, this.s.allocationContext, descriptors);
  }

  private complete(type: number, hi: number, lo: number, offset: number, result: Buffer | Error | null, held: number): void {
    this.inflight--;
    if (result instanceof Error) {
      // A failed WRITE's payload (and a READ's reservation) is given back now; the reply keeps its overhead.
      this.give(held - REPLY_OVERHEAD);
      this.replyError(type, hi, lo, result, REPLY_OVERHEAD);
    } else if (type === P.NBD_CMD_READ) {
      this.replyRead(hi, lo, offset, result as Buffer, held);
    } else if (type === P.NBD_CMD_BLOCK_STATUS) {
      this.enqueue({ bufs: [result as Buffer], release: held });
    } else {
      this.give(held - REPLY_OVERHEAD);
      this.replySimple(0, hi, lo, REPLY_OVERHEAD);
    }
    this.afterComplete();
  }

  private afterComplete(): void {
    if (this.inflight === 0 && this.settledResolve) {
      const r = this.settledResolve;
      this.settledResolve = undefined;
      r();
    }
    if (this.state === 'closing') this.maybeFinish();
    else this.maybeResume();
  }

  // --- output ----------------------------------------------------------------------------------

  private replySimple(error: number, hi: number, lo: number, release: number, data?: Buffer): void {
    const h = Buffer.allocUnsafe(P.SIMPLE_REPLY_SIZE);
    P.writeSimpleReply(h, 0, error, hi, lo);
    this.enqueue({ bufs: data && data.length ? [h, data] : [h], release, pooled: data });
  }

  private replyRead(hi: number, lo: number, offset: number, data: Buffer, release: number): void {
    if (!this.s.structured) return this.replySimple(0, hi, lo, release, data);
    // One chunk covers the whole read (so DF is always honoured); an empty read is a NONE chunk.
    if (data.length === 0) return this.enqueue({ bufs: [P.encodeNoneChunk(hi, lo)], release });
    this.enqueue({ bufs: [P.encodeOffsetDataHeader(P.NBD_REPLY_FLAG_DONE, hi, lo, offset, data.length), data], release, pooled: data });
  }

  /** READ and BLOCK_STATUS errors are error chunks once structured replies are negotiated; others simple. */
  private replyError(type: number, hi: number, lo: number, e: Error, release: number): void {
    const errno = nbdErrno(e);
    if (this.s.structured && (type === P.NBD_CMD_READ || type === P.NBD_CMD_BLOCK_STATUS)) {
      this.enqueue({ bufs: [P.encodeErrorChunk(hi, lo, errno, e.message.slice(0, 200))], release });
    } else {
      this.replySimple(errno, hi, lo, release);
    }
  }

  /** Queue a reply (`first`: ahead of the others); its `release` bytes are given back, and its
   *  pooled buffer returned, once the kernel took it. */
  private enqueue(r: Reply, first = false): void {
    if (this.state === 'closed') {
      this.give(r.release);
      return;
    }
    if (first) this.out.unshift(r);
    else this.out.push(r);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (!this.outScheduled) {
      this.outScheduled = true;
      // Coalesce replies completing in the same event-loop turn into one write.
      setImmediate(() => this.flushOut());
    }
  }

  /**
   * Hand the queued replies to the socket, in order. Runs of buffers are written through Node; a
   * range reply is sent by the device (sendfile) only once Node holds nothing unwritten for this
   * socket, so its bytes land right after what was written before (all of this runs on the event
   * loop, and Node writes to the socket only what was queued in it). Otherwise the queue waits for
   * the pending writes (awaitWritten).
   */
  private flushOut(): void {
    this.outScheduled = false;
    if (this.barrier || this.out.length === 0) return;
    const out = this.out;
    if (this.state === 'closed' || !this.socket.writable) {
      this.out = [];
      for (const r of out) this.give(r.release);
      return;
    }
    let batch: Reply[] = [];
    let k = 0;
    for (; k < out.length; k++) {
      const r = out[k];
      if (!r.range) {
        batch.push(r);
        continue;
      }
      if (batch.length) {
        this.write(batch);
        batch = [];
      }
      if (this.socket.writableLength !== 0) {
        this.awaitWritten();
        break;
      }
      if (!this.sendRange(r)) {
        k++;
        break;
      }
    }
    if (batch.length) this.write(batch);
    this.out = k >= out.length ? [] : out.slice(k);
  }

  /** Flush again once everything Node holds for this socket is written: a zero-length write's
   *  callback comes after every earlier write's (whoever wrote them). */
  private awaitWritten(): void {
    if (this.awaiting) return;
    this.awaiting = true;
    this.socket.write(EMPTY, () => {
      this.awaiting = false;
      if (this.state === 'closing') this.maybeFinish();
      else this.scheduleFlush();
    });
  }

  private write(batch: Reply[]): void {
    const pool = this.s.pool;
    let release = 0;
    let total = 0;
    const bufs: Buffer[] = [];
    // A run of adjacent buffers (replies read now, one after another in a slab) is written as one view.
    let run: Buffer | undefined;
    let runLength = 0;
    for (const r of batch) {
      release += r.release;
      for (const b of r.bufs) {
        total += b.length;
        if (run && b.buffer === run.buffer && b.byteOffset === run.byteOffset + runLength) {
          runLength += b.length;
          continue;
        }
        if (run) bufs.push(runLength === run.length ? run : Buffer.from(run.buffer, run.byteOffset, runLength));
        run = b;
        runLength = b.length;
      }
    }
    if (run) bufs.push(runLength === run.length ? run : Buffer.from(run.buffer, run.byteOffset, runLength));
    // The callback runs once the kernel took the bytes (or the socket failed): then they are given back.
    const done = () => {
      for (const r of batch) {
        if (r.pooled) pool.put(r.pooled);
        else if (r.slab && --r.slab.refs === 0) this.dropSlab(r.slab);
      }
      this.give(release);
      if (this.state === 'closing') this.maybeFinish();
      else this.maybeResume();
    };
    if (bufs.length === 1) {
      this.socket.write(bufs[0], done);
    } else if (total <= COALESCE_LIMIT) {
      this.socket.write(Buffer.concat(bufs, total), done);
    } else {
      this.socket.cork();
      for (let i = 0; i < bufs.length - 1; i++) this.socket.write(bufs[i]);
      this.socket.write(bufs[bufs.length - 1], done);
      this.socket.uncork();
    }
  }

  /**
   * Send a range reply through the device. True when all of it went out. Otherwise nothing is
   * written until what follows is queued first (`barrier`): when the socket filled up, a small piece
   * of the rest, read into a buffer and written through Node (whose callback, once the socket takes
   * it, flushes again), then the rest of the range; when the pages left the cache since, all the
   * rest, read into a buffer. False then.
   */
  private sendRange(r: Reply): boolean {
    const { hi, lo, offset, length } = r.range!;
    const header = r.bufs[0];
    let sent: number;
    try {
      sent = sendRange(this.sockFd, this.s.device, header, offset, length);
    } catch {
      sent = -1;
    }
    if (sent >= header.length + length) {
      this.give(r.release);
      return true;
    }
    const full = sent >= 0; // the socket filled up (else: not cached any more)
    if (!full) sent = 0;
    const from = Math.max(0, sent - header.length);
    const headerRest = sent < header.length ? [header.subarray(sent)] : [];
    const n = full ? Math.min(length - from, PROBE) : length - from;
    const buf = this.s.pool.get(n);
    this.barrier = true;
    this.inflight++;
    readInto(this.s.device, buf, offset + from).then(() => {
      this.inflight--;
      this.barrier = false;
      if (n < length - from) {
        this.enqueue({ bufs: [EMPTY], release: r.release, range: { hi, lo, offset: offset + from + n, length: length - from - n } }, true);
        this.enqueue({ bufs: [...headerRest, buf], release: 0, pooled: buf }, true);
      } else {
        this.enqueue({ bufs: [...headerRest, buf], release: r.release, pooled: buf }, true);
      }
      this.afterComplete();
    }, (e) => {
      this.inflight--;
      this.barrier = false;
      const msg = (e as Error)?.message ?? String(e);
      if (sent > 0 || header.length === 0) {
        // Part of the reply is on the wire: the stream cannot go on.
        this.s.log(`nbd: READ [${offset}, +${length}) failed midway: ${msg}, disconnecting`);
        this.hardClose();
      } else {
        if (!(e instanceof MedvError) || nbdErrno(e) === P.NBD_EIO) this.s.log(`nbd: READ [${offset}, +${length}) failed: ${msg}`);
        this.give(r.release - REPLY_OVERHEAD);
        this.replyError(P.NBD_CMD_READ, hi, lo, e instanceof Error ? e : new Error(String(e)), REPLY_OVERHEAD);
      }
      this.afterComplete();
    });
    return false;
  }

  // --- teardown --------------------------------------------------------------------------------

  /** Stop taking requests; end the connection once in-flight requests are answered. */
  shutdown(): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.beginClosing();
  }

  /** The client shut its side (a soft end, like DISC): requests it sent are still answered. */
  onPeerEnd(): void {
    if (this.state === 'request' || this.state === 'payload' || this.state === 'skip') {
      this.peerEnded = true;
      this.pump();
    }
  }

  private beginClosing(): void {
    this.state = 'closing';
    this.q.clear();
    this.dropPayload();
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.state !== 'closing' || this.inflight > 0) return;
    this.flushOut();
    // Range replies wait for earlier writes: finish once they went out too (a write's callback comes back here).
    if (this.out.length !== 0 || this.barrier) return;
    this.state = 'closed';
    this.finish(false);
  }

  private hardClose(): void {
    this.state = 'closed';
    this.q.clear();
    this.dropPayload();
    this.finish(true);
  }

  private dropPayload(): void {
    if (this.payload) {
      this.payload = null;
      this.give(this.need(this.req)); // no reply will be sent for it either
    }
  }

  /** The socket is gone: everything this connection holds goes back to the budget at once. */
  onClose(): void {
    this.state = 'closed';
    this.q.clear();
    this.dropPayload();
    this.out = [];
    this.s.budget.forget(this.wake);
    if (!this.gone) {
      this.gone = true;
      this.s.budget.give(this.held);
    }
  }
}
