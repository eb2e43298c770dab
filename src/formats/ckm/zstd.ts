/**
 * zstd for small buffers (4 KiB blocks, run records) through zstd-napi's low-level binding, with
 * every decompression bounded: the output buffer is exactly the most the caller accepts, so a
 * hostile frame that claims more fails instead of allocating.
 */
import { createRequire } from 'node:module';
import type * as Binding from 'zstd-napi/binding.js';
import { MedvError } from '../../core/errors.js';

const z = createRequire(import.meta.url)('zstd-napi/binding') as typeof Binding;

/** Default level for blocks: ~146 MB/s per core at level 3 on 4 KiB blocks, measured on these machines. */
export const ZSTD_LEVEL = 3;
/** Frames we read never need a window past 64 KiB (their content is at most that). */
const WINDOW_LOG_MAX = 16;

/**
 * Whole 4 KiB blocks of a pack: zstd's fast strategy with its tables sized for one block (window,
 * hash and chain of 4 KiB; matches from 6 bytes). Packing a 768 MiB ext4 image of /usr files took
 * 5.7 s of CPU against 6.1-6.6 s at level 3 (paired runs, 2 workers) for 3.8% more bytes (225.4
 * against 217.2 MB): compressing every block on its own is most of a pack's CPU time.
 */
const BLOCK_PARAMS: Array<[keyof typeof z.CParameter, number]> = [
  ['windowLog', 12], ['hashLog', 12], ['chainLog', 12], ['searchLog', 1], ['minMatch', 6], ['strategy', 1],
];

let cctx: Binding.CCtx | undefined;
let blockCctx: Binding.CCtx | undefined;
let dctx: Binding.DCtx | undefined;

function c(): Binding.CCtx { return (cctx ??= new z.CCtx()); }
function d(): Binding.DCtx {
  if (!dctx) {
    dctx = new z.DCtx();
    dctx.setParameter(z.DParameter.windowLogMax, WINDOW_LOG_MAX);
  }
  return dctx;
}

export function compressBound(n: number): number { return z.compressBound(n); }

/** One zstd frame of `src`. */
export function zstdCompress(src: Buffer, level = ZSTD_LEVEL, dict?: Buffer): Buffer {
  const dst = Buffer.allocUnsafe(z.compressBound(src.length));
  const n = dict ? c().compressUsingDict(dst, src, dict, level) : c().compress(dst, src, level);
  return dst.subarray(0, n);
}

/**
 * One zstd frame of `src` written into `dst` (room for compressBound(src.length)); returns its
 * length. Without `level`, with the parameters for whole blocks (BLOCK_PARAMS).
 */
export function compressInto(dst: Uint8Array, src: Buffer, level?: number): number {
  if (level !== undefined) return c().compress(dst, src, level);
  if (!blockCctx) {
    const cc = new z.CCtx();
    for (const [k, v] of BLOCK_PARAMS) cc.setParameter(z.CParameter[k], v);
    blockCctx = cc;
  }
  return blockCctx.compress2(dst, src);
}

/**
 * Decompress `src` (one or more frames) into at most `max` bytes. Returns the bytes, or throws
 * MedvError(`code`) naming `what` when the input is not valid zstd or would exceed `max`.
 */
export function zstdDecompress(src: Buffer, max: number, what: string, dict?: Buffer, data: { file?: string; offset?: number } = {}): Buffer {
  const dst = Buffer.alloc(max);
  let n: number;
  try {
    n = dict ? d().decompressUsingDict(dst, src, dict) : d().decompress(dst, src);
  } catch (e) {
    throw new MedvError('ECORRUPT', `${what} does not decompress: ${(e as Error).message}`, data);
  }
  return dst.subarray(0, n);
}
