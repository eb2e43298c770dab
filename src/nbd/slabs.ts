/**
 * Output slabs: memory the replies of READs answered at once (BlockDevice.readIntoNow) are built in,
 * header then data, each right after the previous one. Adjacent replies make one buffer view, so a
 * turn's worth of them goes to the socket as one write, with no buffer of their own and no copy.
 *
 * A slab is SLAB_SIZE bytes from the server's buffer pool. `refs` counts its replies the kernel has
 * not taken yet; once that is 0 and it is no longer the slab being filled, it goes back to the pool
 * (an idle connection holds none). Every byte in use belongs to a reply whose bytes were taken from
 * the allowance at admission, so a connection's slabs exceed its held bytes by at most one slab's slack.
 */
import type { BufferPool } from '../block/pool.js';

/** Size of an output slab. */
const SLAB_SIZE = 256 * 1024;

export interface Slab {
  buf: Buffer;
  used: number;
  refs: number;
}

export class Slabs {
  /** Where the next reply goes. */
  private current: Slab | undefined;

  constructor(private readonly pool: BufferPool) {}

  /** A slab with room for `size` (at most 256 KiB) more bytes at `slab.used`. */
  room(size: number): Slab {
    let slab = this.current;
    if (slab && slab.used + size > slab.buf.length) {
      // Full: it goes back to the pool once its last reply is written (release).
      this.current = slab = undefined;
    }
    if (!slab) this.current = slab = { buf: this.pool.get(SLAB_SIZE), used: 0, refs: 0 };
    return slab;
  }

  /** `size` bytes at `slab.used` now hold a reply: its view, held until release(slab). */
  commit(slab: Slab, size: number): Buffer {
    const at = slab.used;
    slab.used = at + size;
    slab.refs++;
    return slab.buf.subarray(at, at + size);
  }

  /** Nothing was laid out in the room asked for: a slab with no reply goes back at once. */
  unused(slab: Slab): void {
    if (slab.refs === 0) this.drop(slab);
  }

  /** The kernel took one reply of `slab`. */
  release(slab: Slab): void {
    if (--slab.refs === 0) this.drop(slab);
  }

  private drop(slab: Slab): void {
    if (slab === this.current) this.current = undefined;
    this.pool.put(slab.buf);
  }
}
