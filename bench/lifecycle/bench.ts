/**
 * Lifecycle benchmark (not a test): in one run, side by side,
 *  1. start -> the guest's first serial line: `medv vm start` (supervisor, NBD, QEMU) against QEMU
 *     started directly on a raw file of the same guest;
 *  2. suspend + resume of a guest with 256 MiB RAM: `medv vm suspend` + `medv vm start` (encrypted
 *     .vsv through the supervisor) against plain QMP `migrate` to a file and `-incoming` from it.
 * Prints the medians and the ratios. Usage: node dist/bench/lifecycle/bench.js [--runs 5] [--host-key]
 * The saved state's key is wrapped with a passphrase (Argon2id, once per suspend and once per
 * resume) unless --host-key: then with a host key file, as a managed client would.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { QemuProcess, defaultAccelerator } from '../../src/hypervisor/qemu.js';
import { createHostKey } from '../../src/crypto/index.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const MEDV = join(ROOT, 'bin/medv');
const GUEST_IMG = join(ROOT, 'vm/build/guest.img');
const runs = Number(process.argv[process.argv.indexOf('--runs') + 1] || 5) || 5;
const accel = defaultAccelerator();
const work = mkdtempSync(join(tmpdir(), 'medv-bench-lifecycle-'));
const hostKey = process.argv.includes('--host-key') ? join(work, 'host.key') : undefined;
const env: NodeJS.ProcessEnv = { ...process.env, MEDV_RUN_DIR: join(work, 'run'), MEDV_PASSPHRASE: 'bench passphrase' };
if (hostKey) delete env.MEDV_PASSPHRASE;
const keyArgs = hostKey ? ['--host-key', hostKey] : [];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const medv = (args: string[]) => {
  const r = spawnSync(process.execPath, [MEDV, ...args], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`medv ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};

function waitForLine(file: string, re: RegExp): Promise<void> {
  return new Promise((res) => {
    const check = () => { if (existsSync(file) && re.test(readFileSync(file, 'latin1'))) { w.close(); res(); return true; } return false; };
    const w = watch(dirname(file), () => void check());
    check();
  });
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

async function medvStart(): Promise<number> {
  const img = join(work, 'm.img');
  copyFileSync(GUEST_IMG, img);
  const t0 = performance.now();
  medv(['vm', 'start', img, '--name', 'b', '--memory', '32', '--accel', accel]);
  await waitForLine(join(work, 'run', 'b', 'serial.log'), /MEDV-GUEST start/);
  const ms = performance.now() - t0;
  medv(['vm', 'stop', 'b', '--force']);
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
  await vm.execute('stop');
  // The same migration parameters as medv's suspend (src/host/supervisor.ts): no bandwidth cap, a
  // long tolerated downtime (the guest is stopped anyway), so QEMU sends it all in one pass.
  await vm.execute('migrate-set-parameters', { 'max-bandwidth': 1024 ** 4, 'downtime-limit': 60_000 });
  await vm.execute('migrate', { uri: `exec:cat > ${file}` });
  for (;;) {
    const s = await vm.execute<{ status: string }>('query-migrate');
    if (s.status === 'completed') break;
    if (s.status === 'failed') throw new Error('migrate failed');
    await new Promise((r) => setTimeout(r, 5));
  }
  await vm.kill();
  const back = await QemuProcess.launch({ accel, memoryMiB: 256, vga, drives: [{ source: img }], extraArgs: ['-incoming', `exec:cat ${file}`] });
  for (;;) {
    const s = await back.execute<{ status: string }>('query-status');
    if (s.status !== 'inmigrate') break;
    await new Promise((r) => setTimeout(r, 5));
  }
  await back.execute('cont').catch(() => undefined);
  const ms = performance.now() - t0;
  await back.kill();
  return ms;
}

async function medvSuspendResume(): Promise<number> {
  const img = join(work, 'ms.vhd');
  rmSync(img, { force: true });
  medv(['disk', 'convert', GUEST_IMG, img]);
  medv(['vm', 'start', img, '--name', 's', '--memory', '256', '--accel', accel, ...keyArgs]);
  await waitForLine(join(work, 'run', 's', 'serial.log'), /MEDV-GUEST ready/);
  const t0 = performance.now();
  medv(['vm', 'suspend', 's']);
  medv(['vm', 'start', img, '--name', 's', ...keyArgs]);
  const ms = performance.now() - t0;
  medv(['vm', 'stop', 's', '--force']);
  return ms;
}

async function main(): Promise<void> {
  if (hostKey) await createHostKey(hostKey);
  const r = { bareStart: [] as number[], bareStartVga: [] as number[], medvStart: [] as number[], bareSR: [] as number[], bareSRVga: [] as number[], medvSR: [] as number[] };
  for (let i = 0; i < runs; i++) {
    r.bareStart.push(await bareStart());
    r.bareStartVga.push(await bareStart(true));
    r.medvStart.push(await medvStart());
    r.bareSR.push(await bareSuspendResume());
    r.bareSRVga.push(await bareSuspendResume(true));
    r.medvSR.push(await medvSuspendResume());
  }
  const line = (name: string, bare: number[], ours: number[], target: number) =>
    `${name.padEnd(34)} qemu ${median(bare).toFixed(0).padStart(6)} ms   medv ${median(ours).toFixed(0).padStart(6)} ms   ratio ${(median(ours) / median(bare)).toFixed(2)}x (target <= ${target}x)`;
  process.stdout.write(`accel ${accel}, ${runs} runs each, medians, saved-state key under a ${hostKey ? 'host key' : 'passphrase'}\n`);
  process.stdout.write(`${line('start -> first serial line', r.bareStart, r.medvStart, 1.15)}\n`);
  process.stdout.write(`${line('suspend + resume (256 MiB RAM)', r.bareSR, r.medvSR, 1.2)}\n`);
  process.stdout.write('the same, QEMU with the VGA adapter medv gives every VM:\n');
  process.stdout.write(`${line('start -> first serial line', r.bareStartVga, r.medvStart, 1.15)}\n`);
  process.stdout.write(`${line('suspend + resume (256 MiB RAM)', r.bareSRVga, r.medvSR, 1.2)}\n`);
  rmSync(work, { recursive: true, force: true });
}

void main();
