/**
 * Lifecycle benchmark (not a test): in one run, side by side, each against its peer:
 *  1. start -> the guest's first serial line: `medv vm start` through the host service with its warm
 *     pool (default 1), and through a service with the pool disabled (--pool 0: its spare
 *     supervisor, modules loaded, starts QEMU), against QEMU
 *     started directly on a raw file of the same guest (with and without the VGA adapter every
 *     medv VM has);
 *  2. suspend + resume of a guest with 256 MiB RAM: `medv vm suspend` + `medv vm start` (encrypted
 *     .vsv, one pass) against plain QMP `migrate` to a file and `-incoming` from it;
 *  3. `medv vm list --json` with 3 VMs running against `node -e 0`;
 *  4. the same start and suspend + resume through the host API from a shell (one `curl --unix-socket`
 *     per request, as test/host/automation.sh does), and `node -e 0` against the peer's start: a
 *     `medv` command is a Node process, whose start-up alone is the floor of every CLI ratio.
 * With --previous DIR, the same medv commands are also run with DIR's bin/medv (e.g. a checkout of
 * the per-process path, before the host service), in its own run root, in the same run.
 * Prints the medians, the ratios and the load average (`uptime`) before and after.
 *
 * Usage: node dist/bench/lifecycle/bench.js [--runs 3] [--host-key] [--previous /path/to/checkout]
 * Keys: by default the saved state's key is wrapped with a passphrase; the service runs unlocked
 * (`medv host unlock`: the derived key cached, no Argon2id per suspend or resume), the previous
 * path pays Argon2id once per suspend and once per resume. --host-key: a host key file for both.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { QemuProcess, defaultAccelerator } from '../../src/hypervisor/qemu.js';
import { createHostKey } from '../../src/crypto/index.js';
import { hostApi } from '../../src/host/api.js';
import { MEDV, plainResume, plainSuspend, startService } from './host.js';
import { arg } from '../args.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const GUEST_IMG = join(ROOT, 'vm/build/guest.img');
const runs = Number(arg('runs', '3')) || 3;
const previous = arg('previous', '') || undefined;
const accel = defaultAccelerator();
const work = mkdtempSync(join(tmpdir(), 'medv-bench-lifecycle-'));
const hostKey = process.argv.includes('--host-key') ? join(work, 'host.key') : undefined;
const PASSPHRASE = 'bench passphrase';
const keyArgs = hostKey ? ['--host-key', hostKey] : [];

/** A medv to measure: its bin/medv and its own run root. */
interface Medv { name: string; bin: string; root: string; env: NodeJS.ProcessEnv }
function medvAt(name: string, bin: string, root: string, passphrase: boolean): Medv {
  const env: NodeJS.ProcessEnv = { ...process.env, MEDV_RUN_DIR: root };
  delete env.MEDV_PASSPHRASE;
  if (passphrase && !hostKey) env.MEDV_PASSPHRASE = PASSPHRASE;
  return { name, bin, root, env };
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
function medv(m: Medv, args: string[]): string {
  const r = spawnSync(process.execPath, [m.bin, ...args], { env: m.env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${m.name}: medv ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function waitForLine(file: string, re: RegExp): Promise<void> {
  return new Promise((res) => {
    const check = () => { if (existsSync(file) && re.test(readFileSync(file, 'latin1'))) { w.close(); res(); return true; } return false; };
    const w = watch(dirname(file), () => void check());
    check();
  });
}

/**
 * Until the service's pool holds a member of this RAM size and mode whose QEMU runs (none: any),
 * and its spare supervisor (if it keeps one) has loaded its modules: what a user who started a VM
 * a moment ago finds, with nothing of the last start still competing for the CPU.
 */
async function poolReady(root: string, memoryMiB?: number, incoming?: boolean): Promise<void> {
  const api = hostApi({ root, start: false });
  for (;;) {
    const h = await api.call<{ pool: { members: Array<{ shape: { memoryMiB: number; incoming: boolean }; qemuPid?: number }>; spare?: { size: number; ready?: boolean } } }>('GET', '/v1/host');
    const member = memoryMiB === undefined || h.pool.members.some((m) => m.qemuPid && m.shape.memoryMiB === memoryMiB && m.shape.incoming === incoming);
    if (member && (!h.pool.spare?.size || h.pool.spare.ready)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `vga`: with the VGA adapter every medv VM has (SeaBIOS then runs its option ROM before booting). */
async function bareStart(vga = false): Promise<number> {
  const img = join(work, 'bare.img');
  copyFileSync(GUEST_IMG, img);
  const t0 = performance.now();
  const vm = await QemuProcess.launch({ accel, memoryMiB: 32, vga, drives: [{ source: img }] });
  await vm.waitForSerial(/MEDV-GUEST start/, 60_000);
  const ms = performance.now() - t0;
  await vm.kill();
  return ms;
}

async function medvStart(m: Medv): Promise<number> {
  const img = join(work, `${m.name}.img`);
  copyFileSync(GUEST_IMG, img);
  const t0 = performance.now();
  medv(m, ['vm', 'start', img, '--name', 'b', '--memory', '32', '--accel', accel]);
  await waitForLine(join(m.root, 'b', 'serial.log'), /MEDV-GUEST start/);
  const ms = performance.now() - t0;
  medv(m, ['vm', 'stop', 'b', '--force']);
  return ms;
}

async function bareSuspendResume(vga = false): Promise<number> {
  const img = join(work, 'bs.img');
  copyFileSync(GUEST_IMG, img);
  const file = join(work, 'plain.mig');
  rmSync(file, { force: true });
  const vm = await QemuProcess.launch({ accel, memoryMiB: 256, vga, drives: [{ source: img }] });
  await vm.waitForSerial(/MEDV-GUEST ready/, 60_000);
  const t0 = performance.now();
  await plainSuspend(vm, file);
  const back = await plainResume({ accel, memoryMiB: 256, vga, drives: [{ source: img }] }, file);
  const ms = performance.now() - t0;
  await back.kill();
  return ms;
}

/** `service`: wait for the pool to hold the resume's QEMU before timing, as a user who suspends and later resumes would find it. */
async function medvSuspendResume(m: Medv, service: boolean): Promise<number> {
  const img = join(work, `${m.name}-s.vhd`);
  rmSync(img, { force: true });
  medv(m, ['disk', 'convert', GUEST_IMG, img]);
  medv(m, ['vm', 'start', img, '--name', 's', '--memory', '256', '--accel', accel, ...keyArgs]);
  await waitForLine(join(m.root, 's', 'serial.log'), /MEDV-GUEST ready/);
  const t0 = performance.now();
  medv(m, ['vm', 'suspend', 's']);
  const suspended = performance.now();
  if (service) await poolReady(m.root, 256, true);
  const waited = performance.now() - suspended;
  medv(m, ['vm', 'start', img, '--name', 's', ...keyArgs]);
  const ms = performance.now() - t0 - waited;
  medv(m, ['vm', 'stop', 's', '--force']);
  return ms;
}

/** One request to the host API from a shell: `curl --unix-socket` (test/host/automation.sh). */
function curl(m: Medv, method: string, path: string, body?: unknown): unknown {
  const args = ['-sS', '--fail-with-body', '--unix-socket', join(m.root, 'host.sock'), '-X', method, '-H', 'content-type: application/json'];
  if (body !== undefined) args.push('--data-binary', JSON.stringify(body));
  const r = spawnSync('curl', [...args, `http://medv${path}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${m.name}: curl ${method} ${path}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as unknown;
}

/** `medvStart` through the API from a shell: POST /v1/vms. */
async function curlStart(m: Medv): Promise<number> {
  const img = join(work, `${m.name}-c.img`);
  copyFileSync(GUEST_IMG, img);
  const t0 = performance.now();
  curl(m, 'POST', '/v1/vms', { source: img, name: 'c', memoryMiB: 32, accel, display: 'none' });
  await waitForLine(join(m.root, 'c', 'serial.log'), /MEDV-GUEST start/);
  const ms = performance.now() - t0;
  curl(m, 'POST', '/v1/vms/c/stop', { force: true });
  return ms;
}

/** `medvSuspendResume` through the API from a shell (the service unlocked, or the host key named in the request). */
async function curlSuspendResume(m: Medv): Promise<number> {
  const img = join(work, `${m.name}-cs.vhd`);
  rmSync(img, { force: true });
  medv(m, ['disk', 'convert', GUEST_IMG, img]);
  const key = hostKey ? { key: { hostKey } } : {};
  curl(m, 'POST', '/v1/vms', { source: img, name: 'cs', memoryMiB: 256, accel, display: 'none', ...key });
  await waitForLine(join(m.root, 'cs', 'serial.log'), /MEDV-GUEST ready/);
  const t0 = performance.now();
  curl(m, 'POST', '/v1/vms/cs/suspend');
  const suspended = performance.now();
  await poolReady(m.root, 256, true);
  const waited = performance.now() - suspended;
  curl(m, 'POST', '/v1/vms', { source: img, name: 'cs', ...key });
  const ms = performance.now() - t0 - waited;
  curl(m, 'POST', '/v1/vms/cs/stop', { force: true });
  return ms;
}

/** Wall time of one `medv vm list --json`. */
function listTime(m: Medv): number {
  const t0 = performance.now();
  const out = medv(m, ['vm', 'list', '--json']);
  const ms = performance.now() - t0;
  if ((JSON.parse(out) as unknown[]).length < 3) throw new Error('vm list: fewer than 3 VMs');
  return ms;
}
function nodeTime(): number {
  const t0 = performance.now();
  spawnSync(process.execPath, ['-e', '0']);
  return performance.now() - t0;
}

function uptime(): string { return spawnSync('uptime', { encoding: 'utf8' }).stdout.trim().replace(/^.*load/, 'load'); }

async function main(): Promise<void> {
  if (hostKey) await createHostKey(hostKey);
  const load0 = uptime();
  const warm = medvAt('service', MEDV, join(work, 'warm'), false);
  const cold = medvAt('service, pool 0', MEDV, join(work, 'cold'), false);
  // Its own service for suspend + resume: a pool of 1 keeps the shape used last, and the starts above want another.
  const warmSr = medvAt('service (resume)', MEDV, join(work, 'warm-sr'), false);
  const prev = previous ? medvAt('previous', join(resolve(previous), 'bin/medv'), join(work, 'prev'), true) : undefined;
  const services = [await startService(warm.root, 1), await startService(cold.root, 0), await startService(warmSr.root, 1)];
  if (!hostKey) {
    for (const m of [warm, cold, warmSr]) spawnSync(process.execPath, [MEDV, 'host', 'unlock', '--for', '1h'], { env: { ...m.env, MEDV_PASSPHRASE: PASSPHRASE } });
  }
  const r: Record<string, number[]> = {};
  const add = (k: string, v: number) => { (r[k] ??= []).push(v); process.stderr.write(`${k} ${v.toFixed(0)} ms\n`); };
  try {
    // The pool keeps members of the shapes in use: one start (not counted) puts the benchmark's in use.
    await medvStart(warm);
    for (let i = 0; i < runs; i++) {
      add('bareStart', await bareStart());
      add('bareStartVga', await bareStart(true));
      await poolReady(warm.root, 32, false);
      add('warmStart', await medvStart(warm));
      await poolReady(cold.root);
      add('coldStart', await medvStart(cold));
      await poolReady(warm.root, 32, false);
      add('curlStart', await curlStart(warm));
      await poolReady(cold.root);
      add('curlColdStart', await curlStart(cold));
      add('nodeStart', nodeTime());
      if (prev) add('prevStart', await medvStart(prev));
      add('bareSR', await bareSuspendResume());
      add('bareSRVga', await bareSuspendResume(true));
      add('warmSR', await medvSuspendResume(warmSr, true));
      add('coldSR', await medvSuspendResume(cold, false));
      add('curlSR', await curlSuspendResume(warmSr));
      if (prev) add('prevSR', await medvSuspendResume(prev, false));
    }
    // 3. vm list --json with 3 VMs running (in the warm service's run root).
    for (const n of ['l1', 'l2', 'l3']) {
      const img = join(work, `${n}.img`);
      copyFileSync(GUEST_IMG, img);
      medv(warm, ['vm', 'start', img, '--name', n, '--memory', '32', '--accel', accel]);
    }
    for (let i = 0; i < Math.max(5, runs); i++) { add('node', nodeTime()); add('list', listTime(warm)); }
    for (const n of ['l1', 'l2', 'l3']) medv(warm, ['vm', 'stop', n, '--force']);
  } finally {
    for (const s of services) s.kill('SIGTERM');
  }
  r.nodeSR = r.nodeStart.map((x, i) => x + (r.node[i] ?? x));
  const line = (name: string, peer: string, ours: string, target: number | undefined) => {
    const a = median(r[peer]); const b = median(r[ours]);
    return `${name.padEnd(46)} ${a.toFixed(0).padStart(6)} ms  ${b.toFixed(0).padStart(6)} ms  ratio ${(b / a).toFixed(2)}x${target ? ` (target <= ${target}x)` : ''}\n`;
  };
  const out = process.stdout;
  out.write(`accel ${accel}, ${runs} runs each, medians; saved-state key under ${hostKey ? 'a host key' : 'a passphrase (the service unlocked)'}\n`);
  out.write(`before: ${load0}\nafter:  ${uptime()}\n`);
  out.write(`${'what'.padEnd(46)} ${'peer'.padStart(9)}  ${'medv'.padStart(9)}\n`);
  out.write(line('start -> serial, service (pool 1) vs qemu', 'bareStart', 'warmStart', 1.0));
  out.write(line('start -> serial, service (pool 0) vs qemu', 'bareStart', 'coldStart', 1.3));
  if (prev) out.write(line('start -> serial, previous path vs qemu', 'bareStart', 'prevStart', undefined));
  out.write(line('start -> serial, service (pool 1) vs qemu+vga', 'bareStartVga', 'warmStart', 1.0));
  out.write(line('start -> serial, service (pool 0) vs qemu+vga', 'bareStartVga', 'coldStart', 1.3));
  if (prev) out.write(line('start -> serial, service (pool 1) vs previous', 'prevStart', 'warmStart', undefined));
  out.write(line('suspend+resume 256 MiB, service (pool 1) vs qemu', 'bareSR', 'warmSR', 1.2));
  out.write(line('suspend+resume 256 MiB, service (pool 0) vs qemu', 'bareSR', 'coldSR', undefined));
  if (prev) out.write(line('suspend+resume 256 MiB, previous path vs qemu', 'bareSR', 'prevSR', undefined));
  out.write(line('suspend+resume 256 MiB, service (pool 1) vs qemu+vga', 'bareSRVga', 'warmSR', 1.2));
  if (prev) out.write(line('suspend+resume 256 MiB, service (pool 1) vs previous', 'prevSR', 'warmSR', undefined));
  out.write(line('vm list --json, 3 VMs running, vs node -e 0', 'node', 'list', 1.5));
  out.write(line('start -> serial, API by curl (pool 1) vs qemu', 'bareStart', 'curlStart', 1.0));
  out.write(line('start -> serial, API by curl (pool 0) vs qemu', 'bareStart', 'curlColdStart', 1.3));
  out.write(line('suspend+resume 256 MiB, API by curl vs qemu', 'bareSR', 'curlSR', 1.2));
  out.write(line('floor of a CLI start: node -e 0 vs qemu', 'bareStart', 'nodeStart', undefined));
  out.write(line('floor of a CLI suspend+resume: 2 x node -e 0', 'bareSR', 'nodeSR', undefined));
  rmSync(work, { recursive: true, force: true });
}

main().catch((e) => { process.stderr.write(`${e instanceof Error ? e.stack : e}\n`); process.exitCode = 1; });
