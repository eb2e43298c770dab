/**
 * The `.ckm` pack file: a 64-byte header, then stored blocks back to back (no framing: the index
 * holds every block's offset and length). Pure parse/serialize, no I/O, no crypto.
 *
 * Header (little-endian):
 *   off size field
 *     0    8 magic "MEDVCKM\0"
 *     8    2 format version (1)
 *    10    2 header length (64)
 *    12    4 image version number (the N of <NAME>_<N>.ckm)
 *    16   16 image id
 *    32   16 salt: random per pack file, the first 16 bytes of every block's nonce
 *    48   16 reserved, zero
 *
 * A stored block is XChaCha20-Poly1305(image content key, nonce, payload, associated data):
 *   nonce           = salt (16) || u64 LE offset of the block in this file (8)
 *   associated data = image id (16) || block id (16) || kind (1) || base block id (16, zeros unless delta)
 *   payload         = kind zstd:  one zstd frame of the 4 KiB block
 *                     kind raw:   the 4 KiB block as is (when zstd does not make it smaller)
 *                     kind delta: one zstd frame of the block compressed with the base block as a
 *                                 raw-content dictionary (see DELTA_DICT_PREFIX)
 * The offset in the nonce makes every nonce of a pack distinct, the random salt every pack; so no
 * nonce is ever used twice under one key, even when a version is packed again.
 */
import { MedvError } from '../../core/errors.js';
import {
  type BlockKind, type CkmContext, CKM_ID_BYTES, CKM_IMAGE_ID_BYTES, CKM_MAX_VERSION, KIND_CODE, Reader, checkLength, ckmError,
} from './common.js';

export const PACK_MAGIC = Buffer.from('MEDVCKM\0', 'latin1');
export const PACK_FORMAT_VERSION = 1;
export const PACK_HEADER_SIZE = 64;
export const PACK_SALT_BYTES = 16;
export const BLOCK_NONCE_BYTES = 24;
export const BLOCK_AAD_BYTES = CKM_IMAGE_ID_BYTES + CKM_ID_BYTES + 1 + CKM_ID_BYTES;

/**
 * Prefix of the dictionary a delta block is compressed against: 8 zero bytes then the base block.
 * zstd treats a dictionary that starts with its dictionary magic as a structured dictionary;
 * the prefix makes every base block raw content, whatever its first bytes.
 */
export const DELTA_DICT_PREFIX = Buffer.alloc(8);

export interface PackHeader {
  version: number;
  imageId: Buffer;
  salt: Buffer;
}

export function serializePackHeader(h: PackHeader): Buffer {
  checkLength('image id', h.imageId, CKM_IMAGE_ID_BYTES);
  checkLength('pack salt', h.salt, PACK_SALT_BYTES);
  if (!Number.isSafeInteger(h.version) || h.version < 1 || h.version > CKM_MAX_VERSION) throw new MedvError('EINVAL_ARG', `pack version ${h.version} out of range`);
  const b = Buffer.alloc(PACK_HEADER_SIZE);
  PACK_MAGIC.copy(b, 0);
  b.writeUInt16LE(PACK_FORMAT_VERSION, 8);
  b.writeUInt16LE(PACK_HEADER_SIZE, 10);
  b.writeUInt32LE(h.version, 12);
  h.imageId.copy(b, 16);
  h.salt.copy(b, 32);
  return b;
}

/** Parse the first 64 bytes of a .ckm file. */
export function parsePackHeader(buf: Buffer, ctx?: CkmContext): PackHeader {
  const r = new Reader(buf, ctx, 'pack header');
  if (buf.length < PACK_MAGIC.length || !buf.subarray(0, PACK_MAGIC.length).equals(PACK_MAGIC)) {
    if (buf.length < PACK_MAGIC.length && PACK_MAGIC.subarray(0, buf.length).equals(buf)) r.need(PACK_HEADER_SIZE);
    throw ckmError('EFORMAT', 'not a medv pack (bad magic)', ctx, 0);
  }
  r.need(PACK_HEADER_SIZE);
  r.pos = 8;
  const fmt = r.u16();
  if (fmt !== PACK_FORMAT_VERSION) throw ckmError('EVERSION', `pack format version ${fmt} is not supported (expected ${PACK_FORMAT_VERSION})`, ctx, 8);
  const hlen = r.u16();
  if (hlen !== PACK_HEADER_SIZE) throw ckmError('EFORMAT', `pack header length ${hlen}, expected ${PACK_HEADER_SIZE}`, ctx, 10);
  const version = r.u32();
  if (version < 1 || version > CKM_MAX_VERSION) throw ckmError('EFORMAT', `pack version ${version} out of range`, ctx, 12);
  const imageId = r.bytes(CKM_IMAGE_ID_BYTES);
  const salt = r.bytes(PACK_SALT_BYTES);
  const reserved = r.bytes(16);
  if (reserved.some((x) => x !== 0)) throw ckmError('EFORMAT', 'reserved header bytes are not zero', ctx, 48);
  return { version, imageId, salt };
}

/** The nonce of the block stored at `offset` of a pack with `salt`. */
export function blockNonce(salt: Buffer, offset: number): Buffer {
  checkLength('pack salt', salt, PACK_SALT_BYTES);
  const n = Buffer.alloc(BLOCK_NONCE_BYTES);
  salt.copy(n, 0);
  n.writeBigUInt64LE(BigInt(offset), PACK_SALT_BYTES);
  return n;
}

/** The associated data that binds a stored block to its image, its id, its kind and its base. */
export function blockAad(imageId: Buffer, blockId: Buffer, kind: BlockKind, baseId?: Buffer): Buffer {
  const a = Buffer.alloc(BLOCK_AAD_BYTES);
  writeBlockAad(a, imageId, blockId, kind, baseId);
  return a;
}

/** blockAad into `a` (BLOCK_AAD_BYTES, reused by a caller that seals many blocks). */
export function writeBlockAad(a: Buffer, imageId: Buffer, blockId: Buffer, kind: BlockKind, baseId?: Buffer): void {
  checkLength('image id', imageId, CKM_IMAGE_ID_BYTES);
  checkLength('block id', blockId, CKM_ID_BYTES);
  checkLength('associated data', a, BLOCK_AAD_BYTES);
  imageId.copy(a, 0);
  blockId.copy(a, CKM_IMAGE_ID_BYTES);
  a[CKM_IMAGE_ID_BYTES + CKM_ID_BYTES] = KIND_CODE[kind];
  if (kind === 'delta') {
    if (!baseId) throw new MedvError('EINVAL_ARG', 'a delta block needs its base block id');
    checkLength('base block id', baseId, CKM_ID_BYTES);
    baseId.copy(a, CKM_IMAGE_ID_BYTES + CKM_ID_BYTES + 1);
  } else {
    a.fill(0, CKM_IMAGE_ID_BYTES + CKM_ID_BYTES + 1);
  }
}
