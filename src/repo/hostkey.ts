/**
 * The client's host key: data/Local/host.key, 32 random bytes, mode 0600, created on first use.
 * It wraps the working disks' data keys (.enc), seals small files (./sealed.ts) and the device log
 * (./devlog.ts). Also: the per-purpose subkeys derived from it.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError, isMedvError } from '../core/errors.js';
import { createHostKey, loadHostKey } from '../crypto/kek.js';
import type { KekSource } from '../crypto/kekenv.js';
import { secureAlloc, secureFree } from '../crypto/secure.js';
import { sodium } from '../core/sodium.js';
import { type ClientRoot, checkSafeDir } from './paths.js';

export const HOST_KEY_FILE = 'host.key';

/** data/Local/host.key, created (0600) when missing; a symlink there is refused (EUNSAFE). */
export async function clientHostKey(c: ClientRoot): Promise<KekSource> {
  checkSafeDir(c.local);
  const keyFile = join(c.local, HOST_KEY_FILE);
  let st: fs.Stats | undefined;
  try { st = fs.lstatSync(keyFile); } catch { st = undefined; }
  if (!st) {
    try {
      await createHostKey(keyFile);
    } catch (e) {
      if (!isMedvError(e, 'EEXIST')) throw e; // another process created it first
    }
    st = fs.lstatSync(keyFile);
  }
  if (!st.isFile()) throw new MedvError('EUNSAFE', 'the host key is not a regular file (a symlink or something else is there)', { file: keyFile });
  return { kind: 'hostkey', keyFile };
}

/** Context of every subkey derived from the host key (BLAKE2b-256 keyed by the host key). */
const SUBKEY_CONTEXT = 'medv client subkey v1\0';

/** Check a purpose label: 1..128 bytes of printable ASCII. */
export function checkPurpose(purpose: string): Buffer {
  if (typeof purpose !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(purpose)) {
    throw new MedvError('EINVAL_ARG', `purpose ${JSON.stringify(String(purpose).slice(0, 40))} must be 1-128 printable ASCII characters`);
  }
  return Buffer.from(purpose, 'latin1');
}

/**
 * A 32-byte key for `purpose`, in secure memory (caller frees it with secureFree):
 * BLAKE2b-256(message = "medv client subkey v1\0" + purpose, key = host key).
 * Only host-key KEKs: a passphrase KEK is EINVAL_ARG.
 */
export async function deriveSubkey(kek: KekSource, purpose: string): Promise<Buffer> {
  const label = checkPurpose(purpose);
  if (kek.kind !== 'hostkey') throw new MedvError('EINVAL_ARG', 'repository files are sealed with the host key, not a passphrase');
  const hostKey = await loadHostKey(kek.keyFile);
  const out = secureAlloc(32);
  try {
    sodium.crypto_generichash(out, Buffer.concat([Buffer.from(SUBKEY_CONTEXT, 'latin1'), label]), hostKey);
  } catch (e) {
    secureFree(out);
    throw e;
  } finally {
    secureFree(hostKey);
  }
  return out;
}
