/**
 * Key-encryption keys (KEKs): what unwraps a disk's data key from its .enc file.
 *  - passphrase: Argon2id (crypto_pwhash) of the passphrase with the salt and limits stored in the file;
 *  - host key: a 32-byte random file (mode 0600) in the client data repository.
 * (The server key service of DESIGN.md wraps with a host-style 32-byte key and is built elsewhere.)
 */
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { MedvError, fromSystemError } from '../core/errors.js';
import { secureAlloc, secureFree } from './secure.js';
import { sodium } from './sodium.js';

import { modeString, type KekSource } from './kekenv.js';

export { type KekSource, kekFromEnvironment } from './kekenv.js';

export const HOST_KEY_BYTES = 32;
export const HOST_KEY_ID_BYTES = 16;
const HOST_KEY_ID_CONTEXT = Buffer.from('medv host key id v1', 'latin1');

/** Create a new host key: 32 random bytes, mode 0600, fsynced. Refuses to overwrite (EEXIST). */
export async function createHostKey(path: string): Promise<void> {
  const key = secureAlloc(HOST_KEY_BYTES);
  let fh: fs.promises.FileHandle | undefined;
  try {
    sodium.randombytes_buf(key);
    fh = await fs.promises.open(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    await fh.chmod(0o600); // regardless of umask
    await fh.write(key, 0, key.length, 0);
    await fh.sync();
  } catch (e) {
    if (fh) { await fh.close().catch(() => undefined); fh = undefined; await fs.promises.unlink(path).catch(() => undefined); }
    throw fromSystemError(e, path);
  } finally {
    secureFree(key);
    if (fh) await fh.close();
  }
}

/**
 * Read a host key into secure memory (caller wipes it). EFORMAT unless exactly 32 bytes;
 * EINSECURE when group or others have any access to the file (as ssh refuses such a private key).
 */
export async function loadHostKey(path: string): Promise<Buffer> {
  const key = secureAlloc(HOST_KEY_BYTES);
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(path, fs.constants.O_RDONLY);
    const st = await fh.stat();
    if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'host key is not a regular file', { file: path });
    if (st.size !== HOST_KEY_BYTES) throw new MedvError('EFORMAT', `host key file is ${st.size} bytes, expected ${HOST_KEY_BYTES}`, { file: path, offset: 0 });
    if (st.mode & 0o077) {
      throw new MedvError('EINSECURE', `host key file permissions ${modeString(st.mode)} are too open: it must not be accessible by group or others (chmod 600 ${path})`, { file: path });
    }
    const { bytesRead } = await fh.read(key, 0, HOST_KEY_BYTES, 0);
    if (bytesRead !== HOST_KEY_BYTES) throw new MedvError('ETRUNCATED', 'host key file shrank while being read', { file: path, offset: bytesRead });
    return key;
  } catch (e) {
    secureFree(key);
    throw fromSystemError(e, path);
  } finally {
    if (fh) await fh.close().catch(() => undefined);
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
