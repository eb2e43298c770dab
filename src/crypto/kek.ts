/**
 * Key-encryption keys (KEKs): what unwraps a disk's data key from its .enc file.
 *  - passphrase: Argon2id (crypto_pwhash) of the passphrase with the salt and limits stored in the file;
 *  - host key: a 32-byte random file (mode 0600) in the client data repository.
 * (The server key service of DESIGN.md wraps with a host-style 32-byte key and is built elsewhere.)
 */
import { MedvError } from '../core/errors.js';
import { createFileAtomic, readSecretSync } from '../core/fsio.js';
import { secureAlloc, secureFree } from './secure.js';
import { sodium } from './sodium.js';

export { type KekSource, kekFromEnvironment } from './kekenv.js';

export const HOST_KEY_BYTES = 32;
export const HOST_KEY_ID_BYTES = 16;
const HOST_KEY_ID_CONTEXT = Buffer.from('medv host key id v1', 'latin1');

/**
 * Create a new host key: 32 random bytes written under a temporary name with mode 0600 (whatever
 * the umask), fsynced, then linked to `path`: never over an existing file (EEXIST), never seen
 * half-written under its name (src/core/fsio.ts createFileAtomic).
 */
export async function createHostKey(path: string): Promise<void> {
  const key = secureAlloc(HOST_KEY_BYTES);
  try {
    sodium.randombytes_buf(key);
    await createFileAtomic(path, key, { mode: 0o600 });
  } finally {
    secureFree(key);
  }
}

/**
 * Read a host key into secure memory (caller wipes it): a regular file (no symlink followed), ours,
 * exactly 32 bytes (EFORMAT otherwise); EINSECURE when group or others have any access to it (as
 * ssh refuses such a private key). src/core/fsio.ts readSecretSync.
 */
export async function loadHostKey(path: string): Promise<Buffer> {
  const key = secureAlloc(HOST_KEY_BYTES);
  try {
    return readSecretSync(path, { what: 'host key file', size: HOST_KEY_BYTES, into: key });
  } catch (e) {
    secureFree(key);
    throw e;
  }
}

/** The public id of a host key: keyed BLAKE2b-128 of a constant (reveals nothing about the key). */
export function hostKeyId(hostKey: Buffer): Buffer {
  const out = Buffer.alloc(HOST_KEY_ID_BYTES);
  sodium.crypto_generichash(out, HOST_KEY_ID_CONTEXT, hostKey);
  return out;
}

/** Argon2id of a passphrase into a secure 32-byte KEK (runs on the thread pool). */
export async function passphraseKek(passphrase: string, salt: Buffer, opslimit: number, memlimit: number): Promise<Buffer> {
  const kek = secureAlloc(32);
  const pw = Buffer.from(passphrase, 'utf8');
  try {
    await sodium.crypto_pwhash_async(kek, pw, salt, opslimit, memlimit, sodium.crypto_pwhash_ALG_ARGON2ID13);
    return kek;
  } catch (e) {
    secureFree(kek);
    throw new MedvError('ECRYPTO', 'Argon2id failed (out of memory?)', {}, { cause: e });
  } finally {
    pw.fill(0);
  }
}
