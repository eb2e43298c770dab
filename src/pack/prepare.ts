/**
 * The CPU-heavy, order-free half of packing one run: zero test, keyed id and zstd of every block.
 * Runs in worker threads (worker.ts) or inline; the order-dependent half (dedup, placement,
 * encryption with the pack offset in the nonce) stays on the main thread.
 */
import { sodium } from '../core/sodium.js';
import { CKM_BLOCK_SIZE, CKM_ID_BYTES, KIND_CODE, zstdCompress } from '../formats/ckm/index.js';

export interface PreparedRun {
  /** 16 bytes per slot (zeros for a zero block). */
  ids: Uint8Array;
  /** Payload length per slot; 0 = all-zero block. */
  lengths: Uint32Array;
  /** KIND_CODE per slot (zstd or raw). */
  kinds: Uint8Array;
  /** The payloads of the non-zero blocks, in slot order, back to back. */
  payloads: Uint8Array;
}

const ZERO = Buffer.alloc(CKM_BLOCK_SIZE);

export function prepareRun(data: Buffer, idKey: Buffer, level: number): PreparedRun {
  const slots = Math.ceil(data.length / CKM_BLOCK_SIZE);
  const ids = Buffer.alloc(slots * CKM_ID_BYTES);
  const lengths = new Uint32Array(slots);
  const kinds = new Uint8Array(slots);
  const parts: Buffer[] = [];
  for (let slot = 0; slot < slots; slot++) {
    let block = data.subarray(slot * CKM_BLOCK_SIZE, (slot + 1) * CKM_BLOCK_SIZE);
    if (block.length < CKM_BLOCK_SIZE) block = Buffer.concat([block, ZERO.subarray(block.length)]);
    if (block.equals(ZERO)) continue;
    sodium.crypto_generichash(ids.subarray(slot * CKM_ID_BYTES, (slot + 1) * CKM_ID_BYTES), block, idKey);
    let payload = zstdCompress(block, level);
    kinds[slot] = KIND_CODE.zstd;
    if (payload.length >= CKM_BLOCK_SIZE) { payload = block; kinds[slot] = KIND_CODE.raw; }
    lengths[slot] = payload.length;
    parts.push(Buffer.from(payload));
  }
  return { ids, lengths, kinds, payloads: Buffer.concat(parts) };
}
