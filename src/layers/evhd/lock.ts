/** Async locks for the EVHD layer: one FIFO mutex, and FIFO locks per unit number. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => { release = r; });
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

export class UnitLocks {
  private readonly tails = new Map<number, Promise<void>>();

  /** Run `fn` holding the locks of `units` (taken in ascending order, so two callers never deadlock). */
  async run<T>(units: number[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(units)].sort((a, b) => a - b);
    const releases: Array<() => void> = [];
    try {
      for (const u of sorted) releases.push(await this.acquire(u));
      return await fn();
    } finally {
      for (const r of releases) r();
    }
  }

  private async acquire(unit: number): Promise<() => void> {
    const prev = this.tails.get(unit);
    let release!: () => void;
    const mine = new Promise<void>((r) => { release = r; });
    this.tails.set(unit, mine);
    if (prev) await prev;
    return () => {
      release();
      if (this.tails.get(unit) === mine) this.tails.delete(unit);
    };
  }
}
