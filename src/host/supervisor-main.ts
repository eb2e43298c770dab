/**
 * Entry of the detached supervisor process (spawned by startVm in ./client.ts, or by the host
 * service's pool, src/host/service/pool.ts).
 * stdin: frames (./input.ts): a pooled supervisor first gets `{"pool":{"root","shape"}}`, starts
 *        its QEMU (./pooled.ts), answers `{"pooled":{"qemuPid"}}` on fd 3 and waits (the pool's
 *        spare gets `{"pool":{"root"}}`: no QEMU; it loads the disk layers, answers
 *        `{"pooled":{}}` and waits); then (every
 *        supervisor) one SupervisorInput, its secrets after it (the key-encryption key travels
 *        here, never in argv, the environment or a file), at most 1 MiB, then EOF;
 * fd 3:  one JSON line back to the starter: {"ok":true,"state":…} once the VM runs, or
 *        {"ok":false,"error":{"code","message"}}; then it is closed and the starter may exit.
 * stdout/stderr: a temporary log in the run root, named by argv[2] (./prespawn.ts), moved to the
 *        VM's supervisor.log in its run folder once the input names the VM. An empty input means
 *        the command (or the pool) that started it did not start a VM after all: remove the log
 *        and exit. A pooled supervisor whose QEMU exits before a VM took it exits with status 75
 *        and no answer (the pool then starts the VM cold).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { renameSync } from '../core/fsio.js';
import { secureAlloc } from '../crypto/secure.js';
import { bindNbd } from '../nbd/server.js';
import { decodeInput, MAX_INPUT } from './input.js';
import { POOLED_QEMU_GONE, poolDir, preparePooled, type PooledQemu } from './pooled.js';
import { vmRunDir } from './rundir.js';
import { lockRunDir } from './vmlock.js';
import { Supervisor, type SupervisorInput } from './supervisor.js';
import type { MachineShape } from './shape.js';

const LOG = process.argv[2];


/** stdin as frames: `line()` gives the next JSON line (undefined at EOF), `rest()` every byte after it. */
function stdinFrames(): { line(): Promise<string | undefined>; rest(): Promise<Buffer> } {
  let buf = Buffer.alloc(0);
  let ended = false;
  let wake: (() => void) | undefined;
  let failure: Error | undefined;
  process.stdin.on('data', (chunk: Buffer) => {
    if (buf.length + chunk.length > MAX_INPUT) { failure = new MedvError('EINVAL_ARG', 'supervisor input is too large'); process.stdin.destroy(); }
    else buf = Buffer.concat([buf, chunk]);
    chunk.fill(0);
    wake?.();
  });
  process.stdin.on('end', () => { ended = true; wake?.(); });
  process.stdin.on('error', () => { ended = true; wake?.(); });
  const next = () => new Promise<void>((r) => { wake = r; });
  return {
    async line() {
      for (;;) {
        if (failure) throw failure;
        const nl = buf.indexOf(0x0a);
        if (nl >= 0) {
          const text = buf.subarray(0, nl).toString('utf8');
          buf = buf.subarray(nl + 1);
          return text;
        }
        if (ended) {
          if (buf.length) throw new MedvError('EINVAL_ARG', 'supervisor input ends without a newline');
          return undefined;
        }
        await next();
      }
    },
    async rest() {
      while (!ended && !failure) await next();
      if (failure) throw failure;
      const out = buf;
      buf = Buffer.alloc(0);
      return out;
    },
  };
}

function report(msg: unknown, close = true): void {
  try {
    fs.writeSync(3, `${JSON.stringify(msg)}\n`);
    if (close) fs.closeSync(3);
  } catch { /* the starter is gone: nobody to tell */ }
}

/**
 * A pooled supervisor: start QEMU for the shape, say so, and give up when QEMU dies before a VM
 * comes. Without a shape (the pool's spare): no QEMU, nothing bound; say so once the disk layers
 * are loaded too, and wait for an input like any supervisor.
 */
async function preparePool(pool: { root: string; shape?: MachineShape }): Promise<PooledQemu | undefined> {
  // Everything a start needs is loaded while the pooled QEMU starts (the disk layers come first in a cold start).
  const layers = import('./layers.js').then((l) => l.loadLayers()).catch(() => undefined);
  if (!pool.shape) {
    await layers;
    await warmUp(pool.root).catch(() => undefined);
    process.stdout.write('medv supervisor: spare, modules loaded, waiting for a start\n');
    report({ pooled: {} }, false);
    return undefined;
  }
  const pooled = await preparePooled(pool.root, pool.shape);
  process.stdout.write(`medv supervisor: pooled QEMU pid ${pooled.vm.pid} started in ${pooled.dir}\n`);
  void pooled.vm.exitedPromise.then(() => {
    if (adopted) return;
    process.stdout.write('medv supervisor: the pooled QEMU exited before a VM took it\n');
    pooled.removeDir();
    if (LOG) fs.rmSync(LOG, { force: true });
    process.exit(POOLED_QEMU_GONE);
  });
  report({ pooled: { qemuPid: pooled.vm.pid } }, false);
  return pooled;
}

/**
 * The spare, before it says it is ready: run once what a cold start runs first (an NBD socket bound
 * and closed, in a folder of its own under the pool's; a child process spawned), so that the start
 * does not wait for V8 to compile those paths or for libuv to create its thread pool (measured:
 * the first bind and spawn of a process took 5-9 ms each, later ones 1-3).
 */
async function warmUp(root: string): Promise<void> {
  const dir = fs.mkdtempSync(join(poolDir(root), 'w-'));
  try {
    await (await bindNbd(join(dir, 'disk.sock'))).close();
    await new Promise<void>((resolve) => {
      const child = spawn('/bin/true', [], { stdio: 'ignore', env: {} });
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

let adopted = false;

/** The pool's first frame, `{"pool":{"root","shape"}}` (no shape: the spare), or undefined for anything else (the input). */
function poolFrame(line: string): { root: string; shape?: MachineShape } | undefined {
  if (!line.startsWith('{"pool":')) return undefined;
  const f = JSON.parse(line) as { pool?: { root?: unknown; shape?: unknown } };
  if (typeof f.pool?.root !== 'string' || (f.pool.shape !== undefined && (!f.pool.shape || typeof f.pool.shape !== 'object'))) throw new MedvError('EINVAL_ARG', 'a pool frame needs a run root, and a machine shape or none');
  return f.pool as { root: string; shape?: MachineShape };
}

async function main(): Promise<void> {
  let supervisor: Supervisor;
  let logged = false;
  let pooled: PooledQemu | undefined;
  try {
    const frames = stdinFrames();
    let line = await frames.line();
    const pool = line === undefined ? undefined : poolFrame(line);
    if (pool) {
      pooled = await preparePool(pool);
      line = await frames.line();
    }
    if (line === undefined) {
      // No VM after all (the command ended, or the pool was closed).
      if (pooled) await pooled.discard();
      if (LOG) fs.rmSync(LOG, { force: true });
      return;
    }
    adopted = true;
    const input: SupervisorInput = decodeInput(line, await frames.rest(), secureAlloc);
    if (input.logFile !== undefined && input.logFile !== LOG) throw new MedvError('EINVAL_ARG', 'the input names another log than the one this supervisor writes');
    const dir = vmRunDir(input.config.name, input.runRoot);
    // Before anything in the folder is looked at or touched; held until the VM's run has ended
    // and been recorded (Supervisor.cleanup), or this process exits.
    const lock = lockRunDir(dir, input.config.name);
    if (input.logFile !== undefined) {
      renameSync(LOG, join(dir, 'supervisor.log'));
      logged = true;
    }
    supervisor = new Supervisor(input, pooled, () => fs.closeSync(lock));
    pooled = undefined;
    const state = await supervisor.start();
    report({ ok: true, state });
  } catch (e) {
    if (pooled) await pooled.discard().catch(() => undefined);
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
