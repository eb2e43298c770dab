/**
 * Reading an image back out of its packs: every non-zero block of the virtual disk, authenticated,
 * decompressed and checked against its id. Used by verify (and by tests to unpack); the HTTP
 * fetch (src/transfer) reads the same records from ranges instead of local files.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import {
  type BlockPlace, CKM_BLOCK_SIZE, CKM_RUN_BYTES, PACK_HEADER_SIZE, type PackRef, type RunEntry, packFileName, parsePackHeader,
} from '../formats/ckm/index.js';
import { BlockCodec } from './block.js';
import type { IndexFile } from './indexfile.js';
import type { ImageKeys } from './keys.js';

/** The pack files an index names, opened from one folder and checked against the index. */
export class PackSet {
  /** Versions of the packs the index lists that are not in the folder (`open` with `allowMissing`). */
  readonly missing: number[];

  private constructor(private readonly files: Map<number, { path: string; fh: fs.promises.FileHandle; ref: PackRef }>, missing: number[] = []) {
    this.missing = missing;
  }

  /**
   * Open `<name>_<v>.ckm` in `dir` for every pack the (verified) index lists; each must have the
   * image id and salt the index says, and exactly the length it says (ETRUNCATED when shorter).
   * `allowMissing`: a pack that does not exist is listed in `missing` instead (a folder pre-staged
   * with the newest version alone); `has` says which are here.
   */
  static async open(dir: string, name: string, imageId: Buffer, packs: PackRef[], opts: { allowMissing?: boolean } = {}): Promise<PackSet> {
    const files = new Map<number, { path: string; fh: fs.promises.FileHandle; ref: PackRef }>();
    const missing: number[] = [];
    try {
      for (const ref of packs) {
        const path = join(dir, packFileName(name, ref.version));
        let fh: fs.promises.FileHandle;
        try { fh = await fs.promises.open(path, 'r'); } catch (e) {
          if (opts.allowMissing && (e as NodeJS.ErrnoException).code === 'ENOENT') { missing.push(ref.version); continue; }
          throw fromSystemError(e, path);
        }
        files.set(ref.version, { path, fh, ref });
        const st = await fh.stat();
        const head = Buffer.alloc(Math.min(st.size, PACK_HEADER_SIZE));
        await fh.read(head, 0, head.length, 0);
        const h = parsePackHeader(head, { file: path });
        if (h.version !== ref.version) throw new MedvError('ECORRUPT', `pack says it is version ${h.version}, the index expects ${ref.version}`, { file: path, offset: 12 });
        if (!h.imageId.equals(imageId)) throw new MedvError('ECORRUPT', 'pack belongs to another image', { file: path, offset: 16 });
        if (!h.salt.equals(ref.salt)) throw new MedvError('ECORRUPT', 'pack salt differs from the index (a pack of another packing run)', { file: path, offset: 32 });
        if (st.size < ref.length) throw new MedvError('ETRUNCATED', `pack is ${st.size} bytes, the index says ${ref.length}`, { file: path, offset: st.size });
        if (st.size > ref.length) throw new MedvError('ECORRUPT', `pack has ${st.size - ref.length} bytes past the end the index says`, { file: path, offset: ref.length });
      }
    } catch (e) {
      for (const f of files.values()) await f.fh.close().catch(() => undefined);
      throw e;
    }
    return new PackSet(files, missing);
  }

  /** Whether pack `version` is open here. */
  has(version: number): boolean { return this.files.has(version); }

  path(version: number): string { return this.get(version).path; }
  salt(version: number): Buffer { return this.get(version).ref.salt; }

  private get(version: number) {
    const f = this.files.get(version);
    if (!f) throw new MedvError('ECORRUPT', `pack ${version} is not listed in the index`);
    return f;
  }

  async read(place: BlockPlace): Promise<Buffer> {
    const f = this.get(place.pack);
    const b = Buffer.alloc(place.length);
    let done = 0;
    while (done < place.length) {
      const { bytesRead } = await f.fh.read(b, done, place.length - done, place.offset + done);
      if (bytesRead === 0) throw new MedvError('ETRUNCATED', 'pack ended inside a block', { file: f.path, offset: place.offset + done });
      done += bytesRead;
    }
    return b;
  }

  async close(): Promise<void> {
    for (const f of this.files.values()) await f.fh.close().catch(() => undefined);
    this.files.clear();
  }
}

/** Consecutive entries stored back to back in one pack, read with one request. */
function spans(entries: RunEntry[]): RunEntry[][] {
  const out: RunEntry[][] = [];
  for (const e of entries) {
    const cur = out[out.length - 1];
    const last = cur?.[cur.length - 1];
    if (last && last.place.pack === e.place.pack && last.place.offset + last.place.length === e.place.offset) cur.push(e);
    else out.push([e]);
  }
  return out;
}

export interface ImageBlock {
  /** Byte offset in the virtual disk. */
  offset: number;
  /** The 4 KiB plaintext (the last block of a disk whose size is not a multiple of 4 KiB is zero-padded). */
  data: Buffer;
  entry: RunEntry;
}

/**
 * Every non-zero block of a verified index, in LBA order, each authenticated and checked against
 * its id. Memory: one run's stored blocks at a time.
 */
export async function* readImageBlocks(index: IndexFile, packs: PackSet, keys: ImageKeys): AsyncGenerator<ImageBlock> {
  const codec = new BlockCodec(keys);
  const decode = async (e: { id: Buffer; kind: RunEntry['kind']; place: BlockPlace }, stored: Buffer, base?: { id: Buffer; data: Buffer }) =>
    codec.decode(stored, e.kind, e.id, packs.salt(e.place.pack), { file: packs.path(e.place.pack), offset: e.place.offset }, base);
  for await (const { run, record } of index.runs()) {
    for (const span of spans(record.entries)) {
      const first = span[0].place;
      const last = span[span.length - 1].place;
      const bytes = await packs.read({ pack: first.pack, offset: first.offset, length: last.offset + last.length - first.offset });
      for (const e of span) {
        const stored = bytes.subarray(e.place.offset - first.offset, e.place.offset - first.offset + e.place.length);
        let base: { id: Buffer; data: Buffer } | undefined;
        if (e.kind === 'delta') {
          const b = e.base!;
          base = { id: b.id, data: await decode(b, await packs.read(b.place)) };
        }
        yield { offset: run * CKM_RUN_BYTES + e.slot * CKM_BLOCK_SIZE, data: await decode(e, stored, base), entry: e };
      }
    }
  }
}
