/**
 * A small pool of packing workers: prepare(job) fills a RunJob's `prep` from its `data` on another
 * core. The job's buffers are transferred to the worker and back (no copy); while a job is away its
 * buffers are detached here, and the caller must not touch them until the promise settles.
 */
import { Worker } from 'node:worker_threads';
import { MedvError, fromSystemError } from '../core/errors.js';
import type { RunJob } from './prepare.js';

interface Pending { job: RunJob; worker: number; resolve: () => void; reject: (e: unknown) => void }

export class PreparePool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  /** Jobs each worker has now: a job goes to the least busy (one held up by the scheduler gets fewer). */
  private readonly load: number[] = [];
  private seq = 0;
  private failed: unknown;

  /** `file`: the disk, named in errors of the reads the workers make. */
  constructor(count: number, idKey: Buffer, level: number | undefined, private readonly file?: string) {
    const url = new URL('./worker.js', import.meta.url);
    for (let i = 0; i < count; i++) {
      const w = new Worker(url, {
        workerData: { idKey: new Uint8Array(idKey), level },
        // a worker holds one run in and one out: small heaps keep the process's RSS flat and low
        resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 4 },
      });
      w.on('message', (m: { seq: number; data?: ArrayBuffer; prep?: ArrayBuffer; error?: string; code?: string }) => {
        const p = this.pending.get(m.seq);
        if (!p) return;
        this.pending.delete(m.seq);
        this.load[p.worker]--;
        if (m.data && m.prep) {
          p.job.data = Buffer.from(m.data);
          p.job.prep = Buffer.from(m.prep);
          p.resolve();
        } else if (m.code) p.reject(fromSystemError(Object.assign(new Error(m.error), { code: m.code }), p.job.file ? this.file : undefined));
        else p.reject(new MedvError('EINTERNAL', `pack worker failed: ${m.error}`));
      });
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => { if (code !== 0) this.fail(new MedvError('EINTERNAL', `pack worker exited with ${code}`)); });
      this.workers.push(w);
      this.load.push(0);
    }
  }

  private fail(e: unknown): void {
    this.failed ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  prepare(job: RunJob): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const seq = this.seq++;
    const worker = this.load.indexOf(Math.min(...this.load));
    const w = this.workers[worker];
    this.load[worker]++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(seq, { job, worker, resolve, reject });
      const data = job.data.buffer as ArrayBuffer;
      const prep = job.prep.buffer as ArrayBuffer;
      w.postMessage({ seq, data, prep, length: job.length, file: job.file, spans: job.spans }, [data, prep]);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }
}
