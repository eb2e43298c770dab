/**
 * The emulations of optional operations, in one place (nbdkit does the same in its server):
 * a device whose capability says 'emulate' implements its method with these, and the NBD server
 * uses them when a device offers 'none'.
 */
import type { BlockDevice, WriteOptions } from './device.js';

/** Largest zero buffer written per call. */
const ZERO_CHUNK = 1 << 20;
let zeroChunk: Buffer | undefined;

/** A shared, never-written buffer of `n` <= 1 MiB zeros. */
function zeroBuffer(n: number): Buffer {
  zeroChunk ??= Buffer.alloc(ZERO_CHUNK);
  return n === ZERO_CHUNK ? zeroChunk : zeroChunk.subarray(0, n);
}

/** writeZeroes as plain writes of zero buffers (1 MiB at a time), then a flush when FUA is asked. */
export async function writeZeroesByWriting(dev: BlockDevice, offset: number, length: number, options?: WriteOptions): Promise<void> {
  for (let done = 0; done < length;) {
    const n = Math.min(length - done, ZERO_CHUNK);
    await dev.write(offset + done, zeroBuffer(n));
    done += n;
  }
  if (options?.fua) await dev.flush();
}

/** A write with FUA on a device whose fua capability is not 'native': write, then flush. */
export async function writeThenFlush(dev: BlockDevice, offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
  if (options?.fua && dev.capabilities.fua !== 'native') {
    await dev.write(offset, data);
    await dev.flush();
  } else {
    await dev.write(offset, data, options);
  }
}

/** Read into the caller's buffer: the device's own readInto(), else readByCopy(). */
export async function readInto(dev: BlockDevice, buf: Buffer, offset: number): Promise<void> {
  return dev.readInto ? dev.readInto(buf, offset) : readByCopy(dev, buf, offset);
}

/** readInto() emulated: the device's read(), then one copy into the caller's buffer. */
export async function readByCopy(dev: BlockDevice, buf: Buffer, offset: number): Promise<void> {
  const data = await dev.read(offset, buf.length);
  data.copy(buf, 0, 0, buf.length);
}
