/** A host service for the lifecycle benchmarks: `medv host --pool N` on a run root, resolved once it listens. */
import { spawn, type ChildProcess } from 'node:child_process';
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
