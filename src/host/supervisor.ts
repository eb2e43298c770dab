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
import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { basename, dirname, extname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BlockDevice } from '../block/device.js';
import type { KekSource } from '../crypto/index.js';
import { MedvError } from '../core/errors.js';
import { thisProcess } from '../core/fsio.js';
import { defaultAccelerator, isInternalError, QemuProcess, type Accelerator } from '../hypervisor/qemu.js';
import type { DiskFingerprint, SavedStateReader } from '../hypervisor/savedstate.js';
import { peekSavedState } from '../hypervisor/savedstate-header.js';
import type { VhdDevice } from '../layers/vhd/index.js';
import { bindNbd, type NbdListener, type NbdServer } from '../nbd/server.js';
import { LineReader } from '../core/jsonlines.js';
import type { ControlRequest, ControlResponse } from './protocol.js';
import { vmRunDir, writeState, type VmDiskState, type VmState } from './rundir.js';

/**
 * The disk layers, the saved-state format and the key code, loaded once QEMU has been started:
 * their loading (sodium, the VHD and undo layers) then overlaps QEMU's own start-up.
 */
interface Layers {
  open: typeof import('../layers/open.js');
  vhd: typeof import('../layers/vhd/index.js');
  undo: typeof import('../layers/undo/index.js');
  saved: typeof import('../hypervisor/savedstate.js');
  crypto: typeof import('../crypto/index.js');
}
let layersLoading: Promise<Layers> | undefined;
function loadLayers(): Promise<Layers> {
  return layersLoading ??= Promise.all([import('../layers/open.js'), import('../layers/vhd/index.js'), import('../layers/undo/index.js'), import('../hypervisor/savedstate.js'), import('../crypto/index.js')])
    .then(([open, vhd, undo, saved, crypto]) => ({ open, vhd, undo, saved, crypto }));
}

export interface VmDiskConfig {
  path: string;
  /**
   * normal: the guest writes into the disk;
   * test:   the console's read-only test: writes go to a throw-away undo disk in a `Test/` folder
   *         beside the image, discarded when the VM stops (the base is only ever opened read-only);
   * undo:   Virtual PC undo disks: writes go to `undoPath`, kept until `medv disk undo merge|discard`.
   */
  mode: 'normal' | 'test' | 'undo' | 'cdrom';
  undoPath?: string;
}

export interface VmConfig {
  name: string;
  memoryMiB: number;
  disks: VmDiskConfig[];
  network: 'none' | 'nat';
  mac?: string;
  /** NIC model (default e1000, which most guests have a driver for; virtio for Linux guests). */
  nicModel?: 'e1000' | 'virtio';
  /** Bus of the hard disks (default ide, as Virtual PC; virtio is faster for guests with drivers). */
  diskBus?: 'ide' | 'virtio';
  display: 'none' | 'vnc' | 'window';
  /** Accelerator to try first (default: KVM when usable, else TCG). */
  accel?: Accelerator;
  vmc?: string;
  /** Where suspend writes the encrypted saved state; a start finds it there and resumes. */
  savedState: string;
}

export interface SupervisorInput {
  config: VmConfig;
  runRoot: string;
  kek?: KekSource;
  /** The temporary log the supervisor was started with (./prespawn.ts), moved to `<name>/supervisor.log`. */
  logFile?: string;
}

/** Seconds the guest gets to power off after the ACPI button before it is forced. */
export const DEFAULT_STOP_TIMEOUT_S = 30;
/** Serial output kept in memory (the log file has all of it). */
const SERIAL_MEMORY = 1 << 20;

/** Where the throw-away undo disk of a test run goes: `<image folder>/Test/<image name>.undo.<vhd|evhd>`. */
export function testUndoPath(diskPath: string): string {
  const encrypted = extname(diskPath).toLowerCase() === '.evhd';
  const stem = basename(diskPath, extname(diskPath));
  return join(dirname(diskPath), 'Test', `${stem}.undo.${encrypted ? 'evhd' : 'vhd'}`);
}

/** Default undo disk of `--undo`: `<image>.undo.<vhd|evhd>` beside the image. */
export function defaultUndoPath(diskPath: string): string {
  const encrypted = extname(diskPath).toLowerCase() === '.evhd';
  const stem = basename(diskPath, extname(diskPath));
  return join(dirname(diskPath), `${stem}.undo.${encrypted ? 'evhd' : 'vhd'}`);
}

interface OpenedVmDisk {
  config: VmDiskConfig; device: BlockDevice; server?: NbdServer; socket: string; state: VmDiskState;
  /** The VHD the guest writes into (the disk, or its undo disk), whose footer carries the saved-state flag. */
  top?: VhdDevice;
}

export class Supervisor {
  private readonly dir: string;
  private readonly disks: OpenedVmDisk[] = [];
  private vm: QemuProcess | undefined;
  private control: Server | undefined;
  private state!: VmState;
  private stopping: Promise<void> | undefined;
  private finished!: Promise<void>;
  private resolveFinished!: () => void;
  /** Guest RAM of this run (from the saved state when resuming). */
  private memoryMiB: number | undefined;
  private suspending = false;
  private readonly controlSockets = new Set<Socket>();
  private pendingReplies = 0;
  private repliesDone: (() => void) | undefined;

  constructor(private readonly input: SupervisorInput) {
    this.dir = vmRunDir(input.config.name, input.runRoot);
    this.finished = new Promise((r) => { this.resolveFinished = r; });
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
    this.state = {
      name: c.name, state: 'starting', pid: process.pid, pidStart, memoryMiB: c.memoryMiB, disks: [],
      network: c.network, display: { kind: c.display, ...(c.display === 'vnc' ? { vncSocket: join(this.dir, 'vnc.sock') } : {}) }, startedAt: new Date().toISOString(), vmc: c.vmc,
    };
    for (const stale of ['control.sock', 'qmp.sock']) fs.rmSync(join(this.dir, stale), { force: true });
    this.state.savedState = c.savedState;
    writeState(this.dir, this.state);
    this.trace('input read');
    const listeners: NbdListener[] = [];
    let saved: SavedStateReader | undefined;
    let opening: Promise<SavedStateReader> | undefined;
    try {
      const resuming = fs.existsSync(c.savedState);
      if (resuming) {
        if (!this.input.kek) throw new MedvError('ENOKEY', 'resuming a saved state needs the passphrase or host key that encrypted it', { file: c.savedState });
        const peek = peekSavedState(c.savedState);
        if (peek.memoryMiB === undefined) {
          // Version 1 has no RAM size in its header: verify it whole before anything is launched.
          saved = await this.openSavedState();
        } else {
          this.memoryMiB = peek.memoryMiB;
        }
      }
      for (let i = 0; i < c.disks.length; i++) {
        const socket = join(this.dir, `disk${i}.sock`);
        fs.rmSync(socket, { force: true });
        listeners.push(await bindNbd(socket));
      }
      const accel = c.accel ?? defaultAccelerator();
      const vm = this.spawnQemu(accel, resuming);
      this.trace(`QEMU started (pid ${vm.pid}, ${accel})`);
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
      for (let i = 0; i < c.disks.length; i++) await this.openVmDisk(c.disks[i], i, layers, resuming);
      for (let i = 0; i < this.disks.length; i++) {
        const d = this.disks[i];
        d.server = listeners[i].serve(d.device, { readOnly: d.state.readOnly, description: d.state.path });
      }
      this.trace('disks open and served');
      await vm.connect();
      this.trace('QMP connected');
      if (saved) {
        await this.feedSavedState(vm, saved);
        this.trace('saved state fed and verified; guest running');
      }
      this.watch(vm, accel);
      await this.listenControl();
    } catch (e) {
      // Sockets not serving yet are closed first: a QEMU waiting in its NBD handshake then fails and
      // exits at once. Served ones close in cleanup(), after QEMU was killed.
      if (!this.disks.some((d) => d.server)) await Promise.all(listeners.map((l) => l.close().catch(() => undefined)));
      saved?.close();
      if (opening && !saved) void opening.then((s) => s.close(), () => undefined);
      // As a stop in progress: QEMU's exit, caused by this cleanup, must not start another one.
      this.stopping = this.cleanup(`failed to start: ${(e as Error).message}`, 'failed');
      await this.stopping;
      throw e;
    }
    if (saved) {
      saved.close();
      (await loadLayers()).saved.removeSavedState(c.savedState);
    }
    this.state = { ...this.state, state: 'running', memoryMiB: this.memoryMiB ?? c.memoryMiB, disks: this.disks.map((d) => d.state), resumed: Boolean(saved) };
    writeState(this.dir, this.state);
    this.trace('running');
    return this.state;
  }

  /**
   * Open the saved state (key unwrapped, key id and authenticated metadata checked) and refuse it
   * when its disks changed since, before any disk is opened. A version 1 file is verified whole.
   */
  private async openSavedState(): Promise<SavedStateReader> {
    const c = this.input.config;
    const { saved: format } = await loadLayers();
    const saved = await format.SavedStateReader.open(c.savedState, this.input.kek!);
    try {
      const meta = saved.meta ?? await saved.check();
      format.checkFingerprints(meta, c.savedState);
      this.memoryMiB = meta.memoryMiB;
    } catch (e) {
      saved.close();
      throw e;
    }
    this.trace('saved state opened, disks unchanged');
    return saved;
  }

  /**
   * Open one disk of the VM. A VHD whose saved-state flag is set opens writable only when `resuming`
   * (its saved state is there); otherwise ESAVEDSTATE says what is missing. The base of an undo or
   * test run must not carry the flag either: its guest would boot from a disk caught mid-session.
   */
  private async openVmDisk(cfg: VmDiskConfig, i: number, layers: Layers, resuming: boolean): Promise<void> {
    try {
      await this.openVmDiskAs(cfg, i, layers, resuming);
    } catch (e) {
      if (!(e instanceof MedvError) || e.code !== 'ESAVEDSTATE' || resuming) throw e;
      const vsv = this.input.config.savedState;
      throw new MedvError('ESAVEDSTATE', `${e.data.file ?? cfg.path} belongs to a suspended VM (its VHD saved-state flag is set) but there is no saved state ${vsv} to resume` +
        ' (suspended by Virtual PC, or the .vsv was moved or deleted); medv will not boot it as if nothing happened:' +
        ' put the .vsv back, or clear the flag with `medv vm discard-state` (the guest then starts as after a power cut)', { file: String(e.data.file ?? cfg.path) });
    }
  }

  private async openVmDiskAs(cfg: VmDiskConfig, i: number, layers: Layers, resuming: boolean): Promise<void> {
    const { open: { openDisk }, undo: { createUndoDisk, discardUndoDisk, openUndoDisk }, vhd: { savedStateError } } = layers;
    const kek = this.input.kek ? () => this.input.kek! : undefined;
    const socket = join(this.dir, `disk${i}.sock`);
    if (cfg.mode === 'cdrom') {
      // CD/DVD images are read-only media: exported read-only like any disk (raw bytes).
      const opened = await openDisk(cfg.path, { readOnly: true, format: 'raw' });
      this.disks.push({ config: cfg, device: opened.device, socket, state: { path: cfg.path, format: 'iso', readOnly: true } });
      return;
    }
    if (cfg.mode === 'normal') {
      const opened = await openDisk(cfg.path, { kek, allowSavedState: resuming });
      this.disks.push({ config: cfg, device: opened.device, socket, top: opened.vhd, state: { path: cfg.path, format: opened.format, readOnly: false } });
      return;
    }
    const undoPath = cfg.undoPath ?? (cfg.mode === 'test' ? testUndoPath(cfg.path) : defaultUndoPath(cfg.path));
    if (cfg.mode === 'test') {
      fs.mkdirSync(dirname(undoPath), { recursive: true, mode: 0o700 });
      // A test run always starts from the base: an undo disk left by a crashed test run is ours to replace.
      if (fs.existsSync(undoPath)) await discardUndoDisk(undoPath, { kek });
    }
    if (!fs.existsSync(undoPath)) {
      await createUndoDisk(undoPath, cfg.path, { kek });
    }
    const undo = await openUndoDisk(undoPath, { kek, parent: cfg.path, allowSavedState: resuming && cfg.mode === 'undo' });
    if ((undo.vhd.parent as Partial<VhdDevice> | undefined)?.savedState === true) {
      await undo.device.close();
      throw savedStateError(cfg.path);
    }
    this.disks.push({
      config: cfg, device: undo.device, socket, top: undo.vhd,
      state: { path: cfg.path, format: extname(cfg.path).slice(1).toLowerCase() || 'raw', undo: undoPath, undoPolicy: cfg.mode === 'test' ? 'discard' : 'keep', readOnly: false },
    });
  }

  /** Start QEMU on the disks' NBD sockets (QMP not connected yet: QemuProcess.connect). */
  private spawnQemu(accel: Accelerator, incoming: boolean): QemuProcess {
    const c = this.input.config;
    const vm = QemuProcess.spawn({
      name: c.name,
      accel,
      memoryMiB: this.memoryMiB ?? c.memoryMiB,
      incoming,
      vga: true,
      display: c.display === 'vnc' ? { kind: 'vnc', socket: join(this.dir, 'vnc.sock') } : { kind: c.display },
      drives: c.disks.map((d, i) => ({ source: `nbd+unix:///?socket=${join(this.dir, `disk${i}.sock`)}`, ...(d.mode === 'cdrom' ? { cdrom: true, readOnly: true } : { iface: c.diskBus ?? 'ide' }) })),
      qmpSocket: join(this.dir, 'qmp.sock'),
      network: c.network === 'nat' ? { kind: 'nat', mac: c.mac, model: c.nicModel } : { kind: 'none' },
    }, { serialLog: join(this.dir, 'serial.log'), serialMemoryLimit: SERIAL_MEMORY });
    this.vm = vm;
    this.state = { ...this.state, qemuPid: vm.pid, accel };
    return vm;
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
          const again = this.spawnQemu('tcg', false);
          await again.connect();
          this.watch(again, 'tcg');
          writeState(this.dir, { ...this.state, state: 'running' });
        } catch (e2) {
          void this.stop({ reason: `restart under TCG failed: ${(e2 as Error).message}` });
        }
        return;
      }
      void this.stop({ reason: vm.exitStatus?.code === 0 ? 'poweroff' : `QEMU exited (code ${vm.exitStatus?.code}, signal ${vm.exitStatus?.signal})` });
    });
  }

  /**
   * Feed the saved state into a QEMU started with -incoming defer, decrypting it once: each frame
   * goes to QEMU only after it authenticated, and the guest (kept paused by -S) runs only once the
   * final frame verified too; a frame that fails rejects, and the caller kills QEMU.
   */
  private async feedSavedState(vm: QemuProcess, saved: SavedStateReader): Promise<void> {
    await vm.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    const done = migrationDone(vm);
    done.catch(() => undefined); // awaited below; a failed feed must not leave it unhandled
    await vm.execute('migrate-incoming', { uri: 'fd:3' });
    const pipe = vm.incoming!;
    pipe.on('error', () => undefined); // QEMU gone: the migration fails and `done` says so
    const frames = saved.frames();
    try {
      for (;;) {
        const r = await frames.next();
        if (r.done) break;
        if (!pipe.write(r.value)) await Promise.race([once(pipe, 'drain'), vm.exitedPromise]);
      }
    } finally {
      pipe.end();
    }
    this.trace('resume: saved state decrypted and sent');
    await done;
    this.trace('resume: QEMU has the state');
    // QEMU has the whole state and the guest is still paused (nothing writes): the disks are no
    // longer a suspended VM's. Cleared before `cont`, never while the guest could allocate blocks.
    for (const d of this.disks) await d.top?.setSavedState(false);
    const status = await vm.execute<{ status: string }>('query-status');
    if (status.status !== 'running') await vm.execute('cont');
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
    if (this.disks.some((d) => d.config.mode === 'test')) throw new MedvError('EUNSUPPORTED', 'a read-only test VM cannot be suspended (its undo disk is discarded at stop)');
    const { saved: format, crypto } = await loadLayers();
    const writer = format.SavedStateWriter.create(this.input.config.savedState, kek, this.memoryMiB ?? this.input.config.memoryMiB);
    this.suspending = true;
    this.state = { ...this.state, state: 'suspending' };
    writeState(this.dir, this.state);
    const sock = join(this.dir, 'migrate.sock');
    fs.rmSync(sock, { force: true });
    const server = createServer();
    try {
      this.trace('suspend: requested');
      await vm.execute('stop');
      this.trace('suspend: guest stopped (QEMU flushed its disks)');
      await new Promise<void>((res, rej) => { server.once('error', rej); server.listen(sock, () => res()); });
      const received = new Promise<void>((res, rej) => {
        server.once('connection', (s: Socket) => {
          s.on('data', (chunk: Buffer) => { try { writer.write(chunk); } catch (e) { s.destroy(); rej(e); } });
          s.once('end', () => res());
          s.once('error', rej);
        });
      });
      await vm.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
      // The guest is stopped: its "downtime" is the whole suspend anyway. Without a limit on the
      // bandwidth and with a long tolerated downtime QEMU sends everything in one pass instead of
      // iterating (QEMU 7.2's defaults, 32 MiB/s and 300 ms, made a 256 MiB guest take seconds).
      await vm.execute('migrate-set-parameters', { 'max-bandwidth': 1024 * 1024 * 1024 * 1024, 'downtime-limit': 60_000 });
      const done = migrationDone(vm);
      this.trace('suspend: guest paused');
      await vm.execute('migrate', { uri: `unix:${sock}` });
      await Promise.all([received, done]);
      type MigrateStats = { 'total-time'?: number; 'setup-time'?: number; downtime?: number };
      const stats = await vm.execute<MigrateStats>('query-migrate').catch((): MigrateStats => ({}));
      this.trace(`suspend: migration stream received (${writer.streamBytes} bytes; QEMU: total ${stats['total-time']} ms, setup ${stats['setup-time']} ms, downtime ${stats.downtime} ms)`);
    } catch (e) {
      writer.abort();
      this.suspending = false;
      await vm.execute('cont').catch(() => undefined);
      this.state = { ...this.state, state: 'running' };
      writeState(this.dir, this.state);
      throw e;
    } finally {
      server.close();
      fs.rmSync(sock, { force: true });
    }
    this.stopping = (async () => {
      await vm.execute('quit').catch(() => undefined);
      await vm.kill();
      this.trace('suspend: QEMU quit');
      // The disks now belong to the saved state (VHD footer flag, as Virtual PC does): nothing but
      // its resume may write them. Set before the fingerprints below, which must see them as kept.
      let flagError: unknown;
      try {
        for (const d of this.disks) await d.top?.setSavedState(true);
      } catch (e) { flagError = e; }
      await this.cleanup('suspended', 'suspended', async () => {
        if (flagError) {
          writer.abort();
          throw new MedvError('EIO', `cannot mark the disks as suspended (the saved state is dropped): ${(flagError as Error).message}`);
        }
        const files: DiskFingerprint[] = [];
        for (const d of this.disks) {
          for (const f of [d.state.path, d.state.undo]) {
            if (!f) continue;
            files.push(format.fingerprint(f));
            if (f.toLowerCase().endsWith('.evhd')) files.push(format.fingerprint(crypto.encPathFor(f)));
          }
        }
        await writer.finish({ vm: this.input.config.name, memoryMiB: this.memoryMiB ?? this.input.config.memoryMiB, createdAt: new Date().toISOString(), disks: files });
        this.trace('suspend: disks closed, saved state published');
      });
    })();
    await this.stopping;
    return this.state;
  }

  private async listenControl(): Promise<void> {
    const sock = join(this.dir, 'control.sock');
    this.control = createServer((s) => this.onControl(s));
    await new Promise<void>((res, rej) => {
      this.control!.once('error', rej);
      this.control!.listen(sock, () => { this.control!.off('error', rej); res(); });
    });
  }

  private onControl(socket: Socket): void {
    this.controlSockets.add(socket);
    socket.on('close', () => this.controlSockets.delete(socket));
    socket.on('error', () => undefined);
    const reader = new LineReader((line) => void this.handle(socket, line), () => socket.destroy());
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
  }

  private async handle(socket: Socket, line: string): Promise<void> {
    let req: ControlRequest;
    try { req = JSON.parse(line) as ControlRequest; } catch { socket.destroy(); return; }
    const reply = (r: ControlResponse) => { if (!socket.destroyed) socket.write(`${JSON.stringify(r)}\n`); };
    const id = Number.isSafeInteger(req?.id) ? req.id : 0;
    this.pendingReplies++;
    try {
      reply({ id, ok: true, result: await this.execute(req) });
    } catch (e) {
      const err = e instanceof MedvError ? { code: e.code, message: e.message } : { code: 'EINTERNAL' as const, message: String((e as Error)?.message ?? e) };
      reply({ id, ok: false, error: err });
    } finally {
      if (--this.pendingReplies === 0) this.repliesDone?.();
    }
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
      default:
        throw new MedvError('EINVAL_ARG', `unknown control command ${JSON.stringify((req as { cmd?: unknown }).cmd)}`);
    }
  }

  private requireVm(): QemuProcess {
    if (!this.vm || this.stopping) throw new MedvError('EHYPERVISOR', `VM ${this.input.config.name} is stopping`);
    return this.vm;
  }

  private async setPaused(paused: boolean): Promise<VmState> {
    const vm = this.requireVm();
    await vm.execute(paused ? 'stop' : 'cont');
    this.state = { ...this.state, state: paused ? 'paused' : 'running' };
    writeState(this.dir, this.state);
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
        writeState(this.dir, this.state);
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
    if (this.pendingReplies > 0) {
      await Promise.race([new Promise<void>((r) => { this.repliesDone = r; }), new Promise((r) => setTimeout(r, 5000).unref())]);
    }
    await Promise.all([...this.controlSockets].map((s) => new Promise<void>((r) => {
      s.end(() => r());
      setTimeout(() => { s.destroy(); r(); }, 1000).unref();
    })));
  }

  private async cleanup(reason: string, final: 'stopped' | 'failed' | 'suspended', afterClose?: () => Promise<void>): Promise<void> {
    const errors: string[] = [];
    if (this.vm) await this.vm.kill().catch(() => undefined);
    // Stop accepting; connections waiting for this stop get their answer in closeControl().
    this.control?.close();
    fs.rmSync(join(this.dir, 'control.sock'), { force: true });
    for (const d of this.disks) {
      try {
        if (d.server) await d.server.close();
        await d.device.flush().catch(() => undefined);
        await d.device.close();
        if (d.config.mode === 'test' && d.state.undo) await (await loadLayers()).undo.discardUndoDisk(d.state.undo, { kek: this.input.kek ? () => this.input.kek! : undefined });
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    if (afterClose) {
      try { await afterClose(); } catch (e) { errors.push((e as Error).message); final = 'failed'; }
    }
    this.state = {
      ...this.state, state: final, stoppedAt: new Date().toISOString(),
      exitReason: errors.length ? `${reason}; cleanup: ${errors.join('; ')}` : reason,
    };
    writeState(this.dir, this.state);
    this.resolveFinished();
  }
}

/** Resolves when QEMU reports the migration completed; rejects when it failed or QEMU exited. */
function migrationDone(vm: QemuProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const onEvent = (e: { event: string; data?: Record<string, unknown> }) => {
      if (e.event !== 'MIGRATION') return;
      const status = e.data?.status;
      if (status === 'completed') { off(); resolve(); } else if (status === 'failed' || status === 'cancelled') { off(); reject(new MedvError('EHYPERVISOR', `QEMU migration ${String(status)}`)); }
    };
    const off = () => { vm.qmp.off('event', onEvent); };
    vm.qmp.on('event', onEvent);
    void vm.exitedPromise.then(() => { off(); reject(new MedvError('EHYPERVISOR', 'QEMU exited during the migration')); });
  });
}
