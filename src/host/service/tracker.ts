/**
 * What the host service knows of the VMs: their run folders (src/host/rundir.ts), watched. The
 * supervisors are separate processes that keep state.json and serial.log there; the service reads
 * them, so a service started later (after a crash, a SIGKILL, an idle exit) knows every VM at once
 * from the folders alone: reattaching is reading them again.
 *
 * Events (./events.ts): `state` when a VM's state changes (state.json rewritten, or its supervisor
 * found dead: `stopped`, exitReason `supervisor died`); `serial` for each line the guest writes to
 * COM1 (serial.log tailed from where it was when the service first saw the VM; a new boot's log
 * from its start). A guest that writes faster than lines are read has the excess skipped (one
 * `serial` event with `skipped` bytes), never buffered: at most READ_CHUNK per read, lines cut
 * at MAX_LINE characters.
 *
 * Bounds: at most MAX_TRACKED run folders are watched (inotify watches are a per-user resource).
 * Supervisors that die without a word are noticed by a check every LIVENESS_MS.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { VM_NAME_RE } from '../../api/names.js';
import { effectiveState, isTerminal, readState, type VmState } from '../rundir.js';
import type { EventLog } from './events.js';

const MAX_TRACKED = 1024;
const READ_CHUNK = 256 * 1024;
const MAX_LINE = 4096;
const LIVENESS_MS = 1000;

interface Tracked {
  name: string;
  dir: string;
  watcher?: fs.FSWatcher;
  last?: { state: string; exitReason?: string; pid?: number };
  serial: { ino?: number; offset: number; partial: string };
}

export class VmTracker {
  private readonly vms = new Map<string, Tracked>();
  private rootWatcher: fs.FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly root: string, private readonly events: EventLog) {}

  /** Read every run folder now (reattach), then follow them. */
  start(): void {
    for (const name of this.names()) this.track(name, true);
    try {
      this.rootWatcher = fs.watch(this.root, (_e, file) => { if (file && VM_NAME_RE.test(String(file))) this.track(String(file), false); });
      this.rootWatcher.on('error', () => undefined);
    } catch { /* the root is checked by the service; a watch that fails leaves only the periodic check */ }
    this.timer = setInterval(() => this.check(), LIVENESS_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.rootWatcher?.close();
    for (const t of this.vms.values()) t.watcher?.close();
    this.vms.clear();
  }

  /** The states of every VM with a run folder (what `vm list` shows). */
  list(): VmState[] {
    const out: VmState[] = [];
    for (const name of this.names()) {
      const s = this.read(join(this.root, name));
      if (s) out.push(s);
    }
    return out;
  }

  /** Is any VM running or on its way (a live supervisor)? */
  busy(): boolean {
    for (const t of this.vms.values()) if (t.last && !isTerminal(t.last.state as VmState['state'])) return true;
    return false;
  }

  /** Look at VM `name` again now (after a request changed it). */
  refresh(name: string): void {
    const t = this.vms.get(name) ?? this.track(name, false);
    if (t) this.onState(t);
  }

  private names(): string[] {
    let entries: fs.Dirent[];
    try { entries = fs.readdirSync(this.root, { withFileTypes: true }); } catch { return []; }
    return entries.filter((e) => e.isDirectory() && VM_NAME_RE.test(e.name)).map((e) => e.name).sort();
  }

  private read(dir: string): VmState | undefined {
    try {
      const s = readState(dir);
      return s ? effectiveState(s) : undefined;
    } catch {
      return undefined; // a damaged state file is skipped, as `vm list` does
    }
  }

  private track(name: string, existing: boolean): Tracked | undefined {
    if (this.vms.has(name)) return this.vms.get(name);
    if (this.vms.size >= MAX_TRACKED) return undefined;
    const dir = join(this.root, name);
    const t: Tracked = { name, dir, serial: { offset: 0, partial: '' } };
    if (existing) {
      // Reattach: what the guest wrote before this service saw it is in serial.log, not in events.
      try { const st = fs.statSync(join(dir, 'serial.log')); t.serial = { ino: st.ino, offset: st.size, partial: '' }; } catch { /* none yet */ }
      const s = this.read(dir);
      if (s) t.last = { state: s.state, exitReason: s.exitReason, pid: s.pid };
    }
    try {
      t.watcher = fs.watch(dir, (_e, file) => {
        if (file === 'state.json') this.onState(t);
        else if (file === 'serial.log') this.onSerial(t);
      });
      t.watcher.on('error', () => { t.watcher?.close(); t.watcher = undefined; });
    } catch { return undefined; }
    this.vms.set(name, t);
    if (!existing) { this.onState(t); this.onSerial(t); }
    return t;
  }

  /** Every second: supervisors that died without rewriting state.json, and run folders removed. */
  private check(): void {
    for (const t of this.vms.values()) {
      if (!fs.existsSync(t.dir)) { t.watcher?.close(); this.vms.delete(t.name); continue; }
      if (t.last && !isTerminal(t.last.state as VmState['state'])) this.onState(t);
    }
  }

  private onState(t: Tracked): void {
    const s = this.read(t.dir);
    if (!s) return;
    const now = { state: s.state, exitReason: isTerminal(s.state) ? s.exitReason : undefined, pid: s.pid };
    if (t.last && t.last.state === now.state && t.last.exitReason === now.exitReason && t.last.pid === now.pid) return;
    t.last = now;
    this.events.emit('state', { vm: t.name, state: s.state, ...(now.exitReason ? { exitReason: now.exitReason } : {}) });
    if (!isTerminal(s.state)) this.onSerial(t);
  }

  private onSerial(t: Tracked): void {
    const file = join(t.dir, 'serial.log');
    let fd: number;
    try { fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK); } catch { return; }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) return;
      if (st.ino !== t.serial.ino || st.size < t.serial.offset) t.serial = { ino: st.ino, offset: 0, partial: '' }; // a new boot's log
      let pending = st.size - t.serial.offset;
      if (pending <= 0) return;
      if (pending > READ_CHUNK) {
        const skip = pending - READ_CHUNK;
        this.events.emit('serial', { vm: t.name, skipped: skip });
        t.serial.offset += skip;
        t.serial.partial = '';
        pending = READ_CHUNK;
      }
      const buf = Buffer.alloc(pending);
      const n = fs.readSync(fd, buf, 0, pending, t.serial.offset);
      t.serial.offset += n;
      const text = t.serial.partial + buf.subarray(0, n).toString('latin1');
      const lines = text.split('\n');
      t.serial.partial = lines.pop() ?? '';
      if (t.serial.partial.length > MAX_LINE) { lines.push(t.serial.partial); t.serial.partial = ''; }
      for (const l of lines) {
        const line = l.replace(/\r$/, '');
        for (let i = 0; i < Math.max(1, line.length); i += MAX_LINE) this.events.emit('serial', { vm: t.name, line: line.slice(i, i + MAX_LINE) });
      }
    } catch { /* the log went away meanwhile */ } finally {
      fs.closeSync(fd);
    }
  }
}
