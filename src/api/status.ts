/** HTTP status by error code: the one table the server maps typed errors through. */
import { MedvError, type ErrorCode } from '../core/errors.js';

export const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  EINVAL_ARG: 400,
  ENOENT: 404,
  EEXIST: 409,
  EFORMAT: 422,
  ECHECKSUM: 422,
  ETRUNCATED: 422,
  EVERSION: 422,
  ECORRUPT: 422,
  EUNSUPPORTED: 422,
  ESIGNATURE: 422,
  EPARENT: 422,
  ENOSPACE: 507,
  EDENIED: 401,
  EINSECURE: 403,
  EPOLICY: 400,
  ERATELIMIT: 429,
  ETOOLARGE: 413,
  ENOKEY: 409,
  EEXPIRED: 403,
  ELOCKED: 423,
  EWIPED: 410,
};

/** The table's status, or 403 for an EDENIED that is a refusal of a valid login (data.httpStatus). */
export function httpStatusFor(e: unknown): number {
  if (e instanceof MedvError && e.code === 'EDENIED' && e.data.httpStatus === 403) return 403;
  return e instanceof MedvError ? HTTP_STATUS[e.code] ?? 500 : 500;
}

/**
 * The error code of an HTTP status when the answer names none of its own (or names one this
 * client does not know): the inverse of HTTP_STATUS, one code per status. Where several codes share
 * a status, the general one stands for them (400 EINVAL_ARG, not EPOLICY; 403 EDENIED, not
 * EINSECURE or EEXPIRED; 409 EEXIST, not ENOKEY; 422 EFORMAT). Any other status is EHTTP.
 */
const CODE_BY_STATUS: Readonly<Record<number, ErrorCode>> = {
  400: 'EINVAL_ARG',
  401: 'EDENIED',
  403: 'EDENIED',
  404: 'ENOENT',
  409: 'EEXIST',
  413: 'ETOOLARGE',
  422: 'EFORMAT',
  429: 'ERATELIMIT',
  507: 'ENOSPACE',
};

export function codeForStatus(status: number): ErrorCode {
  return CODE_BY_STATUS[status] ?? 'EHTTP';
}
