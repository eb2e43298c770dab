/**
 * The CPU-heavy, order-free half of packing one run: zero test, keyed id and zstd of every block.
 * Runs in worker threads (worker.ts) or inline; the order-dependent half (dedup, placement,
 * encryption with the pack offset in the nonce) stays on the main thread.
 *
 * A run travels as two buffers that are allocated once and reused for the whole pack (a `RunJob`):
 * `data`, the run's plaintext as read from the disk, and `prep`, what preparing it gives, laid out
 * in one buffer so that both move between threads by transfer (no copy):
 *
 *   off    size            field
 *   0      256 x 16        block ids (zeros for a zero block)
 *   4096   256 x u32 LE    payload length per slot, 0 = all-zero block
 *   5120   256             KIND_CODE per slot (zstd or raw)
 *   5376   <= 1 MiB + 1 KiB payloads of the non-zero blocks, in slot order, back to back
 */
import * as fs from 'node:fs';
import { sodium } from '../core/sodium.js';
import { CKM_BLOCK_SIZE, CKM_ID_BYTES, CKM_RUN_BLOCKS, CKM_RUN_BYTES, KIND_CODE } from '../formats/ckm/index.js';
import { compressInto } from '../formats/ckm/zstd.js';

export const PREP_LENGTHS = CKM_RUN_BLOCKS * CKM_ID_BYTES;
export const PREP_KINDS = PREP_LENGTHS + CKM_RUN_BLOCKS * 4;
export const PREP_PAYLOADS = PREP_KINDS + CKM_RUN_BLOCKS;
/** The payload area has room for a zstd frame of the worst case (compressBound) past any 255 raw blocks. */
export const PREP_BYTES = PREP_PAYLOADS + CKM_RUN_BYTES + 1024;

/** One run's buffers, reused run after run. */
export class RunJob {
  data: Buffer;
  prep: Buffer;
  /** `bytes`: the largest run (0: a job with no buffers, whose every block is zero). */
  constructor(bytes = CKM_RUN_BYTES) {
    this.data = Buffer.allocUnsafeSlow(bytes);
    this.prep = bytes ? Buffer.allocUnsafeSlow(PREP_BYTES) : Buffer.alloc(PREP_PAYLOADS);
  }
  /** Bytes of `data` that hold the run (the last run of a disk may be shorter). */
  length = 0;
  /** The parts of the run that hold data, [start, end) relative to the run (the rest reads as zeros). */
  spans: Array<[number, number]> = [];
  /** Where the run's bytes are in a file, when the worker reads them itself (else `data` holds them). */
  file?: { fd: number; position: number };

  lengths(): Uint32Array { return new Uint32Array(this.prep.buffer, this.prep.byteOffset + PREP_LENGTHS, CKM_RUN_BLOCKS); }
  kinds(): Buffer { return this.prep.subarray(PREP_KINDS, PREP_KINDS + CKM_RUN_BLOCKS); }
  /** The id of `slot` (a view: valid until the job is reused). */
  id(slot: number): Buffer { return this.prep.subarray(slot * CKM_ID_BYTES, (slot + 1) * CKM_ID_BYTES); }
  /** Mark the whole run as zeros without preparing it (the device said so). */
  zero(): void { this.lengths().fill(0); }
}

const ZERO = Buffer.alloc(CKM_BLOCK_SIZE);

/**
 * Fill `data` with the first `length` bytes at `position` of file `fd`, reading only `spans` (the
 * rest zero; zeros past the end of the file too). In a worker: the file is the main thread's open
 * file (a descriptor is the process's), read with pread.
 */
export function readSpans(fd: number, position: number, data: Buffer, length: number, spans: ReadonlyArray<readonly [number, number]>): void {
  const whole = spans.length === 1 && spans[0][0] === 0 && spans[0][1] === length;
  if (!whole) data.fill(0, 0, length);
  for (const [a, b] of spans) {
    for (let at = a; at < b;) {
      const n = fs.readSync(fd, data, at, b - at, position + at);
      if (n === 0) { data.fill(0, at, b); break; }
      at += n;
    }
  }
}

/**
 * Prepare the first `length` bytes of `data` into `prep` (layout above). Bytes of the last block
 * past `length` are zeroed in `data` first (a disk whose size is not a multiple of 4 KiB).
 */
export function prepareRun(data: Buffer, length: number, prep: Buffer, idKey: Buffer, level?: number): void {
  const slots = Math.ceil(length / CKM_BLOCK_SIZE);
  if (length < slots * CKM_BLOCK_SIZE) data.fill(0, length, slots * CKM_BLOCK_SIZE);
  const lengths = new Uint32Array(prep.buffer, prep.byteOffset + PREP_LENGTHS, CKM_RUN_BLOCKS);
  lengths.fill(0);
  let at = PREP_PAYLOADS;
  for (let slot = 0; slot < slots; slot++) {
    const block = data.subarray(slot * CKM_BLOCK_SIZE, (slot + 1) * CKM_BLOCK_SIZE);
    if (block.equals(ZERO)) continue;
    sodium.crypto_generichash(prep.subarray(slot * CKM_ID_BYTES, (slot + 1) * CKM_ID_BYTES), block, idKey);
    let n = compressInto(prep.subarray(at), block, level);
    if (n >= CKM_BLOCK_SIZE) {
      block.copy(prep, at);
      n = CKM_BLOCK_SIZE;
      prep[PREP_KINDS + slot] = KIND_CODE.raw;
    } else {
      prep[PREP_KINDS + slot] = KIND_CODE.zstd;
    }
    lengths[slot] = n;
    at += n;
  }
}
