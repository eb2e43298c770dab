/**
 * Start/stop cycles through the host API (not a test): a service with its warm pool on a fresh run
 * root, then N times POST /v1/vms (a raw copy of the test guest, 32 MiB), POST …/stop (force) and
 * DELETE /v1/vms/{name}. Before, after 10 and after N: the processes of this run root (by their
 * MEDV_RUN_DIR), the service's open descriptors, the sockets and folders under the run root, and
 * the service's resident memory. Counted with the pool full each time, so its member is in both.
 *
 * Usage: node dist/bench/lifecycle/cycles.js [--cycles 100]
 */
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultAccelerator } from '../../src/hypervisor/qemu.js';
import { hostApi } from '../../src/host/api.js';
import { startService } from './host.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const cycles = Number(process.argv[process.argv.indexOf('--cycles') + 1] || 100) || 100;
const work = mkdtempSync(join(tmpdir(), 'medv-bench-cycles-'));
const root = join(work, 'run');
const accel = defaultAccelerator();

/** Pids of processes started for this run root, the service's included. */
function rootProcesses(): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      // The service and supervisors have it in their environment; QEMU (a scrubbed environment) names the run root's sockets.
      if (readFileSync(`/proc/${p}/environ`, 'latin1').split('\0').includes(`MEDV_RUN_DIR=${root}`)
        || readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(`${root}/`)) out.push(Number(p));
    } catch { /* gone, or not ours */ }
  }
  return out;
}

function walk(dir: string, out: { sockets: string[]; folders: number }): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isSocket()) out.sockets.push(join(dir, e.name).slice(root.length + 1));
    if (e.isDirectory()) { out.folders++; walk(join(dir, e.name), out); }
  }
}

async function snapshot(pid: number): Promise<string> {
  const api = hostApi({ root, start: false });
  for (;;) {
    const h = await api.call<{ pool: { members: Array<{ qemuPid?: number }> } }>('GET', '/v1/host');
    if (h.pool.members.length > 0 && h.pool.members.every((m) => m.qemuPid)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const tree = { sockets: [] as string[], folders: 0 };
  walk(root, tree);
  const rss = Number(readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ')[1]) * 4096 / 1048576;
  return `processes ${rootProcesses().length}, service fds ${readdirSync(`/proc/${pid}/fd`).length}, sockets ${tree.sockets.length} (${tree.sockets.join(' ')}), folders ${tree.folders}, service RSS ${rss.toFixed(1)} MiB`;
}

async function main(): Promise<void> {
  const service = await startService(root, 1);
  const api = hostApi({ root, start: false });
  const img = join(work, 'c.img');
  copyFileSync(join(ROOT, 'vm/build/guest.img'), img);
  const cycle = async () => {
    await api.call('POST', '/v1/vms', { source: img, name: 'c', memoryMiB: 32, accel, display: 'none' });
    await api.call('POST', '/v1/vms/c/stop', { force: true });
    await api.call('DELETE', '/v1/vms/c');
  };
  try {
    await cycle(); // puts the shape in use: the pool then holds one member of it
    process.stdout.write(`accel ${accel}, ${cycles} start/stop cycles through the API\n`);
    process.stdout.write(`after 1:   ${await snapshot(service.pid!)}\n`);
    for (let i = 2; i <= cycles; i++) {
      await cycle();
      if (i === 10 || i === cycles) process.stdout.write(`after ${String(i).padEnd(4)} ${await snapshot(service.pid!)}\n`);
    }
  } finally {
    service.kill('SIGTERM');
    await new Promise((r) => service.once('exit', r));
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => { process.stderr.write(`${e instanceof Error ? e.stack : e}\n`); process.exitCode = 1; });
