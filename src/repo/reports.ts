/**
 * Status reports queued while the server cannot be reached: data/Users/<user>/Reports.dat, sealed
 * under the host key (purpose "reports"), at most 256 entries (the oldest dropped first). Each
 * entry carries a queue-local id, so a drain removes exactly what it sent even when reports were
 * added meanwhile. Calls on one ReportQueue run one at a time; two processes adding at the same
 * instant may lose one of the two additions (last rename wins), never damage the file. A report the
 * server refuses as invalid is dropped (drain's `refused`), never retried forever.
 */
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { type ClientRoot, userDir } from './paths.js';
import { readSealed, writeSealed } from './sealed.js';

export interface QueuedReport {
  workspace: string;
  version: number | null;
  state: 'running' | 'stopped' | 'suspended' | 'updating' | 'failed' | 'offline';
  lastError?: string;
  at: string;
}

export const REPORTS_FILE = 'Reports.dat';
export const REPORTS_MAX = 256;
export const REPORTS_BATCH = 64;
const PURPOSE = 'reports';
const STATES: ReadonlyArray<QueuedReport['state']> = ['running', 'stopped', 'suspended', 'updating', 'failed', 'offline'];
const ERROR_MAX = 1024;

interface Stored { v: 1; next: number; items: Array<{ id: number; r: QueuedReport }> }

/** A report checked and copied (only its known fields; lastError cut to 1024 characters). */
function checked(r: QueuedReport, file?: string): QueuedReport {
  const bad = (m: string) => (file ? new MedvError('ECORRUPT', `report queue entry: ${m}`, { file }) : new MedvError('EINVAL_ARG', `report: ${m}`));
  if (!r || typeof r !== 'object') throw bad('not an object');
  if (typeof r.workspace !== 'string' || r.workspace.length < 1 || r.workspace.length > 64) throw bad('workspace must be 1-64 characters');
  if (r.version !== null && (!Number.isSafeInteger(r.version) || r.version < 1)) throw bad('version must be a positive integer or null');
  if (!STATES.includes(r.state)) throw bad(`state must be one of ${STATES.join(', ')}`);
  if (typeof r.at !== 'string' || r.at.length > 64 || Number.isNaN(Date.parse(r.at))) throw bad('at must be an ISO time');
  if (r.lastError !== undefined && typeof r.lastError !== 'string') throw bad('lastError must be a string');
  const out: QueuedReport = { workspace: r.workspace, version: r.version, state: r.state, at: r.at };
  if (r.lastError !== undefined) out.lastError = r.lastError.slice(0, ERROR_MAX);
  return out;
}

export class ReportQueue {
  readonly file: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly c: ClientRoot, user: string) {
    this.file = join(userDir(c, user), REPORTS_FILE);
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.chain.then(f, f);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async load(): Promise<Stored> {
    const s = await readSealed<Stored>(this.c, this.file, PURPOSE);
    if (s === undefined) return { v: 1, next: 1, items: [] };
    if (!s || s.v !== 1 || !Number.isSafeInteger(s.next) || !Array.isArray(s.items) || s.items.length > REPORTS_MAX) {
      throw new MedvError('ECORRUPT', 'report queue is not a queue', { file: this.file });
    }
    const items = s.items.map((it) => {
      if (!it || !Number.isSafeInteger(it.id)) throw new MedvError('ECORRUPT', 'report queue entry without an id', { file: this.file });
      return { id: it.id, r: checked(it.r, this.file) };
    });
    return { v: 1, next: s.next, items };
  }

  /** The queued reports, oldest first. */
  list(): Promise<QueuedReport[]> {
    return this.serial(async () => (await this.load()).items.map((i) => i.r));
  }

  /** Queue one report; beyond 256 the oldest are dropped. */
  async add(r: QueuedReport): Promise<void> {
    const rep = checked(r);
    await this.serial(async () => {
      const s = await this.load();
      s.items.push({ id: s.next++, r: rep });
      if (s.items.length > REPORTS_MAX) s.items.splice(0, s.items.length - REPORTS_MAX);
      await writeSealed(this.c, this.file, PURPOSE, s);
    });
  }

  /**
   * Send the queue oldest first in batches of at most 64; each batch sent is removed at once. A
   * batch that fails for a reason `refused` says is final (the server refuses its content: a
   * report it will never take) is sent again one report at a time, and each report refused on its
   * own is dropped (told to `onDropped`), so one bad report never blocks the others. Any other
   * failure (the server cannot be reached, is busy, the login expired) stops the drain: that
   * batch and everything after it stay queued for the next drain. Without `refused` every failure
   * stops the drain.
   */
  async drain(send: (reports: QueuedReport[]) => Promise<void>, o: { refused?: (e: unknown) => boolean; onDropped?: (r: QueuedReport, e: unknown) => void } = {}): Promise<{ sent: number; dropped: number }> {
    const snapshot = await this.serial(() => this.load());
    let sent = 0;
    let dropped = 0;
    const forget = (ids: number[]) => this.serial(async () => {
      const gone = new Set(ids);
      const s = await this.load();
      s.items = s.items.filter((it) => !gone.has(it.id));
      await writeSealed(this.c, this.file, PURPOSE, s);
    });
    for (let i = 0; i < snapshot.items.length; i += REPORTS_BATCH) {
      const batch = snapshot.items.slice(i, i + REPORTS_BATCH);
      try {
        await send(batch.map((b) => ({ ...b.r })));
        await forget(batch.map((b) => b.id));
        sent += batch.length;
        continue;
      } catch (e) {
        if (!o.refused?.(e)) break;
        if (batch.length === 1) {
          o.onDropped?.(batch[0].r, e);
          await forget([batch[0].id]);
          dropped++;
          continue;
        }
      }
      // refused as a batch: find the report(s) it will not take
      for (const one of batch) {
        try {
          await send([{ ...one.r }]);
          sent++;
        } catch (e) {
          if (!o.refused?.(e)) return { sent, dropped };
          o.onDropped?.(one.r, e);
          dropped++;
        }
        await forget([one.id]);
      }
    }
    return { sent, dropped };
  }
}
