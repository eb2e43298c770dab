import { MedvError } from '../errors.js';
import type { BlockDevice } from './device.js';

/** Validate a request against a device, once, at the edge. Throws ERANGE / EREADONLY / EINVAL_ARG. */
export function validateRequest(dev: BlockDevice, offset: number, length: number, write: boolean): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new MedvError('EINVAL_ARG', `invalid request offset=${offset} length=${length}`, { file: dev.description });
  }
  if (offset + length > dev.size) {
    throw new MedvError('ERANGE', `request [${offset}, +${length}) is past the end of the device (size ${dev.size})`,
      { file: dev.description, offset });
  }
  if (write && dev.readOnly) {
    throw new MedvError('EREADONLY', 'device is read-only', { file: dev.description });
  }
}

/** Parse a size such as 4096, 64K, 10M, 2G, 1T (binary units). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*$/.exec(text);
  if (!m) throw new MedvError('EINVAL_ARG', `invalid size '${text}' (use bytes or a number with K, M, G or T)`);
  const mult: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };
  const n = Number(m[1]) * mult[m[2].toLowerCase()];
  if (!Number.isSafeInteger(n)) throw new MedvError('EINVAL_ARG', `size '${text}' is too large`);
  return n;
}
