/**
 * The request stream of one connection: 28-byte request headers parsed in place from the input
 * chunk queue, each admitted (or the reading stops until it can be), then a WRITE's payload received
 * into a pooled buffer (straight from the kernel where userbuffer.ts can), or skipped when the WRITE
 * is refused before it (the payload is never buffered; the error is answered after it). A bad
 * request magic means the stream is out of sync: the connection ends.
 */
import type { MedvError } from '../core/errors.js';
import type { BufferPool } from '../block/pool.js';
import type { ByteQueue } from './bytequeue.js';
import * as P from './protocol.js';

/** Where the requests go (transmission.ts). `held` is what admit() took for the request. */
export interface RequestSink {
  /** The bytes taken for the request whose header is in `req`, or undefined: not now (the sink has
   *  stopped the socket's reading and pumps again when it may go on). */
  admit(req: P.Request): number | undefined;
  /** A WRITE's error, decided before its payload is read; the sink keeps `held` for the reply only. */
  refuseWrite(req: P.Request, held: number): MedvError | undefined;
  /** A request to run; `payload` for a WRITE (`pooled`: a buffer of the pool). */
  request(req: P.Request, payload: Buffer | null, pooled: boolean, held: number): void;
  /** A refused WRITE's payload is skipped: answer `error`. */
  refused(req: P.Request, error: MedvError): void;
  /** The stream is out of sync. */
  lost(error: Error): void;
  /** The client ended its side and everything it sent was read. */
  ended(): void;
}

type State = 'request' | 'payload' | 'skip' | 'stopped';

export class RequestReader {
  private state: State = 'request';
  private readonly req: P.Request = { flags: 0, type: 0, handleHi: 0, handleLo: 0, offset: 0, length: 0 };
  private payload: Buffer | null = null;
  private payloadFill = 0;
  private payloadHeld = 0;
  /** The part of `payload` lent to the socket for the next read (userbuffer.ts). */
  private direct: Buffer | undefined;
  private skipLeft = 0;
  /** The error to answer once a refused WRITE's payload is skipped. */
  private skipError: MedvError | undefined;
  /** The client shut its sending side: read what it sent, then end. */
  private peerEnded = false;

  constructor(private readonly q: ByteQueue, private readonly pool: BufferPool, private readonly sink: RequestSink) {}

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
  }

  /** The client shut its side (a soft end, like DISC): what it sent is still read. */
  end(): void {
    if (this.state !== 'stopped') this.peerEnded = true;
  }

  get stopped(): boolean { return this.state === 'stopped'; }

  /** Read no more. Returns the bytes held for a payload being received, which nothing will answer. */
  stop(): number {
    this.state = 'stopped';
    this.q.clear();
    const held = this.payload ? this.payloadHeld : 0;
    this.payload = null;
    this.payloadHeld = 0;
    return held;
  }

  /** Take what the queue holds: requests to the sink, payloads into their buffers. */
  read(): void {
    const q = this.q;
    for (;;) {
      switch (this.state) {
        case 'request': {
          if (q.length < P.REQUEST_SIZE) {
            if (this.peerEnded) this.sink.ended();
            return;
          }
          const req = this.req;
          try {
            P.decodeRequest(q.peek(P.REQUEST_SIZE), q.peekOffset, req);
          } catch (e) {
            // Out of sync: the stream cannot be trusted any more (proto.md allows a hard disconnect).
            return this.sink.lost(e as Error);
          }
          const held = this.sink.admit(req);
          if (held === undefined) return;
          q.consume(P.REQUEST_SIZE);
          if (req.type === P.NBD_CMD_WRITE) {
            const refused = this.sink.refuseWrite(req, held);
            if (refused) {
              this.skipError = refused;
              this.skipLeft = req.length;
              this.state = 'skip';
              break;
            }
            if (q.length >= req.length) {
              this.sink.request(req, q.take(req.length), false, held);
            } else {
              this.payload = this.pool.get(req.length);
              this.payloadHeld = held;
              this.payloadFill = q.takeInto(this.payload, 0, q.length);
              this.state = 'payload';
            }
            break;
          }
          this.sink.request(req, null, false, held);
          break;
        }
        case 'payload': {
          const payload = this.payload!;
          if (this.payloadFill < payload.length) {
            if (q.length === 0) {
              if (this.peerEnded) this.sink.ended();
              return;
            }
            this.payloadFill += q.takeInto(payload, this.payloadFill, payload.length - this.payloadFill);
            if (this.payloadFill < payload.length) return;
          }
          const held = this.payloadHeld;
          this.payload = null;
          this.payloadHeld = 0;
          this.state = 'request';
          this.sink.request(this.req, payload, true, held);
          break;
        }
        case 'skip': {
          if (this.skipLeft > 0 && q.length === 0) {
            if (this.peerEnded) this.sink.ended();
            return;
          }
          this.skipLeft -= q.skip(this.skipLeft);
          if (this.skipLeft > 0) return;
          this.state = 'request';
          const e = this.skipError!;
          this.skipError = undefined;
          this.sink.refused(this.req, e);
          break;
        }
        case 'stopped':
          q.clear();
          return;
      }
    }
  }
}
