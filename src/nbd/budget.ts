/**
 * The server-wide bound on bytes held for clients (request payloads, read data, unsent replies).
 * Connections take bytes before admitting a request and give them back when the device or the
 * kernel is done with them; a connection that cannot take what it needs stops reading and waits
 * here until some other connection gives bytes back (as nbdkit stops reading requests when full).
 */
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
