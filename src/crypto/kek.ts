/**
 * Key-encryption keys (KEKs): what unwraps a disk's data key from its .enc file.
 *  - passphrase: Argon2id (crypto_pwhash) of the passphrase with the salt and limits stored in the file;
 *  - host key: 32 random bytes in a 0600 file of the client data repository, kept there wrapped
 *    under a key outside the root (./hostbind.ts), or raw (a --host-key file, an older client).
 * (The server's key service wraps image keys with its own 32-byte key: src/server/serverkey.ts.)
 */
import * as fs from 'node:fs';
import { MedvError, fromSystemError, isMedvError } from '../core/errors.js';
import { createFileAtomic, readSecretSync } from '../core/fsio.js';
import { WRAPPED_HOST_KEY_MAX, WRAPPED_HOST_KEY_MIN, isWrappedHostKey, readHostKeyFile, unwrapHostKey } from './hostbind.js';
import type { HostKeySource, PassphraseSource } from './kekenv.js';
import { secureAlloc, secureFree } from './secure.js';
import { sodium } from '../core/sodium.js';

export { type KekSource, type DerivedKek, type PassphraseSource, kekFromEnvironment } from './kekenv.js';

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
 * not accessible by group or others (EINSECURE, as ssh refuses such a private key), holding the
 * key raw (exactly 32 bytes) or wrapped (./hostbind.ts: unwrapped with `wrapKeyFile`; EBADKEY
 * "bound to another machine or user" when that does not open it). Anything else is EFORMAT.
 */
export async function loadHostKey(source: string | HostKeySource): Promise<Buffer> {
  const { keyFile, wrapKeyFile } = typeof source === 'string' ? { keyFile: source, wrapKeyFile: undefined } : source;
  // twice at most: a raw key wrapped in place between the size check and the read
  for (let attempt = 0; ; attempt++) {
    let size: number;
    try { size = fs.statSync(keyFile).size; } catch (e) { throw fromSystemError(e, keyFile); }
    if (size === HOST_KEY_BYTES) {
      const key = secureAlloc(HOST_KEY_BYTES);
      try {
        return readSecretSync(keyFile, { what: 'host key file', size: HOST_KEY_BYTES, into: key });
      } catch (e) {
        secureFree(key);
        if (attempt === 0 && isMedvError(e, 'EFORMAT')) continue;
        throw e;
      }
    }
    if (size < WRAPPED_HOST_KEY_MIN || size > WRAPPED_HOST_KEY_MAX) throw new MedvError('EFORMAT', `host key file is ${size} bytes, expected ${HOST_KEY_BYTES} (or a wrapped host key)`, { file: keyFile, offset: 0 });
    const bytes = readHostKeyFile(keyFile);
    if (bytes.length === HOST_KEY_BYTES && attempt === 0) continue;
    if (!isWrappedHostKey(bytes)) throw new MedvError('EFORMAT', `host key file is ${bytes.length} bytes, expected ${HOST_KEY_BYTES} (or a wrapped host key)`, { file: keyFile, offset: 0 });
    if (!wrapKeyFile) throw new MedvError('ENOKEY', 'this host key is wrapped (bound to a machine and user): it opens through its client root, not as --host-key', { file: keyFile });
    return unwrapHostKey(bytes, keyFile, wrapKeyFile);
  }
}

/** The public id of a host key: keyed BLAKE2b-128 of a constant (reveals nothing about the key). */
export function hostKeyId(hostKey: Buffer): Buffer {
  const out = Buffer.alloc(HOST_KEY_ID_BYTES);
  sodium.crypto_generichash(out, HOST_KEY_ID_CONTEXT, hostKey);
  return out;
}

/** Argon2id of a passphrase into a secure 32-byte KEK (runs on the thread pool). */
export async function passphraseKek(passphrase: string | Buffer, salt: Buffer, opslimit: number, memlimit: number): Promise<Buffer> {
  const kek = secureAlloc(32);
  // A passphrase given as bytes (secure memory) is used as it is, and left to its owner.
  const pw = typeof passphrase === 'string' ? Buffer.from(passphrase, 'utf8') : passphrase;
  try {
    await sodium.crypto_pwhash_async(kek, pw, salt, opslimit, memlimit, sodium.crypto_pwhash_ALG_ARGON2ID13);
    return kek;
  } catch (e) {
    secureFree(kek);
    throw new MedvError('ECRYPTO', 'Argon2id failed (out of memory?)', {}, { cause: e });
  } finally {
    if (typeof passphrase === 'string') pw.fill(0);
  }
}

/** A copy (secure memory) of the KEK `source` already derived for this salt and cost, if it has one. */
export function derivedKekFor(source: PassphraseSource, salt: Buffer, opslimit: number, memlimit: number): Buffer | undefined {
  const hit = [...(source.derived ?? []), ...(source.wrapWith ? [source.wrapWith] : [])]
    .find((d) => d.opslimit === opslimit && d.memlimit === memlimit && d.salt.length === salt.length && d.salt.equals(salt) && d.key.length === 32);
  if (!hit) return undefined;
  const k = secureAlloc(32);
  hit.key.copy(k);
  return k;
}
