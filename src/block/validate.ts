import { MedvError } from '../core/errors.js';
import type { BlockDevice } from './device.js';

/**
 * What an edge (the NBD server) was asked to do. Write-type operations change data; 'status' asks
 * for allocation (extents); 'flush' carries no range.
 */
export type RequestOp = 'read' | 'write' | 'zero' | 'trim' | 'flush' | 'status';

const WRITE_OPS: ReadonlySet<RequestOp> = new Set(['write', 'zero', 'trim']);

/**
 * Validate a request, once, at the edge; layers call it as an assertion.
 *
 * - `op` boolean (layers): `write` says whether the request changes data. Throws EINVAL_ARG for a
 *   bad offset or length, ERANGE past the end, EREADONLY for a write to a read-only device.
 * - `op` a RequestOp (edges): the protocol's distinctions, in this order: EINVAL_ARG for bad numbers,
 *   a FLUSH with a range, an empty status query or a READ/WRITE longer than `maxLength`; EREADONLY for
 *   a write-type request on a read-only target; past the end, ENOSPACE for write-type requests (there
 *   is no room to write there) and ERANGE otherwise. Edges map these codes through their one table.
 */
export function validateRequest(dev: Pick<BlockDevice, 'size' | 'readOnly' | 'description'>, offset: number, length: number,
  op: boolean | RequestOp, maxLength = Infinity): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new MedvError('EINVAL_ARG', `invalid request offset=${offset} length=${length}`, { file: dev.description });
  }
  if (typeof op === 'boolean') {
    if (offset + length > dev.size) throw pastEnd('ERANGE', dev, offset, length);
    if (op && dev.readOnly) throw new MedvError('EREADONLY', 'device is read-only', { file: dev.description });
    return;
  }
  if (op === 'flush') {
    if (offset !== 0 || length !== 0) throw new MedvError('EINVAL_ARG', 'FLUSH must have offset and length 0', { file: dev.description });
    return;
  }
  if (op === 'status' && length === 0) throw new MedvError('EINVAL_ARG', 'block status of an empty range', { file: dev.description, offset });
  if ((op === 'read' || op === 'write') && length > maxLength) {
    throw new MedvError('EINVAL_ARG', `request of ${length} bytes exceeds the maximum ${maxLength}`, { file: dev.description, offset });
  }
  const write = WRITE_OPS.has(op);
  if (write && dev.readOnly) throw new MedvError('EREADONLY', 'device is read-only', { file: dev.description });
  if (offset + length > dev.size) throw pastEnd(write ? 'ENOSPACE' : 'ERANGE', dev, offset, length);
}

function pastEnd(code: 'ERANGE' | 'ENOSPACE', dev: Pick<BlockDevice, 'size' | 'description'>, offset: number, length: number): MedvError {
  return new MedvError(code, `request [${offset}, +${length}) is past the end of the device (size ${dev.size})`,
    { file: dev.description, offset });
}
