/**
 * Retry with backoff, in one place (in the spirit of undici's retry handler): which failures are
 * worth another try, how long to wait, and the loop itself. Everything the client sends goes
 * through ./http.ts, which runs each idempotent request under `withRetry`; a caller whose unit of
 * work is larger than one request runs that unit under `withRetry` with the same rules instead of
 * a loop of its own, and tus-js-client's retries of an upload (HEAD for the offset, then PATCH from
 * there) ask `retryWaitMs` (./tus-stack.ts).
 *
 * Transient (retried): network errors that say "not now" (refused, reset, unreachable, a DNS
 * server that did not answer, our own connect/idle timeouts), and the statuses 408, 423 (tus: the
 * upload is locked by a request still finishing), 429, 500, 502, 503, 504. A Retry-After (seconds
 * or an HTTP date) is waited for when it is at most `maxRetryAfterMs`; a longer one is not retried,
 * so the caller reports it (a login lockout says "wait 5 minutes", it is not slept through).
 * Everything else (4xx, a certificate that is not trusted, an unknown host, a malformed answer) is
 * final at once.
 */
import { setTimeout as sleep } from 'node:timers/promises';

export interface RetryPolicy {
  /** Further attempts after the first (0: none). */
  retries: number;
  /** Delay before the first retry; doubles per retry up to maxDelayMs (each drawn in [d/2, d]). */
  minDelayMs: number;
  maxDelayMs: number;
  /** The longest Retry-After that is waited for; a longer one ends the retries. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: Readonly<RetryPolicy> = { retries: 3, minDelayMs: 250, maxDelayMs: 4000, maxRetryAfterMs: 30_000 };
export const NO_RETRY: Readonly<RetryPolicy> = { ...DEFAULT_RETRY, retries: 0 };

/** HTTP statuses that say "try again". */
export const TRANSIENT_STATUSES: ReadonlySet<number> = new Set([408, 423, 429, 500, 502, 503, 504]);

/** Network error codes that say "not now" (ENOTFOUND is not one: the name does not exist). */
export const TRANSIENT_ERRORS: ReadonlySet<string> = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'ENETDOWN', 'ENETUNREACH', 'EHOSTDOWN', 'EHOSTUNREACH', 'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/** An attempt that failed in a way worth another try; `retryAfterMs` from the server when it said. */
export class TransientFailure extends Error {
  constructor(message: string, readonly retryAfterMs?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransientFailure';
  }
}

/** Is this error (from node:http or a socket) a transient network failure? */
export function isTransientNetworkError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && TRANSIENT_ERRORS.has(code);
}

/**
 * Milliseconds a Retry-After header asks for: delta-seconds or an HTTP date (RFC 9110 10.2.3).
 * undefined when absent or unreadable; never negative.
 */
export function retryAfterMs(header: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  if (v === undefined) return undefined;
  const t = v.trim();
  if (/^\d{1,9}$/.test(t)) return Number(t) * 1000;
  const at = Date.parse(t);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

/** The wait before retry `n` (1-based): exponential from minDelayMs, capped, with jitter. */
export function backoffMs(n: number, p: RetryPolicy): number {
  const d = Math.min(p.maxDelayMs, p.minDelayMs * 2 ** Math.max(0, n - 1));
  return Math.round(d / 2 + Math.random() * (d / 2));
}

const defaultTransient = (e: unknown) => e instanceof TransientFailure || isTransientNetworkError(e);

/**
 * The wait before retry `n` (1-based) after the failure `e`, or undefined when `e` ends the
 * retries: not transient, the retries used up, or a Retry-After longer than the policy allows.
 * The one rule: withRetry's, and tus-js-client's through ./tus-stack.ts.
 */
export function retryWaitMs(e: unknown, n: number, policy: RetryPolicy, transient: (e: unknown) => boolean = defaultTransient): number | undefined {
  if (n > policy.retries || !transient(e)) return undefined;
  const asked = e instanceof TransientFailure ? e.retryAfterMs : undefined;
  if (asked !== undefined && asked > policy.maxRetryAfterMs) return undefined;
  return Math.max(asked ?? 0, backoffMs(n, policy));
}

export interface RetryOptions {
  policy?: RetryPolicy;
  /** Is this failure worth another try? Default: a TransientFailure or a transient network error. */
  isTransient?: (e: unknown) => boolean;
  /** Told before each wait (for a log line). */
  onRetry?: (n: number, waitMs: number, e: unknown) => void;
  signal?: AbortSignal;
}

/**
 * Run `attempt(n)` (n = 0, 1, …) until it resolves, fails for good, or the retries are used up;
 * rethrows the last failure. A TransientFailure whose Retry-After is longer than the policy
 * allows is rethrown at once.
 */
export async function withRetry<T>(attempt: (n: number) => Promise<T>, o: RetryOptions = {}): Promise<T> {
  const policy = o.policy ?? DEFAULT_RETRY;
  const transient = o.isTransient ?? defaultTransient;
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (e) {
      const wait = o.signal?.aborted ? undefined : retryWaitMs(e, n + 1, policy, transient);
      if (wait === undefined) throw e;
      o.onRetry?.(n + 1, wait, e);
      await sleep(wait, undefined, o.signal ? { signal: o.signal } : undefined).catch(() => { throw e; });
    }
  }
}
