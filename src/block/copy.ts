import type { BlockDevice } from './device.js';

/**
 * Walk [0, total) of `source` in `chunk`-sized pieces, in order, with the next read already in
 * flight while `consume` handles the current piece (so reading and writing overlap). The one
 * sequential copy loop of the project: convert, encrypt, decrypt and import all go through it.
 */
export async function forEachChunk(
  source: Pick<BlockDevice, 'read'>,
  total: number,
  chunk: number,
  consume: (offset: number, data: Buffer) => Promise<void>,
): Promise<void> {
  const readAt = (off: number) => source.read(off, Math.min(chunk, total - off));
  let next: Promise<Buffer> | undefined = total > 0 ? readAt(0) : undefined;
  for (let off = 0; off < total; off += chunk) {
    const data = await next!;
    next = off + chunk < total ? readAt(off + chunk) : undefined;
    next?.catch(() => undefined); // awaited in the next round; a failure there is handled then
    await consume(off, data);
  }
}
