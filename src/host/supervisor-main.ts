/**
 * Entry of the detached supervisor process (spawned by startVm in ./client.ts).
 * stdin: one JSON SupervisorInput (the key-encryption key travels here, never in argv, the
 *        environment or a file), at most 1 MiB;
 * fd 3:  one JSON line back to the starter: {"ok":true,"state":…} once the VM runs, or
 *        {"ok":false,"error":{"code","message"}}; then it is closed and the starter may exit.
 * stdout/stderr: a temporary log in the run root, named by argv[2] (./prespawn.ts), moved to the
 *        VM's supervisor.log in its run folder once the input names the VM. An empty input means
 *        the command that started it did not start a VM after all: remove the log and exit.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { renameSync } from '../core/fsio.js';
import { vmRunDir } from './rundir.js';
import { lockRunDir } from './vmlock.js';
import { Supervisor, type SupervisorInput } from './supervisor.js';

const LOG = process.argv[2];

const MAX_INPUT = 1 << 20;

async function readInput(): Promise<SupervisorInput | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin) {
    total += (chunk as Buffer).length;
    if (total > MAX_INPUT) throw new MedvError('EINVAL_ARG', 'supervisor input is too large');
    chunks.push(chunk as Buffer);
  }
  const raw = Buffer.concat(chunks);
  if (raw.length === 0) return undefined;
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
  let logged = false;
  try {
    const input = await readInput();
    if (!input) {
      if (LOG) fs.rmSync(LOG, { force: true });
      return;
    }
    if (input.logFile !== undefined && input.logFile !== LOG) throw new MedvError('EINVAL_ARG', 'the input names another log than the one this supervisor writes');
    const dir = vmRunDir(input.config.name, input.runRoot);
    // Before anything in the folder is looked at or touched; held until this process exits.
    lockRunDir(dir, input.config.name);
    if (input.logFile !== undefined) {
      renameSync(LOG, join(dir, 'supervisor.log'));
      logged = true;
    }
    supervisor = new Supervisor(input);
    const state = await supervisor.start();
    report({ ok: true, state });
  } catch (e) {
    const error = e instanceof MedvError ? { code: e.code, message: e.message } : { code: 'EINTERNAL', message: String((e as Error)?.message ?? e) };
    process.stderr.write(`medv supervisor: ${error.message}\n`);
    report({ ok: false, error });
    // Not yet the VM's log (its name was unusable): the error went back to the command instead.
    if (!logged && LOG) fs.rmSync(LOG, { force: true });
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
