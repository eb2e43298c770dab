/** A host service for the lifecycle benchmarks: `medv host --pool N` on a run root, resolved once it listens. */
import { spawn, type ChildProcess } from 'node:child_process';
import { QemuProcess, type LaunchSpec } from '../../src/hypervisor/qemu.js';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const MEDV = join(resolve(dirname(fileURLToPath(import.meta.url)), '../../..'), 'bin/medv');

export async function startService(root: string, pool: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [MEDV, 'host', '--pool', String(pool), '--idle', '1h'], { env: { ...process.env, MEDV_RUN_DIR: root }, stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((res, rej) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); if (/listening on/.test(err)) res(); });
    child.once('exit', () => rej(new Error(`medv host exited: ${err}`)));
  });
  return child;
}

/**
 * The peer's suspend: stop the guest, `migrate` to `file` and wait until it completed, then end QEMU.
 * The same migration parameters as medv's suspend (src/host/suspend.ts): no bandwidth cap (QEMU
 * 7.2's default is 128 MiB/s), a long tolerated downtime (the guest is stopped anyway), so QEMU
 * sends it all in one pass.
 */
export async function plainSuspend(vm: QemuProcess, file: string): Promise<void> {
  await vm.execute('stop');
  await vm.execute('migrate-set-parameters', { 'max-bandwidth': 1024 ** 4, 'downtime-limit': 60_000 });
  await vm.execute('migrate', { uri: `exec:cat > ${file}` });
  for (;;) {
    const s = await vm.execute<{ status: string }>('query-migrate');
    if (s.status === 'completed') break;
    if (s.status === 'failed') throw new Error('migrate failed');
    await new Promise((r) => setTimeout(r, 5));
  }
  await vm.kill();
}

/** The peer's resume: a QEMU of `spec` with `-incoming` from `file`, once it has the state, running (`cont`). */
export async function plainResume(spec: Omit<LaunchSpec, 'qmpSocket'>, file: string): Promise<QemuProcess> {
  const back = await QemuProcess.launch({ ...spec, extraArgs: [...(spec.extraArgs ?? []), '-incoming', `exec:cat ${file}`] });
  for (;;) {
    const s = await back.execute<{ status: string }>('query-status');
    if (s.status !== 'inmigrate') break;
    await new Promise((r) => setTimeout(r, 5));
  }
  await back.execute('cont').catch(() => undefined);
  return back;
}
