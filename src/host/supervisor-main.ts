/**
 * Entry of the detached supervisor process (spawned by startVm in ./client.ts).
 * stdin: one JSON SupervisorInput (the key-encryption key travels here, never in argv, the
 *        environment or a file), at most 1 MiB;
 * fd 3:  one JSON line back to the starter: {"ok":true,"state":…} once the VM runs, or
 *        {"ok":false,"error":{"code","message"}}; then it is closed and the starter may exit.
 * stdout/stderr: the VM's supervisor.log in its run folder.
 */
import * as fs from 'node:fs';
import { MedvError } from '../errors.js';
import { Supervisor, type SupervisorInput } from './supervisor.js';

const MAX_INPUT = 1 << 20;

async function readInput(): Promise<SupervisorInput> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin) {
    total += (chunk as Buffer).length;
    if (total > MAX_INPUT) throw new MedvError('EINVAL_ARG', 'supervisor input is too large');
    chunks.push(chunk as Buffer);
  }
  const raw = Buffer.concat(chunks);
  try {
    return JSON.parse(raw.toString('utf8')) as SupervisorInput;
  } finally {
    raw.fill(0);
    for (const c of chunks) c.fill(0);
  }
}

function report(msg: unknown): void {
  try {
    fs.writeSync(3, `${JSON.stringify(msg)}\n`);
    fs.closeSync(3);
  } catch { /* the starter is gone: nobody to tell */ }
}

async function main(): Promise<void> {
  let supervisor: Supervisor;
  try {
    const input = await readInput();
    supervisor = new Supervisor(input);
    const state = await supervisor.start();
    report({ ok: true, state });
  } catch (e) {
    const error = e instanceof MedvError ? { code: e.code, message: e.message } : { code: 'EINTERNAL', message: String((e as Error)?.message ?? e) };
    process.stderr.write(`medv supervisor: ${error.message}\n`);
    report({ ok: false, error });
    process.exitCode = 1;
    return;
  }
  const stop = () => void supervisor.stop();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', () => undefined);
  await supervisor.done;
  await supervisor.closeControl();
  process.stdout.write(`medv supervisor: VM ${supervisor.runDir} stopped\n`);
  process.exit(0);
}

void main();
