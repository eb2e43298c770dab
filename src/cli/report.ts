/**
 * How a command ends, without commander (src/cli/vm-thin.ts uses it before commander is loaded):
 * the one exit-status table, the one-line error report, JSON and one-line results.
 * src/cli/common.ts re-exports all of it.
 */
import { MedvError, type ErrorCode } from '../core/errors.js';

/** Exit status by error code: the one table the CLI maps errors through (any other code: 1). */
export const EXIT_STATUS: Partial<Record<ErrorCode, number>> = {
  EINVAL_ARG: 2,
  EMETHOD: 2,
  ETOOLARGE: 2,
  ENOENT: 3,
  EEXIST: 3,
  EBADKEY: 4,
  ENOKEY: 4,
  ECRYPTO: 4,
  EINSECURE: 4,
  EDENIED: 4,
  EFORBIDDEN: 4,
  ENOLOGIN: 4,
  EUNSAFE: 4,
  EFORMAT: 5,
  ECHECKSUM: 5,
  ETRUNCATED: 5,
  EVERSION: 5,
  ECORRUPT: 5,
  EPARENT: 5,
  EAUTH: 5,
  ESIGNATURE: 5,
  EBADBLOCK: 5,
  EBADREPLY: 5,
  EPOLICY: 5,
  EREADONLY: 6,
  EUNSUPPORTED: 7,
  EBUSY: 9,
  ENETWORK: 10,
  EHTTP: 10,
  ECHANGED: 10,
  EPRECONDITION: 10,
  ERATELIMIT: 10,
  ESAVEDSTATE: 11,
  EENGINE: 12,
  EOFFLINE: 13,
  EEXPIRED: 14,
  ELOCKED: 15,
  EWIPED: 16,
  ETIMEOUT: 17,
};

/** The result of a leaf: `value` as JSON with --json, else `line` (one line, or a few) on stdout. */
export function printResult(json: unknown, value: unknown, line: string | (() => string)): void {
  if (json) printJson(value);
  else process.stdout.write(`${typeof line === 'string' ? line : line()}\n`);
}

export function exitStatusFor(e: unknown): number {
  if (e instanceof MedvError) return EXIT_STATUS[e.code] ?? 1;
  return 1;
}

/** One line on stderr, never a stack trace (set MEDV_DEBUG=1 for one). */
export function reportError(e: unknown, json: boolean): void {
  if (process.env.MEDV_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  if (json) {
    const body = e instanceof MedvError ? e.toJSON() : { code: 'EINTERNAL', message: String((e as Error)?.message ?? e) };
    process.stdout.write(`${JSON.stringify({ error: body })}\n`);
  }
  const first = String((e as Error)?.message ?? e).split('\n')[0];
  process.stderr.write(`medv: ${first}${e instanceof MedvError ? ` [${e.code}]` : ''}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}
