/**
 * The replies of one connection, in the order they complete, to the socket: simple replies, or
 * structured chunks for READ and BLOCK_STATUS once the client negotiated them. A reply's bytes of the
 * allowance (and its pooled buffer or its slab) are given back once the kernel took it.
 *
 * - Replies finishing in one event-loop turn are written together: adjacent views of one slab as one
 *   buffer, small ones concatenated, larger ones corked.
 * - A READ is answered one of three ways: at once into an output slab (readNow; slabs.ts), as a
 *   *range* sent from the page cache (readFromCache; sendfile.ts), or from a pooled buffer the device
 *   read into (read).
 * - A range is sent only once Node holds nothing unwritten for this socket, so its bytes land right
 *   after what was written before (everything runs on the event loop, and Node writes to the socket
 *   only what was queued in it); until then the queue waits for the pending writes. When the socket
 *   fills up midway through a range, a small piece of the rest is read into a buffer and written
 *   through Node (its callback says when the socket takes more), then the rest of the range follows;
 *   nothing else is written in between (`barrier`). Pages that left the cache since are read into a
 *   buffer instead; if that read fails after some of the reply went out, the stream cannot go on.
 */
import type * as net from 'node:net';
import type { BlockDevice } from '../block/device.js';
import { readInto } from '../block/emulate.js';
import type { BufferPool } from '../block/pool.js';
import { MedvError } from '../core/errors.js';
import type { Allowance } from './budget.js';
import { nbdErrno } from './errno.js';
import { REPLY_OVERHEAD } from './options.js';
import * as P from './protocol.js';
import { rangeCached, sendfileSocket, sendRange } from './sendfile.js';
import { type Slab, Slabs } from './slabs.js';

/** Replies totalling at most this many bytes are coalesced into one buffer before writing. */
const COALESCE_LIMIT = 256 * 1024;
/** When the socket fills up midway through a range reply, this much of the rest goes through Node:
 *  its write's callback says when the socket takes more. */
const PROBE = 4096;
const EMPTY = Buffer.alloc(0);

/** One queued reply: its buffers, or (`range`) a READ sent from the page cache. */
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

/** What the replies need from their connection (transmission.ts). */
export interface ReplyOwner {
  readonly allowance: Allowance;
  /** The connection is finishing: written replies may let it end. */
  closing(): boolean;
  /** Replies were written: bytes came back (resume reading) or the connection may end. */
  written(): void;
  /** A device read for a range reply started / settled (the connection's in-flight operations). */
  opStarted(): void;
  opSettled(): void;
  /** The stream cannot go on. */
  hardClose(): void;
  log(msg: string): void;
}

export class Replies {
  /** Not yet handed to the socket, in order. */
  private out: Reply[] = [];
  private scheduled = false;
  /** A range reply is partly sent (or must be read after all): nothing else is written before its rest. */
  private barrier = false;
  /** awaitWritten() is waiting. */
  private awaiting = false;
  private closed = false;
  private readonly slabs: Slabs;
  /** The socket's descriptor, for READ replies sent from the page cache, or -1. */
  private readonly sockFd: number;

  constructor(private readonly socket: net.Socket, private readonly device: BlockDevice, private readonly pool: BufferPool,
    private readonly structured: boolean, private readonly owner: ReplyOwner) {
    this.slabs = new Slabs(pool);
    this.sockFd = sendfileSocket(socket);
  }

  /** Nothing queued or being sent. */
  get idle(): boolean { return this.out.length === 0 && !this.barrier; }

  /** The connection ended: replies queued later are dropped (their bytes given back at once). */
  close(): void { this.closed = true; }

  /** The socket is gone: drop everything (the connection gives all its bytes back itself). */
  discard(): void {
    this.closed = true;
    this.out = [];
  }

  simple(error: number, hi: number, lo: number, release: number, data?: Buffer): void {
    const h = Buffer.allocUnsafe(P.SIMPLE_REPLY_SIZE);
    P.writeSimpleReply(h, 0, error, hi, lo);
    this.enqueue({ bufs: data && data.length ? [h, data] : [h], release, pooled: data });
  }

  /** A READ's data in a buffer of the pool. */
  read(hi: number, lo: number, offset: number, data: Buffer, release: number): void {
    if (!this.structured) return this.simple(0, hi, lo, release, data);
    // One chunk covers the whole read (so DF is always honoured); an empty read is a NONE chunk.
    if (data.length === 0) return this.enqueue({ bufs: [P.encodeNoneChunk(hi, lo)], release });
    this.enqueue({ bufs: [P.encodeOffsetDataHeader(P.NBD_REPLY_FLAG_DONE, hi, lo, offset, data.length), data], release, pooled: data });
  }

  /** A whole reply chunk already encoded (BLOCK_STATUS). */
  chunk(buf: Buffer, release: number): void {
    this.enqueue({ bufs: [buf], release });
  }

  /** READ and BLOCK_STATUS errors are error chunks once structured replies are negotiated; others simple. */
  error(type: number, hi: number, lo: number, e: Error, release: number): void {
    const errno = nbdErrno(e);
    if (this.structured && (type === P.NBD_CMD_READ || type === P.NBD_CMD_BLOCK_STATUS)) {
      this.enqueue({ bufs: [P.encodeErrorChunk(hi, lo, errno, e.message.slice(0, 200))], release });
    } else {
      this.simple(errno, hi, lo, release);
    }
  }

  /**
   * Answer a READ at once when the device has the data at hand (readIntoNow, which it must offer):
   * its reply, header and data, is laid out in the output slab after the previous one. False when
   * the device declined (the slab space is given back and the caller reads as usual).
   */
  readNow(hi: number, lo: number, offset: number, length: number, held: number): boolean {
    const headerSize = this.structured ? P.OFFSET_DATA_HEADER_SIZE : P.SIMPLE_REPLY_SIZE;
    const size = headerSize + length;
    const slab = this.slabs.room(size);
    const at = slab.used;
    if (!this.device.readIntoNow!(slab.buf.subarray(at + headerSize, at + size), offset)) {
      this.slabs.unused(slab);
      return false;
    }
    if (this.structured) P.writeOffsetDataHeader(slab.buf, at, P.NBD_REPLY_FLAG_DONE, hi, lo, offset, length);
    else P.writeSimpleReply(slab.buf, at, 0, hi, lo);
    this.enqueue({ bufs: [this.slabs.commit(slab, size)], release: held, slab });
    return true;
  }

  /** Answer a READ from the page cache when the device has it as a file range, all cached now: it is
   *  sent when its turn comes (flush), with no buffer of ours. False otherwise. */
  readFromCache(hi: number, lo: number, offset: number, length: number, held: number): boolean {
    if (this.sockFd < 0 || !rangeCached(this.device, offset, length)) return false;
    let header: Buffer;
    if (this.structured) {
      header = P.encodeOffsetDataHeader(P.NBD_REPLY_FLAG_DONE, hi, lo, offset, length);
    } else {
      header = Buffer.allocUnsafe(P.SIMPLE_REPLY_SIZE);
      P.writeSimpleReply(header, 0, 0, hi, lo);
    }
    this.enqueue({ bufs: [header], release: held, range: { hi, lo, offset, length } });
    return true;
  }

  /** Queue a reply (`first`: ahead of the others). */
  private enqueue(r: Reply, first = false): void {
    if (this.closed) {
      this.owner.allowance.give(r.release);
      return;
    }
    if (first) this.out.unshift(r);
    else this.out.push(r);
    this.schedule();
  }

  private schedule(): void {
    if (!this.scheduled) {
      this.scheduled = true;
      // Coalesce replies completing in the same event-loop turn into one write.
      setImmediate(() => this.flush());
    }
  }

  /**
   * Hand the queued replies to the socket, in order: runs of buffers through Node; a range only
   * once Node holds nothing unwritten for this socket, else the queue waits (awaitWritten).
   */
  flush(): void {
    this.scheduled = false;
    if (this.barrier || this.out.length === 0) return;
    const out = this.out;
    if (this.closed || !this.socket.writable) {
      this.out = [];
      for (const r of out) this.owner.allowance.give(r.release);
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
      if (this.owner.closing()) this.owner.written();
      else this.schedule();
    });
  }

  private write(batch: Reply[]): void {
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
        if (r.pooled) this.pool.put(r.pooled);
        else if (r.slab) this.slabs.release(r.slab);
      }
      this.owner.allowance.give(release);
      this.owner.written();
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
   * Send a range reply from the page cache. True when all of it went out. Otherwise nothing is
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
      sent = sendRange(this.sockFd, this.device, header, offset, length);
    } catch {
      sent = -1;
    }
    if (sent >= header.length + length) {
      this.owner.allowance.give(r.release);
      return true;
    }
    const full = sent >= 0; // the socket filled up (else: not cached any more)
    if (!full) sent = 0;
    const from = Math.max(0, sent - header.length);
    const headerRest = sent < header.length ? [header.subarray(sent)] : [];
    const n = full ? Math.min(length - from, PROBE) : length - from;
    const buf = this.pool.get(n);
    this.barrier = true;
    this.owner.opStarted();
    readInto(this.device, buf, offset + from).then(() => {
      this.barrier = false;
      if (n < length - from) {
        this.enqueue({ bufs: [EMPTY], release: r.release, range: { hi, lo, offset: offset + from + n, length: length - from - n } }, true);
        this.enqueue({ bufs: [...headerRest, buf], release: 0, pooled: buf }, true);
      } else {
        this.enqueue({ bufs: [...headerRest, buf], release: r.release, pooled: buf }, true);
      }
      this.owner.opSettled();
    }, (e) => {
      this.barrier = false;
      const msg = (e as Error)?.message ?? String(e);
      if (sent > 0 || header.length === 0) {
        // Part of the reply is on the wire: the stream cannot go on.
        this.owner.log(`nbd: READ [${offset}, +${length}) failed midway: ${msg}, disconnecting`);
        this.owner.hardClose();
      } else {
        if (!(e instanceof MedvError) || nbdErrno(e) === P.NBD_EIO) this.owner.log(`nbd: READ [${offset}, +${length}) failed: ${msg}`);
        this.owner.allowance.give(r.release - REPLY_OVERHEAD);
        this.error(P.NBD_CMD_READ, hi, lo, e instanceof Error ? e : new Error(String(e)), REPLY_OVERHEAD);
      }
      this.owner.opSettled();
    });
    return false;
  }
}
