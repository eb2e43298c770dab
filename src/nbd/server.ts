/**
 * Fixed-newstyle NBD server on a unix socket, exporting any BlockDevice.
 *
 * Handshake: NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES; options GO, INFO, EXPORT_NAME, ABORT, LIST;
 * every other option is answered NBD_REP_ERR_UNSUP (QEMU asks STRUCTURED_REPLY and SET_META_CONTEXT
 * and waits for an answer). Transmission uses simple replies only.
 *
 * Many requests per connection are in flight at once: requests are parsed as they arrive, run
 * concurrently against the device, and answered as they complete, in any order. Admission is
 * bounded (request count and bytes, including reply bytes not yet taken by the kernel); when a
 * bound is hit, the socket stops being read until requests complete or the socket drains.
 *
 * Ordering: NBD_CMD_FLUSH waits for every write-type request of this connection received before it,
 * then calls device.flush(), which makes all completed writes (of every connection: they share the
 * device) durable. So a flush covers every write replied to before the flush arrived (proto.md,
 * "Ordering of messages and writes"), and CAN_MULTI_CONN is safe to advertise.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { BlockDevice } from '../block/device.js';
import { writeThenFlush, writeZeroesByWriting } from '../block/emulate.js';
import { MedvError } from '../errors.js';
import { ByteQueue } from './bytequeue.js';
import { nbdErrno } from './errno.js';
import * as P from './protocol.js';

export interface NbdServerOptions {
  socketPath: string;
  /** Export read-only even if the device is writable (a read-only device is always exported read-only). */
  readOnly?: boolean;
  /** Name clients must ask for; default '' accepts any name. The empty (default) name is always accepted. */
  exportName?: string;
  /** Sent to clients that ask for NBD_INFO_DESCRIPTION and in NBD_OPT_LIST. */
  description?: string;
  /** Advertised minimum block size (power of two, 1..65536); default 4096. */
  minBlockSize?: number;
  /** Advertised preferred block size; default max(minBlockSize, device preferred, 4096). */
  preferredBlockSize?: number;
  /** Advertised maximum payload; default min(32 MiB, device maxRequestSize). Larger requests get EINVAL. */
  maxBlockSize?: number;
  /** Maximum requests in flight per connection; default 64. */
  maxInFlight?: number;
  log?: (msg: string) => void;
}

export interface NbdServer {
  readonly socketPath: string;
  /** Number of open client connections. */
  connections(): number;
  /** Stop listening, end connections after their in-flight requests, remove the socket file.
   *  Does NOT close the device. */
  close(): Promise<void>;
}

/** Largest option payload buffered during the handshake (SET_META_CONTEXT queries, names, info requests). */
const MAX_OPTION_DATA = 1 << 20;
/** Bytes in flight per connection (request payloads, read data, unsent replies) before reading pauses. */
const MAX_INFLIGHT_BYTES = 128 * 1024 * 1024;
/** Replies totalling at most this many bytes are coalesced into one buffer before writing. */
const COALESCE_LIMIT = 256 * 1024;
/** Time allowed for a peer to close its side after we ended ours. */
const END_GRACE_MS = 2000;

interface ExportInfo {
  size: number;
  flags: number;
  readOnly: boolean;
  sizes: P.BlockSizes;
}

function isPowerOfTwo(n: number): boolean { return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0; }

function computeBlockSizes(device: BlockDevice, opts: NbdServerOptions): P.BlockSizes {
  const caps = device.capabilities;
  let minimum = opts.minBlockSize ?? 4096;
  if (!isPowerOfTwo(minimum) || minimum > 65536) {
    throw new MedvError('EINVAL_ARG', `minBlockSize ${minimum} must be a power of two between 1 and 65536`);
  }
  // The export size should be a multiple of the minimum block size; lower it for odd-sized devices.
  while (minimum > 1 && device.size % minimum !== 0) minimum /= 2;
  const preferred = opts.preferredBlockSize ?? Math.max(minimum, caps.preferredBlockSize, 4096);
  if (!isPowerOfTwo(preferred) || preferred < minimum) {
    throw new MedvError('EINVAL_ARG', `preferredBlockSize ${preferred} must be a power of two >= ${minimum}`);
  }
  const maximum = opts.maxBlockSize ?? Math.min(32 * 1024 * 1024, caps.maxRequestSize);
  if (!Number.isInteger(maximum) || maximum < preferred || maximum % minimum !== 0 || maximum > 0xffffffff) {
    throw new MedvError('EINVAL_ARG', `maxBlockSize ${maximum} must be a multiple of ${minimum} and >= ${preferred}`);
  }
  return { minimum, preferred, maximum };
}

function exportInfo(device: BlockDevice, opts: NbdServerOptions): ExportInfo {
  const readOnly = !!opts.readOnly || device.readOnly;
  let flags = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_CAN_MULTI_CONN;
  if (readOnly) flags |= P.NBD_FLAG_READ_ONLY;
  else {
    // FUA and WRITE_ZEROES are always offered: emulated (write + flush, zero buffers) when the device lacks them.
    flags |= P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_WRITE_ZEROES;
    if (device.capabilities.trim !== 'none') flags |= P.NBD_FLAG_SEND_TRIM;
  }
  return { size: device.size, flags, readOnly, sizes: computeBlockSizes(device, opts) };
}

/**
 * Reusable payload buffers for large WRITEs. A fresh multi-megabyte Buffer costs far more than the
 * copy into it (page faults and GC pressure: ~200 us per MiB here, against ~30 us reused), so
 * payloads that span socket chunks are assembled in pooled buffers, returned to the pool when the
 * device's write() resolves (a failed write's buffer is dropped). This relies on the BlockDevice contract that a device does not keep
 * the caller's buffer after write() resolves (every layer copies or encrypts into its own).
 */
class PayloadPool {
  private readonly free = new Map<number, Buffer[]>();
  private bytes = 0;
  constructor(private readonly limit: number) {}

  get(n: number): Buffer {
    const b = n >= POOL_MIN ? this.free.get(n)?.pop() : undefined;
    if (b) {
      this.bytes -= n;
      return b;
    }
    return n >= POOL_MIN ? Buffer.allocUnsafeSlow(n) : Buffer.allocUnsafe(n);
  }

  put(b: Buffer): void {
    const n = b.length;
    if (n < POOL_MIN || this.bytes + n > this.limit) return;
    let list = this.free.get(n);
    if (!list) this.free.set(n, (list = []));
    list.push(b);
    this.bytes += n;
  }
}

/** Payloads below this size are not pooled (Node's own slab allocator serves them cheaply). */
const POOL_MIN = 64 * 1024;
/** Bytes of idle payload buffers kept per server. */
const POOL_LIMIT = 64 * 1024 * 1024;

type State = 'flags' | 'optHeader' | 'optData' | 'request' | 'payload' | 'skip' | 'closing' | 'closed';


class Connection {
  private state: State = 'flags';
  private readonly q = new ByteQueue(P.OPTION_HEADER_SIZE + P.REQUEST_SIZE);
  private noZeroes = false;
  private optType = 0;
  private optLen = 0;
  private info!: ExportInfo;
  // The request whose payload is being received (or skipped).
  private readonly req: P.Request = { flags: 0, type: 0, handleHi: 0, handleLo: 0, offset: 0, length: 0 };
  private payload: Buffer | null = null;
  private payloadFill = 0;
  private skipLeft = 0;
  private inflight = 0;
  private inflightBytes = 0;
  /** Write-type requests in flight, for FLUSH ordering. */
  private readonly writes = new Set<Promise<unknown>>();
  private out: Buffer[] = [];
  private outBytes = 0;
  private outScheduled = false;
  private readPaused = false;
  private pumping = false;
  /** The client shut its sending side: finish what it sent, then close. */
  private peerEnded = false;
  private endTimer: NodeJS.Timeout | undefined;
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  constructor(
    private readonly socket: net.Socket,
    private readonly device: BlockDevice,
    private readonly opts: NbdServerOptions,
    private readonly maxInFlight: number,
    private readonly log: (msg: string) => void,
    private readonly pool: PayloadPool,
  ) {
    this.closed = new Promise((r) => { this.resolveClosed = r; });
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.maybeResume());
    socket.on('error', (e) => this.log(`nbd: connection error: ${e.message}`));
    socket.on('end', () => this.onEnd());
    socket.on('close', () => this.onClose());
    socket.write(P.encodeGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES));
  }

  /** Stop taking requests; end the connection once in-flight requests are answered. */
  shutdown(): void {
    if (this.state === 'closed') return;
    if (this.state === 'flags' || this.state === 'optHeader' || this.state === 'optData') {
      this.state = 'closed';
      this.socket.destroy();
      return;
    }
    this.beginClosing();
  }

  // --- input -----------------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.q.push(chunk);
    this.pump();
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      this.pumpLoop();
    } catch (e) {
      // A bug, not a protocol error (those are handled where they are detected): never crash the process.
      this.log(`nbd: internal error, dropping connection: ${(e as Error)?.stack ?? e}`);
      this.hardDisconnect();
    } finally {
      this.pumping = false;
    }
  }

  private pumpLoop(): void {
    const q = this.q;
    for (;;) {
      switch (this.state) {
        case 'flags': {
          if (q.length < P.CLIENT_FLAGS_SIZE) return;
          const b = q.peek(P.CLIENT_FLAGS_SIZE);
          const flags = b.readUInt32BE(q.peekOffset);
          q.consume(P.CLIENT_FLAGS_SIZE);
          if ((flags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
            this.log(`nbd: client sent unknown flags 0x${flags.toString(16)}, disconnecting`);
            return this.hardDisconnect();
          }
          this.noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
          this.state = 'optHeader';
          break;
        }
        case 'optHeader': {
          if (q.length < P.OPTION_HEADER_SIZE) return;
          let h: P.OptionHeader;
          try {
            h = P.decodeOptionHeader(q.peek(P.OPTION_HEADER_SIZE), q.peekOffset);
          } catch (e) {
            this.log(`nbd: ${(e as Error).message}, disconnecting`);
            return this.hardDisconnect();
          }
          q.consume(P.OPTION_HEADER_SIZE);
          if (h.length > MAX_OPTION_DATA) {
            this.log(`nbd: option ${P.optionName(h.option)} with ${h.length} bytes of data, disconnecting`);
            return this.hardDisconnect();
          }
          this.optType = h.option;
          this.optLen = h.length;
          this.state = 'optData';
          break;
        }
        case 'optData': {
          if (q.length < this.optLen) return;
          const data = q.take(this.optLen);
          this.state = 'optHeader';
          this.handleOption(this.optType, data);
          break;
        }
        case 'request': {
          if (!this.canAdmit()) {
            this.pauseReading();
            return;
          }
          if (q.length < P.REQUEST_SIZE) {
            if (this.peerEnded) this.beginClosing();
            return;
          }
          const req = this.req;
          try {
            P.decodeRequest(q.peek(P.REQUEST_SIZE), q.peekOffset, req);
          } catch (e) {
            // Out of sync: the stream cannot be trusted any more (proto.md allows a hard disconnect).
            this.log(`nbd: ${(e as Error).message}, disconnecting`);
            return this.hardDisconnect();
          }
          q.consume(P.REQUEST_SIZE);
          if (req.type === P.NBD_CMD_WRITE) {
            if (req.length > this.info.sizes.maximum) {
              this.skipLeft = req.length;
              this.state = 'skip';
              break;
            }
            if (q.length >= req.length) {
              this.dispatch(req.type, req.flags, req.handleHi, req.handleLo, req.offset, req.length, q.take(req.length), false);
            } else {
              this.payload = this.pool.get(req.length);
              this.payloadFill = q.takeInto(this.payload, 0, q.length);
              this.inflightBytes += req.length;
              this.state = 'payload';
            }
            break;
          }
          this.dispatch(req.type, req.flags, req.handleHi, req.handleLo, req.offset, req.length, null, false);
          break;
        }
        case 'payload': {
          const payload = this.payload!;
          if (q.length === 0) {
            if (this.peerEnded) this.beginClosing();
            return;
          }
          this.payloadFill += q.takeInto(payload, this.payloadFill, payload.length - this.payloadFill);
          if (this.payloadFill < payload.length) return;
          this.payload = null;
          this.inflightBytes -= payload.length;
          this.state = 'request';
          const req = this.req;
          this.dispatch(req.type, req.flags, req.handleHi, req.handleLo, req.offset, req.length, payload, true);
          break;
        }
        case 'skip': {
          if (q.length === 0) {
            if (this.peerEnded) this.beginClosing();
            return;
          }
          this.skipLeft -= q.skip(this.skipLeft);
          if (this.skipLeft > 0) return;
          this.state = 'request';
          const req = this.req;
          this.log(`nbd: WRITE of ${req.length} bytes exceeds the maximum ${this.info.sizes.maximum}`);
          this.reply(P.NBD_EINVAL, req.handleHi, req.handleLo, null);
          break;
        }
        case 'closing':
        case 'closed':
          q.clear();
          return;
      }
    }
  }

  // --- handshake -------------------------------------------------------------------------------

  private nameAccepted(name: string): boolean {
    const want = this.opts.exportName ?? '';
    return want === '' || name === '' || name === want;
  }

  private optReply(option: number, type: number, data?: Buffer): void {
    this.socket.write(P.encodeOptionReply(option, type, data));
  }

  private optError(option: number, type: number, message: string): void {
    this.optReply(option, type, Buffer.from(message, 'utf8'));
  }

  private handleOption(option: number, data: Buffer): void {
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME: {
        let name: string;
        try {
          name = P.decodeString(data);
        } catch (e) {
          this.log(`nbd: EXPORT_NAME: ${(e as Error).message}, disconnecting`);
          return this.hardDisconnect();
        }
        // This option cannot fail with a reply: an unknown export ends the session (proto.md).
        if (!this.nameAccepted(name)) {
          this.log(`nbd: client asked for unknown export '${name}', disconnecting`);
          return this.hardDisconnect();
        }
        this.info = exportInfo(this.device, this.opts);
        this.socket.write(P.encodeExportNameReply(this.info.size, this.info.flags, this.noZeroes));
        this.enterTransmission();
        return;
      }
      case P.NBD_OPT_ABORT:
        this.optReply(option, P.NBD_REP_ACK);
        this.state = 'closed';
        this.socket.end();
        return;
      case P.NBD_OPT_LIST:
        if (data.length !== 0) return this.optError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
        this.optReply(option, P.NBD_REP_SERVER, P.encodeRepServer(this.opts.exportName ?? '', this.opts.description ?? ''));
        this.optReply(option, P.NBD_REP_ACK);
        return;
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO: {
        let req: P.InfoRequest;
        try {
          req = P.decodeInfoRequest(data);
        } catch (e) {
          return this.optError(option, P.NBD_REP_ERR_INVALID, (e as Error).message);
        }
        if (!this.nameAccepted(req.name)) {
          return this.optError(option, P.NBD_REP_ERR_UNKNOWN, `no export named '${req.name}'`);
        }
        let info: ExportInfo;
        try {
          info = exportInfo(this.device, this.opts);
        } catch (e) {
          this.log(`nbd: cannot export device: ${(e as Error).message}`);
          return this.optError(option, P.NBD_REP_ERR_PLATFORM, (e as Error).message);
        }
        this.optReply(option, P.NBD_REP_INFO, P.encodeInfoExport(info.size, info.flags));
        if (req.requests.includes(P.NBD_INFO_NAME)) {
          this.optReply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_NAME, this.opts.exportName || req.name));
        }
        if (req.requests.includes(P.NBD_INFO_DESCRIPTION) && this.opts.description) {
          this.optReply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_DESCRIPTION, this.opts.description));
        }
        // Block sizes are sent whether asked or not (the protocol allows it; QEMU and libnbd honour them).
        this.optReply(option, P.NBD_REP_INFO, P.encodeInfoBlockSize(info.sizes));
        this.optReply(option, P.NBD_REP_ACK);
        if (option === P.NBD_OPT_GO) {
          this.info = info;
          this.enterTransmission();
        }
        return;
      }
      default:
        // STRUCTURED_REPLY, SET/LIST_META_CONTEXT, STARTTLS and anything unknown.
        this.optError(option, P.NBD_REP_ERR_UNSUP, `${P.optionName(option)} is not supported`);
        return;
    }
  }

  private enterTransmission(): void {
    this.state = 'request';
    this.log(`nbd: client connected (size ${this.info.size}, ${this.info.readOnly ? 'read-only' : 'read-write'})`);
  }

  // --- transmission ----------------------------------------------------------------------------

  private canAdmit(): boolean {
    return this.inflight < this.maxInFlight
      && (this.inflightBytes < MAX_INFLIGHT_BYTES || this.inflight === 0)
      && this.socket.writableLength < MAX_INFLIGHT_BYTES;
  }

  private pauseReading(): void {
    if (!this.readPaused) {
      this.readPaused = true;
      this.socket.pause();
    }
  }

  private maybeResume(): void {
    if (this.state !== 'request' && this.state !== 'payload' && this.state !== 'skip') return;
    if (this.readPaused && this.canAdmit()) {
      this.readPaused = false;
      this.socket.resume();
      this.pump();
    }
  }

  /** Validate, then run a request against the device. Errors the client caused get an error reply. */
  private dispatch(type: number, flags: number, hi: number, lo: number, offset: number, length: number,
    payload: Buffer | null, pooled: boolean): void {
    const info = this.info;
    const fua = (flags & P.NBD_CMD_FLAG_FUA) !== 0;
    let op: Promise<Buffer | void>;
    let isWrite = false;
    let bytes = 0;
    const allowed = type === P.NBD_CMD_WRITE_ZEROES ? P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE : P.NBD_CMD_FLAG_FUA;
    if ((flags & ~allowed) !== 0 && type !== P.NBD_CMD_DISC) {
      if (pooled && payload) this.pool.put(payload);
      return this.reply(P.NBD_EINVAL, hi, lo, null);
    }
    try {
      switch (type) {
        case P.NBD_CMD_READ:
          if (length > info.sizes.maximum || offset + length > info.size) return this.reply(P.NBD_EINVAL, hi, lo, null);
          op = this.device.read(offset, length);
          bytes = length;
          break;
        case P.NBD_CMD_WRITE: {
          const data = payload!;
          const err = this.checkWrite(offset, length);
          if (err) {
            if (pooled) this.pool.put(data);
            return this.reply(err, hi, lo, null);
          }
          op = writeThenFlush(this.device, offset, data, fua ? { fua } : undefined);
          // Back to the pool only on success: a failed write may still have sub-writes reading it.
          if (pooled) op.then(() => this.pool.put(data), () => undefined);
          isWrite = true;
          bytes = length;
          break;
        }
        case P.NBD_CMD_TRIM: {
          const err = this.checkWrite(offset, length);
          if (err) return this.reply(err, hi, lo, null);
          if (this.device.capabilities.trim === 'none') return this.reply(P.NBD_EINVAL, hi, lo, null);
          op = this.device.discard(offset, length);
          if (fua) op = op.then(() => this.device.flush());
          isWrite = true;
          break;
        }
        case P.NBD_CMD_WRITE_ZEROES: {
          const err = this.checkWrite(offset, length);
          if (err) return this.reply(err, hi, lo, null);
          // NO_HOLE or not, writeZeroes reads back as zeros; whether it deallocates is the device's choice.
          op = this.writeZeroes(offset, length, fua);
          isWrite = true;
          break;
        }
        case P.NBD_CMD_FLUSH:
          if (offset !== 0 || length !== 0) return this.reply(P.NBD_EINVAL, hi, lo, null); // reserved, MUST be zero
          op = this.flushAfter([...this.writes]);
          break;
        case P.NBD_CMD_DISC:
          this.log('nbd: client disconnected');
          this.beginClosing();
          return;
        default:
          this.log(`nbd: unsupported ${P.commandName(type)}`);
          return this.reply(P.NBD_EINVAL, hi, lo, null);
      }
    } catch (e) {
      op = Promise.reject(e);
    }
    this.inflight++;
    this.inflightBytes += bytes;
    if (isWrite) {
      const tracked = op;
      this.writes.add(tracked);
      op.then(() => this.writes.delete(tracked), () => this.writes.delete(tracked));
    }
    op.then(
      (data) => this.complete(0, hi, lo, type === P.NBD_CMD_READ ? (data as Buffer) : null, bytes),
      (e) => {
        const errno = nbdErrno(e);
        if (!(e instanceof MedvError) || errno === P.NBD_EIO) {
          this.log(`nbd: ${P.commandName(type)} [${offset}, +${length}) failed: ${(e as Error)?.message ?? e}`);
        }
        this.complete(errno, hi, lo, null, bytes);
      },
    );
  }

  /** Error for a write-type request, or 0 (proto.md: EPERM on read-only, ENOSPC past the end). */
  private checkWrite(offset: number, length: number): number {
    if (this.info.readOnly) return P.NBD_EPERM;
    if (offset + length > this.info.size) return P.NBD_ENOSPC;
    return 0;
  }

  private async writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    const dev = this.device;
    const options = fua ? { fua } : undefined;
    if (dev.capabilities.zero === 'none') return writeZeroesByWriting(dev, offset, length, options);
    await dev.writeZeroes(offset, length, dev.capabilities.fua === 'native' ? options : undefined);
    if (fua && dev.capabilities.fua !== 'native') await dev.flush();
  }

  private async flushAfter(writes: Array<Promise<unknown>>): Promise<void> {
    if (writes.length) await Promise.allSettled(writes);
    await this.device.flush();
  }

  private complete(error: number, hi: number, lo: number, data: Buffer | null, bytes: number): void {
    this.inflight--;
    this.inflightBytes -= bytes;
    this.reply(error, hi, lo, data);
    if (this.state === 'closing') this.maybeFinish();
    else this.maybeResume();
  }

  // --- output ----------------------------------------------------------------------------------

  private reply(error: number, hi: number, lo: number, data: Buffer | null): void {
    if (this.state === 'closed') return;
    const h = Buffer.allocUnsafe(P.SIMPLE_REPLY_SIZE);
    P.writeSimpleReply(h, 0, error, hi, lo);
    this.out.push(h);
    this.outBytes += P.SIMPLE_REPLY_SIZE;
    if (data && error === 0 && data.length) {
      this.out.push(data);
      this.outBytes += data.length;
    }
    if (!this.outScheduled) {
      this.outScheduled = true;
      // Coalesce replies completing in the same event-loop turn into one write.
      setImmediate(() => this.flushOut());
    }
  }

  private flushOut(): void {
    this.outScheduled = false;
    const out = this.out;
    if (out.length === 0) return;
    this.out = [];
    const total = this.outBytes;
    this.outBytes = 0;
    if (this.state === 'closed' || !this.socket.writable) return;
    if (out.length === 1) {
      this.socket.write(out[0]);
    } else if (total <= COALESCE_LIMIT) {
      this.socket.write(Buffer.concat(out, total));
    } else {
      this.socket.cork();
      for (const b of out) this.socket.write(b);
      this.socket.uncork();
    }
  }

  // --- teardown --------------------------------------------------------------------------------

  private maybeFinish(): void {
    if (this.state !== 'closing' || this.inflight > 0) return;
    this.flushOut();
    this.state = 'closed';
    this.socket.end();
    this.endTimer = setTimeout(() => this.socket.destroy(), END_GRACE_MS);
    this.endTimer.unref();
  }

  private hardDisconnect(): void {
    this.state = 'closed';
    this.q.clear();
    this.socket.destroy();
  }

  /** The client shut its side (a soft end, like DISC): requests it sent are still answered. */
  private onEnd(): void {
    if (this.state === 'request' || this.state === 'payload' || this.state === 'skip') {
      this.peerEnded = true;
      this.pump();
    } else if (this.state !== 'closing') {
      this.hardDisconnect();
    }
  }

  private beginClosing(): void {
    this.state = 'closing';
    this.q.clear();
    this.payload = null;
    this.maybeFinish();
  }

  private onClose(): void {
    this.state = 'closed';
    this.q.clear();
    this.payload = null;
    this.out = [];
    if (this.endTimer) clearTimeout(this.endTimer);
    this.resolveClosed();
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
  const live = await new Promise<boolean>((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
  if (live) throw new MedvError('EEXIST', `a server is already listening on ${path}`, { file: path });
  await fs.promises.unlink(path).catch(() => undefined);
}

/** Serve `device` over NBD on a unix socket (mode 0600). Resolves once the socket is listening. */
export async function serveNbd(device: BlockDevice, opts: NbdServerOptions): Promise<NbdServer> {
  const log = opts.log ?? (() => undefined);
  const maxInFlight = opts.maxInFlight ?? 64;
  if (!Number.isInteger(maxInFlight) || maxInFlight < 1) throw new MedvError('EINVAL_ARG', `maxInFlight ${maxInFlight} must be >= 1`);
  computeBlockSizes(device, opts); // validate options now rather than at the first client
  const socketPath = opts.socketPath;
  const conns = new Set<Connection>();
  const pool = new PayloadPool(POOL_LIMIT);
  let closing: Promise<void> | undefined;

  await clearStaleSocket(socketPath);
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    if (closing) { socket.destroy(); return; }
    const conn = new Connection(socket, device, opts, maxInFlight, log, pool);
    conns.add(conn);
    void conn.closed.then(() => conns.delete(conn));
  });
  server.on('error', (e) => log(`nbd: server error: ${e.message}`));
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error) => reject(new MedvError('EIO', `cannot listen on ${socketPath}: ${e.message}`, { file: socketPath }, { cause: e }));
    server.once('error', onError);
    server.listen(socketPath, () => { server.off('error', onError); resolve(); });
  });
  try {
    await fs.promises.chmod(socketPath, 0o600);
  } catch (e) {
    server.close();
    throw new MedvError('EIO', `cannot restrict permissions of ${socketPath}: ${(e as Error).message}`, { file: socketPath });
  }
  log(`nbd: listening on ${socketPath}`);

  return {
    socketPath,
    connections: () => conns.size,
    close(): Promise<void> {
      if (!closing) {
        closing = (async () => {
          const stopped = new Promise<void>((r) => server.close(() => r()));
          for (const c of conns) c.shutdown();
          await Promise.all([...conns].map((c) => c.closed));
          await stopped;
          await fs.promises.unlink(socketPath).catch(() => undefined);
          log(`nbd: stopped listening on ${socketPath}`);
        })();
      }
      return closing;
    },
  };
}
