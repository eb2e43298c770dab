/**
 * Host data as a seed (`--seed DIR` of `medv workspace start`, a client's `seedFolders`): the
 * regular files of a folder, each hashed on its own 4 KiB grid (file offset 0, 4096, …; the last
 * block zero-padded), as the original's host indexing did before a first download. A file system
 * stores a file's data in whole clusters, so the blocks of a file the image also holds (an
 * installer, a document, a library) are found by id wherever the image has them.
 *
 * The walk is safe whatever the folder holds: the folder the user named is opened (its own link
 * followed: the user chose it), every entry below it through the descriptor of its folder
 * (src/core/fsio.ts openDirBeneath / openFileIn: no link is followed, the type is checked on the
 * descriptor, a FIFO never blocks the open), only regular files on the folder's file system are
 * read, at most HOST_SEED_LIMITS.maxEntries entries looked at (of any kind), maxFiles files, maxDepth folders deep, maxBlocks blocks and maxBytes
 * bytes of files (hashing reads them: a huge or sparse file stops the walk). A file
 * is read through the descriptor it was checked on, and reopened the same way (and checked to be
 * the same file: device and inode) when one of its blocks is used; every block is hashed again
 * before it is written (./seeds.ts), so a file changed meanwhile costs only a fetch.
 *
 * Ids of files of at least `cacheFrom` blocks are kept in the seed id cache (./seedcache.ts: by
 * device and inode, valid for one size, mtime and ctime, and the repository's id key; the folder is
 * pruned to its bounds after a scan); smaller files are cheaper to hash than to look up.
 */
import * as fs from 'node:fs';
import { MedvError } from '../core/errors.js';
import { openDirBeneath, openFileIn, preadAllSync, type PinnedDir, type PinnedFile } from '../core/fsio.js';
import { CKM_BLOCK_SIZE } from '../formats/ckm/index.js';
import { hashBlocks, type SeedReport } from './seeds.js';
import { type SeedIds, keyTag, pruneSeedCache, readSeedCache, stampOf, writeSeedCache } from './seedcache.js';

export const HOST_SEED_LIMITS = {
  /** Regular files hashed (or taken from the cache) per folder. */
  maxFiles: 100_000,
  /** Folders below the one named. */
  maxDepth: 32,
  /** Entries of any kind looked at (files, folders, links, empty files: what costs the walk time and memory whether or not it counts as a file). */
  maxEntries: 1_000_000,
  /** Non-zero blocks in all (20 bytes of memory each): 64 GiB of distinct data. */
  maxBlocks: 1 << 24,
  /** Bytes of files in all (what hashing may have to read: a huge or sparse file stops the walk). */
  maxBytes: 256 * 1024 ** 3,
  /** Files of at least this many blocks have their ids cached. */
  cacheFrom: 16,
};

export type HostSeedLimits = typeof HOST_SEED_LIMITS;

export interface HostFile { parts: string[]; name: string; dev: bigint; ino: bigint; ids: SeedIds }

/** Files kept open at once while their blocks are read. */
const OPEN_FILES = 32;

/** `buf` from file offset `offset`, zero-padded past the end of the file. */
function preadPadded(fd: number, buf: Buffer, offset: number): void {
  buf.fill(0, preadAllSync(fd, buf, offset));
}

export class HostDataSeed {
  readonly files: HostFile[] = [];
  private readonly open = new Map<number, PinnedFile>();
  private blocks = 0;
  private bytes = 0;
  /** Entries looked at, of any kind (HOST_SEED_LIMITS.maxEntries). */
  private entries = 0;
  private stopped = false;

  private constructor(readonly root: string, readonly report: SeedReport, private readonly limits: HostSeedLimits) {}

  /** Walk `root` and learn the ids of its files (from the cache, else hashed). */
  static async scan(root: string, o: { idKey: Buffer; cacheDir: string; report: SeedReport; limits?: Partial<HostSeedLimits> }): Promise<HostDataSeed> {
    const seed = new HostDataSeed(root, o.report, { ...HOST_SEED_LIMITS, ...o.limits });
    Object.assign(o.report, { files: 0, hashedFiles: 0, cachedFiles: 0, skipped: 0 });
    const top = openDirBeneath(root);
    try {
      await seed.walk(top, [], 0, o.idKey, keyTag(o.idKey), o.cacheDir);
    } finally {
      top.close();
    }
    pruneSeedCache(o.cacheDir);
    return seed;
  }

  private skip(): void { this.report.skipped = (this.report.skipped ?? 0) + 1; }

  private stop(why: string): void {
    this.stopped = true;
    this.report.limited = why;
  }

  private async walk(dir: PinnedDir, parts: string[], depth: number, key: Buffer, tag: Buffer, cacheDir: string): Promise<void> {
    // read one entry at a time, so that a folder of millions stops at the bound instead of being listed whole
    const entries: fs.Dirent[] = [];
    let listing: fs.Dir;
    try { listing = fs.opendirSync(dir.proc); } catch { this.skip(); return; }
    try {
      for (let e = listing.readSync(); e !== null; e = listing.readSync()) {
        if (++this.entries > this.limits.maxEntries) { this.stop(`stopped after ${this.limits.maxEntries} entries`); return; }
        entries.push(e);
      }
    } catch { this.skip(); return; } finally { listing.closeSync(); }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (this.stopped) return;
      if (e.isDirectory()) {
        if (depth >= this.limits.maxDepth) { this.skip(); continue; }
        let sub: PinnedDir;
        // no link followed, and on the same file system (checked on the descriptor)
        try { sub = openDirBeneath(dir.proc, [e.name]); } catch { this.skip(); continue; }
        try { await this.walk(sub, [...parts, e.name], depth + 1, key, tag, cacheDir); } finally { sub.close(); }
      } else if (e.isFile()) {
        if (this.files.length >= this.limits.maxFiles) { this.stop(`stopped after ${this.limits.maxFiles} files`); return; }
        let f: PinnedFile;
        try { f = openFileIn(dir, e.name); } catch { this.skip(); continue; }
        try { await this.addFile(f, parts, e.name, key, tag, cacheDir); } catch { this.skip(); } finally { f.close(); }
      } else this.skip(); // links, FIFOs, sockets, devices
    }
  }

  private async addFile(f: PinnedFile, parts: string[], name: string, key: Buffer, tag: Buffer, cacheDir: string): Promise<void> {
    const st = fs.fstatSync(f.fd, { bigint: true });
    const size = Number(st.size);
    if (size === 0) return;
    if (this.bytes + size > this.limits.maxBytes) { this.stop(`stopped at ${f.path}: the files add up to more than ${this.limits.maxBytes} bytes`); return; }
    this.bytes += size;
    const stamp = stampOf(st);
    const cached = Math.ceil(size / CKM_BLOCK_SIZE) >= this.limits.cacheFrom;
    let ids = cached ? readSeedCache(cacheDir, stamp, tag) : undefined;
    if (ids) this.report.cachedFiles! += 1;
    else {
      ids = await hashBlocks(size, async (buf, block) => preadPadded(f.fd, buf, block * CKM_BLOCK_SIZE), key);
      this.report.hashedFiles! += 1;
      // kept only when the file did not change while it was read (stat again through the descriptor)
      if (cached) writeSeedCache(cacheDir, f.proc, stamp, tag, ids);
    }
    if (this.blocks + ids.count > this.limits.maxBlocks) { this.stop(`stopped at ${this.limits.maxBlocks} blocks`); return; }
    this.blocks += ids.count;
    this.files.push({ parts, name, dev: st.dev, ino: st.ino, ids });
    this.report.files! += 1;
  }

  /** Block `block` of file `file` (4 KiB, zero-padded past its end), through a descriptor checked to be the file hashed. */
  async read(file: number, block: number): Promise<Buffer> {
    const f = this.pinned(file);
    const buf = Buffer.alloc(CKM_BLOCK_SIZE);
    preadPadded(f.fd, buf, block * CKM_BLOCK_SIZE);
    return buf;
  }

  private pinned(i: number): PinnedFile {
    const known = this.open.get(i);
    if (known) {
      this.open.delete(i);
      this.open.set(i, known);
      return known;
    }
    const h = this.files[i];
    const dir = openDirBeneath(this.root, h.parts);
    let f: PinnedFile;
    try { f = openFileIn(dir, h.name); } finally { dir.close(); }
    const st = fs.fstatSync(f.fd, { bigint: true });
    if (st.dev !== h.dev || st.ino !== h.ino) {
      f.close();
      throw new MedvError('ECHANGED', `${f.path} is another file than the one hashed`, { file: f.path });
    }
    if (this.open.size >= OPEN_FILES) {
      const [oldest, p] = this.open.entries().next().value as [number, PinnedFile];
      p.close();
      this.open.delete(oldest);
    }
    this.open.set(i, f);
    return f;
  }

  close(): void {
    for (const f of this.open.values()) f.close();
    this.open.clear();
  }
}
