import { randomBytes } from 'node:crypto';
import { MedvError } from '../core/errors.js';
import { redactInspect, secureAlloc, secureRandom, secureSeal, secureFree } from './secure.js';

export const DATA_KEY_BYTES = 64;
export const KEY_ID_BYTES = 16;

/**
 * A disk's 512-bit AES-256-XTS data key and its 16-byte random key id. The key lives in a
 * sodium_malloc buffer, sealed read-only, and is zeroed by dispose(); after that `key` throws
 * ECLOSED. The key id is not secret (it is stored in the .evhd header and the .enc file).
 */
export class DataKey {
  readonly keyId: Buffer;
  private secret: Buffer | undefined;

  /** Takes ownership of `key` (a secure buffer of 64 bytes). */
  private constructor(keyId: Buffer, key: Buffer) {
    this.keyId = Buffer.from(keyId);
    this.secret = key;
    secureSeal(key);
    redactInspect(this, () => `DataKey { keyId: ${this.keyId.toString('hex')}${this.secret ? '' : ', disposed'} }`);
  }

  /** A new random data key with a new random key id. */
  static generate(): DataKey {
    for (;;) {
      const key = secureRandom(DATA_KEY_BYTES);
      // XTS needs two different halves (IEEE 1619; both ciphers refuse equal ones to encrypt); a random key has them
      // with overwhelming probability, but check rather than fail later.
      if (!key.subarray(0, 32).equals(key.subarray(32))) return new DataKey(randomBytes(KEY_ID_BYTES), key);
      secureFree(key);
    }
  }

  /**
   * Adopt an unwrapped key (internal: the key file reader). `key` must be a secure buffer the
   * caller gives up. Rejects keys whose XTS halves are equal (only a forged file has them).
   */
  static adopt(keyId: Buffer, key: Buffer, file?: string): DataKey {
    if (keyId.length !== KEY_ID_BYTES || key.length !== DATA_KEY_BYTES) {
      secureFree(key);
      throw new MedvError('EINTERNAL', 'data key or key id has the wrong length', { file });
    }
    if (key.subarray(0, 32).equals(key.subarray(32))) {
      secureFree(key);
      throw new MedvError('ECORRUPT', 'data key is unusable for XTS (equal halves)', { file });
    }
    return new DataKey(keyId, key);
  }

  /** The 64-byte key (secure, read-only memory). Throws ECLOSED after dispose(). */
  get key(): Buffer {
    if (!this.secret) throw new MedvError('ECLOSED', `data key ${this.keyId.toString('hex')} has been disposed`);
    return this.secret;
  }

  /** An independent copy (its own secure buffer), for a second owner such as a reopened device. */
  clone(): DataKey {
    const copy = secureAlloc(DATA_KEY_BYTES);
    this.key.copy(copy);
    return new DataKey(this.keyId, copy);
  }

  get disposed(): boolean { return this.secret === undefined; }

  /** Zero the key. Idempotent. */
  dispose(): void {
    if (!this.secret) return;
    secureFree(this.secret);
    this.secret = undefined;
  }

  toJSON(): { keyId: string } { return { keyId: this.keyId.toString('hex') }; }
}
