/**
 * Power-loss safety of the disk stack, model-checked: see powercut-check.ts for the model and
 * test/helpers/powercut.ts for the device. The seeds of every stack are spread over worker threads
 * (one per core, at most 4), so the run takes about CPU time / cores.
 *
 * POWERCUT_STACK=name POWERCUT_SEED=n replays one seed in this process (a failure prints the
 * line); POWERCUT_SEEDS=n runs n seeds per stack; POWERCUT_WORKERS=n sets the threads (0: none).
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { STACKS, SEEDS, type StackName, type Stats, newStats, runSeed } from './powercut-check.js';
import { PowerCutDevice, ScratchDevice } from '../helpers/powercut.js';
import { describeConformance, prng } from '../conformance/blockdevice.js';

type Job = { stack: StackName; seed: number };

/** Run `jobs` on `n` worker threads (round robin), or here when n is 0; per-stack stats. */
async function runJobs(jobs: Job[], n: number): Promise<Map<StackName, Stats>> {
  const out = new Map<StackName, Stats>(STACKS.map((s) => [s, newStats()]));
  const add = (stack: StackName, st: Stats): void => {
    const t = out.get(stack)!;
    t.cuts += st.cuts; t.steps += st.steps; t.mutations += st.mutations; t.flushes += st.flushes;
    t.failures.push(...st.failures);
  };
  if (n === 0) {
    for (const j of jobs) {
      const st = newStats();
      await runSeed(j.stack, j.seed, st);
      add(j.stack, st);
    }
    return out;
  }
  const shares = Array.from({ length: n }, (_, k) => jobs.filter((_, i) => i % n === k));
  const results = await Promise.all(shares.filter((s) => s.length > 0).map((share) => new Promise<Array<Job & { stats: Stats }>>((resolve, reject) => {
    const w = new Worker(new URL('./powercut-worker.js', import.meta.url), { workerData: share });
    let result: Array<Job & { stats: Stats }> | undefined;
    w.once('message', (m: Array<Job & { stats: Stats }>) => { result = m; });
    w.once('error', reject);
    w.once('exit', (code) => (result ? resolve(result) : reject(new Error(`power-cut worker exited with ${code} and no result`))));
  })));
  for (const r of results.flat()) add(r.stack, r.stats);
  return out;
}

describe('power-cut model checking (test/layers/powercut-check.ts)', function () {
  this.timeout(300_000);
  const only = process.env.POWERCUT_STACK as StackName | undefined;
  const oneSeed = process.env.POWERCUT_SEED !== undefined ? Number(process.env.POWERCUT_SEED) : undefined;
  const stacks = STACKS.filter((s) => !only || s === only);
  let results: Map<StackName, Stats>;

  before(async function () {
    const t0 = Date.now();
    const jobs: Job[] = [];
    for (const stack of stacks) {
      const seeds = oneSeed !== undefined ? [oneSeed] : Array.from({ length: Number(process.env.POWERCUT_SEEDS ?? SEEDS[stack]) }, (_, i) => 1000 + i);
      for (const seed of seeds) jobs.push({ stack, seed });
    }
    const workers = oneSeed !== undefined ? 0 : Number(process.env.POWERCUT_WORKERS ?? Math.min(4, availableParallelism()));
    results = await runJobs(jobs, workers);
    let cuts = 0;
    for (const stack of stacks) {
      const st = results.get(stack)!;
      cuts += st.cuts;
      console.log(`      ${stack}: ${st.steps} steps, ${st.mutations} storage mutations, ${st.flushes} flushes, ${st.cuts} cuts verified`);
    }
    console.log(`      power-cut total: ${cuts} cuts verified in ${((Date.now() - t0) / 1000).toFixed(1)} s (${workers || 'no'} worker threads)`);
  });

  for (const stack of STACKS) {
    if (only && only !== stack) continue;
    it(`${stack}: every cut reopens, checks clean, and keeps every flushed write`, () => {
      const st = results.get(stack)!;
      assert.deepEqual(st.failures, []);
      assert.ok(st.cuts > 0);
    });
  }

  it('runs at least 2,000 cuts in all', function () {
    if (only || oneSeed !== undefined || process.env.POWERCUT_SEEDS) this.skip();
    const total = [...results.values()].reduce((n, st) => n + st.cuts, 0);
    assert.ok(total >= 2000, `${total} cuts`);
  });
});

// Self-test of the device model: a cut keeps flushed writes, may drop unflushed ones, tears at 512.
describe('PowerCutDevice', () => {
  it('keeps what a flush covered, and cuts pending writes at sector boundaries', async () => {
    const d = new PowerCutDevice(Buffer.alloc(4096));
    await d.write(0, Buffer.alloc(1024, 1));
    await d.flush();
    await d.write(0, Buffer.alloc(1024, 2));
    await d.write(8192, Buffer.alloc(100, 3)); // grows the file: a resize, then the write
    const seenStates = new Set<string>();
    const rng = prng(7);
    for (let i = 0; i < 400; i++) {
      const c = d.cut(rng);
      assert.ok(c.image.length === 4096 || c.image.length === 8292, `size ${c.image.length}`);
      assert.ok(c.image.subarray(1024, 4096).equals(Buffer.alloc(3072)));
      const s0 = c.image[0], s1 = c.image[512];
      assert.ok(c.image.subarray(0, 512).every((x) => x === s0) && (s0 === 1 || s0 === 2));
      assert.ok(c.image.subarray(512, 1024).every((x) => x === s1) && (s1 === 1 || s1 === 2));
      if (c.image.length > 4096) assert.ok(c.image.subarray(8192).every((x) => x === 0) || c.image.subarray(8192).every((x) => x === 3));
      seenStates.add(`${s0}${s1}${c.image.length}`);
    }
    // Both sectors independently old or new, with or without the growth.
    assert.equal(seenStates.size, 8);
    await d.flush();
    const after = d.cut(rng);
    assert.equal(after.pending, 0);
    assert.ok(after.image.equals(d.snapshot()));
  });

  it('a flush does not cover a write still in flight when it was issued', async () => {
    const d = new PowerCutDevice(Buffer.alloc(512));
    const w = d.write(0, Buffer.alloc(512, 9));
    await d.flush();
    assert.equal(d.pendingCount, 1);
    await w;
    assert.ok(d.durableImage().equals(Buffer.alloc(512)));
    await d.write(0, Buffer.alloc(512, 8), { fua: true });
    assert.ok(d.durableImage().equals(Buffer.alloc(512, 8)));
  });
});

describeConformance('PowerCutDevice', async (size) => ({ device: new PowerCutDevice(Buffer.alloc(size)) }));
describeConformance('ScratchDevice (cut images reopened)', async (size) => ({ device: new ScratchDevice(Buffer.alloc(size)) }));
