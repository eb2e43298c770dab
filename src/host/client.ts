/**
 * The VM host as a library (what `medv vm …` and scripts call): start a VM under a detached
 * supervisor, talk to it over its control socket, list and inspect VMs from their run folders.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import type { KekSource } from '../crypto/index.js';
import { MedvError, type ErrorCode } from '../core/errors.js';
import { nameExists } from '../core/fsio.js';
import { runRoot } from '../core/paths.js';
import { checkVmName } from '../api/names.js';
import type { SavedStateReader } from '../hypervisor/savedstate.js';
import { controlRequest } from './protocol.js';
import { effectiveState, isTerminal, listRunDirs, readState, vmRunDir, type VmState } from './rundir.js';
import type { SupervisorInput, VmConfig, VmDevices } from './config.js';
import { POOLED_QEMU_GONE, spawnSupervisor, takePrespawned, type SupervisorAnswer, type WaitingSupervisor } from './prespawn.js';
import { encodeInput } from './input.js';

export interface HostOptions {
  /** Run folder root (default runRoot()). */
  root?: string;
}

/** Longest we wait for a supervisor to report that its VM runs. */
const START_TIMEOUT_MS = 120_000;

/** The last `bytes` of a file (a supervisor log can be long), or '' when it cannot be read. */
function tail(file: string, bytes = 4000): string {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    const b = Buffer.alloc(Math.min(bytes, size));
    const n = fs.readSync(fd, b, 0, b.length, size - b.length);
    return b.subarray(0, n).toString('utf8').trim();
  } catch {
    return '';
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export { readStartAnswer, MAX_START_ANSWER, type StartAnswer } from './prespawn.js';

/**
 * Start a VM under a new detached supervisor; resolves once QEMU runs (the guest may still be
 * booting). The VM keeps running after this process exits. EBUSY if a VM of that name runs.
 * `supervisor`: one started already (the host service's pool: src/host/pooled.ts); when it ends
 * without an answer because its pooled QEMU died (POOLED_QEMU_GONE), the VM starts cold instead.
 */
export async function startVm(config: VmConfig, options: HostOptions & { kek?: KekSource; supervisor?: WaitingSupervisor } = {}): Promise<VmState> {
  const root = options.root ?? runRoot();
  let dir: string;
  try {
    checkVmName(config.name);
    dir = vmRunDir(config.name, root);
    // A quick answer for the usual case; the supervisor's lock on the folder (./vmlock.ts) decides
    // when two starts race, before either touches anything in it.
    const current = readState(dir);
    if (current && !isTerminal(effectiveState(current).state)) {
      throw new MedvError('EBUSY', `VM ${config.name} is already ${current.state} (supervisor pid ${current.pid})`);
    }
  } catch (e) {
    // A supervisor given (the service's spare or pool member) that gets no input ends now, as the
    // pool ends one it releases (empty input); else it would wait for one as long as the service runs.
    options.supervisor?.child.stdin!.end();
    throw e;
  }
  // Usually started already, while this command was parsing (./prespawn.ts), or by the pool.
  const ahead = options.supervisor ?? takePrespawned(root);
  let supervisor = ahead ?? spawnSupervisor(root);
  let answer = await runSupervisor(supervisor, { config, runRoot: root, kek: options.kek, logFile: supervisor.log }, dir);
  // Started ahead and gone before it did anything: its pooled QEMU died (POOLED_QEMU_GONE), or it
  // was killed while it waited (a signal, and the run folder's state is not its own: it never began
  // the start, whose first step after the lock is writing it). It had started nothing (a QEMU of
  // its own dies with it, and the kernel dropped its locks), so a new supervisor starts the VM,
  // with no error for the user.
  if (!answer.ok && (answer.exit?.code === POOLED_QEMU_GONE || (ahead && answer.exit?.signal && !wroteState(dir, supervisor)))) {
    supervisor = spawnSupervisor(root, supervisor.extraEnv);
    answer = await runSupervisor(supervisor, { config, runRoot: root, kek: options.kek, logFile: supervisor.log }, dir);
  }
  if (!answer.ok || !answer.state) {
    throw new MedvError((answer.error?.code ?? 'EHYPERVISOR') as ErrorCode, answer.error?.message ?? 'the VM did not start');
  }
  return answer.state;
}

/** Did this supervisor write the run folder's state (it took the lock and began the start)? */
function wroteState(dir: string, supervisor: WaitingSupervisor): boolean {
  try { return readState(dir)?.pid === supervisor.child.pid; } catch { return true; }
}

/** Send a supervisor its input and wait for its answer (bounded in time). */
async function runSupervisor(supervisor: WaitingSupervisor, input: SupervisorInput, dir: string): Promise<SupervisorAnswer> {
  const child = supervisor.child;
  child.stdin!.end(encodeInput(input));
  let timer: NodeJS.Timeout | undefined;
  const answer = await Promise.race([
    supervisor.answer,
    new Promise<SupervisorAnswer>((resolve) => { timer = setTimeout(() => resolve({ ok: false, error: { code: 'ETIMEOUT', message: `the supervisor did not report within ${START_TIMEOUT_MS} ms` } }), START_TIMEOUT_MS); }),
  ]);
  clearTimeout(timer);
  (child.stdio[3] as NodeJS.ReadableStream & { destroy(): void }).destroy();
  child.unref();
  if (!answer.ok && answer.error?.code === 'ETIMEOUT') { try { process.kill(child.pid!, 'SIGTERM'); } catch { /* gone */ } }
  if (answer.exit && answer.exit.code !== POOLED_QEMU_GONE) {
    // Its temporary log, unless it got as far as moving it into the run folder.
    const log = tail(fs.existsSync(supervisor.log) ? supervisor.log : join(dir, 'supervisor.log'));
    if (log) return { ...answer, error: { code: 'EHYPERVISOR', message: `${answer.error!.message}: ${log}` } };
  }
  return answer;
}

function runningState(name: string, root: string): { dir: string; state: VmState } {
  const state = vmStatus(name, { root });
  const dir = join(root, name);
  if (isTerminal(state.state)) throw new MedvError('EINVAL_ARG', `VM ${name} is not running (${state.state}${state.exitReason ? `: ${state.exitReason}` : ''})`);
  return { dir, state };
}

async function control(name: string, cmd: Parameters<typeof controlRequest>[1], args: Record<string, unknown>, options: HostOptions, timeoutMs?: number): Promise<unknown> {
  const { dir } = runningState(name, options.root ?? runRoot());
  return controlRequest(join(dir, 'control.sock'), cmd, args, timeoutMs);
}

/** ACPI power button, forced quit after `timeoutS` (default 30) or at once with `force`. Resolves when stopped. */
export async function stopVm(name: string, opts: HostOptions & { timeoutS?: number; force?: boolean } = {}): Promise<VmState> {
  const timeoutS = opts.timeoutS ?? 30;
  return await control(name, 'stop', { timeoutS, force: opts.force ?? false }, opts, (timeoutS + 30) * 1000) as VmState;
}

/** Save the guest to its encrypted .vsv and stop it; the next startVm resumes it. */
export async function suspendVm(name: string, opts: HostOptions = {}): Promise<VmState> {
  return await control(name, 'suspend', {}, opts, 600_000) as VmState;
}

export async function pauseVm(name: string, opts: HostOptions = {}): Promise<VmState> {
  return await control(name, 'pause', {}, opts) as VmState;
}

export async function resumeVm(name: string, opts: HostOptions = {}): Promise<VmState> {
  return await control(name, 'resume', {}, opts) as VmState;
}

/** Write a PNG of the guest's screen (QMP screendump). */
export async function screenshotVm(name: string, file: string, opts: HostOptions = {}): Promise<void> {
  await control(name, 'screenshot', { file }, opts);
}

/** What QEMU says the running VM has: its chardevs and devices (QMP query-chardev, qom-list; Supervisor.devices). */
export async function vmDevices(name: string, opts: HostOptions = {}): Promise<VmDevices> {
  return await control(name, 'devices', {}, opts) as VmDevices;
}

/** The VM's state as it really is (a dead supervisor reads as stopped). */
export function vmStatus(name: string, opts: HostOptions = {}): VmState {
  checkVmName(name);
  const dir = join(opts.root ?? runRoot(), name);
  const raw = fs.existsSync(dir) ? readState(dir) : undefined;
  if (!raw) throw new MedvError('ENOENT', `no VM named ${name}`);
  return effectiveState(raw);
}

/** Every VM with a run folder, running or not. */
export function listVms(opts: HostOptions = {}): VmState[] {
  const root = opts.root ?? runRoot();
  const out: VmState[] = [];
  for (const name of listRunDirs(root)) {
    try {
      const s = readState(join(root, name));
      if (s) out.push(effectiveState(s));
    } catch { /* a damaged state file is skipped, not fatal for the listing */ }
  }
  return out;
}

/** What `vm discard-state` did: files removed, files kept (with why), disks whose saved-state flag it cleared. */
export interface DiscardResult { removed: string[]; kept: Array<{ path: string; reason: string }>; cleared: string[] }

/**
 * Drop a suspended VM's saved state: remove its `.vsv` and `.vsv.enc`, then clear the saved-state
 * flag of the disks the guest writes into (each disk, or its undo disk). The guest then starts from
 * its disks as after a power cut. Works as well for a Virtual PC disk whose flag is set and whose
 * saved state is gone.
 *
 * Removed is only a complete medv saved state that authenticates under the key (every frame up to
 * the final one), that was taken from this VM's disks, with the key file whose key id it carries
 * (recognised by content, never by name); anything else at that name is kept and reported. The
 * files are reached as the VM start reaches them (./disks.ts, ./suspend.ts: no links followed for
 * paths a .vmc named). A running VM holds its disks: EBUSY.
 */
export async function discardVmState(config: VmConfig, options: { kek?: KekSource } = {}): Promise<DiscardResult> {
  const [layers, { checkOwner }, { VmDisks }, { pinSavedState }] = await Promise.all([import('./layers.js').then((l) => l.loadLayers()), import('./binding.js'), import('./disks.js'), import('./suspend.js')]);
  const out: DiscardResult = { removed: [], kept: [], cleared: [] };
  const vsv = pinSavedState(config, { missingOk: true });
  try {
    if (vsv && nameExists(vsv.at)) {
      const keep = (reason: string) => out.kept.push({ path: config.savedState, reason });
      if (!options.kek) {
        keep('its key is needed to check that it is this VM\'s saved state: give the passphrase or host key');
      } else {
        let reader: SavedStateReader | undefined;
        try {
          reader = await vsv.shown(() => layers.saved.SavedStateReader.open(vsv.at, options.kek!));
          const r = reader;
          const meta = await vsv.shown(() => r.check());
          checkOwner(meta, config, config.savedState);
          const { removed } = vsv.shown(() => r.remove());
          out.removed.push(...removed.map((p: string) => p.replace(vsv.at, config.savedState)));
        } catch (e) {
          if (!(e instanceof MedvError) || e.code === 'EBUSY' || e.code === 'EIO') throw e;
          keep(`${e.message.replace(/ \([^()]*\)$/, '')} [${e.code}]`);
        } finally {
          reader?.close();
        }
      }
    }
  } finally {
    vsv?.close();
  }
  const disks = new VmDisks(layers, options.kek, { savedState: config.savedState, create: false });
  try {
    for (const d of config.disks) {
      if (d.mode !== 'normal' && d.mode !== 'undo') continue;
      try {
        await disks.open(d, true);
      } catch (e) {
        if (e instanceof MedvError && e.code === 'ENOENT') continue; // nothing there to clear (an undo disk never made)
        throw e;
      }
    }
    for (const d of disks.list) {
      if (d.top?.savedState) {
        await d.top.setSavedState(false);
        out.cleared.push(d.state.undo ?? d.state.path);
      }
    }
  } finally {
    await disks.close();
  }
  return out;
}

/** Path of the VM's serial log (kept after it stops, until the name is started again). */
export function serialLogPath(name: string, opts: HostOptions = {}): string {
  checkVmName(name);
  const file = join(opts.root ?? runRoot(), name, 'serial.log');
  if (!fs.existsSync(file)) throw new MedvError('ENOENT', `no serial output recorded for VM ${name}`);
  return file;
}
