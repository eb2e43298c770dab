/**
 * Realistic test disks: files from /usr laid out on the 4 KiB grid as a file system would (each
 * file starts on a block boundary, its tail padded with zeros), free space left as zeros; and a
 * "next version" of such a disk with a share of its used blocks rewritten in scattered places
 * (half small in-place edits, half replaced by other file content).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, writeFileSync, writeSync, ftruncateSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { prng } from '../conformance/blockdevice.js';

const BLOCK = 4096;

/**
 * Regular files under `roots` in a stable order (skipping unreadable ones), until their sizes add
 * up to `bytes` (the walk stops there: /usr is large).
 */
export function usrFiles(roots: string[], bytes: number, skipFirst = 0): string[] {
  const out: string[] = [];
  let total = 0;
  let skipped = 0;
  const walk = (dir: string) => {
    if (total >= bytes) return;
    let ents;
    try { ents = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)); } catch { return; }
    for (const e of ents) {
      if (total >= bytes) return;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        let size = 0;
        try { size = statSync(p).size; } catch { continue; }
        if (size === 0 || size > 8 * 1024 * 1024) continue;
        if (skipped++ < skipFirst) continue;
        out.push(p);
        total += size;
      }
    }
  };
  for (const r of roots) walk(r);
  return out;
}

/**
 * Write a raw disk of `size` bytes at `path` holding files from /usr on the 4 KiB grid, filling
 * about `fill` of it (the rest zeros, in gaps between files). Deterministic for a given seed.
 * Returns the number of non-zero blocks written.
 */
export function makeUsrDisk(path: string, size: number, fill = 0.5, seed = 1): number {
  const rnd = prng(seed);
  const files = usrFiles(['/usr/lib', '/usr/share', '/usr/bin'], size * fill * 1.5, Math.floor(rnd() * 500));
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    const blocks = size / BLOCK;
    const target = Math.floor(blocks * fill);
    let at = 0;
    let used = 0;
    let i = 0;
    while (used < target && at < blocks) {
      const f = files[i++ % files.length];
      let data: Buffer;
      try { data = readFileSync(f); } catch { continue; }
      const n = Math.ceil(data.length / BLOCK);
      if (at + n > blocks) break;
      writeSync(fd, data, 0, data.length, at * BLOCK);
      used += n;
      at += n;
      // a free gap now and then, as a file system leaves
      if (rnd() < 0.2) at += 1 + Math.floor(rnd() * 16);
    }
    return used;
  } finally {
    closeSync(fd);
  }
}

/** Where replaced blocks come from by default: text (headers, documentation, perl modules). */
export const TEXT_SOURCES = ['/usr/include', '/usr/share/doc', '/usr/share/perl'];
/** Binary content unrelated to a disk made by makeUsrDisk (shared libraries, read from the end of /usr/lib). */
export const BINARY_SOURCES = ['/usr/lib/x86_64-linux-gnu'];

/**
 * Rewrite `share` of the non-zero blocks of a raw disk in place: half get a few bytes changed,
 * half are replaced by a block of another file under `sources`. Returns the byte offsets changed.
 */
export function mutateDisk(path: string, share = 0.03, seed = 2, sources: string[] = TEXT_SOURCES): number[] {
  const rnd = prng(seed);
  const fd = openSync(path, 'r+');
  const changed: number[] = [];
  try {
    const size = statSync(path).size;
    const buf = Buffer.alloc(BLOCK);
    const nonZero: number[] = [];
    for (let off = 0; off < size; off += BLOCK) {
      readSync(fd, buf, 0, BLOCK, off);
      if (buf.some((x) => x !== 0)) nonZero.push(off);
    }
    const files = usrFiles(sources, 64 * 1024 * 1024);
    const count = Math.max(2, Math.floor(nonZero.length * share));
    const picked = new Set<number>();
    while (picked.size < count) picked.add(nonZero[Math.floor(rnd() * nonZero.length)]);
    let k = 0;
    for (const off of [...picked].sort((a, b) => a - b)) {
      readSync(fd, buf, 0, BLOCK, off);
      if (k++ % 2 === 0) {
        for (let j = 0; j < 4; j++) buf[Math.floor(rnd() * BLOCK)] ^= 1 + Math.floor(rnd() * 255);
      } else {
        // a block of another file, from anywhere in it (not only its first block)
        const f = files[Math.floor(rnd() * files.length)];
        const data = readFileSync(f);
        const from = Math.floor(rnd() * Math.ceil(data.length / BLOCK)) * BLOCK;
        buf.fill(0);
        data.copy(buf, 0, from, Math.min(from + BLOCK, data.length));
        buf[BLOCK - 1] ^= 0x5a; // never all zero
      }
      writeSync(fd, buf, 0, BLOCK, off);
      changed.push(off);
    }
    return changed;
  } finally {
    closeSync(fd);
  }
}

/** Size of each block compressed alone by the zstd command (level 3, one frame per block), summed. */
export function zstdAlone(raw: string, offsets: number[], scratch: string): number {
  mkdirSync(scratch);
  const fd = openSync(raw, 'r');
  const files: string[] = [];
  try {
    for (const off of offsets) {
      const b = Buffer.alloc(4096);
      readSync(fd, b, 0, 4096, off);
      files.push(join(scratch, `b${off}`));
      writeFileSync(files[files.length - 1], b);
    }
  } finally { closeSync(fd); }
  const r = spawnSync('zstd', ['-3', '-c', '-q', '--no-check', ...files], { maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, String(r.stderr));
  return r.stdout.length;
}
