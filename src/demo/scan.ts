/** Whole-tree scans for bytes that must not be at rest (the guest's plaintext marker, keys). */
import { closeSync, lstatSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';

/** Every regular file under `dir` (symlinks are not followed). */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let names: string[];
    try { names = readdirSync(d); } catch { return; }
    for (const n of names) {
      const p = join(d, n);
      let st;
      try { st = lstatSync(p); } catch { continue; }
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** The needles found in `file` (read in 1 MiB chunks, matches across chunk borders included). */
function needlesIn(file: string, needles: Buffer[]): Buffer[] {
  const longest = Math.max(...needles.map((n) => n.length));
  const found = new Set<Buffer>();
  const fd = openSync(file, 'r');
  try {
    const chunk = Buffer.alloc(1 << 20);
    let carry = Buffer.alloc(0);
    for (let pos = 0; ;) {
      const n = readSync(fd, chunk, 0, chunk.length, pos);
      if (n === 0) break;
      pos += n;
      const window = Buffer.concat([carry, chunk.subarray(0, n)]);
      for (const needle of needles) if (window.includes(needle)) found.add(needle);
      carry = window.subarray(Math.max(0, window.length - longest + 1));
    }
  } finally {
    closeSync(fd);
  }
  return [...found];
}

/** Files under each root that hold any of the needles, with which. */
export function scanTrees(roots: string[], needles: Record<string, Buffer>): { file: string; what: string[] }[] {
  const list = Object.entries(needles);
  const hits: { file: string; what: string[] }[] = [];
  for (const root of roots) {
    for (const f of filesUnder(root)) {
      const found = needlesIn(f, list.map(([, b]) => b));
      if (found.length) hits.push({ file: f, what: list.filter(([, b]) => found.includes(b)).map(([k]) => k) });
    }
  }
  return hits;
}
