/**
 * Requests of one connection against the device: each is checked once (flags, command, then
 * validateRequest with the operation named), run concurrently with the others, and answered when it
 * completes (replies.ts), in any order.
 *
 * Ordering: NBD_CMD_FLUSH waits for every write-type request of this connection received before it,
 * then calls device.flush(), which makes all completed writes (of every connection: they share the
 * device) durable. So a flush covers every write replied to before the flush arrived (proto.md,
 * "Ordering of messages and writes"), and CAN_MULTI_CONN is safe to advertise.
 */
import type { BlockDevice } from '../block/device.js';
import { readInto, writeThenFlush, writeZeroesByWriting } from '../block/emulate.js';
import type { BufferPool } from '../block/pool.js';
import { validateRequest, type RequestOp } from '../block/validate.js';
import { MedvError } from '../core/errors.js';
import type { Allowance } from './budget.js';
import { nbdErrno } from './errno.js';
import { toDescriptors } from './extents.js';
import type { Negotiated } from './handshake.js';
import { MAX_DESCRIPTORS, REPLY_OVERHEAD } from './options.js';
import * as P from './protocol.js';
import type { Replies } from './replies.js';

/** READs below this size are offered to the device's readIntoNow(), straight into an output slab. */
const NOW_MAX = 64 * 1024;
/** READs from this size are sent from the page cache when the device has them as a file range. */
const CACHED_MIN = 64 * 1024;

/** What the dispatcher needs from its connection (transmission.ts). */
export interface DispatchOwner {
  readonly allowance: Allowance;
  /** A device operation started / settled (the connection's in-flight operations). */
  opStarted(): void;
  opSettled(): void;
  /** NBD_CMD_DISC: stop reading, answer what is in flight, then end. */
  disconnect(): void;
  log(msg: string): void;
}

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

export class Dispatcher {
  /** Write-type requests in flight, for FLUSH ordering. */
  private readonly writes = new Set<Promise<unknown>>();
  private readonly device: BlockDevice;
  private readonly target: { size: number; readOnly: boolean; description: string };

  constructor(private readonly n: Negotiated, device: BlockDevice, private readonly pool: BufferPool,
    private readonly replies: Replies, private readonly owner: DispatchOwner) {
    this.device = device;
    this.target = { size: n.info.size, readOnly: n.info.readOnly, description: device.description };
  }

  /** The request's error (validated once, here), or undefined. */
  check(req: P.Request): MedvError | undefined {
    const { type, flags } = req;
    if ((flags & ~allowedFlags(type, this.n.structured)) !== 0) {
      return new MedvError('EINVAL_ARG', `flags 0x${flags.toString(16)} are not valid for ${P.commandName(type)}`);
    }
    const op = opOf(type);
    if (!op) return new MedvError('EUNSUPPORTED', `unsupported ${P.commandName(type)}`);
    if (op === 'trim' && this.device.capabilities.trim === 'none' && !this.target.readOnly) {
      return new MedvError('EUNSUPPORTED', 'TRIM is not supported by this export');
    }
    if (op === 'status' && !this.n.allocationContext) {
      return new MedvError('EINVAL_ARG', 'BLOCK_STATUS without a negotiated metadata context');
    }
    try {
      validateRequest(this.target, req.offset, req.length, op, this.n.info.sizes.maximum);
    } catch (e) {
      return e as MedvError;
    }
    return undefined;
  }

  /** Run a request (a WRITE already checked, with its payload) against the device; `held` bytes
   *  were taken for it at admission. */
  dispatch(req: P.Request, payload: Buffer | null, pooled: boolean, held: number): void {
    const { type, flags, handleHi: hi, handleLo: lo, offset, length } = req;
    if (type === P.NBD_CMD_DISC) {
      this.owner.allowance.give(held);
      this.owner.log('nbd: client disconnected');
      this.owner.disconnect();
      return;
    }
    const refused = type === P.NBD_CMD_WRITE ? undefined : this.check(req);
    if (refused) {
      this.owner.log(`nbd: ${refused.message}`);
      this.owner.allowance.give(held - REPLY_OVERHEAD);
      return this.replies.error(type, hi, lo, refused, REPLY_OVERHEAD);
    }
    const dev = this.device;
    const fua = (flags & P.NBD_CMD_FLAG_FUA) !== 0;
    let op: Promise<Buffer | void>;
    let isWrite = false;
    try {
      switch (type) {
        case P.NBD_CMD_READ: {
          if (length < NOW_MAX && length > 0 && dev.readIntoNow && this.replies.readNow(hi, lo, offset, length, held)) return;
          if (length >= CACHED_MIN && this.replies.readFromCache(hi, lo, offset, length, held)) return;
          // Read straight into a reused buffer; it goes back to the pool once the kernel took the
          // reply (a failed read's buffer is dropped: a layer may still be filling it).
          const buf = this.pool.get(length);
          op = readInto(dev, buf, offset).then(() => buf);
          break;
        }
        case P.NBD_CMD_WRITE: {
          const data = payload!;
          op = writeThenFlush(dev, offset, data, fua ? { fua } : undefined);
          // Back to the pool only on success: a failed write may still have sub-writes reading it.
          if (pooled) op.then(() => this.pool.put(data), () => undefined);
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
    this.owner.opStarted();
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
          this.owner.log(`nbd: ${P.commandName(type)} [${offset}, +${length}) failed: ${(e as Error)?.message ?? e}`);
        }
        this.complete(type, hi, lo, offset, e instanceof Error ? e : new Error(String(e)), held);
      },
    );
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

  /** The whole BLOCK_STATUS reply chunk for base:allocation. */
  private async blockStatus(hi: number, lo: number, offset: number, length: number, one: boolean): Promise<Buffer> {
    const dev = this.device;
    const extents = dev.extents ? await dev.extents(offset, length) : [{ length, hole: false, zero: false }];
    const descriptors = toDescriptors(extents, offset, length, this.n.info.sizes.minimum, one ? 1 : MAX_DESCRIPTORS);
    return P.encodeBlockStatusChunk(P.NBD_REPLY_FLAG_DONE, hi, lo, this.n.allocationContext, descriptors);
  }

  private complete(type: number, hi: number, lo: number, offset: number, result: Buffer | Error | null, held: number): void {
    if (result instanceof Error) {
      // A failed WRITE's payload (and a READ's reservation) is given back now; the reply keeps its overhead.
      this.owner.allowance.give(held - REPLY_OVERHEAD);
      this.replies.error(type, hi, lo, result, REPLY_OVERHEAD);
    } else if (type === P.NBD_CMD_READ) {
      this.replies.read(hi, lo, offset, result as Buffer, held);
    } else if (type === P.NBD_CMD_BLOCK_STATUS) {
      this.replies.chunk(result as Buffer, held);
    } else {
      this.owner.allowance.give(held - REPLY_OVERHEAD);
      this.replies.simple(0, hi, lo, REPLY_OVERHEAD);
    }
    this.owner.opSettled();
  }
}
