/**
 * HTTP status by error code: the one table every answer of the server that is not a success is
 * mapped through (api.ts, images.ts, static.ts, http.ts), and that the client reads back.
 */
import { MedvError, type ErrorCode } from '../core/errors.js';

export const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  EINVAL_ARG: 400,
  EDENIED: 401,
  EFORBIDDEN: 403,
  EINSECURE: 403,
  EEXPIRED: 403,
  ENOENT: 404,
  EMETHOD: 405,
  ETIMEOUT: 408,
  EEXIST: 409,
  ENOKEY: 409,
  EWIPED: 410,
  EPRECONDITION: 412,
  ETOOLARGE: 413,
  ERANGE: 416,
  EFORMAT: 422,
  ECHECKSUM: 422,
  ETRUNCATED: 422,
  EVERSION: 422,
  ECORRUPT: 422,
  EUNSUPPORTED: 422,
  ESIGNATURE: 422,
  EPARENT: 422,
  ELOCKED: 423,
  EPOLICY: 400,
  ERATELIMIT: 429,
  EBUSY: 503,
  ENOSPACE: 507,
};

/** The status of an error code (500 for a code the table does not name). */
export function httpStatusOf(code: ErrorCode): number {
  return HTTP_STATUS[code] ?? 500;
}

/** The status of a thrown value: its code's, or 500 for anything that is not a MedvError. */
export function httpStatusFor(e: unknown): number {
  return e instanceof MedvError ? httpStatusOf(e.code) : 500;
}

/**
 * The error code of an HTTP status when the answer names none of its own (or names one this
 * client does not know): the inverse of HTTP_STATUS, derived from it, one code per status. Where several codes share
 * a status, the general one stands for them (400 EINVAL_ARG, not EPOLICY; 403 EFORBIDDEN, not
 * EINSECURE or EEXPIRED; 409 EEXIST, not ENOKEY; 422 EFORMAT). Any other status is EHTTP.
 */
const CODE_BY_STATUS: ReadonlyMap<number, ErrorCode> = (() => {
  const m = new Map<number, ErrorCode>();
  // The first code of a status in HTTP_STATUS is its general one (the table lists it first).
  for (const [code, status] of Object.entries(HTTP_STATUS) as [ErrorCode, number][]) if (!m.has(status)) m.set(status, code);
  return m;
})();

export function codeForStatus(status: number): ErrorCode {
  return CODE_BY_STATUS.get(status) ?? 'EHTTP';
}
