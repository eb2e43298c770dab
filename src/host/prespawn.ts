/**
 * `medv vm start` starts its supervisor before it has parsed its arguments: a Node process takes
 * about as long to start as the command takes to load and parse (~0.15 s each here), so the two
 * overlap instead of following each other. bin/medv calls prespawnSupervisor() first thing; startVm
 * (./client.ts) takes the waiting process with takePrespawned() and sends it its input; a command
 * that ends without starting a VM (bad arguments, EBUSY) calls releasePrespawned(), and the waiting
 * supervisor, reading an empty input, removes its log and exits without touching anything else.
 *
 * Until it knows the VM's name the supervisor logs to a private temporary file in the run root
 * (`.supervisor-<random>.log`, 0600); its input names that file and it moves it to
 * `<name>/supervisor.log` at once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scrubbedEnv } from '../core/env.js';
import { ensurePrivateDir } from '../core/fsio.js';
import { runRoot } from '../core/paths.js';

export const SUPERVISOR_MAIN = join(dirname(fileURLToPath(import.meta.url)), 'supervisor-main.js');

/** A supervisor process waiting for its input on stdin. */
export interface WaitingSupervisor { child: ChildProcess; root: string; log: string }

let waiting: WaitingSupervisor | undefined;

/**
 * Spawn a supervisor under `root` that waits for its input (stdin), logging to a temporary file
 * there (stdout and stderr). Used by prespawnSupervisor and, when none waits, by startVm.
 */
export function spawnSupervisor(root: string): WaitingSupervisor {
  ensurePrivateDir(root, true);
  const log = join(root, `.supervisor-${randomBytes(6).toString('hex')}.log`);
  const fd = fs.openSync(log, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    // Never our secrets: the key reaches it on stdin (src/core/env.ts); a passphrase in our
    // environment must not live on in a process that runs as long as the VM.
    const child = spawn(process.execPath, [SUPERVISOR_MAIN, log], { detached: true, stdio: ['pipe', fd, fd, 'pipe'], env: scrubbedEnv() });
    child.on('error', () => undefined); // reported through 'exit' to whoever waits for it
    return { child, root, log };
  } finally {
    fs.closeSync(fd);
  }
}

/** Start a supervisor now for a `vm start` still being parsed (best effort: any failure leaves none). */
export function prespawnSupervisor(): void {
  if (waiting) return;
  try { waiting = spawnSupervisor(runRoot()); } catch { waiting = undefined; }
}

/** The waiting supervisor for run root `root`, if one was started (once). */
export function takePrespawned(root: string): WaitingSupervisor | undefined {
  if (!waiting || waiting.root !== root || waiting.child.exitCode !== null) return undefined;
  const w = waiting;
  waiting = undefined;
  return w;
}

/** The command ends without starting a VM: the waiting supervisor gets an empty input and exits. */
export function releasePrespawned(): void {
  if (!waiting) return;
  const w = waiting;
  waiting = undefined;
  w.child.stdin?.end();
  (w.child.stdio[3] as NodeJS.ReadableStream & { destroy(): void } | null)?.destroy();
  w.child.unref();
}
