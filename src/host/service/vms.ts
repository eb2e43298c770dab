/**
 * What the host service does for `/v1/vms`: the VM host's library (src/host/client.ts) with the
 * service's parts around it: the key cache (./keys.ts), the warm pool (./pool.ts), the run folders'
 * tracker (./tracker.ts) and the event log. Every check of the VM host (the run folder's lock, the
 * disks opened without following links and locked before they are served, the saved state bound
 * to its VM, the scrubbed environments, NAT through the loopback-dropping relay) is the
 * supervisor's and holds the same for a pooled start: the service only chooses which supervisor
 * process gets the input.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MedvError } from '../../core/errors.js';
import { nameExists, readBoundedSync } from '../../core/fsio.js';
import { checkVmName } from '../../api/names.js';
import type { KekSource } from '../../crypto/kekenv.js';
import { defaultAccelerator } from '../../hypervisor/qemu.js';
import { peekSavedState } from '../../hypervisor/savedstate-header.js';
import { discardVmState, pauseVm, resumeVm, screenshotVm, startVm, stopVm, suspendVm, vmStatus, type DiscardResult } from '../client.js';
import type { VmConfig } from '../config.js';
import { spawnSupervisor } from '../prespawn.js';
import { isTerminal, readState, type VmState } from '../rundir.js';
import { machineShape, poolShape, type MachineShape } from '../shape.js';
import { keyFilesOf, vmConfigFromSource, type VmSourceOptions } from '../source.js';
import { pinSavedState } from '../suspend.js';
import { lockRunDir } from '../vmlock.js';
import { waitUntilFree } from '../../block/flock.js';
import type { EventLog } from './events.js';
import type { KeyCache } from './keys.js';
import type { WarmPool } from './pool.js';
import { checkBody, type BodySpec } from './request.js';
import type { VmTracker } from './tracker.js';

/** Which key a request brings: a one-time handle (POST /v1/keys), a host key file, or none (the unlocked cache, if any). */
export interface KeyChoice { handle?: string; hostKey?: string; wrapKeyFile?: string }

const START_SPEC: BodySpec = {
  source: 'abspath', name: 'name', memoryMiB: { int: [1, 16 * 1024 * 1024] }, readOnly: 'boolean', undo: 'boolean',
  network: { enum: ['none', 'nat'] }, mac: 'string', allowHostPorts: 'ports', nicModel: { enum: ['e1000', 'virtio'] },
  diskBus: { enum: ['ide', 'virtio'] }, display: { enum: ['none', 'vnc', 'vnc-tcp', 'window'] }, accel: { enum: ['kvm', 'tcg'] },
  driveMap: 'driveMap', hostDrives: 'driveMap', undoPath: 'abspath', savedState: 'abspath', key: 'key', x11: 'x11',
};
const RESTART_SPEC: BodySpec = { key: 'key', display: START_SPEC.display, x11: 'x11', accel: START_SPEC.accel };
const STOP_SPEC: BodySpec = { timeoutS: { number: [0, 3600] }, force: 'boolean' };
const DISCARD_SPEC: BodySpec = { source: 'abspath', undo: 'boolean', driveMap: 'driveMap', key: 'key' };

/** Largest screenshot returned (a PNG of a VGA screen is a few hundred KiB). */
const MAX_SCREENSHOT = 64 * 1024 * 1024;

export class VmOps {
  constructor(private readonly d: { root: string; pool: WarmPool; keys: KeyCache; tracker: VmTracker; events: EventLog; log: (line: string) => void }) {}

  /**
   * POST /v1/vms: a VM from a .vmc or disk, started (resumed when it has a saved state). The answer
   * carries `warnings` (one line each, for the caller to show) when something starts otherwise than
   * the .vmc says.
   */
  async create(body: unknown): Promise<VmState & { warnings?: string[] }> {
    const b = checkBody<VmSourceOptions & { source?: string; key?: KeyChoice; x11?: { display?: string; xauthority?: string } }>(body, START_SPEC);
    if (!b.source) throw new MedvError('EINVAL_ARG', 'source: the .vmc or disk to start is missing');
    const { source, key, x11, ...opts } = b;
    const warnings: string[] = [];
    const state = await this.startConfig(await vmConfigFromSource(source, opts, (m) => warnings.push(m)), key, x11);
    return warnings.length ? { ...state, warnings } : state;
  }

  /** POST /v1/vms/{name}/start: the VM as it last ran here (its run folder's config.json), again or resumed. */
  async start(name: string, body: unknown): Promise<VmState> {
    const b = checkBody<{ key?: KeyChoice; display?: VmConfig['display']; x11?: { display?: string; xauthority?: string }; accel?: VmConfig['accel'] }>(body, RESTART_SPEC);
    const config = this.recordedConfig(name);
    if (b.display) config.display = b.display;
    if (b.accel) config.accel = b.accel;
    return this.startConfig(config, b.key, b.x11);
  }

  async stop(name: string, body: unknown): Promise<VmState> {
    const b = checkBody<{ timeoutS?: number; force?: boolean }>(body, STOP_SPEC);
    return this.after(name, await this.released(name, await stopVm(this.name(name), { root: this.d.root, timeoutS: b.timeoutS, force: b.force })));
  }

  async pause(name: string): Promise<VmState> { return this.after(name, await pauseVm(this.name(name), { root: this.d.root })); }
  async resume(name: string): Promise<VmState> { return this.after(name, await resumeVm(this.name(name), { root: this.d.root })); }

  /** Suspend, then keep a pooled QEMU ready for its resume (`-incoming defer` with its RAM size). */
  async suspend(name: string): Promise<VmState> {
    const state = this.after(name, await this.released(name, await suspendVm(this.name(name), { root: this.d.root })));
    let shape: MachineShape | undefined;
    try {
      const config = this.recordedConfig(name);
      shape = poolShape(config, { accel: config.accel ?? defaultAccelerator(), memoryMiB: state.memoryMiB, incoming: true });
    } catch { /* no pool for it: the resume starts cold */ }
    if (shape) this.usePoolLater(shape);
    return state;
  }

  /** A PNG of the screen: written by QEMU into the VM's private run folder, read, removed. */
  async screenshot(name: string): Promise<Buffer> {
    const file = join(this.d.root, this.name(name), `screenshot-${randomBytes(8).toString('hex')}.png`);
    try {
      await screenshotVm(name, file, { root: this.d.root });
      const png = readBoundedSync(file, MAX_SCREENSHOT, 'screenshot');
      if (!png) throw new MedvError('EHYPERVISOR', 'QEMU wrote no screenshot');
      return png;
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  status(name: string): VmState { return vmStatus(this.name(name), { root: this.d.root }); }

  /** Every VM with a run folder; VNC passwords are shown by status only. */
  list(): VmState[] {
    return this.d.tracker.list().map((s) => (s.display.vncPassword ? { ...s, display: { ...s.display, vncPassword: undefined } } : s));
  }

  /** The guest's COM1 output so far (serial.log, kept after the VM stops), opened without following links. */
  serial(name: string): { fd: number; size: number } {
    const file = join(this.d.root, this.name(name), 'serial.log');
    let fd: number;
    try { fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK); } catch {
      throw new MedvError('ENOENT', `no serial output recorded for VM ${name}`);
    }
    const st = fs.fstatSync(fd);
    if (!st.isFile()) { fs.closeSync(fd); throw new MedvError('EUNSAFE', `${file} is not a regular file`, { file }); }
    return { fd, size: st.size };
  }

  /** DELETE /v1/vms/{name}: forget a VM that does not run: its run folder (only medv's files are there; the VM's lock is held meanwhile). */
  remove(name: string): { removed: string } {
    const dir = join(this.d.root, this.name(name));
    if (!fs.existsSync(dir)) throw new MedvError('ENOENT', `no VM named ${name}`);
    // Held by a running VM's supervisor: EBUSY. Held here, no start can begin meanwhile.
    const fd = lockRunDir(dir, name);
    try {
      for (const f of fs.readdirSync(dir)) if (f !== 'lock') fs.rmSync(join(dir, f), { recursive: true, force: true });
      fs.rmSync(join(dir, 'lock'), { force: true });
      fs.rmdirSync(dir);
    } finally {
      fs.closeSync(fd);
    }
    this.d.tracker.refresh(name);
    return { removed: name };
  }

  /** POST /v1/vms/{name}/discard-state: drop a suspended VM's saved state (src/host/client.ts discardVmState). */
  async discardState(name: string, body: unknown): Promise<DiscardResult> {
    const b = checkBody<{ source?: string; undo?: boolean; driveMap?: Record<string, string>; key?: KeyChoice }>(body, DISCARD_SPEC);
    const config = b.source ? await vmConfigFromSource(b.source, { name: this.name(name), undo: b.undo, driveMap: b.driveMap }) : this.recordedConfig(name);
    const kek = await this.kekFor(b.key, config);
    try {
      return await discardVmState(config, { kek });
    } finally {
      await this.d.keys.release(kek);
    }
  }

  private name(name: string): string { return checkVmName(name); }

  /**
   * A stop or suspend answers once the VM's run folder lock is free (its supervisor said stopped
   * before it closed the folder and exited): a `delete` or `start` right after the answer was
   * refused as busy. Bounded: still held after 10 s, the answer goes as it is.
   */
  private async released(name: string, state: VmState): Promise<VmState> {
    await this.lockFree(name);
    return state;
  }

  /**
   * Until the run folder's lock is free (at most 10 s; anything but EBUSY ends the wait: the
   * start that follows reports it). A supervisor frees it once its run ended and was recorded
   * (src/host/supervisor.ts cleanup), one of an older medv only at its exit; the kernel tells no
   * one when a flock goes, hence the polling. `onBusy` is told once when it has to wait.
   */
  private async lockFree(name: string, onBusy?: (holders: string) => void): Promise<void> {
    const dir = join(this.d.root, this.name(name));
    try {
      await waitUntilFree(() => { const fd = lockRunDir(dir, name); return () => fs.closeSync(fd); }, {
        everyMs: 10, forMs: 10_000,
        onBusy: onBusy && ((e) => onBusy(((e.data.holders as Array<{ pid: number }> | undefined) ?? []).map((h) => h.pid).join(', '))),
      });
    } catch { /* not EBUSY: the start that follows reports it */ }
  }

  /**
   * A start of a VM whose run folder says it ended (stopped, suspended, failed) while the
   * supervisor of that run still holds the folder's lock (it records its end just before it lets
   * the lock go): wait for the lock, rather than have the new supervisor refuse with EBUSY. A VM
   * that runs or starts is left to startVm's EBUSY.
   */
  private async previousRunEnded(name: string): Promise<void> {
    let s: VmState | undefined;
    try { s = readState(join(this.d.root, this.name(name))); } catch { return; }
    if (!s || !isTerminal(s.state)) return;
    await this.lockFree(name, (pids) => this.d.log(`VM ${name}: waiting for the supervisor of its last run${pids ? ` (pid ${pids})` : ''} to free its run folder`));
  }

  /** The pool keeps a member of `shape` (if any) and its spare, started once the answer in progress has gone (a spawn costs milliseconds). */
  private usePoolLater(shape?: MachineShape): void {
    setImmediate(() => this.d.pool.use(shape));
  }

  private after(name: string, state: VmState): VmState {
    this.d.tracker.refresh(name);
    return state;
  }

  /** The config the VM's supervisor recorded in its run folder (no key in it). */
  private recordedConfig(name: string): VmConfig {
    const file = join(this.d.root, this.name(name), 'config.json');
    const bytes = readBoundedSync(file, 1 << 20, 'config.json');
    if (!bytes) throw new MedvError('ENOENT', `VM ${name} has not run here: start it from its .vmc or disk (POST /v1/vms)`);
    try { return JSON.parse(bytes.toString('utf8')) as VmConfig; } catch { throw new MedvError('EFORMAT', 'config.json is not JSON', { file }); }
  }

  private async kekFor(key: KeyChoice | undefined, config: VmConfig): Promise<KekSource | undefined> {
    if (key?.hostKey) return { kind: 'hostkey', keyFile: key.hostKey, ...(key.wrapKeyFile ? { wrapKeyFile: key.wrapKeyFile } : {}) };
    return this.d.keys.kekFor(key?.handle, keyFilesOf(config));
  }

  /** The guest RAM of the saved state this VM would resume, or undefined (none, or unreadable: the supervisor decides). */
  private savedMemory(config: VmConfig): number | undefined {
    let vsv;
    try {
      vsv = pinSavedState(config, { missingOk: true });
      if (!vsv || !nameExists(vsv.at)) return undefined;
      return peekSavedState(vsv.at).memoryMiB;
    } catch {
      return undefined;
    } finally {
      vsv?.close();
    }
  }

  /** Start a VM the caller described itself, with its own key (the workspace library: its host key). */
  async startWith(config: VmConfig, kek: KekSource | undefined): Promise<VmState> {
    return this.startConfig(config, kek ? { given: kek } : undefined);
  }

  private async startConfig(config: VmConfig, key: KeyChoice | { given: KekSource } | undefined, x11?: { display?: string; xauthority?: string }): Promise<VmState> {
    const given = key && 'given' in key ? key.given : undefined;
    const kek = given ?? await this.kekFor(key as KeyChoice | undefined, config);
    const resumeMiB = this.savedMemory(config);
    const shape = poolShape(config, { accel: config.accel ?? defaultAccelerator(), memoryMiB: resumeMiB ?? config.memoryMiB, incoming: resumeMiB !== undefined });
    // A window needs the caller's X display (the service's environment has none of its own).
    const supervisor = config.display === 'window'
      ? spawnSupervisor(this.d.root, { DISPLAY: x11?.display, XAUTHORITY: x11?.xauthority })
      : (shape ? this.d.pool.take(shape) : undefined) ?? this.d.pool.takeSpare();
    let state: VmState;
    try {
      await this.previousRunEnded(config.name);
      state = await startVm(config, { root: this.d.root, kek, supervisor });
    } catch (e) {
      this.d.events.emit('error', { vm: config.name, code: (e as MedvError).code ?? 'EINTERNAL', message: (e as Error).message.split('\n')[0] });
      this.usePoolLater(); // the spare or member it took comes back, as after a start that worked
      throw e;
    } finally {
      if (!given) await this.d.keys.release(kek);
      this.d.tracker.refresh(config.name);
    }
    // The shape in use gets its pool member back, and the pool its spare (after the start, not competing with it).
    this.usePoolLater(!shape ? undefined : resumeMiB === undefined ? shape : machineShape(config, { ...shape, incoming: false, memoryMiB: config.memoryMiB }));
    return state;
  }
}

