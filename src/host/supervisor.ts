/**
 * The per-VM supervisor (DESIGN.md, "Hypervisor and supervisor"): one detached process per VM.
 * It opens the VM's disk stacks (holding their locks), exports each over NBD on a socket in the
 * VM's private run folder, launches QEMU through src/hypervisor (which alone knows its command
 * line), serves the control socket, keeps state.json true, and cleans up when QEMU exits:
 * NBD servers closed, disks flushed and closed, a test-mode undo disk discarded.
 *
 * Failure handling:
 * - QEMU dies with the supervisor (setpriv --pdeathsig in the driver), so a killed supervisor
 *   never leaves a guest writing to disks nobody serves; the disks' own crash safety (flushed
 *   writes survive) covers the rest, and `vm list` sees the dead pid and reports 'stopped'.
 * - SIGTERM/SIGINT to the supervisor: the guest is asked to power off (ACPI), then forced.
 * - KVM stopping the guest in run state internal-error (FACTS.md) restarts it once under TCG.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MedvError } from '../core/errors.js';
import { nameExists, thisProcess } from '../core/fsio.js';
import { defaultAccelerator, isInternalError, QemuProcess, type Accelerator } from '../hypervisor/qemu.js';
import type { SavedStateMeta, SavedStateReader } from '../hypervisor/savedstate.js';
import { peekSavedState } from '../hypervisor/savedstate-header.js';
import { startUserNet, type UserNet } from '../hypervisor/usernet.js';
import { bindNbd, type NbdListener } from '../nbd/server.js';
import { randomInt } from 'node:crypto';
import { writeFileAtomic } from '../core/fsio.js';
import type { PooledQemu } from './pooled.js';
import { AGENT_SOCKET, hardwareOf, machineShape, shapeKey, specFor, type MachineShape } from './shape.js';
import type { SupervisorInput, VmDevices } from './config.js';
import { ControlServer } from './control.js';
import { VmDisks } from './disks.js';
import { loadLayers } from './layers.js';
import type { ControlRequest } from './protocol.js';
import { readState, vmRunDir, writeState, writeStateAsync, type VmState } from './rundir.js';
import { FramesAhead, feedSavedState, migrateToSavedState, pinSavedState, type SavedStateFile } from './suspend.js';
import { bindingOf, checkAfterOpen, checkBeforeOpen, fingerprintsOf } from './binding.js';
import { checkShares, openSharedFolder, type OpenShare } from './shares.js';

export type { SupervisorInput, VmConfig, VmDiskConfig, VmDevices } from './config.js';
export { defaultUndoPath, testUndoPath } from './config.js';

/** Seconds the guest gets to power off after the ACPI button before it is forced. */
export const DEFAULT_STOP_TIMEOUT_S = 30;
/** Serial output kept in memory (the log file has all of it). */
const SERIAL_MEMORY = 1 << 20;

/** A VNC password: 8 characters (VNC's authentication uses 8), about 46 random bits. */
function vncPassword(): string {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';
  return Array.from({ length: 8 }, () => alphabet[randomInt(alphabet.length)]).join('');
}

export class Supervisor {
  private readonly dir: string;
  private disks: VmDisks | undefined;
  private vm: QemuProcess | undefined;
  private readonly control: ControlServer;
  private state!: VmState;
  private stopping: Promise<void> | undefined;
  private finished!: Promise<void>;
  private resolveFinished!: () => void;
  /** Guest RAM of this run (from the saved state when resuming). */
  private memoryMiB: number | undefined;
  /** passt and the frame filter of a NAT guest (src/hypervisor/usernet.ts). */
  private net: UserNet | undefined;
  /** The saved state's folder, held open (./suspend.ts). */
  private vsv: SavedStateFile | undefined;
  /** The authenticated metadata of the saved state being resumed. */
  private savedMeta: SavedStateMeta | undefined;
  private suspending = false;
  /** The guest's hardware in words (./shape.ts hardwareOf), recorded in a saved state. */
  private hardware: string | undefined;
  /** The shared folders, held open while the VM runs (./shares.ts): QEMU inherits these descriptors. */
  private shares: OpenShare[] = [];

  /** A pooled QEMU this supervisor was started with (./pooled.ts), until start() takes or discards it. */
  private adopted: PooledQemu | undefined;
  /** Its end recorded and the run folder let go (cleanup): state.json is no longer this run's to write. */
  private ended = false;
  /** The pooled QEMU taken, until its sockets moved into the run folder. */
  private pooled: PooledQemu | undefined;

  /**
   * `unlock` releases the run folder's lock (./vmlock.ts; supervisor-main.ts took it): called once
   * this run has ended and everything it had is closed and recorded, before the request that ended
   * it is answered, so a start of this name right after the answer does not wait for this
   * process's exit.
   */
  constructor(private readonly input: SupervisorInput, adopted?: PooledQemu, private unlock?: () => void) {
    this.adopted = adopted;
    this.dir = vmRunDir(input.config.name, input.runRoot);
    this.finished = new Promise((r) => { this.resolveFinished = r; });
    this.control = new ControlServer(join(this.dir, 'control.sock'), (req) => this.execute(req));
  }

  get runDir(): string { return this.dir; }
  /** Resolves when the VM has stopped and everything is cleaned up. */
  get done(): Promise<void> { return this.finished; }

  /** Milestones of the start, with the milliseconds since this process began, in supervisor.log. */
  private trace(what: string): void {
    process.stdout.write(`medv supervisor: ${performance.now().toFixed(0)} ms ${what}\n`);
  }

  /**
   * Start the VM; resolves with the running state. The order keeps QEMU's start-up (about as long
   * as everything else here) off the critical path without letting the guest near a disk early:
   *  1. bind each disk's NBD socket (a client that connects waits in the handshake, unanswered);
   *  2. start QEMU (with a saved state: the RAM size from its header, -incoming, guest paused);
   *  3. meanwhile load the disk layers; with a saved state, unwrap its key (on the thread pool),
   *     open its authenticated metadata and check the disks against it;
   *  4. open (and lock) the disks, then serve them: only now can QEMU read or write a block;
   *  5. connect QMP; with a saved state, decrypt it once, feeding QEMU as each frame
   *     authenticates, and let the guest run only after the final frame verified;
   *  6. listen on the control socket.
   * Any failure closes the sockets first (QEMU waiting in a handshake then exits), kills QEMU,
   * closes what was opened, and rejects with the first error.
   */
  async start(): Promise<VmState> {
    const c = this.input.config;
    const pidStart = thisProcess().start ?? 0;
    // The caller holds this folder's lock (./vmlock.ts): what an earlier run recorded is ours to read.
    let previous: VmState | undefined;
    try { previous = readState(this.dir); } catch { previous = undefined; }
    this.state = {
      name: c.name, state: 'starting', pid: process.pid, pidStart, memoryMiB: c.memoryMiB, disks: [],
      network: c.network, display: { kind: c.display, ...(c.display === 'vnc' ? { vncSocket: join(this.dir, 'vnc.sock') } : {}) }, startedAt: new Date().toISOString(), vmc: c.vmc,
      key: this.input.kek ? (this.input.kek.kind === 'hostkey' ? 'host-key' : 'passphrase') : 'none',
      ...(previous?.testUndo?.length ? { testUndo: previous.testUndo } : {}),
    };
    for (const stale of ['control.sock', 'qmp.sock', AGENT_SOCKET]) fs.rmSync(join(this.dir, stale), { force: true });
    this.state.savedState = c.savedState;
    // state.json ('starting') and what this VM is made of (config.json, for a later start by name:
    // the host service's POST /v1/vms/{name}/start; no key in it) go to disk on the thread pool
    // while QEMU starts; both are on disk before a disk is served, and before anything else writes
    // state.json (`recorded()`). Until then the folder shows the previous run's state, as it did
    // between the lock and this point; a crash meanwhile leaves that state (its supervisor dead)
    // and at most a temporary file the next write removes.
    let writing: Promise<unknown> | undefined = Promise.all([
      writeStateAsync(this.dir, this.state),
      writeFileAtomic(join(this.dir, 'config.json'), `${JSON.stringify(c, null, 2)}\n`, { mode: 0o600 }),
    ]);
    writing.catch(() => undefined);
    const recorded = async () => { const w = writing; writing = undefined; if (w) await w; };
    this.trace('input read');
    const listeners: NbdListener[] = [];
    let saved: SavedStateReader | undefined;
    let opening: Promise<SavedStateReader> | undefined;
    let ahead: FramesAhead | undefined;
    try {
      // A folder that does not exist yet holds no saved state; suspend pins it when it does.
      this.vsv = pinSavedState(c, { missingOk: true });
      const resuming = this.vsv !== undefined && nameExists(this.vsv.at);
      // A resumed guest continues its serial output; a fresh boot starts a fresh log.
      if (!resuming) fs.rmSync(join(this.dir, 'serial.log'), { force: true });
      if (resuming) {
        if (!this.input.kek) throw new MedvError('ENOKEY', 'resuming a saved state needs the passphrase or host key that encrypted it', { file: c.savedState });
        const vsv = this.vsv!;
        const peek = vsv.shown(() => peekSavedState(vsv.at));
        if (peek.memoryMiB === undefined) {
          // Version 1 has no RAM size in its header: verify it whole before anything is launched.
          saved = await this.openSavedState();
        } else {
          this.memoryMiB = peek.memoryMiB;
        }
      }
      const accel = c.accel ?? defaultAccelerator();
      const shape = machineShape(c, { accel, memoryMiB: this.memoryMiB ?? c.memoryMiB, incoming: resuming });
      this.hardware = hardwareOf(shape);
      for (const share of checkShares(c.sharedFolders)) this.shares.push(openSharedFolder(share));
      const vm = await this.adopt(shape, listeners) ?? await this.startCold(shape, listeners);
      if (resuming && !saved) {
        // Unwrapping its key (Argon2id for a passphrase) runs on the thread pool from now on,
        // alongside QEMU's start and the layers' loading; it and the disks' check are awaited
        // before any disk is opened (a changed disk is refused as such, whatever else is wrong).
        opening = this.openSavedState();
        opening.catch(() => undefined);
      }
      const layers = await loadLayers();
      this.trace('disk layers loaded');
      if (opening) saved = await opening;
      // Before any disk is opened: the hardware the saved devices need (QEMU would fail mid-stream).
      if (this.savedMeta?.hardware !== undefined && this.savedMeta.hardware !== hardwareOf(shape)) {
        throw new MedvError('ESAVEDSTATE', `the saved state ${c.savedState} was taken with other hardware (${this.savedMeta.hardware}) than this start asks for (${hardwareOf(shape)}): start the VM with the settings it was suspended with (--disk-bus, --nic), or drop the state with medv vm discard-state`, { file: c.savedState });
      }
      // A test run's disk records its undo disk in state.json as it creates it: after the write above.
      if (c.disks.some((d) => d.mode === 'test')) await recorded();
      // Its stream is decrypted (each frame held once it authenticated) while the disks are opened
      // and QEMU finishes starting; QEMU gets the frames only in feedSavedState below.
      if (saved) ahead = new FramesAhead(saved);
      const disks = new VmDisks(layers, this.input.kek, {
        savedState: c.savedState,
        testUndo: this.state.testUndo,
        onTestUndo: (records) => {
          this.state = { ...this.state, testUndo: records.length ? records : undefined };
          this.record(this.state);
        },
      });
      this.disks = disks;
      for (const d of c.disks) await disks.open(d, resuming);
      // Open and locked, not yet served: the files the stacks read must be the saved state's.
      if (this.savedMeta) checkAfterOpen(this.savedMeta, disks.bound, c.savedState);
      await recorded();
      disks.serve(listeners);
      this.trace('disks open and served');
      await vm.connect();
      this.trace('QMP connected');
      this.moveIn(listeners);
      if (saved) {
        // The disks are no longer a suspended VM's: cleared before `cont`, never while the guest could allocate blocks.
        await feedSavedState(vm, ahead!, (w) => this.trace(w), () => disks.setSavedState(false));
        this.trace('saved state fed and verified; guest running');
      }
      if (c.display === 'vnc-tcp') await this.setVncPassword(vm);
      this.watch(vm, accel);
      await this.control.listen();
    } catch (e) {
      // Sockets not serving yet are closed first: a QEMU waiting in its NBD handshake then fails and
      // exits at once. Served ones close in cleanup(), after QEMU was killed.
      if (!this.disks?.serving) await Promise.all(listeners.map((l) => l.close().catch(() => undefined)));
      // The 'starting' state on disk before cleanup's 'failed' (a write that failed changes nothing).
      await recorded().catch(() => undefined);
      // A pooled QEMU the start did not get to: it never ran a guest or read a block.
      if (this.adopted) { await this.adopted.discard().catch(() => undefined); this.adopted = undefined; }
      // One taken whose sockets are still in the pool's folder: QEMU is killed by cleanup, the folder goes now.
      this.pooled?.removeDir();
      this.pooled = undefined;
      await ahead?.stop();
      saved?.close();
      if (opening && !saved) void opening.then((s) => s.close(), () => undefined);
      // As a stop in progress: QEMU's exit, caused by this cleanup, must not start another one.
      this.stopping = this.cleanup(`failed to start: ${(e as Error).message}`, 'failed');
      await this.stopping;
      throw e;
    }
    if (saved) {
      const reader = saved;
      // The guest runs: a saved state that cannot be removed must not stop it. Its disks' flags
      // are clear now, so it would never be resumed again (their mtime changed): it is only left.
      // Held open across the removal, the unlink only drops the name: the blocks of a large .vsv
      // (1.7 GB: ~0.5 s of the kernel's time) are freed when this closes, on the thread pool, while
      // the start is answered. Only held, never read: whatever file it is, nothing is done with it.
      let held: number | undefined;
      try { held = fs.openSync(this.vsv!.at, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK); } catch { held = undefined; }
      try { this.vsv!.shown(() => reader.remove()); } catch (e) { this.trace(`the resumed saved state was not removed: ${(e as Error).message}`); }
      if (held !== undefined) fs.close(held, () => undefined);
      saved.close();
      this.trace('saved state removed');
    }
    this.state = { ...this.state, state: 'running', memoryMiB: this.memoryMiB ?? c.memoryMiB, disks: this.disks.list.map((d) => d.state), cdDrives: await this.cdDrives(), resumed: Boolean(saved) };
    this.record(this.state);
    this.trace('running');
    return this.state;
  }

  /**
   * Open the saved state (key unwrapped, key id and authenticated metadata checked) and refuse it
   * when its disks changed since, before any disk is opened. A version 1 file is verified whole.
   */
  private async openSavedState(): Promise<SavedStateReader> {
    const c = this.input.config;
    const vsv = this.vsv!;
    const { saved: format } = await loadLayers();
    const saved = await vsv.shown(() => format.SavedStateReader.open(vsv.at, this.input.kek!));
    try {
      const meta = saved.meta ?? await vsv.shown(() => saved.check());
      this.savedMeta = meta;
      // Before any disk is opened: this VM's disks, unchanged since the suspend.
      checkBeforeOpen(meta, c, c.savedState);
      this.memoryMiB = meta.memoryMiB;
    } catch (e) {
      saved.close();
      throw e;
    }
    this.trace('saved state opened: this VM\'s, disks unchanged');
    return saved;
  }

  /** The guest's CD/DVD drives as QEMU has them (`query-block`): the disc each holds (a disk's path), or null. */
  private async cdDrives(): Promise<VmState['cdDrives']> {
    let blocks: Array<{ removable?: boolean; inserted?: { 'node-name'?: string } }>;
    // Only a report: a QMP answer missing must not stop a guest that runs.
    try { blocks = await this.vm!.execute('query-block'); } catch (e) { this.trace(`query-block: ${(e as Error).message}`); return undefined; }
    const byNode = new Map(this.disks!.list.map((d, i) => [`disk${i}`, d.state.path]));
    const out = blocks.filter((b) => b.removable).map((b) => ({ disc: b.inserted ? byNode.get(b.inserted['node-name'] ?? '') ?? null : null }));
    return out.length ? out : undefined;
  }

  /** A cold start: bind each disk's NBD socket in the run folder, then start QEMU on them. */
  private async startCold(shape: MachineShape, listeners: NbdListener[]): Promise<QemuProcess> {
    for (let i = 0; i < shape.drives.length; i++) {
      const socket = join(this.dir, `disk${i}.sock`);
      fs.rmSync(socket, { force: true });
      listeners.push(await bindNbd(socket));
    }
    const vm = this.spawnQemu(shape);
    this.trace(`QEMU started (pid ${vm.pid}, ${shape.accel})`);
    return vm;
  }

  /**
   * Take the pooled QEMU this supervisor was started with (./pooled.ts), when it still runs and has
   * exactly this VM's shape; otherwise it is discarded (the start goes on cold, nothing is lost: it
   * had read no block and run no guest code). The run folder's lock is held already
   * (./supervisor-main.ts). Its sockets stay where QEMU was told they are until QEMU has finished
   * starting (it connects to its disks one after the other, and makes its VNC socket late); then
   * `moveIn` moves them into the run folder.
   */
  private async adopt(shape: MachineShape, listeners: NbdListener[]): Promise<QemuProcess | undefined> {
    const pooled = this.adopted;
    this.adopted = undefined;
    if (!pooled) return undefined;
    const why = pooled.vm.exitStatus !== undefined ? 'its QEMU exited' : pooled.key !== shapeKey(shape) ? 'it has another machine shape' : undefined;
    if (why) {
      this.trace(`pooled QEMU not used (${why}): starting cold`);
      await pooled.discard();
      return undefined;
    }
    this.pooled = pooled;
    listeners.push(...pooled.listeners);
    const vm = pooled.vm;
    vm.setSerialLog(join(this.dir, 'serial.log'));
    vm.setSerialMemoryLimit(SERIAL_MEMORY);
    this.attachNet(vm);
    this.vm = vm;
    this.state = { ...this.state, qemuPid: vm.pid, accel: shape.accel };
    this.trace(`pooled QEMU taken (pid ${vm.pid}, ${shape.accel}, waiting in its NBD handshake since the pool started it)`);
    return vm;
  }

  /** A pooled QEMU has started (QMP answers): its sockets take their names in the run folder, the pool's folder goes. */
  private moveIn(listeners: NbdListener[]): void {
    const pooled = this.pooled;
    if (!pooled) return;
    this.pooled = undefined;
    listeners.forEach((l, i) => {
      fs.rmSync(join(this.dir, `disk${i}.sock`), { force: true });
      l.relocate(join(this.dir, `disk${i}.sock`));
    });
    pooled.vm.relocate({ qmpSocket: join(this.dir, 'qmp.sock'), ...(pooled.shape.display === 'vnc' ? { vncSocket: join(this.dir, 'vnc.sock') } : {}) });
    pooled.removeDir();
  }

  /** NAT through passt, never QEMU's own user network (it hands the guest the host's loopback). */
  private attachNet(vm: QemuProcess): void {
    const c = this.input.config;
    this.net?.close();
    this.net = c.network === 'nat' ? startUserNet({ allowHostPorts: c.allowHostPorts, log: (l) => this.trace(l) }) : undefined;
    if (this.net) this.net.attach(vm.netStream!);
  }

  /** Start QEMU on the disks' NBD sockets in the run folder (QMP not connected yet: QemuProcess.connect). */
  private spawnQemu(shape: MachineShape): QemuProcess {
    const c = this.input.config;
    const vm = QemuProcess.spawn(specFor(shape, this.dir, c.name, this.shares.map((sh) => sh.fd)), { serialLog: join(this.dir, 'serial.log'), serialMemoryLimit: SERIAL_MEMORY });
    this.attachNet(vm);
    this.vm = vm;
    this.state = { ...this.state, qemuPid: vm.pid, accel: shape.accel };
    return vm;
  }

  /** `vnc-tcp`: a fresh password, set over QMP (never on a command line), shown by `vm status` only. */
  private async setVncPassword(vm: QemuProcess): Promise<void> {
    const password = vncPassword();
    const at = await vm.setVncPassword(password);
    this.state = { ...this.state, display: { kind: 'vnc-tcp', vncAddress: `${at.host}:${at.port}`, vncPassword: password } };
  }

  /** When QEMU stops on its own: KVM's internal-error restarts it once under TCG; anything else stops the VM. */
  private watch(vm: QemuProcess, accel: Accelerator): void {
    void vm.stopped().then(async (e) => {
      if (this.vm !== vm || this.stopping || this.suspending) return;
      if (isInternalError(e) && accel === 'kvm') {
        this.trace('KVM stopped the guest in internal-error (an instruction it cannot emulate, as on nested virtual machines): restarting it under TCG');
        await vm.kill();
        if (this.stopping) return;
        try {
          const again = this.spawnQemu({ ...machineShape(this.input.config, { accel: 'tcg', memoryMiB: this.memoryMiB ?? this.input.config.memoryMiB, incoming: false }) });
          await again.connect();
          if (this.input.config.display === 'vnc-tcp') await this.setVncPassword(again);
          this.watch(again, 'tcg');
          this.record({ ...this.state, state: 'running' });
        } catch (e2) {
          void this.stop({ reason: `restart under TCG failed: ${(e2 as Error).message}` });
        }
        return;
      }
      void this.stop({ reason: vm.exitStatus?.code === 0 ? 'poweroff' : `QEMU exited (code ${vm.exitStatus?.code}, signal ${vm.exitStatus?.signal})` });
    });
  }

  /**
   * Suspend: pause the guest, stream QEMU's migration data through us into an encrypted .vsv
   * (nothing in clear on disk), quit QEMU, flush and close the disks, then record the disks as
   * they are (a .vsv whose disks changed since is refused on resume) and publish the .vsv.
   */
  private async suspend(): Promise<VmState> {
    const vm = this.requireVm();
    const kek = this.input.kek;
    if (!kek) throw new MedvError('ENOKEY', 'suspend writes an encrypted saved state: start the VM with a passphrase or host key');
    const disks = this.disks!;
    if (disks.list.some((d) => d.config.mode === 'test')) throw new MedvError('EUNSUPPORTED', 'a read-only test VM cannot be suspended (its undo disk is discarded at stop)');
    const { saved: format } = await loadLayers();
    const vsv = this.vsv ??= pinSavedState(this.input.config)!;
    const writer = vsv.shown(() => format.SavedStateWriter.create(vsv.at, kek, this.memoryMiB ?? this.input.config.memoryMiB));
    this.suspending = true;
    try {
      // state.json says so while QEMU stops the guest (its fsync costs as long as the stop).
      await migrateToSavedState(vm, writer, join(this.dir, 'migrate.sock'), (w) => this.trace(w), () => {
        this.state = { ...this.state, state: 'suspending' };
        this.record(this.state);
      });
    } catch (e) {
      writer.abort();
      this.suspending = false;
      await vm.execute('cont').catch(() => undefined);
      this.state = { ...this.state, state: 'running' };
      this.record(this.state);
      throw e;
    }
    this.stopping = (async () => {
      await vm.execute('quit').catch(() => undefined);
      await vm.kill();
      this.trace('suspend: QEMU quit');
      // The disks now belong to the saved state (VHD footer flag, as Virtual PC does): nothing but
      // its resume may write them. Set before the fingerprints below, which must see them as kept.
      let flagError: unknown;
      try {
        await disks.setSavedState(true);
      } catch (e) { flagError = e; }
      await this.cleanup('suspended', 'suspended', async () => {
        if (flagError) {
          writer.abort();
          throw new MedvError('EIO', `cannot mark the disks as suspended (the saved state is dropped): ${(flagError as Error).message}`);
        }
        // Recorded now, with the disks closed and flagged: what a resume must find again (./binding.ts).
        const binding = bindingOf(disks.bound);
        await vsv.shown(() => writer.finish({ vm: this.input.config.name, memoryMiB: this.memoryMiB ?? this.input.config.memoryMiB, createdAt: new Date().toISOString(), disks: fingerprintsOf(binding), binding, hardware: this.hardware }));
        this.trace('suspend: disks closed, saved state published');
      });
    })();
    await this.stopping;
    return this.state;
  }

  private async execute(req: ControlRequest): Promise<unknown> {
    const args = req.args ?? {};
    switch (req.cmd) {
      case 'status': return this.state;
      case 'stop': {
        const timeout = args.timeoutS === undefined ? DEFAULT_STOP_TIMEOUT_S : Number(args.timeoutS);
        if (!Number.isFinite(timeout) || timeout < 0) throw new MedvError('EINVAL_ARG', `invalid stop timeout ${String(args.timeoutS)}`);
        await this.stop({ timeoutS: timeout, force: args.force === true });
        return this.state;
      }
      case 'suspend': return this.suspend();
      case 'pause': return this.setPaused(true);
      case 'resume': return this.setPaused(false);
      case 'screenshot': {
        const file = String(args.file ?? '');
        if (!file.startsWith('/')) throw new MedvError('EINVAL_ARG', 'screenshot needs an absolute file path');
        await this.requireVm().execute('screendump', { filename: file, format: 'png' });
        return { file };
      }
      case 'devices': return this.devices();
      default:
        throw new MedvError('EINVAL_ARG', `unknown control command ${JSON.stringify((req as { cmd?: unknown }).cmd)}`);
    }
  }

  /**
   * What QEMU says the VM has (QMP query-chardev, qom-list of /machine/peripheral, and the
   * identity of each usb-host and 9p device): how a test or an administrator sees that a device
   * the policy does not allow is absent, not merely unused.
   */
  private async devices(): Promise<VmDevices> {
    const vm = this.requireVm();
    const chardevs = (await vm.execute<Array<{ label: string; filename: string }>>('query-chardev')).map((c) => ({ label: c.label, filename: c.filename }));
    const devices: VmDevices['devices'] = [];
    const get = (path: string, property: string) => vm.execute<unknown>('qom-get', { path, property }).catch(() => undefined);
    for (const p of await vm.execute<Array<{ name: string; type: string }>>('qom-list', { path: '/machine/peripheral' })) {
      const type = /^child<(.+)>$/.exec(p.type)?.[1];
      if (!type) continue;
      const path = `/machine/peripheral/${p.name}`;
      const d: VmDevices['devices'][number] = { id: p.name, type };
      if (type === 'usb-host') {
        d.vendorId = Number(await get(path, 'vendorid'));
        d.productId = Number(await get(path, 'productid'));
      } else if (type === 'virtio-9p-pci') {
        const tag = await get(`${path}/virtio-backend`, 'mount_tag') ?? await get(path, 'mount_tag');
        if (typeof tag === 'string') d.mountTag = tag;
        const fsdev = await get(`${path}/virtio-backend`, 'fsdev') ?? await get(path, 'fsdev');
        if (typeof fsdev === 'string') d.fsdev = fsdev;
      }
      devices.push(d);
    }
    return { chardevs, devices };
  }

  private requireVm(): QemuProcess {
    if (!this.vm || this.stopping) throw new MedvError('EHYPERVISOR', `VM ${this.input.config.name} is stopping`);
    return this.vm;
  }

  private async setPaused(paused: boolean): Promise<VmState> {
    const vm = this.requireVm();
    await vm.execute(paused ? 'stop' : 'cont');
    this.state = { ...this.state, state: paused ? 'paused' : 'running' };
    this.record(this.state);
    return this.state;
  }

  /**
   * Stop the VM: the ACPI power button, then a forced quit after `timeoutS` (or at once with
   * `force`); then clean up. Concurrent calls share one stop.
   */
  stop(opts: { timeoutS?: number; force?: boolean; reason?: string } = {}): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      const vm = this.vm;
      let reason = opts.reason;
      if (vm && vm.exitStatus === undefined) {
        this.state = { ...this.state, state: 'stopping' };
        this.record(this.state);
        let forced = opts.force === true;
        if (!forced) {
          try {
            await vm.powerdown();
            await vm.waitExit((opts.timeoutS ?? DEFAULT_STOP_TIMEOUT_S) * 1000);
            reason ??= 'poweroff';
          } catch {
            forced = true;
          }
        }
        if (forced) {
          await vm.execute('quit').catch(() => undefined);
          await Promise.race([vm.exitedPromise, new Promise((r) => setTimeout(r, 3000).unref())]);
          await vm.kill();
          reason ??= 'forced';
        }
      }
      await this.cleanup(reason ?? 'poweroff', 'stopped');
    })();
    return this.stopping;
  }

  /** After `done`: answer pending control requests, then end every control connection (at most 5 s). */
  async closeControl(): Promise<void> {
    await this.control.drain();
  }

  /**
   * state.json, while this run holds the run folder: nothing once cleanup recorded its end and let
   * the folder's lock go (a late write — e.g. the KVM-to-TCG restart's `running`, racing a stop —
   * would otherwise land in the state of the next run of this name).
   */
  private record(state: VmState): void {
    if (this.ended) return;
    writeState(this.dir, state);
  }

  private async cleanup(reason: string, final: 'stopped' | 'failed' | 'suspended', afterClose?: () => Promise<void>): Promise<void> {
    if (this.vm) await this.vm.kill().catch(() => undefined);
    this.net?.close();
    for (const share of this.shares.splice(0)) share.close();
    // Stop accepting; connections waiting for this stop get their answer in closeControl().
    this.control.close();
    const errors = this.disks ? await this.disks.close() : [];
    if (afterClose) {
      try { await afterClose(); } catch (e) { errors.push((e as Error).message); final = 'failed'; }
    }
    this.state = {
      ...this.state, state: final, stoppedAt: new Date().toISOString(),
      exitReason: errors.length ? `${reason}; cleanup: ${errors.join('; ')}` : reason,
    };
    this.record(this.state);
    this.ended = true;
    this.vsv?.close();
    // Nothing of this run is left open (QEMU gone, disks closed, the saved state published) and
    // its end is recorded: the folder is free for the next start.
    this.unlock?.();
    this.unlock = undefined;
    this.resolveFinished();
  }
}

