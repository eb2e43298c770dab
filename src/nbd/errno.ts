/**
 * The one table mapping medv error codes to NBD reply errors (proto.md, "Error values").
 */
import { type ErrorCode, MedvError } from '../core/errors.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM, NBD_ESHUTDOWN } from './protocol.js';

const ERRNO_BY_CODE: Partial<Record<ErrorCode, number>> = {
  EREADONLY: NBD_EPERM,
  ERANGE: NBD_EINVAL,
  EALIGN: NBD_EINVAL,
  EINVAL_ARG: NBD_EINVAL,
  EUNSUPPORTED: NBD_EINVAL,
  ENOSPACE: NBD_ENOSPC,
  ECLOSED: NBD_ESHUTDOWN,
  EIO: NBD_EIO,
};

/** NBD errno for an error thrown by a device; anything unknown (including non-MedvErrors) is EIO. */
export function nbdErrno(e: unknown): number {
  if (e instanceof MedvError) return ERRNO_BY_CODE[e.code] ?? NBD_EIO;
  return NBD_EIO;
}
