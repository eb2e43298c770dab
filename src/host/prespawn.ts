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
import { JsonLineReader } from '../core/jsonlines.js';
import { runRoot } from '../core/paths.js';
import type { VmState } from './rundir.js';

export const SUPERVISOR_MAIN = join(dirname(fileURLToPath(import.meta.url)), 'supervisor-main.js');

/** Exit status of a pooled supervisor whose QEMU died before any VM took it (EX_TEMPFAIL): the start goes cold. */
export const POOLED_QEMU_GONE = 75;

export interface StartAnswer { ok: boolean; state?: VmState; error?: { code: string; message: string }; pooled?: { qemuPid?: number } }

/** Longest answer a supervisor may send on fd 3 (a state of a few KiB). */
export const MAX_START_ANSWER = 1024 * 1024;

/**
 * The supervisor's answer to a start: the first line on its fd 3 that is one (`ok`), one JSON
 * object, bounded (src/core/jsonlines.ts); an over-long line or one that is not JSON is an EPROTO
 * answer. A pooled supervisor's `{"pooled":…}` line before it goes to `onPooled`.
 */
export function readStartAnswer(pipe: NodeJS.ReadableStream, done: (a: StartAnswer) => void, onPooled?: (p: { qemuPid?: number }) => void): void {
  let answered = false;
  const once = (a: StartAnswer) => { if (!answered) { answered = true; done(a); } };
  const reader = new JsonLineReader((v) => {
    const a = v as StartAnswer;
    if (a && typeof a === 'object' && a.pooled && a.ok === undefined) { onPooled?.(a.pooled); return; }
    once(a);
  }, (e) => { once({ ok: false, error: { code: 'EPROTO', message: e.message } }); }, 'the supervisor', MAX_START_ANSWER);
  pipe.on('data', (d: Buffer | string) => reader.push(d));
}

/** A supervisor's answer, or how it ended without one. */
export type SupervisorAnswer = StartAnswer & { exit?: { code: number | null; signal: NodeJS.Signals | null } };

/** A supervisor process waiting for its input on stdin. */
export interface WaitingSupervisor {
  child: ChildProcess;
  root: string;
  log: string;
  /** What it got on top of our (scrubbed) environment: a replacement gets the same (a window's X display). */
  extraEnv: Record<string, string | undefined>;
  /** Its answer on fd 3, or (`exit`) how it ended without one. */
  answer: Promise<SupervisorAnswer>;
  /**
   * A pooled supervisor (src/host/pooled.ts): resolves once its QEMU runs, or for the pool's spare
   * (no QEMU, no `qemuPid`) once it has loaded what a start needs; undefined if it ended first.
   */
  pooled: Promise<{ qemuPid?: number } | undefined>;
}

let waiting: WaitingSupervisor | undefined;

/**
 * Spawn a supervisor under `root` that waits for its input (stdin), logging to a temporary file
 * there (stdout and stderr). Used by prespawnSupervisor and, when none waits, by startVm.
 */
export function spawnSupervisor(root: string, extraEnv: Record<string, string | undefined> = {}, logDir = root): WaitingSupervisor {
  ensurePrivateDir(root, true);
  if (logDir !== root) ensurePrivateDir(logDir);
  const log = join(logDir, `.supervisor-${randomBytes(6).toString('hex')}.log`);
  const fd = fs.openSync(log, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    // Never our secrets: the key reaches it on stdin (src/core/env.ts); a passphrase in our
    // environment must not live on in a process that runs as long as the VM.
    const child = spawn(process.execPath, [SUPERVISOR_MAIN, log], { detached: true, stdio: ['pipe', fd, fd, 'pipe'], env: { ...scrubbedEnv(), ...scrubbedEnv(extraEnv) } });
    child.on('error', () => undefined); // reported through 'exit' to whoever waits for it
    child.stdin!.on('error', () => undefined); // a supervisor that died at once is reported through 'exit'
    let pooledSeen: (p: { qemuPid?: number } | undefined) => void = () => undefined;
    const pooled = new Promise<{ qemuPid?: number } | undefined>((r) => { pooledSeen = r; });
    const answer = new Promise<SupervisorAnswer>((resolve) => {
      readStartAnswer(child.stdio[3] as NodeJS.ReadableStream, (a) => { pooledSeen(undefined); resolve(a); }, (p) => pooledSeen(p));
      child.once('exit', (code, signal) => {
        pooledSeen(undefined);
        resolve({ ok: false, exit: { code, signal }, error: { code: 'EHYPERVISOR', message: `the supervisor exited (code ${code}, signal ${signal}) before the VM ran` } });
      });
    });
    return { child, root, log, extraEnv, answer, pooled };
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
