/**
 * The audit log as the API and the console see it: what happened, who did it, from where.
 *
 * Bounded (issue 18 item 18: anonymous requests used to add a row each, without end):
 * - repeated refusals (failed logins, locked logins, refused admin tokens, refused grants and
 *   reports) of one action by one actor on one target from one address within `windowMs` are one
 *   row with a count and the time of the last one (the key of that window is unique in the table,
 *   so several instances on one PostgreSQL add to the same row);
 * - rows whose last occurrence is older than `retentionMs` are deleted, and beyond `maxRows` the
 *   oldest go (refusals first, then ROUTINE_ACTIONS, then what administrators did): at start,
 *   every hour, and after every `maxRows / 10` (at most 1000) new entries on this instance, so the
 *   table never holds much more than `maxRows`.
 * Never a secret: callers put names, ids and addresses in `detail`, never a password, token or key.
 */
import { createHash } from 'node:crypto';
import type { AuditEntry, AuditQuery, AuditRecord, Store } from './store/index.js';

export interface AuditOptions {
  /** Rows older than this (by their last occurrence) are deleted. */
  retentionMs: number;
  /** At most this many rows (the oldest go first). */
  maxRows: number;
  /** Repeated refusals within this window are one row. */
  windowMs: number;
}

export const AUDIT_DEFAULTS: AuditOptions = {
  retentionMs: 90 * 86400_000,
  maxRows: 1_000_000,
  windowMs: 10 * 60_000,
};

export const AUDIT_PAGE_MAX = 1000;

/**
 * Actions any account may repeat at will (its own logins, key releases, the clients it drops by
 * registering new ones): past the row cap they go after the refusals and before what
 * administrators did, so an ordinary account cannot flood the administrators' actions out.
 */
export const ROUTINE_ACTIONS: readonly string[] = ['login', 'logout', 'keys.release', 'client.drop'];

export interface AuditPage { entries: AuditRecord[]; next: string | null }

export class Audit {
  readonly o: AuditOptions;
  private sincePrune = 0;
  private pruning: Promise<unknown> | undefined;
  private timer: NodeJS.Timeout;

  constructor(readonly store: Store, o: Partial<AuditOptions> = {}) {
    this.o = { ...AUDIT_DEFAULTS, ...o };
    this.timer = setInterval(() => { void this.prune(); }, 3600_000);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** One entry: an action someone took. */
  async record(e: AuditEntry, now = Date.now()): Promise<void> {
    await this.store.audit(e, now);
    await this.counted();
  }

  /** A refusal that may repeat: aggregated per action, actor, target and address within the window. */
  async refused(e: AuditEntry, now = Date.now()): Promise<void> {
    const bucket = Math.floor(now / this.o.windowMs);
    const agg = createHash('sha256').update(JSON.stringify([e.action, e.actor, e.target, e.address ?? '', bucket])).digest('hex').slice(0, 32);
    await this.store.auditRepeated(e, agg, now);
    await this.counted();
  }

  /**
   * Every `maxRows / 10` entries the request that adds one waits for a prune (a failed prune is
   * forgotten, never the request's error): the request is answered only after the table is back
   * under its cap, so a flood can outrun the cap by at most the entries of the requests in flight,
   * however slow the database (a prune left running on its own let a sequential flood add rows
   * faster than it deleted them: 56 rows for a cap of 40 on a loaded PostgreSQL).
   */
  private async counted(): Promise<void> {
    if (++this.sincePrune >= Math.max(1, Math.min(1000, Math.floor(this.o.maxRows / 10)))) await this.prune();
  }

  /** Apply retention and the row cap now (one pass at a time); resolves with the rows deleted. */
  prune(now = Date.now()): Promise<number> {
    if (this.pruning) return this.pruning.then(() => 0);
    this.sincePrune = 0;
    const p = this.store.pruneAudit(now - this.o.retentionMs, this.o.maxRows, ROUTINE_ACTIONS).catch(() => 0);
    this.pruning = p.finally(() => { this.pruning = undefined; });
    return p;
  }

  /** One page, newest first; `next` is the cursor of the page after it (null at the end). */
  async list(q: AuditQuery): Promise<AuditPage> {
    const rows = await this.store.auditLog({ ...q, limit: q.limit + 1 });
    const entries = rows.slice(0, q.limit);
    const last = entries[entries.length - 1];
    return { entries, next: rows.length > q.limit && last ? encodeAuditCursor(Date.parse(last.time), last.id) : null };
  }
}

export function encodeAuditCursor(time: number, id: string): string {
  return `${time}.${id}`;
}

/** The cursor of list(): `<ms>.<32 hex>`, or undefined when it is not one. */
export function decodeAuditCursor(v: string): { time: number; id: string } | undefined {
  const m = /^(\d{1,15})\.([0-9a-f]{32})$/.exec(v);
  return m ? { time: Number(m[1]), id: m[2] } : undefined;
}
