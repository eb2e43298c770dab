/**
 * The server master key: 32 random bytes in a file (`--server-key`, default DIR/server.key,
 * created 0600 on first start), held in sodium secure memory. It wraps what the database keeps
 * of each image's keys (XChaCha20-Poly1305, a fresh 24-byte nonce per wrap, additional data
 * "medv-image-keys-v1\0" + image name), so a copy of the database alone releases nothing.
 * Several instances on one PostgreSQL must read the same file.
 *
 * The file is refused (one line, nothing read) when it is a symlink, not a regular file, not
 * exactly 32 bytes, or accessible by group or others.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { MedvError, fromSystemError } from '../core/errors.js';
import { createFileAtomicSync, readSecretSync } from '../core/fsio.js';
import { secureAlloc, secureFree, secureSeal, secureRandom, redactInspect } from '../crypto/secure.js';
import { sodium } from '../core/sodium.js';

export const SERVER_KEY_FILE = 'server.key';
export const SERVER_KEY_BYTES = 32;
const AD_PREFIX = Buffer.from('medv-image-keys-v1\0', 'latin1');
const NONCE = 24;
const TAG = 16;

export interface ServerKey {
  file: string;
  /** True when this start created the file. */
  created: boolean;
  /** nonce || XChaCha20-Poly1305(plaintext), bound to `image`. */
  wrap(image: string, plaintext: Buffer): Buffer;
  /** The plaintext in a new secure buffer (the caller frees it); ECRYPTO when it does not authenticate. */
  unwrap(image: string, blob: Buffer): Buffer;
  dispose(): void;
}

function ad(image: string): Buffer {
  return Buffer.concat([AD_PREFIX, Buffer.from(image, 'utf8')]);
}

function readKey(file: string): Buffer {
  const key = secureAlloc(SERVER_KEY_BYTES);
  try {
    return readSecretSync(file, { what: 'server key file', size: SERVER_KEY_BYTES, into: key });
  } catch (e) {
    secureFree(key);
    throw e;
  }
}

/** A new key file made whole under a temporary name (mode 0600) and linked into place (never over another). */
function createKey(file: string): boolean {
  const key = secureRandom(SERVER_KEY_BYTES);
  try {
    createFileAtomicSync(file, key, { mode: 0o600 });
    return true;
  } catch (e) {
    if (e instanceof MedvError && e.code === 'EEXIST') return false;
    throw e;
  } finally {
    secureFree(key);
  }
}

/**
 * Read `file`; with no file given, DIR/server.key (`defaultFile`), created with 32 random bytes
 * if missing. A named file must exist (a mistyped path must not silently make a new key).
 */
export function loadServerKey(file: string | undefined, defaultFile: string): ServerKey {
  const path = file ?? defaultFile;
  let created = false;
  if (file === undefined) {
    let exists = true;
    try { fs.lstatSync(path); } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(e, path);
      exists = false;
    }
    if (!exists) created = createKey(path);
  }
  let key: Buffer | undefined = readKey(path);
  secureSeal(key);
  const live = () => {
    if (!key) throw new MedvError('ECLOSED', 'the server key has been disposed');
    return key;
  };
  const sk: ServerKey = {
    file: path,
    created,
    wrap(image, plaintext) {
      const nonce = randomBytes(NONCE);
      const out = Buffer.alloc(NONCE + plaintext.length + TAG);
      nonce.copy(out, 0);
      sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(NONCE), plaintext, ad(image), null, nonce, live());
      return out;
    },
    unwrap(image, blob) {
      if (blob.length < NONCE + TAG) throw new MedvError('ECRYPTO', `the stored keys of image ${image} are damaged`);
      const out = secureAlloc(blob.length - NONCE - TAG);
      try {
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, null, blob.subarray(NONCE), ad(image), blob.subarray(0, NONCE), live());
      } catch {
        secureFree(out);
        throw new MedvError('ECRYPTO', `the stored keys of image ${image} do not open under the server key ${path} (another key? instances sharing a database must share --server-key)`);
      }
      return out;
    },
    dispose() {
      if (key) secureFree(key);
      key = undefined;
    },
  };
  redactInspect(sk, () => `ServerKey { file: ${path} }`);
  return sk;
}
