/** Small async locks for layers: one FIFO mutex, and FIFO locks per key (block or unit number). */
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

export class KeyedLocks {
  private readonly tails = new Map<number, Promise<void>>();

  /** Run `fn` holding the lock of `keys` (several are taken in ascending order, so two callers never deadlock). */
  async run<T>(keys: number | number[], fn: () => Promise<T>): Promise<T> {
    const sorted = typeof keys === 'number' ? [keys] : [...new Set(keys)].sort((a, b) => a - b);
    const releases: Array<() => void> = [];
    try {
      for (const k of sorted) releases.push(await this.acquire(k));
      return await fn();
    } finally {
      for (const r of releases) r();
    }
  }

  private async acquire(key: number): Promise<() => void> {
    const prev = this.tails.get(key);
    let release!: () => void;
    const mine = new Promise<void>((r) => { release = r; });
    this.tails.set(key, mine);
    if (prev) await prev;
    return () => {
      release();
      if (this.tails.get(key) === mine) this.tails.delete(key);
    };
  }
}
