/**
 * The QEMU driver. A launch spec becomes an argv (`qemuArgv`, pure: nothing else knows QEMU's
 * command line); `QemuProcess.launch` runs it with QMP, COM1 captured from QEMU's stdout, and waits
 * that notice when the VM stops in an error state. On nested/virtual hosts KVM sometimes cannot
 * emulate an instruction: QEMU then does not exit but parks the VM in run state `internal-error`
 * (docs/machines.md). That is reported as a QemuError of kind 'internal-error'; `withTcgFallback` retries
 * under TCG.
 *
 *   const vm = await QemuProcess.launch({ accel, drives: [{ source: 'nbd+unix:///?socket=/run/x.sock' }] });
 *   try {
 *     await vm.waitForSerial(/ready/, 30_000);
 *     await vm.powerdown();
 *     await vm.waitExit(10_000);
 *   } finally { await vm.kill(); }
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { renameSync } from '../core/fsio.js';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { minimalEnv } from '../core/env.js';
import { MedvError } from '../core/errors.js';
import { native } from '../native.js';
import { QmpClient, type QmpEvent } from './qmp.js';

export type Accelerator = 'kvm' | 'tcg';

export const QEMU_BINARY = 'qemu-system-x86_64';

export interface DriveSpec {
  /**
   * A host file path; an NBD URI (nbd+unix:///[export]?socket=PATH with PATH percent-encoded, or
   * nbd://host[:port]/[export]); or an NBD export on a unix socket, whose path goes to QEMU as a
   * JSON string and is never parsed as URL text (what the supervisor uses).
   */
  source: string | { nbd: { socket: string; export?: string } };
  /** Format of the bytes QEMU sees (default 'raw'; an NBD export of medv is always raw). */
  format?: 'raw' | 'vpc';
  readOnly?: boolean;
  /** Default 'ide', 'virtio' when readOnly: QEMU's ide-hd refuses read-only drives. */
  iface?: 'ide' | 'virtio';
  /** A CD/DVD drive (IDE, read-only media such as an .iso) instead of a hard disk. */
  cdrom?: boolean;
}

export interface LaunchSpec {
  name?: string;
  accel: Accelerator;
  /** Guest RAM in MiB (default 32). */
  memoryMiB?: number;
  /** Disks in boot order (the first one boots). At most 4 IDE disks. */
  drives: DriveSpec[];
  /** IDE CD/DVD drives with no disc, after `drives` (they count towards the 4 IDE drives). */
  emptyCdDrives?: number;
  /** Path of the QMP unix socket QEMU listens on. */
  qmpSocket: string;
  /**
   * Network: none (default); NAT through QEMU's own user-mode stack (`nat`: the guest reaches the
   * host's loopback at 10.0.2.2, so only for tests and tools, never for a VM medv hosts); or the
   * frames on a socket QEMU inherits as its fd 4 (`stream`: ./usernet.ts puts passt there).
   */
  network?: { kind: 'none' } | { kind: 'nat' | 'stream'; mac?: string; model?: 'e1000' | 'virtio' };
  /** Start paused, waiting for a migration stream (`-incoming defer`); the stream is written to
   *  `QemuProcess.incoming` (QEMU's fd 3) after `migrate-incoming {uri: 'fd:3'}`. The guest stays
   *  paused after the migration completed (`-S`), whatever state it was saved in, until `cont`. */
  incoming?: boolean;
  /** Give the VM a standard VGA adapter (for screenshots and displays); default none. */
  vga?: boolean;
  /**
   * Where the screen goes: nowhere (default), a VNC server on a unix socket (for tools), a VNC
   * server on 127.0.0.1 for people (`vnc-tcp`: the first free port from 5900, `password=on`: no
   * client gets in until `setVncPassword` set one over QMP, never on the command line), or a GTK
   * window on $DISPLAY.
   */
  display?: { kind: 'none' } | { kind: 'vnc'; socket: string } | { kind: 'vnc-tcp' } | { kind: 'window' };
  /**
   * The QEMU guest agent's port (virtio-serial `org.qemu.guest_agent.0`, ./qga.ts) on a unix
   * socket QEMU listens on; default none (the guest has no such port).
   */
  guestAgent?: { socket: string };
  /**
   * The clipboard shared with the display (`-chardev qemu-vdagent,clipboard=on` on the
   * virtio-serial port `com.redhat.spice.0`, which a guest's spice-vdagent opens); default none:
   * no such chardev or port exists.
   */
  clipboard?: boolean;
  /**
   * Host folders as virtio-9p shares, each a folder descriptor of ours that QEMU inherits as its
   * fd SHARE_FD_BASE + i and opens as `/proc/self/fd/<n>` (never by name: ../host/shares.ts
   * opened it without following links). `readOnly` (QEMU's `readonly=on`) unless the policy
   * allows writes. Default none: no fsdev and no 9p device exist.
   */
  shares?: Array<{ tag: string; fd: number; readOnly: boolean }>;
  /** USB devices passed through by vendor:product (`usb-host` on a `qemu-xhci` controller); default none: no USB controller either. */
  usbDevices?: Array<{ vendorId: number; productId: number }>;
  /** Appended to the command line. */
  extraArgs?: string[];
  binary?: string;
}

/** A QEMU failure. 'timeout' has code ETIMEOUT, every other kind EHYPERVISOR. */
export type QemuFailureKind = 'start' | 'internal-error' | 'exited' | 'timeout';

export class QemuError extends MedvError {
  constructor(readonly kind: QemuFailureKind, message: string, readonly accel?: Accelerator) {
    super(kind === 'timeout' ? 'ETIMEOUT' : 'EHYPERVISOR', message, { kind, accel });
    this.name = 'QemuError';
  }
}

/** True for the error `withTcgFallback` retries: KVM stopped the VM in run state internal-error. */
export function isInternalError(e: unknown): e is QemuError {
  return e instanceof QemuError && e.kind === 'internal-error';
}

// ---------------------------------------------------------------------------------------------
// Command line

/** QEMU's -blockdev options for one drive (node name `disk<i>`). */
export function blockdevOptions(drive: DriveSpec, nodeName: string): Record<string, unknown> {
  const readOnly = drive.readOnly ?? false;
  let file: Record<string, unknown>;
  if (typeof drive.source === 'object') {
    const { socket, export: exportName } = drive.source.nbd;
    if (typeof socket !== 'string' || socket === '' || socket.includes('\0')) throw new MedvError('EINVAL_ARG', 'an NBD drive needs a unix socket path');
    file = { driver: 'nbd', server: { type: 'unix', path: socket }, ...(exportName ? { export: exportName } : {}), 'read-only': readOnly };
  } else if (/^nbd(\+unix|\+tcp)?:/.test(drive.source)) {
    let url: URL;
    try { url = new URL(drive.source); } catch {
      throw new MedvError('EINVAL_ARG', `not an NBD URI: ${drive.source}`);
    }
    const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
    let server: Record<string, unknown>;
    if (url.protocol === 'nbd+unix:') {
      // Percent-decoded as the NBD URI format says; a '+' stays a '+' (URLSearchParams would make it a space).
      const raw = url.search.slice(1).split('&').find((p) => p.startsWith('socket='))?.slice('socket='.length);
      const socket = raw === undefined ? '' : decodeURIComponent(raw);
      if (!socket) throw new MedvError('EINVAL_ARG', `NBD URI without ?socket=: ${drive.source}`);
      server = { type: 'unix', path: socket };
    } else {
      server = { type: 'inet', host: url.hostname, port: url.port || '10809' };
    }
    file = { driver: 'nbd', server, ...(exportName ? { export: exportName } : {}), 'read-only': readOnly };
  } else {
    file = { driver: 'file', filename: resolve(drive.source), 'read-only': readOnly };
  }
  return { driver: drive.format ?? 'raw', 'node-name': nodeName, 'read-only': readOnly, file };
}

/** QEMU's fd for the network stream (`network.kind === 'stream'`): stdio[4] of its process. */
export const NET_FD = 4;
/** QEMU's fd of its first shared folder (LaunchSpec.shares): stdio[5 + i]. */
export const SHARE_FD_BASE = 5;
/** A 9p mount tag: what the guest mounts (`mount -t 9p TAG DIR`); 9p allows at most 31 bytes, and none of QEMU's option syntax. */
export const SHARE_TAG_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$/;

/** A value inside QEMU's `key=value,key=value` syntax: commas doubled (QemuOpts' escape). */
function optValue(v: string): string {
  if (v.includes('\0')) throw new MedvError('EINVAL_ARG', 'a path with a NUL character');
  return v.replace(/,/g, ',,');
}

/** The full argv (argv[0] is the QEMU binary) for a launch spec. Pure. */
export function qemuArgv(spec: LaunchSpec): string[] {
  if (spec.accel !== 'kvm' && spec.accel !== 'tcg') throw new MedvError('EINVAL_ARG', `accelerator must be kvm or tcg, not ${JSON.stringify(spec.accel)}`);
  const memory = spec.memoryMiB ?? 32;
  if (!Number.isSafeInteger(memory) || memory < 1) throw new MedvError('EINVAL_ARG', `guest memory must be a positive number of MiB, not ${memory}`);
  const argv = [
    spec.binary ?? QEMU_BINARY,
    '-name', spec.name ?? 'medv',
    '-M', 'pc', '-accel', spec.accel, '-m', String(memory),
    '-nodefaults', '-no-user-config', '-no-reboot',
    // COM1 on QEMU's stdout; signal=off: a SIGINT to our process group is ours to handle, not QEMU's.
    '-chardev', 'stdio,id=com1,signal=off', '-serial', 'chardev:com1',
    // A socket path goes into QEMU's comma-separated option syntax with its commas doubled, so no
    // path can add an option of its own.
    '-chardev', `socket,id=qmp,path=${optValue(spec.qmpSocket)},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control',
  ];
  let ide = 0;
  spec.drives.forEach((drive, i) => {
    const iface = drive.iface ?? (drive.readOnly && !drive.cdrom ? 'virtio' : 'ide');
    const node = `disk${i}`;
    const boot = i === 0 ? ',bootindex=1' : '';
    argv.push('-blockdev', JSON.stringify(blockdevOptions(drive, node)));
    if (drive.cdrom) {
      if (!drive.readOnly) throw new MedvError('EINVAL_ARG', `drive ${i}: a CD/DVD drive is read-only`);
      if (ide === 4) throw new MedvError('EINVAL_ARG', 'at most 4 IDE drives');
      argv.push('-device', `ide-cd,drive=${node},bus=ide.${ide >> 1},unit=${ide & 1}${boot}`);
      ide++;
    } else if (iface === 'ide') {
      if (drive.readOnly) throw new MedvError('EINVAL_ARG', `drive ${i}: QEMU's IDE disks cannot be read-only; use iface 'virtio'`);
      if (ide === 4) throw new MedvError('EINVAL_ARG', 'at most 4 IDE drives');
      argv.push('-device', `ide-hd,drive=${node},bus=ide.${ide >> 1},unit=${ide & 1}${boot}`);
      ide++;
    } else if (iface === 'virtio') {
      argv.push('-device', `virtio-blk-pci,drive=${node}${boot}`);
    } else {
      throw new MedvError('EINVAL_ARG', `drive ${i}: interface must be ide or virtio, not ${JSON.stringify(iface)}`);
    }
  });
  for (let i = 0; i < (spec.emptyCdDrives ?? 0); i++) {
    if (ide === 4) throw new MedvError('EINVAL_ARG', 'at most 4 IDE drives');
    argv.push('-device', `ide-cd,bus=ide.${ide >> 1},unit=${ide & 1}`);
    ide++;
  }
  const net = spec.network ?? { kind: 'none' };
  if (net.kind === 'nat' || net.kind === 'stream') {
    if (net.mac !== undefined && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(net.mac)) throw new MedvError('EINVAL_ARG', `invalid MAC address ${JSON.stringify(net.mac)}`);
    const model = net.model ?? 'e1000';
    if (model !== 'e1000' && model !== 'virtio') throw new MedvError('EINVAL_ARG', `NIC model must be e1000 or virtio, not ${JSON.stringify(model)}`);
    argv.push('-netdev', net.kind === 'nat' ? 'user,id=net0' : `stream,id=net0,server=off,addr.type=fd,addr.str=${NET_FD}`,
      '-device', `${model === 'virtio' ? 'virtio-net-pci' : 'e1000'},netdev=net0${net.mac ? `,mac=${net.mac}` : ''}`);
  } else if (net.kind !== 'none') {
    throw new MedvError('EINVAL_ARG', `network must be none, nat or stream, not ${JSON.stringify((net as { kind: unknown }).kind)}`);
  }
  const display = spec.display ?? { kind: 'none' };
  if (display.kind === 'window') argv.push('-display', 'gtk');
  else argv.push('-display', 'none');
  if (display.kind === 'vnc') {
    if (!display.socket) throw new MedvError('EINVAL_ARG', `invalid VNC socket path ${JSON.stringify(display.socket)}`);
    argv.push('-vnc', `unix:${optValue(display.socket)}`);
  } else if (display.kind === 'vnc-tcp') {
    // Loopback only; display 0 (port 5900) or the next free one up to 99; no client until a password is set.
    argv.push('-vnc', '127.0.0.1:0,to=99,password=on');
  } else if (display.kind !== 'none' && display.kind !== 'window') {
    throw new MedvError('EINVAL_ARG', `display must be none, vnc, vnc-tcp or window, not ${JSON.stringify((display as { kind: unknown }).kind)}`);
  }
  if (spec.vga || display.kind !== 'none') argv.push('-device', 'VGA');
  if (spec.guestAgent || spec.clipboard) argv.push('-device', 'virtio-serial-pci,id=vser0');
  if (spec.guestAgent) {
    if (!spec.guestAgent.socket) throw new MedvError('EINVAL_ARG', `invalid guest agent socket path ${JSON.stringify(spec.guestAgent.socket)}`);
    argv.push('-chardev', `socket,id=qga0,path=${optValue(spec.guestAgent.socket)},server=on,wait=off`,
      '-device', 'virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0');
  }
  if (spec.clipboard) {
    argv.push('-chardev', 'qemu-vdagent,id=vdagent0,clipboard=on,mouse=off',
      '-device', 'virtserialport,bus=vser0.0,chardev=vdagent0,name=com.redhat.spice.0');
  }
  (spec.shares ?? []).forEach((share, i) => {
    if (!SHARE_TAG_RE.test(share.tag)) throw new MedvError('EINVAL_ARG', `invalid shared folder tag ${JSON.stringify(share.tag)}`);
    if (!Number.isSafeInteger(share.fd) || share.fd < 0) throw new MedvError('EINVAL_ARG', `shared folder ${share.tag}: invalid descriptor`);
    // A writable share stores what the guest asks for (owners, modes, links, device nodes) in
    // extended attributes (mapped-xattr): its files are plain files of ours on the host, never a
    // link, a setuid or a world-writable file a hostile guest planted. A read-only one maps nothing.
    const model = share.readOnly === false ? 'mapped-xattr' : 'none,readonly=on';
    argv.push('-fsdev', `local,id=fsdev${i},path=/proc/self/fd/${SHARE_FD_BASE + i},security_model=${model}`,
      '-device', `virtio-9p-pci,id=share${i},fsdev=fsdev${i},mount_tag=${share.tag}`);
  });
  const usb = spec.usbDevices ?? [];
  if (usb.length) argv.push('-device', 'qemu-xhci,id=usb');
  usb.forEach((d, i) => {
    const ok = (n: number) => Number.isInteger(n) && n >= 0 && n <= 0xffff;
    if (!ok(d.vendorId) || !ok(d.productId)) throw new MedvError('EINVAL_ARG', `invalid USB vendor:product ${JSON.stringify(d)}`);
    const hex = (n: number) => `0x${n.toString(16).padStart(4, '0')}`;
    argv.push('-device', `usb-host,bus=usb.0,id=usbhost${i},vendorid=${hex(d.vendorId)},productid=${hex(d.productId)}`);
  });
  if (spec.incoming) argv.push('-S', '-incoming', 'defer');
  argv.push(...(spec.extraArgs ?? []));
  return argv;
}

// ---------------------------------------------------------------------------------------------
// Accelerators

/** Can this process use KVM (native probe: /dev/kvm opens read-write and reports API version 12)? */
export function kvmStatus(): { available: boolean; reason?: string } {
  return native.kvmProbe();
}

/**
 * KVM when usable, else TCG. `MEDV_ACCEL=tcg` makes TCG the default for every VM medv starts without
 * an explicit accelerator (nested virtual machines where KVM is slower or fails for a guest);
 * `MEDV_ACCEL=kvm` is the usual choice, spelled out.
 */
export function defaultAccelerator(): Accelerator {
  const asked = process.env.MEDV_ACCEL;
  if (asked !== undefined && asked !== '' && asked !== 'kvm' && asked !== 'tcg') throw new MedvError('EINVAL_ARG', `MEDV_ACCEL must be kvm or tcg, not ${JSON.stringify(asked.slice(0, 20))}`);
  if (asked === 'tcg') return 'tcg';
  return kvmStatus().available ? 'kvm' : 'tcg';
}

/**
 * Runs `attempt(accel)`; when it fails because KVM stopped the VM in internal-error, calls
 * `onFallback` and runs it once more under TCG. Resolves with the value and the accelerator used.
 */
export async function withTcgFallback<T>(accel: Accelerator, attempt: (accel: Accelerator) => Promise<T>,
  onFallback?: (e: QemuError) => void): Promise<{ value: T; accel: Accelerator }> {
  try {
    return { value: await attempt(accel), accel };
  } catch (e) {
    if (accel !== 'kvm' || !isInternalError(e)) throw e;
    onFallback?.(e);
    return { value: await attempt('tcg'), accel: 'tcg' };
  }
}

// ---------------------------------------------------------------------------------------------
// The process

export interface LaunchOptions {
  /** Milliseconds to wait for QMP (default 15000). */
  startTimeoutMs?: number;
  /** Append everything the guest writes to COM1 to this file as well (created 0600). */
  serialLog?: string;
  /** Keep at most this many characters of serial output in memory (the newest); default unbounded. */
  serialMemoryLimit?: number;
}

/** Children still running; killed if this process exits without cleaning up (PDEATHSIG covers crashes). */
const live = new Set<ChildProcess>();
let exitHook = false;

interface Waiter { check: () => boolean; fail: (e: QemuError) => void }

export class QemuProcess {
  readonly pid: number;
  readonly accel: Accelerator;
  /** QMP, once connected (always, after launch resolved). */
  qmp!: QmpClient;
  private serialText = '';
  private stderrText = '';
  private partialLine = '';
  private readonly lines: Array<{ ms: number; text: string }> = [];
  private readonly t0 = performance.now();
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private failure: QemuError | undefined;
  private readonly waiters = new Set<Waiter>();
  private readonly exited: Promise<void>;
  private killed = false;
  private serialLogFd: number | undefined;
  private serialLimit = Infinity;

  private constructor(readonly spec: LaunchSpec, readonly argv: readonly string[], private readonly child: ChildProcess,
    private readonly ownRunDir: string | undefined) {
    this.pid = child.pid ?? -1;
    this.accel = spec.accel;
    live.add(child);
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (chunk: string) => this.onSerial(chunk));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      this.stderrText += chunk;
      if (/KVM internal error/.test(this.stderrText)) void this.confirmInternalError();
    });
    this.exited = new Promise((res) => {
      child.once('error', (e) => { this.stderrText += `spawn: ${e.message}\n`; this.onExit(null, null); res(); });
      // 'close', not 'exit': it comes after the last serial bytes have been read.
      child.once('close', (code, signal) => { this.onExit(code, signal); res(); });
    });
  }

  /**
   * Starts QEMU and connects QMP; the guest runs. Without `spec.qmpSocket`, the socket goes in a
   * fresh temporary folder removed by kill(). QEMU runs under `setpriv --pdeathsig KILL` (when
   * present) so it dies with this process.
   */
  static async launch(spec: Omit<LaunchSpec, 'qmpSocket'> & { qmpSocket?: string }, options: LaunchOptions = {}): Promise<QemuProcess> {
    const vm = QemuProcess.spawn(spec, options);
    await vm.connect(options.startTimeoutMs);
    return vm;
  }

  /**
   * The first half of launch(): starts QEMU now and returns at once, before QMP is connected (so
   * `qmp` and `execute` are not usable until connect() resolves). A caller can then prepare what
   * QEMU waits for (an NBD server answering its handshake) while QEMU initialises. Throws
   * (nothing started) when the spec is invalid.
   */
  static spawn(spec: Omit<LaunchSpec, 'qmpSocket'> & { qmpSocket?: string }, options: LaunchOptions = {}): QemuProcess {
    const ownRunDir = spec.qmpSocket ? undefined : mkdtempSync(join(tmpdir(), 'medv-qemu-'));
    const full: LaunchSpec = { ...spec, qmpSocket: spec.qmpSocket ?? join(ownRunDir!, 'qmp.sock') };
    let argv: string[];
    try {
      argv = qemuArgv(full);
    } catch (e) {
      if (ownRunDir) rmSync(ownRunDir, { recursive: true, force: true });
      throw e;
    }
    const wrapper = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--'] : [];
    const spawned = [...wrapper, ...argv];
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => { for (const c of live) c.kill('SIGKILL'); });
    }
    const stream = full.network?.kind === 'stream';
    const shares = full.shares ?? [];
    const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'pipe', 'pipe', full.incoming ? 'pipe' : 'ignore', ...(stream || shares.length ? [stream ? 'pipe' as const : 'ignore' as const] : []),
      ...shares.map((s) => s.fd)];
    // Nothing of our environment but what QEMU needs: never a passphrase or token (src/core/env.ts).
    const env = minimalEnv(full.display?.kind === 'window' ? ['DISPLAY', 'XAUTHORITY', 'WAYLAND_DISPLAY', 'XDG_RUNTIME_DIR', 'HOME'] : []);
    const vm = new QemuProcess(full, argv, spawn(spawned[0], spawned.slice(1), { stdio, env }), ownRunDir);
    if (options.serialLog) vm.serialLogFd = openSync(options.serialLog, 'a', 0o600);
    if (options.serialMemoryLimit) vm.serialLimit = options.serialMemoryLimit;
    return vm;
  }

  /** The second half of launch(): connect QMP (QEMU killed and a QemuError 'start' when it cannot be). */
  async connect(timeoutMs = 15_000): Promise<void> {
    try {
      this.qmp = await QmpClient.connect(this.spec.qmpSocket, timeoutMs, () => this.exit === undefined);
    } catch (e) {
      await this.kill();
      const stderr = this.stderr().trim();
      throw new QemuError('start', `QEMU did not start (${(e as Error).message})${stderr ? `:\n${stderr}` : ''}\nargv: ${this.argv.join(' ')}`, this.spec.accel);
    }
    const onStop = () => void this.runState().then((s) => { if (s === 'internal-error') this.setInternalError(); }, () => undefined);
    this.qmp.on('event', (e: QmpEvent) => { if (e.event === 'STOP') onStop(); });
    // A STOP in the same read as the capabilities reply was emitted before this listener existed.
    if (this.qmp.events.some((e) => e.event === 'STOP')) onStop();
    if (/KVM internal error/.test(this.stderrText)) void this.confirmInternalError();
  }

  /**
   * Append the guest's COM1 output from now on to `file` (created 0600): for a QEMU started before
   * it knew its VM (a pooled one, src/host/pooled.ts), whose guest has not run yet.
   */
  setSerialLog(file: string): void {
    if (this.serialLogFd !== undefined) closeSync(this.serialLogFd);
    this.serialLogFd = openSync(file, 'a', 0o600);
  }

  /** Keep at most this many characters of serial output in memory (the newest). */
  setSerialMemoryLimit(chars: number): void { this.serialLimit = chars; }

  /**
   * Move QEMU's QMP and VNC unix sockets to new names (same file system): a pooled QEMU's, from the
   * pool's folder into its VM's run folder, once QEMU has started: it made its sockets and will not
   * look for them by name again). The bound sockets are the same (a rename moves a socket node,
   * src/core/fsio.ts); only the names change.
   */
  relocate(to: { qmpSocket: string; vncSocket?: string }): void {
    renameSync(this.spec.qmpSocket, to.qmpSocket);
    const display = this.spec.display;
    let moved: LaunchSpec['display'] = display;
    if (display?.kind === 'vnc') {
      if (!to.vncSocket) throw new MedvError('EINVAL_ARG', 'a VNC socket must move with QMP\'s');
      renameSync(display.socket, to.vncSocket);
      moved = { kind: 'vnc', socket: to.vncSocket };
    }
    (this as { spec: LaunchSpec }).spec = { ...this.spec, qmpSocket: to.qmpSocket, display: moved };
  }

  /** `vnc-tcp`: set the VNC password (QMP, never argv) and return where VNC listens (query-vnc). */
  async setVncPassword(password: string): Promise<{ host: string; port: number }> {
    await this.execute('set_password', { protocol: 'vnc', password });
    const vnc = await this.execute<{ enabled: boolean; host?: string; service?: string }>('query-vnc');
    if (!vnc.enabled || !vnc.service) throw new QemuError('start', 'QEMU\'s VNC server is not listening', this.accel);
    return { host: vnc.host ?? '127.0.0.1', port: Number(vnc.service) };
  }

  /** Everything the guest printed on COM1 so far (latin1). */
  serial(): string { return this.serialText; }
  stderr(): string { return this.stderrText; }
  /** Each complete serial line (CR stripped) with the milliseconds since QEMU was spawned. */
  serialLines(): ReadonlyArray<{ ms: number; text: string }> { return this.lines; }
  events(): readonly QmpEvent[] { return this.qmp?.events ?? []; }
  /** Exit code and signal once QEMU has exited. */
  get exitStatus(): { code: number | null; signal: NodeJS.Signals | null } | undefined { return this.exit; }

  execute<T = any>(command: string, args?: object): Promise<T> { return this.qmp.execute<T>(command, args); }

  /** QMP query-status `status`: 'running', 'paused', 'internal-error', 'shutdown', ... */
  async runState(): Promise<string> {
    const status = await this.qmp.execute<{ status: string }>('query-status');
    return String(status.status);
  }

  /** Presses the ACPI power button (the guest decides whether to power off). */
  async powerdown(): Promise<void> { await this.qmp.execute('system_powerdown'); }

  /**
   * Resolves with the match once the serial output matches `re`. Rejects with a QemuError:
   * 'internal-error' (KVM stopped the VM), 'exited', or 'timeout'.
   */
  waitForSerial(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    return new Promise((resolveWait, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        check: () => {
          const m = this.serialText.match(re);
          if (!m) return false;
          done();
          resolveWait(m);
          return true;
        },
        fail: (e) => { done(); reject(e); },
      };
      const done = () => { clearTimeout(timer); this.waiters.delete(waiter); };
      if (waiter.check()) return;
      const early = this.failure ?? this.exitFailure(`waiting for ${re}`);
      if (early) { reject(early); return; }
      this.waiters.add(waiter);
      timer = setTimeout(() => {
        void this.describe().then((state) => waiter.fail(new QemuError('timeout',
          `no serial output matching ${re} within ${timeoutMs} ms (accel ${this.accel}, run state ${state})${this.context()}`, this.accel)));
      }, timeoutMs);
    });
  }

  /** Resolves with QEMU's exit code (null after a signal); rejects (QemuError) if it still runs after timeoutMs. */
  async waitExit(timeoutMs: number): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), timeoutMs); });
    const outcome = await Promise.race([this.exited.then(() => 'exited' as const), timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      const state = await this.describe();
      throw this.failure ?? new QemuError('timeout', `QEMU still running after ${timeoutMs} ms (accel ${this.accel}, run state ${state})${this.context()}`, this.accel);
    }
    return this.exit!.code;
  }

  /** Stops QEMU (SIGTERM, SIGKILL after 3 s) and removes its temporary folder. Idempotent; safe in `finally`. */
  async kill(): Promise<void> {
    if (!this.killed) {
      this.killed = true;
      if (this.exit === undefined) {
        this.child.kill('SIGTERM');
        const hard = setTimeout(() => this.child.kill('SIGKILL'), 3000);
        await this.exited;
        clearTimeout(hard);
      }
      this.qmp?.close();
      if (this.ownRunDir) rmSync(this.ownRunDir, { recursive: true, force: true });
    }
    await this.exited;
  }

  private async describe(): Promise<string> {
    if (this.exit) return `exited (code ${this.exit.code}, signal ${this.exit.signal})`;
    try {
      return await Promise.race([this.runState(), new Promise<string>((r) => setTimeout(() => r('unknown (QMP did not answer)'), 2000))]);
    } catch (e) {
      return `unknown (${(e as Error).message})`;
    }
  }

  private context(): string {
    const stderr = this.stderrText.trim();
    return `\nserial:\n${this.serialText || '(nothing)'}${stderr ? `\nstderr:\n${stderr}` : ''}`;
  }

  private onSerial(chunk: string): void {
    if (this.serialLogFd !== undefined) {
      try { writeSync(this.serialLogFd, chunk, null, 'latin1'); } catch { /* a full disk must not stop the VM */ }
    }
    this.serialText += chunk;
    if (this.serialText.length > this.serialLimit) this.serialText = this.serialText.slice(-this.serialLimit);
    const ms = performance.now() - this.t0;
    this.partialLine += chunk;
    let nl: number;
    while ((nl = this.partialLine.indexOf('\n')) >= 0) {
      this.lines.push({ ms, text: this.partialLine.slice(0, nl).replace(/\r$/, '') });
      if (this.serialLimit !== Infinity && this.lines.length > 4096) this.lines.splice(0, this.lines.length - 4096);
      this.partialLine = this.partialLine.slice(nl + 1);
    }
    // A guest that never prints a newline must not grow this without bound: keep the tail.
    if (this.partialLine.length > this.serialLimit) this.partialLine = this.partialLine.slice(-this.serialLimit);
    for (const w of [...this.waiters]) w.check();
  }

  /**
   * QEMU prints "KVM internal error" on stderr a moment before the run state changes: wait (up to
   * 2 s) for query-status to say internal-error, so that callers who see the failure also see the
   * state; then fail the waits either way.
   */
  private confirming = false;
  private async confirmInternalError(): Promise<void> {
    if (this.confirming || this.failure) return;
    this.confirming = true;
    for (let i = 0; i < 40 && !this.failure && !this.exit; i++) {
      const state = this.qmp && !this.qmp.closed ? await this.runState().catch(() => '') : '';
      if (state === 'internal-error' || !this.qmp) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (this.qmp) this.setInternalError();
    this.confirming = false;
  }

  private setInternalError(): void {
    if (this.failure) return;
    this.failure = new QemuError('internal-error',
      `QEMU stopped the guest in run state internal-error under accel ${this.accel}: KVM could not emulate an instruction ` +
      `(seen on nested virtual machines, see docs/machines.md). Retry under TCG.${this.context()}`, this.accel);
    for (const w of [...this.waiters]) w.fail(this.failure);
  }

  private exitFailure(what: string): QemuError | undefined {
    if (!this.exit) return undefined;
    return new QemuError('exited', `QEMU exited (code ${this.exit.code}, signal ${this.exit.signal}) while ${what}${this.context()}`, this.accel);
  }

  /** The migration stream's way in (QEMU's fd 3), when launched with `incoming`. */
  get incoming(): NodeJS.WritableStream | undefined { return (this.child.stdio[3] as NodeJS.WritableStream | null) ?? undefined; }

  /** Our end of the guest's network frames (QEMU's fd 4), when launched with network `stream`. */
  get netStream(): Duplex | undefined { return (this.child.stdio[NET_FD] as Duplex | null) ?? undefined; }

  /** Resolves once QEMU has exited (never rejects). */
  get exitedPromise(): Promise<void> { return this.exited; }
  /**
   * Resolves (never rejects, no timer) once the VM is no longer usable: KVM stopped it in run
   * state internal-error (kind 'internal-error') or QEMU exited (kind 'exited').
   */
  stopped(): Promise<QemuError> {
    const early = this.failure ?? this.exitFailure('running');
    if (early) return Promise.resolve(early);
    return new Promise((resolve) => {
      const waiter: Waiter = { check: () => false, fail: (e) => { this.waiters.delete(waiter); resolve(e); } };
      this.waiters.add(waiter);
    });
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.exit = { code, signal };
    if (this.serialLogFd !== undefined) { try { closeSync(this.serialLogFd); } catch { /* already closed */ } this.serialLogFd = undefined; }
    live.delete(this.child);
    for (const w of [...this.waiters]) {
      if (!w.check()) w.fail(this.failure ?? this.exitFailure('waiting for serial output')!);
    }
  }
}
