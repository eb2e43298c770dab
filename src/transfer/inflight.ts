/**
 * The bound on repository data a fetch holds at once. A request (HTTP, or a read of a repository
 * on a local path) is admitted for the bytes it asks for, and those bytes count until every piece
 * it carried has been decoded and written (or the request failed): the response body as it is
 * parsed, pieces partly received, pieces delivered and not yet decrypted, decompressed and
 * written. A request waits (on a release, not a timer) while the bytes already admitted and its
 * own would pass the limit; it goes alone when nothing else is held (one request larger than the
 * limit, such as an index's run directory, cannot wait forever). Not counted: the socket's own
 * buffer (one chunk of at most 64 KiB per connection), which the kernel's flow control bounds
 * once a request stops being read.
 */
import { MedvError } from '../core/errors.js';

/** Default bound on a fetch's repository bytes in flight (FetchImageOptions.inFlightBytes). */
export const FETCH_IN_FLIGHT_BYTES = 4 * 1024 * 1024;

export class InFlight {
  /** Bytes admitted and not yet released. */
  held = 0;
  /** The most ever held at once (FetchImageResult.maxInFlightBytes). */
  max = 0;
  private readonly waiting: Array<{ n: number; go: () => void }> = [];

  constructor(readonly limit: number = FETCH_IN_FLIGHT_BYTES) {
    if (!Number.isSafeInteger(limit) || limit <= 0) throw new MedvError('EINVAL_ARG', `the bound on bytes in flight must be a positive whole number of bytes (got ${limit})`);
  }

  /** Resolves once `n` more bytes fit under the limit (or nothing is held); first come, first served. */
  acquire(n: number): Promise<void> {
    if (this.waiting.length === 0 && this.fits(n)) {
      this.take(n);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push({ n, go: resolve }));
  }

  release(n: number): void {
    this.held -= n;
    while (this.waiting.length > 0 && this.fits(this.waiting[0].n)) {
      const w = this.waiting.shift()!;
      this.take(w.n);
      w.go();
    }
  }

  /** `f` with `n` bytes admitted, released when it settles. */
  async with<T>(n: number, f: () => Promise<T>): Promise<T> {
    await this.acquire(n);
    try {
      return await f();
    } finally {
      this.release(n);
    }
  }

  private fits(n: number): boolean { return this.held === 0 || this.held + n <= this.limit; }

  private take(n: number): void {
    this.held += n;
    if (this.held > this.max) this.max = this.held;
  }
}
