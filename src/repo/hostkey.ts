/**
 * The client's host key: data/Local/host.key (0600). It wraps the working disks' data keys (.enc),
 * seals small files (./sealed.ts) and the device log (./devlog.ts), so it is the key to the whole
 * client root; it is therefore bound to the machine and the user (src/crypto/hostbind.ts): the
 * file holds it only wrapped under the user's wrap key, `$XDG_CONFIG_HOME/medv/host-wrap.key`
 * (~/.config/medv/host-wrap.key; for root /root/.config/…), 32 random bytes, 0600, outside the
 * root, and sealed by the TPM too where `systemd-creds has-tpm2` reports one. A copy of the root
 * alone opens nowhere: EBADKEY "bound to another machine or user".
 *
 * - First use: the wrap key is made if missing, then the host key, wrapped, published without
 *   overwriting (a racing process's key wins and is used).
 * - A raw 32-byte host.key (an earlier medv) is wrapped in place on first use (write-then-rename);
 *   the root keeps working, and from then on opens only here.
 * - A wrapped host.key whose wrap key is not there: refused, nothing created (a new wrap key could
 *   not open it anyway).
 * - The wrap key may not be inside the client root (that would make the root the whole secret
 *   again): EUNSAFE. Where it lives follows XDG_CONFIG_HOME, which a thief may set as he likes: he
 *   still lacks the wrap key's bytes, and a host key he wraps himself opens nothing of the root's.
 *
 * Also: the per-purpose subkeys derived from the host key.
 */
import * as fs from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { MedvError, isMedvError } from '../core/errors.js';
import { createFileAtomic, ensureDir, writeFileAtomic } from '../core/fsio.js';
import { relativeInside, resolveExisting } from '../core/paths.js';
import { HOST_KEY_BYTES, loadHostKey } from '../crypto/kek.js';
import type { HostKeySource, KekSource } from '../crypto/kekenv.js';
import { WRAP_KEY_BYTES, hasTpm2, readWrapKey, wrapHostKey } from '../crypto/hostbind.js';
import { secureAlloc, secureFree } from '../crypto/secure.js';
import { sodium } from '../core/sodium.js';
import { type ClientRoot, checkSafeDir } from './paths.js';

export const HOST_KEY_FILE = 'host.key';
export const WRAP_KEY_FILE = 'host-wrap.key';

/** $XDG_CONFIG_HOME/medv/host-wrap.key (XDG_CONFIG_HOME when absolute, else ~/.config). */
export function defaultWrapKeyFile(): string {
  const x = process.env.XDG_CONFIG_HOME;
  return join(x && isAbsolute(x) ? x : join(homedir(), '.config'), 'medv', WRAP_KEY_FILE);
}

const inside = (root: string, p: string) => relativeInside(root, p) !== undefined;

/** The wrap key file, refused inside the client root (checked on the paths as written and as they resolve, links in folders not made yet included). */
function wrapKeyFileFor(c: ClientRoot): string {
  const file = resolve(defaultWrapKeyFile());
  const roots = [c.root, resolveExisting(c.root)];
  const real = resolveExisting(file);
  if (roots.some((r) => inside(r, file) || inside(r, real))) {
    throw new MedvError('EUNSAFE', `the host key's wrap key ${file} would be inside the client root ${c.root}: it must live outside it (set XDG_CONFIG_HOME elsewhere)`, { file });
  }
  return file;
}

/** The wrap key (secure memory), made when missing (0600, in a folder others cannot write). */
async function wrapKey(file: string, keyFile: string): Promise<Buffer> {
  if (!fs.existsSync(file)) {
    ensureDir(dirname(file), { mode: 0o700, forbid: 0o022, parents: true });
    const k = secureAlloc(WRAP_KEY_BYTES);
    try {
      sodium.randombytes_buf(k);
      await createFileAtomic(file, k, { mode: 0o600 });
    } catch (e) {
      if (!isMedvError(e, 'EEXIST')) throw e; // another process made it first: use that one
    } finally {
      secureFree(k);
    }
  }
  return readWrapKey(file, keyFile);
}

/** TPM2 through systemd-creds when it reports one; undefined when not (or it fails: the wrap key alone then). */
function sealWith(hostKey: Buffer, wk: Buffer): Buffer {
  if (hasTpm2()) {
    try { return wrapHostKey(hostKey, wk, 'tpm2'); } catch { /* a TPM this user cannot use */ }
  }
  return wrapHostKey(hostKey, wk);
}

/**
 * data/Local/host.key as a KEK source (with its wrap key file): created bound to this machine and
 * user when missing, wrapped in place when an earlier medv left it raw. A symlink or anything but
 * a regular file there is EUNSAFE; a bound key whose wrap key is not here is EBADKEY.
 */
export async function clientHostKey(c: ClientRoot): Promise<HostKeySource> {
  checkSafeDir(c.local);
  const keyFile = join(c.local, HOST_KEY_FILE);
  const wrapKeyFile = wrapKeyFileFor(c);
  let st: fs.Stats | undefined;
  try { st = fs.lstatSync(keyFile); } catch { st = undefined; }
  if (!st) {
    const wk = await wrapKey(wrapKeyFile, keyFile);
    const hk = secureAlloc(HOST_KEY_BYTES);
    try {
      sodium.randombytes_buf(hk);
      await createFileAtomic(keyFile, sealWith(hk, wk), { mode: 0o600 });
    } catch (e) {
      if (!isMedvError(e, 'EEXIST')) throw e; // another process created it first
    } finally {
      secureFree(hk);
      secureFree(wk);
    }
    st = fs.lstatSync(keyFile);
  }
  if (!st.isFile()) throw new MedvError('EUNSAFE', 'the host key is not a regular file (a symlink or something else is there)', { file: keyFile });
  const kek: HostKeySource = { kind: 'hostkey', keyFile, wrapKeyFile };
  if (st.size === HOST_KEY_BYTES) await bindInPlace(keyFile, wrapKeyFile);
  // opened once here, so that a root that does not open says so at once, before anything is done
  secureFree(await loadHostKey(kek));
  return kek;
}

/** A raw host key (an earlier medv) wrapped in place: same key, now bound to this machine and user. */
async function bindInPlace(keyFile: string, wrapKeyFile: string): Promise<void> {
  const hk = await loadHostKey(keyFile);
  const wk = await wrapKey(wrapKeyFile, keyFile);
  try {
    await writeFileAtomic(keyFile, sealWith(hk, wk), { mode: 0o600 });
  } finally {
    secureFree(hk);
    secureFree(wk);
  }
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
  const hostKey = await loadHostKey(kek);
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
