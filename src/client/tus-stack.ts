/**
 * tus-js-client (the tus 1.0 protocol: create, HEAD, PATCH, resume) on the client's own parts, so
 * that an upload obeys the same rules as every other request (./http.ts, ./retry.ts):
 *
 * - `AgentHttpStack` (tus-js-client's `httpStack`): every request it makes goes through the one
 *   HttpAgent (credentials only over TLS or to this machine, CA pinning, timeouts, bounded
 *   answers), to the server's origin only: a URL on another origin (a `Location` the server
 *   answered, or one kept from an earlier run) is refused before any connection (EBADREPLY). The
 *   agent does not retry these requests; a transient answer (./retry.ts TRANSIENT_STATUSES) fails
 *   the request with a TransientAnswer, for tus-js-client's retry to decide.
 * - `tusRetry` (`retryDelays` + `onShouldRetry`): that decision is ./retry.ts's `retryWaitMs`,
 *   the rule withRetry uses: transient failures only, backoff with jitter, Retry-After.
 *   tus-js-client asks the server for its offset (HEAD) before sending again.
 * - `fdReader` (`fileReader`): the file to send is a descriptor held open (`{fd, size}`); each
 *   chunk is streamed from that file (through /proc/self/fd), never read whole, never reopened by
 *   its name.
 */
import * as fs from 'node:fs';
import type { DetailedError, HttpRequest as TusRequest, HttpResponse as TusResponse, HttpStack } from 'tus-js-client';
import { MedvError } from '../core/errors.js';
import { type HttpAgent, type HttpMethod, type HttpResponse, type StreamBody, TransientAnswer, isRetryable } from './http.js';
import { type RetryPolicy, TRANSIENT_STATUSES, retryWaitMs } from './retry.js';

/** tus answers are a few headers and, on refusal, a short error body. */
const MAX_ANSWER = 64 * 1024;

export class AgentHttpStack implements HttpStack {
  /** `origin`: the only origin requests may go to (the `--server`'s). */
  constructor(private readonly agent: HttpAgent, private readonly origin: string) {}

  createRequest(method: string, url: string): TusRequest {
    return new AgentRequest(this.agent, this.origin, method as HttpMethod, url);
  }

  getName(): string {
    return 'medv HttpAgent';
  }
}

class AgentRequest implements TusRequest {
  private readonly headers: Record<string, string> = {};
  private progress: (bytes: number) => void = () => undefined;

  constructor(private readonly agent: HttpAgent, private readonly origin: string, private readonly method: HttpMethod, private readonly url: string) {}

  getMethod(): string { return this.method; }
  getURL(): string { return this.url; }
  setHeader(name: string, value: string): void { this.headers[name] = value; }
  getHeader(name: string): string | undefined { return this.headers[name]; }
  setProgressHandler(handler: (bytes: number) => void): void { this.progress = handler; }

  /** `body`: a slice of fdReader's, or null. */
  async send(body: StreamBody | null): Promise<TusResponse> {
    let url: URL | undefined;
    try { url = new URL(this.url); } catch { /* refused below */ }
    if (url?.origin !== this.origin) {
      throw new MedvError('EBADREPLY', `the server named an upload on another origin (${url?.origin ?? JSON.stringify(this.url.slice(0, 100))}, not ${this.origin}): nothing is sent there`, { server: this.origin });
    }
    const res = await this.agent.request({
      method: this.method, url, headers: this.headers, idempotent: false, maxBody: MAX_ANSWER,
      ...(body ? { body, onBodyProgress: this.progress } : {}),
    });
    if (TRANSIENT_STATUSES.has(res.status)) throw new TransientAnswer(res);
    return new AgentResponse(res);
  }

  /** medv never aborts an upload midway (an interrupted upload is a process that ended). */
  abort(): Promise<void> { return Promise.resolve(); }
  getUnderlyingObject(): undefined { return undefined; }
}

class AgentResponse implements TusResponse {
  constructor(private readonly res: HttpResponse) {}
  getStatus(): number { return this.res.status; }
  getHeader(name: string): string | undefined {
    const v = this.res.headers[name.toLowerCase()];
    return Array.isArray(v) ? v.join(', ') : v;
  }
  getBody(): string { return this.res.body.toString('utf8'); }
  getUnderlyingObject(): HttpResponse { return this.res; }
}

/**
 * tus-js-client's retry options for `policy`: one `retryDelays` slot per retry, each filled when
 * onShouldRetry has asked ./retry.ts (retryWaitMs) whether and how long to wait.
 */
export function tusRetry(policy: RetryPolicy): { retryDelays: number[]; onShouldRetry: (err: DetailedError, retryAttempt: number) => boolean } {
  const retryDelays = new Array<number>(policy.retries).fill(0);
  return {
    retryDelays,
    onShouldRetry(err, n) {
      const wait = retryWaitMs(err.causingError, n + 1, policy, isRetryable);
      if (wait === undefined) return false;
      retryDelays[n] = wait;
      return true;
    },
  };
}

/** A file held open, as an Upload's input for fdReader. */
export interface OpenFile { fd: number; size: number }

/** tus-js-client's `fileReader` for an OpenFile: slices are StreamBodies read from the fd. */
export const fdReader = {
  async openFile(input: OpenFile) {
    return {
      size: input.size,
      async slice(start: number, end: number) {
        const length = Math.max(0, Math.min(end, input.size) - start);
        const value: StreamBody & { size: number } = {
          size: length, length,
          // the held file itself (the fd's magic link), in a stream that owns and closes its own fd
          open: () => fs.createReadStream(`/proc/self/fd/${input.fd}`, { start, end: start + length - 1 }),
        };
        return { value, done: start + length >= input.size };
      },
      close() { /* the caller closes the fd */ },
    };
  },
};
