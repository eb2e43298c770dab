/**
 * The bounds on bytes held for clients (request payloads, read data, unsent replies): the server's
 * ByteBudget, each connection's Allowance within it, and what one request holds (requestBytes).
 * A connection takes bytes before admitting a request and gives them back when the device or the
 * kernel is done with them; a connection that cannot take what it needs stops reading and waits
 * until bytes come back (as nbdkit stops reading requests when full).
 */
import { REPLY_OVERHEAD, STATUS_RESERVE } from './options.js';
import { NBD_CMD_BLOCK_STATUS, NBD_CMD_READ, NBD_CMD_WRITE, type Request } from './protocol.js';

export class ByteBudget {
  private used = 0;
  private waiters: Array<() => void> = [];

  constructor(readonly limit: number) {}

  get inUse(): number { return this.used; }

  /** Whether `n` more bytes fit now. */
  fits(n: number): boolean { return this.used + n <= this.limit; }

  take(n: number): void { this.used += n; }

  give(n: number): void {
    this.used -= n;
    if (this.waiters.length && n > 0) {
      const ws = this.waiters;
      this.waiters = [];
      for (const w of ws) w();
    }
  }

  /** Call `wake` once, the next time bytes are given back. */
  wait(wake: () => void): void {
    if (!this.waiters.includes(wake)) this.waiters.push(wake);
  }

  forget(wake: () => void): void {
    this.waiters = this.waiters.filter((w) => w !== wake);
  }
}

/**
 * One connection's share of the bound: the bytes it holds, taken from its own allowance and from
 * the server's ByteBudget together. When the connection is gone everything it holds goes back to the
 * server at once (releaseAll); what its late completions give back after that only counts down here.
 */
export class Allowance {
  private held = 0;
  private gone = false;

  /** `wake` is called once when the server's budget was short and bytes came back to it. */
  constructor(private readonly budget: ByteBudget, readonly limit: number, private readonly wake: () => void) {}

  get heldBytes(): number { return this.held; }

  /** Whether `n` more bytes fit both bounds now (if only the server's is short, `wake` comes later). */
  fits(n: number): boolean {
    if (this.held + n > this.limit) return false;
    if (this.budget.fits(n)) return true;
    this.budget.wait(this.wake);
    return false;
  }

  take(n: number): void {
    this.held += n;
    if (!this.gone) this.budget.take(n);
  }

  give(n: number): void {
    if (n === 0) return;
    this.held -= n;
    if (!this.gone) this.budget.give(n);
  }

  releaseAll(): void {
    this.budget.forget(this.wake);
    if (!this.gone) {
      this.gone = true;
      this.budget.give(this.held);
    }
  }
}

/** Bytes a request holds from admission until its reply is sent: its payload or data (up to the
 *  maximum: a larger one is refused and holds none), and room for its reply. */
export function requestBytes(req: Request, maximum: number): number {
  switch (req.type) {
    case NBD_CMD_READ:
    case NBD_CMD_WRITE:
      return REPLY_OVERHEAD + (req.length <= maximum ? req.length : 0);
    case NBD_CMD_BLOCK_STATUS:
      return STATUS_RESERVE;
    default:
      return REPLY_OVERHEAD;
  }
}
