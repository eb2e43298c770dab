/**
 * The warm pool: supervisors started ahead of any request, each with a QEMU of one machine shape
 * waiting in its first disk's NBD handshake (src/host/pooled.ts). A start whose VM has that shape
 * takes one (src/host/client.ts startVm with `supervisor`); once the start is done a new member of
 * the shapes in use is started (after, not during, a start: they would compete for the CPU).
 *
 * Which shapes: the `size` most recently used (a start's shape; after a suspend, the shape of its
 * resume: `-incoming defer` with the saved RAM size). Bounded: at most `size` members (0: no pool),
 * and their resident memory (supervisor + QEMU, read from /proc) at most `memoryMiB` (a pooled QEMU
 * has not built its machine yet, so it holds none of its guest's RAM). A shape whose members keep
 * dying is left alone for a minute. A member that exits (its QEMU killed) is dropped; a start that
 * took one in the meantime goes cold (no error for the user).
 *
 * The spare (`spare`, default 1, 0: none): one more supervisor started the same way, with its
 * modules and disk layers loaded but no QEMU, no run folder and nothing bound (its pool frame names
 * no shape). Any start that finds no member of its shape (the pool off, a shape not pooled, a
 * setting no pooled QEMU can have) takes it instead of spawning a supervisor, so it waits for QEMU's
 * start-up but not for a Node start-up. Its memory counts against `memoryMiB` like a member's; it
 * is started again after a start took it, and ends with the service (its stdin closes).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSupervisor, type WaitingSupervisor } from '../prespawn.js';
import { shapeKey, type MachineShape } from '../shape.js';

export interface PoolOptions {
  root: string;
  size: number;
  memoryMiB: number;
  log: (line: string) => void;
  /** Spare supervisors without QEMU kept (default 1; 0: none; at most 1). */
  spare?: number;
  /** A member's QEMU runs (it waits in its NBD handshake): a `service` event says so. */
  onReady?: (member: { supervisorPid?: number; qemuPid: number; shape: MachineShape }) => void;
  /** The spare has loaded its modules and waits for an input. */
  onSpareReady?: (spare: { supervisorPid?: number }) => void;
}

/** A member (with a shape: its QEMU) or the spare (no shape, no QEMU). */
interface Member { sup: WaitingSupervisor; key: string; shape?: MachineShape; startedAt: number; taken: boolean; ready: boolean; qemuPid?: number }

/** The spare's key in `failing` (no shape's key is this: shapeKey is a JSON object). */
const SPARE_KEY = 'spare';

/** Resident memory of a process, in MiB (0 when it is gone). */
function rssMiB(pid: number | undefined): number {
  if (!pid) return 0;
  try { return Number(readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ')[1]) * 4096 / 1048576; } catch { return 0; }
}

/** What one member holds, before it was measured. */
const MEMBER_ESTIMATE_MIB = 160;
/** What the spare (a Node process with its modules loaded) holds, before it was measured. */
const SPARE_ESTIMATE_MIB = 64;

const gone = (sup: WaitingSupervisor) => sup.child.exitCode !== null || sup.child.signalCode !== null;

export class WarmPool {
  private readonly members = new Set<Member>();
  /** Shapes in use, most recent first. */
  private wanted: Array<{ key: string; shape: MachineShape }> = [];
  private readonly failing = new Map<string, number>();
  private spareMember: Member | undefined;
  private closed = false;

  constructor(private readonly opts: PoolOptions) {}

  get size(): number { return this.opts.size; }

  /** A member of this shape, taken out of the pool (its QEMU may still be starting). */
  take(shape: MachineShape): WaitingSupervisor | undefined {
    const key = shapeKey(shape);
    for (const m of this.members) {
      if (m.key !== key || m.taken || gone(m.sup)) continue;
      m.taken = true;
      this.members.delete(m);
      return m.sup;
    }
    return undefined;
  }

  /** The spare supervisor (no QEMU), taken out of the pool; undefined when there is none alive. */
  takeSpare(): WaitingSupervisor | undefined {
    const m = this.spareMember;
    if (!m || m.taken || gone(m.sup)) return undefined;
    m.taken = true;
    this.spareMember = undefined;
    return m.sup;
  }

  /**
   * After a start: `shape` (if any) is in use: keep a member of it (the least recently used shape
   * gives way); and keep the spare. Whatever is missing is started now.
   */
  use(shape?: MachineShape): void {
    if (this.closed) return;
    if (shape && this.opts.size > 0) {
      const key = shapeKey(shape);
      this.wanted = [{ key, shape }, ...this.wanted.filter((w) => w.key !== key)].slice(0, this.opts.size);
    }
    this.refill();
  }

  /** Members, the spare and what they hold (`GET /v1/host`). */
  status(): {
    size: number; memoryMiB: number;
    members: Array<{ shape: MachineShape; supervisorPid?: number; qemuPid?: number; residentMiB: number }>;
    spare: { size: number; supervisorPid?: number; ready?: boolean; residentMiB?: number };
  } {
    const s = this.spareMember;
    return {
      size: this.opts.size, memoryMiB: this.opts.memoryMiB,
      members: [...this.members].map((m) => ({ shape: m.shape!, supervisorPid: m.sup.child.pid, ...(m.qemuPid ? { qemuPid: m.qemuPid } : {}), residentMiB: Math.round(this.memberMiB(m)) })),
      spare: { size: this.spareSize, ...(s ? { supervisorPid: s.sup.child.pid, ready: s.ready, residentMiB: Math.round(this.memberMiB(s)) } : {}) },
    };
  }

  /**
   * Every member and the spare end (empty input: a member discards its QEMU and exits); resolves
   * once they have exited (at most `waitMs`), so nothing of the pool outlives the service's exit.
   */
  close(waitMs = 5000): Promise<void> {
    this.closed = true;
    const all = this.held();
    this.members.clear();
    this.spareMember = undefined;
    const exited = all.map((m) => new Promise<void>((resolve) => {
      if (gone(m.sup)) { resolve(); return; }
      m.sup.child.once('exit', () => resolve());
      this.release(m);
    }));
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([Promise.all(exited).then(() => undefined), new Promise<void>((r) => { timer = setTimeout(r, waitMs); })]).finally(() => clearTimeout(timer));
  }

  /** The members and the spare. */
  private held(): Member[] {
    return this.spareMember ? [...this.members, this.spareMember] : [...this.members];
  }

  private get spareSize(): number { return Math.min(1, this.opts.spare ?? 1); }

  private memberMiB(m: Member): number {
    const measured = rssMiB(m.sup.child.pid) + rssMiB(m.qemuPid);
    return measured > 0 ? measured : m.shape ? MEMBER_ESTIMATE_MIB : SPARE_ESTIMATE_MIB;
  }

  /** Room under the memory cap for one more process holding `estimate` MiB (else logged). */
  private room(what: string, estimate: number): boolean {
    const held = this.held().reduce((sum, m) => sum + this.memberMiB(m), 0);
    if (held + estimate <= this.opts.memoryMiB) return true;
    this.opts.log(`pool: not starting ${what}: ${Math.round(held)} MiB held, cap ${this.opts.memoryMiB} MiB`);
    return false;
  }

  private refill(): void {
    if (this.closed) return;
    const wantedKeys = new Set(this.wanted.map((w) => w.key));
    for (const m of this.members) if (!wantedKeys.has(m.key)) { this.members.delete(m); this.release(m); }
    for (const w of this.wanted) {
      if ([...this.members].some((m) => m.key === w.key)) continue;
      if ((this.failing.get(w.key) ?? 0) > performance.now()) continue;
      if (this.room('a member', MEMBER_ESTIMATE_MIB)) this.spawn(w.key, w.shape);
    }
    if (this.spareSize > 0 && !this.spareMember && (this.failing.get(SPARE_KEY) ?? 0) <= performance.now() && this.room('the spare', SPARE_ESTIMATE_MIB)) {
      this.spareMember = this.spawn(SPARE_KEY, undefined);
    }
  }

  /** Start a member of `shape`, or with none the spare (a supervisor without QEMU). */
  private spawn(key: string, shape: MachineShape | undefined): Member | undefined {
    let sup: WaitingSupervisor;
    const what = shape ? 'a member' : 'the spare';
    // Its log waits in the pool's folder (the VM's run folder gets it when a start takes it).
    try { sup = spawnSupervisor(this.opts.root, {}, join(this.opts.root, '.pool')); } catch (e) { this.opts.log(`pool: cannot start ${what}: ${(e as Error).message}`); return undefined; }
    const m: Member = { sup, key, shape, startedAt: performance.now(), taken: false, ready: false };
    if (shape) this.members.add(m);
    // src/host/supervisor-main.ts: with a shape it starts QEMU; without one it only loads what a start needs.
    sup.child.stdin!.write(`${JSON.stringify({ pool: { root: this.opts.root, ...(shape ? { shape } : {}) } })}\n`);
    void sup.pooled.then((p) => {
      if (!p) return;
      m.ready = true;
      m.qemuPid = p.qemuPid;
      if (m.taken) return;
      if (shape && p.qemuPid) this.opts.onReady?.({ supervisorPid: sup.child.pid, qemuPid: p.qemuPid, shape });
      else if (!shape) this.opts.onSpareReady?.({ supervisorPid: sup.child.pid });
    });
    sup.child.once('exit', (code, signal) => {
      if (m.taken) return; // a start has it: its answer says how it went
      this.members.delete(m);
      if (this.spareMember === m) this.spareMember = undefined;
      if (this.closed) return;
      this.opts.log(`pool: ${what} exited before it was taken (code ${code}, signal ${signal})`);
      // Dying young again and again (QEMU cannot start this shape): leave the shape alone a while.
      if (performance.now() - m.startedAt < 10_000) this.failing.set(key, performance.now() + 60_000);
      setTimeout(() => this.refill(), 1000).unref();
    });
    sup.child.unref();
    return m;
  }

  private release(m: Member): void {
    m.taken = true;
    m.sup.child.stdin!.end();
  }
}
