/**
 * What a VM is made of, as the CLI, the workspace layer and ./vmc.ts describe it to the host and
 * the supervisor receives it (on its stdin, as JSON): memory, disks in boot order, network,
 * display, and where its saved state lives. No I/O here.
 */
import { basename, dirname, extname, join } from 'node:path';
import type { KekSource } from '../crypto/index.js';
import type { Accelerator } from '../hypervisor/qemu.js';
import type { SharedFolder } from './shares.js';

export interface VmDiskConfig {
  path: string;
  /**
   * normal: the guest writes into the disk;
   * test:   the console's read-only test: writes go to a throw-away undo disk in a `Test/` folder
   *         beside the image, discarded when the VM stops (the base is only ever opened read-only);
   * undo:   Virtual PC undo disks: writes go to `undoPath`, kept until `medv disk undo merge|discard`;
   * cdrom:  a CD/DVD image, read-only (or, named on the command line, a host's optical drive).
   */
  mode: 'normal' | 'test' | 'undo' | 'cdrom';
  undoPath?: string;
  /**
   * The folder `path` (and `undoPath`) must resolve inside, without following any link and only
   * to a regular file: set for paths a settings file (.vmc) named. Absent for a path named on
   * the command line, which may be a link or (not as a CD image) a block device.
   */
  confine?: string;
  /** As `confine`, for `undoPath` when it lies elsewhere (a .vud on another mapped drive). */
  undoConfine?: string;
}

export interface VmConfig {
  name: string;
  memoryMiB: number;
  disks: VmDiskConfig[];
  network: 'none' | 'nat';
  mac?: string;
  /** NIC model (default e1000, which most guests have a driver for; virtio for Linux guests). */
  nicModel?: 'e1000' | 'virtio';
  /**
   * TCP/UDP ports of the host's loopback (127.0.0.1) the guest may reach through its gateway
   * (10.0.2.2) with NAT. Default none: the guest reaches the outside, never the host's loopback.
   */
  allowHostPorts?: number[];
  /** Bus of the hard disks (default ide, as Virtual PC; virtio is faster for guests with drivers). */
  diskBus?: 'ide' | 'virtio';
  /** none; vnc: a unix socket in the run folder (tools); vnc-tcp: 127.0.0.1 with a generated password (people); window: GTK on $DISPLAY. */
  display: 'none' | 'vnc' | 'vnc-tcp' | 'window';
  /** Accelerator to try first (default: KVM when usable, else TCG). */
  accel?: Accelerator;
  vmc?: string;
  /** Where suspend writes the encrypted saved state; a start finds it there and resumes. */
  savedState: string;
  /** As VmDiskConfig.confine, for the saved state (named by a .vmc). */
  savedStateConfine?: string;
  /** CD/DVD drives with no disc, after the disks (a .vmc's host drive that is not allowed or absent). */
  emptyCdDrives?: number;
  /**
   * The QEMU guest agent's port (`org.qemu.guest_agent.0`) on `qga.sock` in the run folder, for
   * published applications (src/workspace/apps.ts). Absent: the VM has no such port.
   */
  guestAgent?: boolean;
  /** The clipboard shared with the display (qemu-vdagent): only when the device policy allows it. */
  clipboard?: boolean;
  /** Host folders shared with the guest (virtio-9p, read-only unless `writable`; ./shares.ts opens them). */
  sharedFolders?: SharedFolder[];
  /** USB devices the guest gets by vendor:product (QEMU usb-host): only those the policy allows. */
  usbDevices?: Array<{ vendorId: number; productId: number }>;
}

/** What QEMU says a running VM has (the supervisor's `devices` control command, QMP query-chardev and qom-list). */
export interface VmDevices {
  chardevs: Array<{ label: string; filename: string }>;
  devices: Array<{ id: string; type: string; vendorId?: number; productId?: number; mountTag?: string; fsdev?: string }>;
}

export interface SupervisorInput {
  config: VmConfig;
  runRoot: string;
  kek?: KekSource;
  /** The temporary log the supervisor was started with (./prespawn.ts), moved to `<name>/supervisor.log`. */
  logFile?: string;
}

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

/** The undo disk a configured disk writes into and keeps: an undo-mode disk's (none for a plain disk, a CD, or a test run's throw-away one). */
export function keptUndoPath(d: VmDiskConfig): string | undefined {
  return d.mode === 'undo' ? d.undoPath ?? defaultUndoPath(d.path) : undefined;
}
