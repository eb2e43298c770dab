/**
 * Reusable large buffers: NBD WRITE payloads and READ replies, EVHD encryption bounce buffers.
 * A fresh multi-megabyte Buffer costs far more than the copy into it (page faults and GC pressure:
 * ~200 us per MiB here, against ~30 us reused). A buffer goes back only once nothing uses it any
 * more (after the device's write resolved, or the kernel took the reply); a buffer whose operation
 * failed is dropped, since a layer may still hold it. This relies on the BlockDevice contract that
 * a device keeps no caller buffer after the promise settles.
 */
/** Payloads below this size are not pooled (Node's own slab allocator serves them cheaply). */
const POOL_MIN = 64 * 1024;

export class BufferPool {
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
