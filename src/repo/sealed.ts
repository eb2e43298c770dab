/**
 * Sealed files: small JSON values encrypted under the host key, for what the client keeps about a
 * user or the host (report queue, cached credentials, Offline.dat).
 *
 *   bytes 0..7    magic "MEDVSL01"
 *   bytes 8..31   XChaCha20-Poly1305 nonce (random per write)
 *   bytes 32..    ciphertext of the UTF-8 JSON, then the 16-byte tag
 *
 * Key: deriveSubkey(host key, purpose) (./hostkey.ts); associated data: the purpose. A file sealed
 * for one purpose does not open for another. The JSON is at most 1 MiB.
 */
import { randomBytes } from 'node:crypto';
import { MedvError } from '../core/errors.js';
import { secureFree } from '../crypto/secure.js';
import { sodium } from '../core/sodium.js';
import { checkPurpose, clientHostKey, deriveSubkey } from './hostkey.js';
import { readBoundedSync, writeFileAtomic } from '../core/fsio.js';
import { type ClientRoot, pathInRoot } from './paths.js';

export const SEALED_MAGIC = Buffer.from('MEDVSL01', 'latin1');
export const SEALED_MAX_JSON = 1024 * 1024;
const NONCE = 24;
const TAG = 16;
const HEADER = SEALED_MAGIC.length + NONCE;

/** Seal `value` (JSON) into `file` (inside the root, relative to it or absolute), atomically. */
export async function writeSealed(c: ClientRoot, file: string, purpose: string, value: unknown): Promise<void> {
  const ad = checkPurpose(purpose);
  const path = pathInRoot(c, file);
  const text = JSON.stringify(value);
  if (text === undefined) throw new MedvError('EINVAL_ARG', 'a sealed value must be JSON-serializable', { file: path });
  const plain = Buffer.from(text, 'utf8');
  if (plain.length > SEALED_MAX_JSON) throw new MedvError('ETOOLARGE', `sealed value is ${plain.length} bytes of JSON, more than ${SEALED_MAX_JSON}`, { file: path });
  const key = await deriveSubkey(await clientHostKey(c), purpose);
  const out = Buffer.alloc(HEADER + plain.length + TAG);
  try {
    SEALED_MAGIC.copy(out, 0);
    const nonce = randomBytes(NONCE);
    nonce.copy(out, SEALED_MAGIC.length);
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(HEADER), plain, ad, null, nonce, key);
  } finally {
    secureFree(key);
    plain.fill(0);
  }
  await writeFileAtomic(path, out, { mode: 0o600 });
}

/**
 * The value sealed in `file`, or undefined when there is no such file. A file that is damaged,
 * truncated, sealed for another purpose or under another host key is ECORRUPT naming the file.
 */
export async function readSealed<T>(c: ClientRoot, file: string, purpose: string): Promise<T | undefined> {
  const ad = checkPurpose(purpose);
  const path = pathInRoot(c, file);
  const bytes = readBoundedSync(path, HEADER + SEALED_MAX_JSON + TAG, 'sealed file');
  if (bytes === undefined) return undefined;
  if (bytes.length < HEADER + TAG || !bytes.subarray(0, SEALED_MAGIC.length).equals(SEALED_MAGIC)) {
    throw new MedvError('ECORRUPT', 'not a sealed medv file (bad magic or truncated)', { file: path });
  }
  const key = await deriveSubkey(await clientHostKey(c), purpose);
  const plain = Buffer.alloc(bytes.length - HEADER - TAG);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(plain, null, bytes.subarray(HEADER), ad, bytes.subarray(SEALED_MAGIC.length, HEADER), key);
  } catch {
    throw new MedvError('ECORRUPT', `sealed file does not authenticate (damaged, sealed for another purpose than ${purpose}, or under another host key)`, { file: path });
  } finally {
    secureFree(key);
  }
  try {
    return JSON.parse(plain.toString('utf8')) as T;
  } catch {
    throw new MedvError('ECORRUPT', 'sealed file holds no JSON', { file: path });
  } finally {
    plain.fill(0);
  }
}
