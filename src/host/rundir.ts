/**
 * The run directory: one private folder per VM holding what its supervisor publishes while it
 * runs (./README.md).
 *
 *   <root>/<name>/state.json     what the VM is doing (written by the supervisor, atomically)
 *   <root>/<name>/control.sock   the supervisor's control socket (newline-delimited JSON)
 *   <root>/<name>/qmp.sock       QEMU's QMP socket (only the supervisor talks to it)
 *   <root>/<name>/disk<i>.sock   the NBD export of each disk
 *   <root>/<name>/serial.log     what the guest wrote to COM1 (kept after the VM stops)
 *
 * Root: src/core/paths.ts runRoot ($MEDV_RUN_DIR, else /run/medv for root, else
 * $XDG_RUNTIME_DIR/medv, else /tmp/medv-<uid>).
 * Every folder is created 0700 and checked to be ours and private before use (src/core/fsio.ts
 * ensurePrivateDir): a folder another user could enter (or a symlink planted in its place) is
 * refused (EUNSAFE), never "fixed".
 * State files are never trusted: a state that says running is believed only while the recorded
 * supervisor pid is alive with the recorded start time (pids are reused).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { checkVmName, VM_NAME_RE } from '../api/names.js';
import { runRoot } from '../core/paths.js';
import { ensurePrivateDir, processAlive, readBoundedSync, writeFileAtomic, writeFileAtomicSync } from '../core/fsio.js';

export type VmRunState = 'starting' | 'running' | 'paused' | 'suspending' | 'stopping' | 'stopped' | 'suspended' | 'failed';

/** States in which no supervisor runs. */
export function isTerminal(s: VmRunState): boolean { return s === 'stopped' || s === 'suspended' || s === 'failed'; }

export interface VmDiskState {
  path: string;
  format: string;
  /** Undo disk that takes the guest's writes, if any. */
  undo?: string;
  /** What happens to the undo disk when the VM stops. */
  undoPolicy?: 'discard' | 'keep';
  readOnly: boolean;
}

/** The documented schema of state.json and of `vm status --json` (README, "medv vm"). */
export interface VmState {
  name: string;
  state: VmRunState;
  /** Supervisor pid and its start time (clock ticks since boot, /proc/<pid>/stat field 22). */
  pid: number;
  pidStart: number;
  qemuPid?: number;
  accel?: 'kvm' | 'tcg';
  memoryMiB: number;
  disks: VmDiskState[];
  /** The guest's CD/DVD drives as QEMU reports them: the disc each holds (an image or host drive), or null when empty. */
  cdDrives?: Array<{ disc: string | null }>;
  network: 'none' | 'nat';
  /**
   * Where the screen is: `vnc` a unix socket in the run folder (`vncSocket`, for tools); `vnc-tcp`
   * a VNC server on 127.0.0.1 (`vncAddress`, host:port) that takes the generated `vncPassword`
   * (set over QMP, never on a command line; shown by `vm status`, left out of `vm list`).
   */
  display: { kind: 'none' | 'vnc' | 'vnc-tcp' | 'window'; vncSocket?: string; vncAddress?: string; vncPassword?: string };
  /** What the VM holds to write a saved state: a passphrase (or a KEK derived from one), a host key, or nothing (suspend refused). */
  key?: 'none' | 'passphrase' | 'host-key';
  startedAt: string;
  stoppedAt?: string;
  /** Why the VM stopped: 'poweroff' (the guest), 'forced', 'crashed', or an error message. */
  exitReason?: string;
  /** The VMC the VM was started from, if any. */
  vmc?: string;
  /** The encrypted saved state (.vsv) a suspend writes and the next start resumes from. */
  savedState?: string;
  /** True when this run was resumed from a saved state. */
  resumed?: boolean;
  /**
   * Test-mode undo disks this VM created and has not deleted yet (a run that crashed): the next
   * start of this VM deletes them, and only them (src/host/disks.ts).
   */
  testUndo?: TestUndoRecord[];
}

/** A test run's undo disk as created: its device, inode and VHD unique id, and its parent's device and inode (the image). */
export interface TestUndoRecord { path: string; dev: string; ino: string; uniqueId: string; parent: { dev: string; ino: string } }

/** Largest state.json we read. */
const MAX_STATE_BYTES = 64 * 1024;

/** The run folder of VM `name` (created private). */
export function vmRunDir(name: string, root = runRoot()): string {
  ensurePrivateDir(root, true);
  return ensurePrivateDir(join(root, checkVmName(name)));
}

/** Write state.json atomically (src/core/fsio.ts: temporary, fsync, rename, fsync of the folder). */
export function writeState(dir: string, state: VmState): void {
  writeFileAtomicSync(join(dir, 'state.json'), stateText(state), { mode: 0o600 });
}

/** As writeState, with the writes and fsyncs on the thread pool. */
export function writeStateAsync(dir: string, state: VmState): Promise<void> {
  return writeFileAtomic(join(dir, 'state.json'), stateText(state), { mode: 0o600 });
}

const stateText = (state: VmState) => `${JSON.stringify(state, null, 2)}\n`;

/** Read a VM's state.json; undefined when there is none. A damaged file is a typed error. */
export function readState(dir: string): VmState | undefined {
  const file = join(dir, 'state.json');
  const bytes = readBoundedSync(file, MAX_STATE_BYTES, 'state.json');
  if (!bytes) return undefined;
  const text = bytes.toString('utf8');
  let parsed: unknown;
  try { parsed = JSON.parse(text); } catch { throw new MedvError('EFORMAT', 'state.json is not JSON', { file }); }
  const s = parsed as VmState;
  if (!s || typeof s !== 'object' || typeof s.name !== 'string' || typeof s.state !== 'string'
    || !Number.isSafeInteger(s.pid) || !Number.isSafeInteger(s.pidStart)) {
    throw new MedvError('EFORMAT', 'state.json lacks name, state, pid or pidStart', { file });
  }
  return s;
}

/** Is the supervisor recorded in `state` still the live process that wrote it? */
function supervisorAlive(state: VmState): boolean {
  return processAlive(state.pid, state.pidStart);
}

/**
 * The state as it really is: a state that claims the VM runs while its supervisor is gone
 * (killed, machine rebooted) reads as 'stopped' with exitReason 'supervisor died'.
 */
export function effectiveState(state: VmState): VmState {
  if (isTerminal(state.state) || supervisorAlive(state)) return state;
  return { ...state, state: 'stopped', exitReason: state.exitReason ?? 'supervisor died' };
}

/** Names of the VMs that have a run folder under the root (valid names only). */
export function listRunDirs(root = runRoot()): string[] {
  let entries: fs.Dirent[];
  try { entries = fs.readdirSync(root, { withFileTypes: true }); } catch { return []; }
  return entries.filter((e) => e.isDirectory() && VM_NAME_RE.test(e.name)).map((e) => e.name).sort();
}
