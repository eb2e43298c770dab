/**
 * One block in and out of a pack: id (keyed BLAKE2b-128), encode (zstd or raw or delta, then
 * XChaCha20-Poly1305 with the image id, block id, kind and base id bound), decode (authenticate,
 * decompress into exactly 4 KiB, check the id). Formats in src/formats/ckm/pack.ts.
 */
import { MedvError } from '../core/errors.js';
import { sodium } from '../core/sodium.js';
import {
  BLOCK_AAD_BYTES, BLOCK_NONCE_BYTES, type BlockKind, CKM_BLOCK_SIZE, CKM_ID_BYTES, CKM_TAG_BYTES, DELTA_DICT_PREFIX, PACK_SALT_BYTES, ZSTD_LEVEL, blockAad,
  blockNonce, writeBlockAad, zstdCompress, zstdDecompress,
} from '../formats/ckm/index.js';

export interface CodecKeys {
  imageId: Buffer;
  contentKey: Buffer;
  idKey: Buffer;
}

export interface EncodedBlock {
  kind: BlockKind;
  /** Ciphertext with tag: what the pack stores. */
  stored: Buffer;
}

/** Where a block is read from, for error messages. */
export interface BlockWhere { file: string; offset: number }

export function deltaDictionary(base: Buffer): Buffer {
  return Buffer.concat([DELTA_DICT_PREFIX, base]);
}

export class BlockCodec {
  /** Reused by sealInto: nonce and associated data of the block being sealed. */
  private nonce?: Buffer;
  private aad?: Buffer;

  constructor(private readonly keys: CodecKeys, private readonly level = ZSTD_LEVEL) {}

  /** The block id: BLAKE2b-128 of the 4 KiB plaintext keyed with the repository id key. */
  id(block: Buffer): Buffer {
    const out = Buffer.alloc(CKM_ID_BYTES);
    sodium.crypto_generichash(out, block, this.keys.idKey);
    return out;
  }

  /** The payload of a whole block: zstd, or the block itself when zstd does not make it smaller. */
  compress(block: Buffer): { kind: 'zstd' | 'raw'; payload: Buffer } {
    const z = zstdCompress(block, this.level);
    return z.length >= CKM_BLOCK_SIZE ? { kind: 'raw', payload: block } : { kind: 'zstd', payload: z };
  }

  /** `block` as a zstd delta against `base` (the block it replaces). */
  delta(block: Buffer, base: Buffer): Buffer {
    return zstdCompress(block, this.level, deltaDictionary(base));
  }

  /** Encrypt a payload for storage at `offset` of a pack with `salt`. */
  seal(payload: Buffer, kind: BlockKind, id: Buffer, salt: Buffer, offset: number, baseId?: Buffer): Buffer {
    const stored = Buffer.alloc(payload.length + CKM_TAG_BYTES);
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(stored, payload, blockAad(this.keys.imageId, id, kind, baseId), null, blockNonce(salt, offset), this.keys.contentKey);
    return stored;
  }

  /**
   * As seal, into `dst` (exactly payload + tag bytes, e.g. a pack's write buffer), with no
   * allocation: the packer seals every block it stores this way.
   */
  sealInto(dst: Buffer, payload: Buffer, kind: BlockKind, id: Buffer, salt: Buffer, offset: number, baseId?: Buffer): void {
    if (dst.length !== payload.length + CKM_TAG_BYTES) throw new MedvError('EINTERNAL', 'seal: output length');
    const nonce = (this.nonce ??= Buffer.alloc(BLOCK_NONCE_BYTES));
    salt.copy(nonce, 0, 0, PACK_SALT_BYTES);
    nonce.writeUInt32LE(offset % 0x100000000, PACK_SALT_BYTES);
    nonce.writeUInt32LE(Math.floor(offset / 0x100000000), PACK_SALT_BYTES + 4);
    const aad = (this.aad ??= Buffer.alloc(BLOCK_AAD_BYTES));
    writeBlockAad(aad, this.keys.imageId, id, kind, baseId);
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(dst, payload, aad, null, nonce, this.keys.contentKey);
  }

  /**
   * Encode `block` for storage at `offset` of a pack with `salt`. With `base` (the block this one
   * replaces, and its id), a zstd delta against it is used when it is smaller than the block alone.
   */
  encode(block: Buffer, id: Buffer, salt: Buffer, offset: number, base?: { id: Buffer; data: Buffer }): EncodedBlock {
    if (block.length !== CKM_BLOCK_SIZE) throw new MedvError('EINTERNAL', `block of ${block.length} bytes`);
    let { kind, payload }: { kind: BlockKind; payload: Buffer } = this.compress(block);
    if (base) {
      const d = this.delta(block, base.data);
      if (d.length < payload.length) { kind = 'delta'; payload = d; }
    }
    return { kind, stored: this.seal(payload, kind, id, salt, offset, kind === 'delta' ? base!.id : undefined) };
  }

  /**
   * Decode a stored block: authenticate (EBADBLOCK on a flipped byte, a block of another image or
   * another place, a wrong key), decompress into exactly 4 KiB (EBADBLOCK otherwise), then check
   * the plaintext against `id` (EBADBLOCK). A delta block needs its base's plaintext.
   */
  decode(stored: Buffer, kind: BlockKind, id: Buffer, salt: Buffer, where: BlockWhere, base?: { id: Buffer; data: Buffer }): Buffer {
    const data = { file: where.file, offset: where.offset };
    if (stored.length <= CKM_TAG_BYTES) throw new MedvError('EBADBLOCK', 'stored block is too short', data);
    if (kind === 'delta' && !base) throw new MedvError('EINTERNAL', 'delta block decoded without its base');
    const payload = Buffer.alloc(stored.length - CKM_TAG_BYTES);
    try {
      sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(payload, null, stored, blockAad(this.keys.imageId, id, kind, kind === 'delta' ? base!.id : undefined), blockNonce(salt, where.offset), this.keys.contentKey);
    } catch {
      throw new MedvError('EBADBLOCK', 'block does not authenticate (damaged, moved, from another image, or the wrong key)', data);
    }
    let plain: Buffer;
    if (kind === 'raw') plain = payload;
    else {
      try {
        plain = zstdDecompress(payload, CKM_BLOCK_SIZE, 'block', kind === 'delta' ? deltaDictionary(base!.data) : undefined, data);
      } catch (e) {
        throw new MedvError('EBADBLOCK', `block does not decompress: ${(e as Error).message}`, data);
      }
    }
    if (plain.length !== CKM_BLOCK_SIZE) throw new MedvError('EBADBLOCK', `block decodes to ${plain.length} bytes, not ${CKM_BLOCK_SIZE}`, data);
    if (!this.id(plain).equals(id)) throw new MedvError('EBADBLOCK', 'block content does not match its id', data);
    return plain;
  }
}
