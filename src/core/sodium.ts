/**
 * The typed subset of sodium-native that medv uses (the package ships no type declarations): in
 * src/core because both src/formats (BLAKE2b of pack runs and index directories) and src/crypto use it.
 * Other parts may import `sodium` from here instead of declaring the module themselves.
 */
import { createRequire } from 'node:module';

export interface Sodium {
  sodium_malloc(size: number): Buffer;
  sodium_memzero(buf: Buffer): void;
  /** Zeroes, unmaps and detaches a sodium_malloc buffer (its length becomes 0). */
  sodium_free(buf: Buffer): void;
  sodium_memcmp(a: Buffer, b: Buffer): boolean;
  sodium_mprotect_noaccess(buf: Buffer): void;
  sodium_mprotect_readonly(buf: Buffer): void;
  sodium_mprotect_readwrite(buf: Buffer): void;
  randombytes_buf(buf: Buffer): void;

  crypto_generichash(out: Buffer, input: Buffer, key?: Buffer): void;
  crypto_generichash_BYTES: number;
  crypto_generichash_BYTES_MIN: number;
  crypto_generichash_BYTES_MAX: number;
  crypto_generichash_KEYBYTES_MAX: number;
  /** BLAKE2b over data given in pieces: init a state of STATEBYTES, update, final. */
  crypto_generichash_STATEBYTES: number;
  crypto_generichash_init(state: Buffer, key: Buffer | null, outputLength: number): void;
  crypto_generichash_update(state: Buffer, input: Buffer): void;
  crypto_generichash_final(state: Buffer, out: Buffer): void;

  crypto_pwhash(out: Buffer, passwd: Buffer, salt: Buffer, opslimit: number, memlimit: number, alg: number): void;
  crypto_pwhash_async(out: Buffer, passwd: Buffer, salt: Buffer, opslimit: number, memlimit: number, alg: number): Promise<void>;
  crypto_pwhash_ALG_ARGON2ID13: number;
  crypto_pwhash_SALTBYTES: number;
  crypto_pwhash_OPSLIMIT_MIN: number;
  crypto_pwhash_OPSLIMIT_INTERACTIVE: number;
  crypto_pwhash_OPSLIMIT_SENSITIVE: number;
  crypto_pwhash_MEMLIMIT_MIN: number;
  crypto_pwhash_MEMLIMIT_INTERACTIVE: number;
  crypto_pwhash_MEMLIMIT_SENSITIVE: number;

  /** Returns the ciphertext length (message + ABYTES). */
  crypto_aead_xchacha20poly1305_ietf_encrypt(c: Buffer, m: Buffer, ad: Buffer | null, nsec: null, npub: Buffer, k: Buffer): number;
  /** Throws when the tag does not verify. Returns the message length. */
  crypto_aead_xchacha20poly1305_ietf_decrypt(m: Buffer, nsec: null, c: Buffer, ad: Buffer | null, npub: Buffer, k: Buffer): number;
  crypto_aead_xchacha20poly1305_ietf_ABYTES: number;
  crypto_aead_xchacha20poly1305_ietf_KEYBYTES: number;
  crypto_aead_xchacha20poly1305_ietf_NPUBBYTES: number;

  crypto_secretstream_xchacha20poly1305_init_push(state: Buffer, header: Buffer, key: Buffer): void;
  /** Returns the ciphertext length (message + ABYTES). */
  crypto_secretstream_xchacha20poly1305_push(state: Buffer, c: Buffer, m: Buffer, ad: Buffer | null, tag: number): number;
  crypto_secretstream_xchacha20poly1305_init_pull(state: Buffer, header: Buffer, key: Buffer): void;
  /** Throws when the frame does not verify; `tag` (1 byte) receives the frame's tag. Returns the message length. */
  crypto_secretstream_xchacha20poly1305_pull(state: Buffer, m: Buffer, tag: Buffer, c: Buffer, ad: Buffer | null): number;
  crypto_secretstream_xchacha20poly1305_STATEBYTES: number;
  crypto_secretstream_xchacha20poly1305_ABYTES: number;
  crypto_secretstream_xchacha20poly1305_HEADERBYTES: number;
  crypto_secretstream_xchacha20poly1305_KEYBYTES: number;
  crypto_secretstream_xchacha20poly1305_TAG_MESSAGE: number;
  crypto_secretstream_xchacha20poly1305_TAG_FINAL: number;
}

export const sodium: Sodium = createRequire(import.meta.url)('sodium-native') as Sodium;
