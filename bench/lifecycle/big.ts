/**
 * Suspend and resume of a big guest (not a test): the Linux test guest (vm/linux) with 2 GiB of RAM
 * of which ~1.5 GiB is written by the guest before it says `ready`, side by side:
 *  - medv: `medv vm suspend` (encrypted .vsv, one pass) then `medv vm start` (resume), through the
 *    host service (pool 1, unlocked key or --host-key), the same as bench.ts's 256 MiB case;
 *  - QEMU: `stop`, `migrate` to a file (`exec:cat > FILE`), quit; a new QEMU with `-incoming exec:cat FILE`,
 *    then `cont`; the same migration parameters as medv's suspend (no bandwidth cap, 60 s downtime).
 * Each suspend is timed from the request to the saved state complete (medv: the command's exit,
 * which waits for the .vsv to be published; QEMU: `migrate` completed and QEMU gone), each resume
 * from the command (QEMU: its spawn) to the guest running.
 *
 * The RAM is filled by the guest: the bench's copy of the image gets an /sbin/init (written with
 * debugfs, like src/hypervisor/linuxguest.ts's writeRootFile, mode 0755) that, before the guest's
 * own init runs, mounts a 1700 MiB tmpfs and writes 1.5 GiB into it: a 1 MiB random seed doubled
 * to 64 MiB, then 24 copies (neither side compresses or deduplicates pages; QEMU 7.2 only skips
 * zero pages). The shared vm/build is never written.
 *
 * Usage: node dist/bench/lifecycle/big.js [--runs 1] [--host-key] [--memory 2048] [--fill-mib 1536]
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { QemuProcess, defaultAccelerator } from '../../src/hypervisor/qemu.js';
import { linuxGuest, readRootFile } from '../../src/hypervisor/linuxguest.js';
import { createHostKey } from '../../src/crypto/index.js';
import { hostApi } from '../../src/host/api.js';
import { MEDV, plainResume, plainSuspend, startService } from './host.js';
import { arg } from '../args.js';

const runs = Number(arg('runs', '1')) || 1;
const memoryMiB = Number(arg('memory', '2048')) || 2048;
const fillMiB = Number(arg('fill-mib', '1536')) || 1536;
const accel = defaultAccelerator();
const work = mkdtempSync(join(tmpdir(), 'medv-bench-big-'));
const hostKey = process.argv.includes('--host-key') ? join(work, 'host.key') : undefined;
const PASSPHRASE = 'bench passphrase';
const READY = /medv-linux: ready uptime=/;
const FILLED = /medv-linux: filled (\d+) MiB in (\S+) s/;
const BOOT_MS = 600_000;

/** The fill, run by the guest before its own init (busybox sh). */
function fillingInit(): string {
  const copies = Math.max(1, Math.round(fillMiB / 64));
  const cat = Array.from({ length: copies }, () => '/fill/b64').join(' ');
  return `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
[ -e /proc/self ] || mount -t proc proc /proc
t0=$(cut -d " " -f 1 /proc/uptime)
mkdir -p /fill && mount -t tmpfs -o size=${fillMiB + 200}m tmpfs /fill
head -c 1048576 /dev/urandom > /fill/b1
i=1; while [ $i -le 6 ]; do cat /fill/b1 /fill/b1 > /fill/b2 && mv /fill/b2 /fill/b1; i=$((i + 1)); done
mv /fill/b1 /fill/b64
cat ${cat} > /fill/big
rm /fill/b64
echo "medv-linux: filled $(( $(stat -c %s /fill/big) / 1048576 )) MiB in $(cut -d " " -f 1 /proc/uptime) s (from $t0)"
exec /sbin/init.medv
`;
}

/** A copy of the Linux guest whose /sbin/init fills RAM first (the original renamed /sbin/init.medv). */
function bigGuestImage(name: string): string {
  const g = linuxGuest();
  const img = join(work, name);
  copyFileSync(g.image, img);
  const original = readRootFile(img, '/sbin/init');
  if (!original) throw new Error('the Linux guest image has no /sbin/init');
  const dir = mkdtempSync(join(work, 'debugfs-'));
  writeFileSync(join(dir, 'init'), fillingInit());
  writeFileSync(join(dir, 'init.medv'), original);
  const commands = ['cd /sbin', 'rm init', `write ${join(dir, 'init')} init`, 'sif init mode 0100755', `write ${join(dir, 'init.medv')} init.medv`, 'sif init.medv mode 0100755'];
  const r = spawnSync('debugfs', ['-w', '-f', '-', `${img}?offset=${g.rootOffset}`], { input: `${commands.join('\n')}\n`, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`debugfs: ${r.stderr}`);
  rmSync(dir, { recursive: true, force: true });
  return img;
}

function waitForLine(file: string, re: RegExp): Promise<RegExpMatchArray> {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => { w.close(); rej(new Error(`no ${re} in ${file}`)); }, BOOT_MS);
    const check = () => {
      const m = existsSync(file) ? re.exec(readFileSync(file, 'latin1')) : null;
      if (m) { clearTimeout(timer); w.close(); res(m); }
    };
    const w = watch(dirname(file), check);
    check();
  });
}

const env: NodeJS.ProcessEnv = { ...process.env, MEDV_RUN_DIR: join(work, 'run') };
delete env.MEDV_PASSPHRASE;
const keyArgs = hostKey ? ['--host-key', hostKey] : [];
function medv(args: string[]): void {
  const r = spawnSync(process.execPath, [MEDV, ...args], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`medv ${args.join(' ')}: ${r.stderr}`);
}

async function poolReady(): Promise<void> {
  const api = hostApi({ root: env.MEDV_RUN_DIR!, start: false });
  for (let i = 0; i < 1200; i++) {
    const h = await api.call<{ pool: { members: Array<{ shape: { memoryMiB: number; incoming: boolean }; qemuPid?: number }> } }>('GET', '/v1/host');
    if (h.pool.members.some((m) => m.qemuPid && m.shape.memoryMiB === memoryMiB && m.shape.incoming)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function medvRun(): Promise<{ suspend: number; resume: number; bytes: number; fill: string }> {
  const img = bigGuestImage('medv.img');
  medv(['vm', 'start', img, '--name', 'big', '--memory', String(memoryMiB), '--disk-bus', 'virtio', '--accel', accel, ...keyArgs]);
  const serial = join(env.MEDV_RUN_DIR!, 'big', 'serial.log');
  const filled = await waitForLine(serial, FILLED);
  await waitForLine(serial, READY);
  const t0 = performance.now();
  medv(['vm', 'suspend', 'big']);
  const suspend = performance.now() - t0;
  const log = join(env.MEDV_RUN_DIR!, 'big', 'supervisor.log');
  // Where the time went, by the supervisors' milestones (stderr, not the summary).
  process.stderr.write(`suspend:\n${readFileSync(log, 'utf8').split('\n').filter((l) => / suspend: /.test(l)).join('\n')}\n`);
  const bytes = statSync(`${img}.vsv`).size;
  await poolReady();
  const t1 = performance.now();
  medv(['vm', 'start', img, '--name', 'big', '--disk-bus', 'virtio', ...keyArgs]);
  const resume = performance.now() - t1;
  process.stderr.write(`resume:\n${readFileSync(log, 'utf8')}\n`);
  medv(['vm', 'stop', 'big', '--force']);
  rmSync(img, { force: true });
  return { suspend, resume, bytes, fill: `${filled[1]} MiB in ${filled[2]} s` };
}

async function qemuRun(): Promise<{ suspend: number; resume: number; bytes: number; fill: string }> {
  const img = bigGuestImage('qemu.img');
  const file = join(work, 'plain.mig');
  rmSync(file, { force: true });
  const drives = [{ source: img, iface: 'virtio' as const }];
  const vm = await QemuProcess.launch({ accel, memoryMiB, vga: true, drives });
  const filled = await vm.waitForSerial(FILLED, BOOT_MS);
  await vm.waitForSerial(READY, BOOT_MS);
  const t0 = performance.now();
  await plainSuspend(vm, file);
  const suspend = performance.now() - t0;
  const bytes = statSync(file).size;
  const t1 = performance.now();
  const back = await plainResume({ accel, memoryMiB, vga: true, drives }, file);
  const resume = performance.now() - t1;
  await back.kill();
  rmSync(img, { force: true });
  rmSync(file, { force: true });
  return { suspend, resume, bytes, fill: `${filled[1]} MiB in ${filled[2]} s` };
}

function uptime(): string { return spawnSync('uptime', { encoding: 'utf8' }).stdout.trim().replace(/^.*load/, 'load'); }

async function main(): Promise<void> {
  if (hostKey) await createHostKey(hostKey);
  const load0 = uptime();
  const service = await startService(env.MEDV_RUN_DIR!, 1);
  if (!hostKey) spawnSync(process.execPath, [MEDV, 'host', 'unlock', '--for', '1h'], { env: { ...env, MEDV_PASSPHRASE: PASSPHRASE } });
  const out = process.stdout;
  const results: Array<{ q: Awaited<ReturnType<typeof qemuRun>>; m: Awaited<ReturnType<typeof medvRun>> }> = [];
  try {
    for (let i = 0; i < runs; i++) {
      const q = await qemuRun();
      process.stderr.write(`qemu: ${JSON.stringify(q)}\n`);
      const m = await medvRun();
      process.stderr.write(`medv: ${JSON.stringify(m)}\n`);
      results.push({ q, m });
    }
  } finally {
    service.kill('SIGTERM');
  }
  out.write(`accel ${accel}, guest ${memoryMiB} MiB with ${fillMiB} MiB written by the guest, ${runs} run(s); key: ${hostKey ? 'host key' : 'passphrase (service unlocked)'}\n`);
  out.write(`before: ${load0}\nafter:  ${uptime()}\n`);
  for (const { q, m } of results) {
    out.write(`suspend: qemu ${q.suspend.toFixed(0)} ms (${(q.bytes / 1048576).toFixed(0)} MiB), medv ${m.suspend.toFixed(0)} ms (${(m.bytes / 1048576).toFixed(0)} MiB): ${(m.suspend / q.suspend).toFixed(2)}x (target <= 1.3x)\n`);
    out.write(`resume:  qemu ${q.resume.toFixed(0)} ms, medv ${m.resume.toFixed(0)} ms: ${(m.resume / q.resume).toFixed(2)}x (target <= 1.3x)\n`);
    out.write(`fill: qemu guest ${q.fill}, medv guest ${m.fill}\n`);
  }
  rmSync(work, { recursive: true, force: true });
}

main().catch((e) => { process.stderr.write(`${e instanceof Error ? e.stack : e}\n`); process.exitCode = 1; });
