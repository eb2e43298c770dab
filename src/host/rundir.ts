/**
 * The run directory: one private folder per VM holding what its supervisor publishes while it
 * runs (DESIGN.md, "Hypervisor and supervisor").
 *
 *   <root>/<name>/state.json     what the VM is doing (written by the supervisor, atomically)
 *   <root>/<name>/control.sock   the supervisor's control socket (newline-delimited JSON)
 *   <root>/<name>/qmp.sock       QEMU's QMP socket (only the supervisor talks to it)
 *   <root>/<name>/disk<i>.sock   the NBD export of each disk
 *   <root>/<name>/serial.log     what the guest wrote to COM1 (kept after the VM stops)
 *
 * Root: $MEDV_RUN_DIR, else /run/medv for root, else $XDG_RUNTIME_DIR/medv, else /tmp/medv-<uid>.
 * Every folder is created 0700 and checked to be ours and private before use: a folder another
 * user could write (or a symlink planted in its place) is refused, never "fixed".
 * State files are never trusted: a state that says running is believed only while the recorded
 * supervisor pid is alive with the recorded start time (pids are reused).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';

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
  network: 'none' | 'nat';
  display: { kind: 'none' | 'vnc' | 'window'; vncSocket?: string };
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

/** A test run's undo disk as created: its device and inode, and its parent's (the image). */
export interface TestUndoRecord { path: string; dev: string; ino: string; parent: { dev: string; ino: string } }

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Largest state.json we read. */
const MAX_STATE_BYTES = 64 * 1024;

/** A VM name is a single path component of safe characters. */
export function validateVmName(name: string): string {
  if (typeof name !== 'string' || !NAME_RE.test(name) || name.includes('..')) {
    throw new MedvError('EINVAL_ARG', `invalid VM name ${JSON.stringify(name)}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  return name;
}

export function runRoot(): string {
  if (process.env.MEDV_RUN_DIR) return process.env.MEDV_RUN_DIR;
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/medv';
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'medv');
  return `/tmp/medv-${uid}`;
}

/** Create (0700) or check a private folder owned by us. Refuses symlinks and folders others can enter. */
export function ensurePrivateDir(path: string): string {
  try {
    fs.mkdirSync(path, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      fs.mkdirSync(path, { recursive: true, mode: 0o700 });
    } else if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new MedvError('EIO', `cannot create ${path}: ${(e as Error).message}`, { file: path });
    }
  }
  const st = fs.lstatSync(path);
  if (!st.isDirectory()) throw new MedvError('EINVAL_ARG', `${path} is not a directory (a symlink or a file is there)`, { file: path });
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid) throw new MedvError('EINVAL_ARG', `${path} belongs to uid ${st.uid}, not to us (${uid})`, { file: path });
  if ((st.mode & 0o077) !== 0) throw new MedvError('EINVAL_ARG', `${path} is accessible to other users (mode ${(st.mode & 0o777).toString(8)}); it must be 0700`, { file: path });
  return path;
}

/** The run folder of VM `name` (created private). */
export function vmRunDir(name: string, root = runRoot()): string {
  ensurePrivateDir(root);
  return ensurePrivateDir(join(root, validateVmName(name)));
}

/** Write state.json atomically (temporary file, fsync, rename). */
export function writeState(dir: string, state: VmState): void {
  const file = join(dir, 'state.json');
  const tmp = join(dir, `.state.json.${process.pid}`);
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, `${JSON.stringify(state, null, 2)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** Read a VM's state.json; undefined when there is none. A damaged file is a typed error. */
export function readState(dir: string): VmState | undefined {
  const file = join(dir, 'state.json');
  let text: string;
  try {
    const st = fs.lstatSync(file);
    if (!st.isFile()) throw new MedvError('EFORMAT', 'state.json is not a regular file', { file });
    if (st.size > MAX_STATE_BYTES) throw new MedvError('EFORMAT', `state.json is larger than ${MAX_STATE_BYTES} bytes`, { file });
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let parsed: unknown;
  try { parsed = JSON.parse(text); } catch { throw new MedvError('EFORMAT', 'state.json is not JSON', { file }); }
  const s = parsed as VmState;
  if (!s || typeof s !== 'object' || typeof s.name !== 'string' || typeof s.state !== 'string'
    || !Number.isSafeInteger(s.pid) || !Number.isSafeInteger(s.pidStart)) {
    throw new MedvError('EFORMAT', 'state.json lacks name, state, pid or pidStart', { file });
  }
  return s;
}

/** Start time of a process (field 22 of /proc/<pid>/stat), or undefined when it does not exist. */
export function processStartTime(pid: number): number | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  let stat: string;
  try { stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1'); } catch { return undefined; }
  // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = Number(rest[19]);
  if (rest[0] === 'Z' || rest[0] === 'X') return undefined; // a zombie is dead for our purpose
  return Number.isSafeInteger(start) ? start : undefined;
}

/** Is the supervisor recorded in `state` still the live process that wrote it? */
export function supervisorAlive(state: VmState): boolean {
  return processStartTime(state.pid) === state.pidStart;
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
  return entries.filter((e) => e.isDirectory() && NAME_RE.test(e.name)).map((e) => e.name).sort();
}
