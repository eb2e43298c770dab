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
  /** A member's QEMU runs (it waits in its NBD handshake): a `service` event says so. */
  onReady?: (member: { supervisorPid?: number; qemuPid: number; shape: MachineShape }) => void;
}

interface Member { sup: WaitingSupervisor; key: string; shape: MachineShape; startedAt: number; taken: boolean; qemuPid?: number }

/** Resident memory of a process, in MiB (0 when it is gone). */
function rssMiB(pid: number | undefined): number {
  if (!pid) return 0;
  try { return Number(readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ')[1]) * 4096 / 1048576; } catch { return 0; }
}

/** What one member holds, before it was measured. */
const MEMBER_ESTIMATE_MIB = 160;

export class WarmPool {
  private readonly members = new Set<Member>();
  /** Shapes in use, most recent first. */
  private wanted: Array<{ key: string; shape: MachineShape }> = [];
  private readonly failing = new Map<string, number>();
  private closed = false;

  constructor(private readonly opts: PoolOptions) {}

  get size(): number { return this.opts.size; }

  /** A member of this shape, taken out of the pool (its QEMU may still be starting). */
  take(shape: MachineShape): WaitingSupervisor | undefined {
    const key = shapeKey(shape);
    for (const m of this.members) {
      if (m.key !== key || m.taken || m.sup.child.exitCode !== null || m.sup.child.signalCode !== null) continue;
      m.taken = true;
      this.members.delete(m);
      return m.sup;
    }
    return undefined;
  }

  /** `shape` is in use: keep a member of it (the least recently used shape gives way), started now. */
  use(shape: MachineShape): void {
    if (this.opts.size <= 0 || this.closed) return;
    const key = shapeKey(shape);
    this.wanted = [{ key, shape }, ...this.wanted.filter((w) => w.key !== key)].slice(0, this.opts.size);
    this.refill();
  }

  /** Members and what they hold (`GET /v1/host`). */
  status(): { size: number; memoryMiB: number; members: Array<{ shape: MachineShape; supervisorPid?: number; qemuPid?: number; residentMiB: number }> } {
    return {
      size: this.opts.size, memoryMiB: this.opts.memoryMiB,
      members: [...this.members].map((m) => ({ shape: m.shape, supervisorPid: m.sup.child.pid, ...(m.qemuPid ? { qemuPid: m.qemuPid } : {}), residentMiB: Math.round(this.memberMiB(m)) })),
    };
  }

  /** Every member ends (empty input: it discards its QEMU and exits). */
  close(): void {
    this.closed = true;
    for (const m of this.members) this.release(m);
    this.members.clear();
  }

  private memberMiB(m: Member): number {
    const measured = rssMiB(m.sup.child.pid) + rssMiB(m.qemuPid);
    return measured > 0 ? measured : MEMBER_ESTIMATE_MIB;
  }

  private refill(): void {
    const wantedKeys = new Set(this.wanted.map((w) => w.key));
    for (const m of this.members) if (!wantedKeys.has(m.key)) { this.members.delete(m); this.release(m); }
    for (const w of this.wanted) {
      if ([...this.members].some((m) => m.key === w.key)) continue;
      if ((this.failing.get(w.key) ?? 0) > Date.now()) continue;
      const held = [...this.members].reduce((sum, m) => sum + this.memberMiB(m), 0);
      if (held + MEMBER_ESTIMATE_MIB > this.opts.memoryMiB) { this.opts.log(`pool: not starting a member: ${Math.round(held)} MiB held, cap ${this.opts.memoryMiB} MiB`); continue; }
      this.spawn(w.key, w.shape);
    }
  }

  private spawn(key: string, shape: MachineShape): void {
    let sup: WaitingSupervisor;
    // Its log waits in the pool's folder (the VM's run folder gets it when a start takes it).
    try { sup = spawnSupervisor(this.opts.root, {}, join(this.opts.root, '.pool')); } catch (e) { this.opts.log(`pool: cannot start a member: ${(e as Error).message}`); return; }
    const m: Member = { sup, key, shape, startedAt: Date.now(), taken: false };
    this.members.add(m);
    sup.child.stdin!.write(`${JSON.stringify({ pool: { root: this.opts.root, shape } })}\n`);
    void sup.pooled.then((p) => {
      if (!p) return;
      m.qemuPid = p.qemuPid;
      if (!m.taken) this.opts.onReady?.({ supervisorPid: sup.child.pid, qemuPid: p.qemuPid, shape });
    });
    sup.child.once('exit', (code, signal) => {
      if (m.taken) return; // a start has it: its answer says how it went
      this.members.delete(m);
      if (this.closed) return;
      this.opts.log(`pool: a member exited before it was taken (code ${code}, signal ${signal})`);
      // Dying young again and again (QEMU cannot start this shape): leave the shape alone a while.
      if (Date.now() - m.startedAt < 10_000) this.failing.set(key, Date.now() + 60_000);
      setTimeout(() => this.refill(), 1000).unref();
    });
    sup.child.unref();
  }

  private release(m: Member): void {
    m.taken = true;
    m.sup.child.stdin!.end();
  }
}
