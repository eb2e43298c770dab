/**
 * A VM's machine shape: everything on QEMU's command line except where its sockets are and what it
 * is called (memory, accelerator, drives in order with their bus and kind, NIC, display, whether it
 * waits for a saved state). A cold start and a pooled QEMU (./pooled.ts) both get their command
 * line from `specFor(shape, …)`, so a pooled QEMU is the one a cold start would have run; a start
 * takes a pooled QEMU only when the shapes are equal (`shapeKey`).
 *
 * `poolShape` is THE rule for "can this VM use a pooled QEMU?": only VM settings it knows about
 * (an allowlist of VmConfig fields) and only displays a pooled QEMU can have (none, the VNC unix
 * socket); anything else, including any setting added to VmConfig later, starts cold.
 */
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import type { Accelerator, DriveSpec, LaunchSpec } from '../hypervisor/qemu.js';
import type { VmConfig } from './config.js';

/** The guest agent's socket in a VM's run folder (VmConfig.guestAgent). */
export const AGENT_SOCKET = 'qga.sock';

export interface MachineShape {
  accel: Accelerator;
  memoryMiB: number;
  /** Waits for a saved state (`-S -incoming defer`). */
  incoming: boolean;
  drives: Array<Omit<DriveSpec, 'source'>>;
  /** IDE CD/DVD drives with no disc, after `drives` (a .vmc's host drive not allowed or absent). */
  emptyCdDrives?: number;
  network: { kind: 'none' } | { kind: 'stream'; mac?: string; model?: 'e1000' | 'virtio' };
  display: 'none' | 'vnc' | 'vnc-tcp' | 'window';
  /** The guest agent's port on `qga.sock`. */
  guestAgent?: true;
  /** The clipboard's qemu-vdagent chardev and port. */
  clipboard?: true;
  /** virtio-9p shares (their folders' descriptors are the supervisor's: specFor's `shareFds`). */
  shares?: Array<{ tag: string; readOnly: boolean }>;
  usbDevices?: Array<{ vendorId: number; productId: number }>;
}

/** The shape of `config` started with this accelerator, RAM (a saved state's, when resuming) and mode. */
export function machineShape(config: VmConfig, run: { accel: Accelerator; memoryMiB: number; incoming: boolean }): MachineShape {
  return {
    accel: run.accel,
    memoryMiB: run.memoryMiB,
    incoming: run.incoming,
    drives: config.disks.map((d) => (d.mode === 'cdrom' ? { cdrom: true, readOnly: true } : { iface: config.diskBus ?? 'ide' })),
    ...(config.emptyCdDrives ? { emptyCdDrives: config.emptyCdDrives } : {}),
    // NAT goes through passt (src/hypervisor/usernet.ts) behind QEMU's fd 4, attached once QEMU runs.
    network: config.network === 'nat' ? { kind: 'stream', ...(config.mac ? { mac: config.mac } : {}), ...(config.nicModel ? { model: config.nicModel } : {}) } : { kind: 'none' },
    display: config.display,
    ...(config.guestAgent ? { guestAgent: true as const } : {}),
    ...(config.clipboard ? { clipboard: true as const } : {}),
    ...(config.sharedFolders?.length ? { shares: config.sharedFolders.map((f) => ({ tag: f.tag, readOnly: f.writable !== true })) } : {}),
    ...(config.usbDevices?.length ? { usbDevices: config.usbDevices.map((d) => ({ vendorId: d.vendorId, productId: d.productId })) } : {}),
  };
}

/** The launch spec of a shape with its sockets in `dir` (qmp.sock, disk<i>.sock, vnc.sock, qga.sock) and its shares' folder descriptors. */
export function specFor(shape: MachineShape, dir: string, name: string, shareFds: readonly number[] = []): LaunchSpec {
  if ((shape.shares?.length ?? 0) !== shareFds.length) throw new MedvError('EINTERNAL', `${shape.shares?.length ?? 0} shared folders, ${shareFds.length} descriptors`);
  const display: LaunchSpec['display'] = shape.display === 'vnc' ? { kind: 'vnc', socket: join(dir, 'vnc.sock') } : { kind: shape.display };
  return {
    name,
    accel: shape.accel,
    memoryMiB: shape.memoryMiB,
    incoming: shape.incoming,
    vga: true,
    display,
    drives: shape.drives.map((d, i) => ({ ...d, source: { nbd: { socket: join(dir, `disk${i}.sock`) } } })),
    ...(shape.emptyCdDrives ? { emptyCdDrives: shape.emptyCdDrives } : {}),
    qmpSocket: join(dir, 'qmp.sock'),
    network: shape.network,
    ...(shape.guestAgent ? { guestAgent: { socket: join(dir, AGENT_SOCKET) } } : {}),
    ...(shape.clipboard ? { clipboard: true } : {}),
    ...(shape.shares ? { shares: shape.shares.map((sh, i) => ({ ...sh, fd: shareFds[i] })) } : {}),
    ...(shape.usbDevices ? { usbDevices: shape.usbDevices } : {}),
  };
}

/**
 * The hardware a guest sees and a saved state's devices must match (drives with bus and kind, empty
 * CD/DVD drives, the NIC's model, the guest agent's and clipboard's ports, shared folders, USB
 * devices), in words: recorded at suspend, compared at resume, so that a
 * resume started with another `--disk-bus` or NIC is refused before QEMU gets the state (QEMU
 * itself only fails mid-stream, the supervisor then seeing the connection reset).
 */
export function hardwareOf(shape: MachineShape): string {
  const drives = shape.drives.map((d) => (d.cdrom ? 'cdrom' : d.iface ?? 'ide')).join(',');
  const net = shape.network.kind === 'none' ? 'none' : shape.network.model ?? 'e1000';
  const extra = [
    ...(shape.guestAgent ? ['guest agent'] : []),
    ...(shape.clipboard ? ['clipboard'] : []),
    ...(shape.shares?.length ? [`shares ${shape.shares.map((x) => `${x.tag}${x.readOnly ? '' : ' (writable)'}`).join(',')}`] : []),
    ...(shape.usbDevices?.length ? [`USB ${shape.usbDevices.map((u) => `${u.vendorId.toString(16).padStart(4, '0')}:${u.productId.toString(16).padStart(4, '0')}`).join(',')}`] : []),
  ];
  return `drives ${drives || 'none'}${shape.emptyCdDrives ? ` + ${shape.emptyCdDrives} empty CD/DVD` : ''}; NIC ${net}${extra.map((e) => `; ${e}`).join('')}`;
}

/** Equal for two shapes exactly when a QEMU of one can run a VM of the other. */
export function shapeKey(shape: MachineShape): string {
  return JSON.stringify(shape);
}

/** VmConfig fields a pooled QEMU can take (they are in the shape, or used only outside QEMU). */
const POOLABLE_CONFIG = new Set(['name', 'memoryMiB', 'disks', 'network', 'mac', 'nicModel', 'allowHostPorts', 'diskBus', 'display', 'accel', 'vmc', 'savedState', 'savedStateConfine']);
const POOLABLE_DISK = new Set(['path', 'mode', 'undoPath', 'confine', 'undoConfine']);
/** Displays a pooled QEMU can have: a GTK window needs the caller's X display, and `vnc-tcp` a password set for its VM. */
const POOLABLE_DISPLAY = new Set<MachineShape['display']>(['none', 'vnc']);

/**
 * The shape a pooled QEMU must have to run this VM, or undefined when the VM starts cold: a setting
 * this rule does not know (any VmConfig field outside the allowlist, set), or a display a pooled
 * QEMU cannot have.
 */
export function poolShape(config: VmConfig, run: { accel: Accelerator; memoryMiB: number; incoming: boolean }): MachineShape | undefined {
  for (const [k, v] of Object.entries(config)) if (v !== undefined && !POOLABLE_CONFIG.has(k)) return undefined;
  for (const d of config.disks) for (const [k, v] of Object.entries(d)) if (v !== undefined && !POOLABLE_DISK.has(k)) return undefined;
  if (!POOLABLE_DISPLAY.has(config.display)) return undefined;
  return machineShape(config, run);
}
