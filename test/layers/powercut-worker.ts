/** Worker thread of powercut.test.ts: runs its share of (stack, seed) jobs, posts their stats. */
import { parentPort, workerData } from 'node:worker_threads';
import { type StackName, newStats, runSeed } from './powercut-check.js';

const jobs = workerData as Array<{ stack: StackName; seed: number }>;
const out = [];
for (const job of jobs) {
  const stats = newStats();
  await runSeed(job.stack, job.seed, stats);
  out.push({ ...job, stats });
}
parentPort!.postMessage(out);
