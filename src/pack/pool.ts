/** A small pool of packing workers: prepare(run) → PreparedRun, spread over the cores. */
import { Worker } from 'node:worker_threads';
import { MedvError } from '../core/errors.js';
import type { PreparedRun } from './prepare.js';

interface Pending { resolve: (r: PreparedRun) => void; reject: (e: unknown) => void }

export class PreparePool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private next = 0;
  private failed: unknown;

  constructor(count: number, idKey: Buffer, level: number) {
    const url = new URL('./worker.js', import.meta.url);
    for (let i = 0; i < count; i++) {
      const w = new Worker(url, {
        workerData: { idKey: new Uint8Array(idKey), level },
        // a worker holds one run in and one out: small heaps keep the process's RSS flat and low
        resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 4 },
      });
      w.on('message', (m: { seq: number; result?: PreparedRun; error?: string }) => {
        const p = this.pending.get(m.seq);
        if (!p) return;
        this.pending.delete(m.seq);
        if (m.result) p.resolve(m.result);
        else p.reject(new MedvError('EINTERNAL', `pack worker failed: ${m.error}`));
      });
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => { if (code !== 0) this.fail(new MedvError('EINTERNAL', `pack worker exited with ${code}`)); });
      this.workers.push(w);
    }
  }

  private fail(e: unknown): void {
    this.failed ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  prepare(data: Buffer): Promise<PreparedRun> {
    if (this.failed) return Promise.reject(this.failed);
    const seq = this.seq++;
    const w = this.workers[this.next++ % this.workers.length];
    return new Promise<PreparedRun>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      w.postMessage({ seq, data });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }
}
