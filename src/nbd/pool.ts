/**
 * Reusable buffers for large WRITE payloads and READ replies. A fresh multi-megabyte Buffer costs far more than the
 * copy into it (page faults and GC pressure: ~200 us per MiB here, against ~30 us reused), so
 * payloads that span socket chunks are assembled in pooled buffers, returned to the pool when the
 * device's write() resolves (a failed write's buffer is dropped). This relies on the BlockDevice
 * contract that a device does not keep the caller's buffer after write() resolves (every layer
 * copies or encrypts into its own).
 */
/** Payloads below this size are not pooled (Node's own slab allocator serves them cheaply). */
const POOL_MIN = 64 * 1024;

export class PayloadPool {
  private readonly free = new Map<number, Buffer[]>();
  private bytes = 0;
  /** `limit`: bytes of idle buffers kept. */
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
