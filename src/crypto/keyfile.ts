/**
 * Wrapping and unwrapping data keys in .enc key files (format: src/formats/keyfile.ts).
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { beginStaging, readBoundedSync } from '../core/fsio.js';
import { MedvError, fromSystemError } from '../core/errors.js';
import {
  type KeyFileKek, KEYFILE_NONCE_BYTES, KEYFILE_SALT_BYTES, KEYFILE_SIZE, KEYFILE_VERSION, KEYFILE_WRAPPED_BYTES,
  parseKeyFile, serializeKeyFile, serializeKeyFileAad,
} from '../formats/keyfile.js';
import { DATA_KEY_BYTES, DataKey } from './datakey.js';
import { type KekSource, derivedKekFor, hostKeyId, loadHostKey, passphraseKek } from './kek.js';
import { secureAlloc, secureFree } from './secure.js';
import { sodium } from '../core/sodium.js';

export interface PwhashParams {
  opslimit: number;
  memlimit: number;
}

/** Argon2id cost for new key files (stored in each file, so later files may use other values). */
export const DEFAULT_PWHASH: PwhashParams = {
  opslimit: sodium.crypto_pwhash_OPSLIMIT_INTERACTIVE,
  memlimit: sodium.crypto_pwhash_MEMLIMIT_INTERACTIVE,
};

export interface WrapOptions {
  /** Argon2id cost (passphrase KEKs). Default DEFAULT_PWHASH; tests may use the minimum. */
  pwhash?: PwhashParams;
}

/** The bytes of an .enc file holding `dataKey` wrapped under `kek`. */
export async function wrapDataKey(dataKey: DataKey, kek: KekSource, opts: WrapOptions = {}): Promise<Buffer> {
  const nonce = randomBytes(KEYFILE_NONCE_BYTES);
  let header: KeyFileKek;
  let k: Buffer;
  if (kek.kind === 'passphrase' && kek.wrapWith && !opts.pwhash) {
    // Under a KEK derived already (the host service's key cache): its salt and cost go in the file.
    const w = kek.wrapWith;
    header = { kind: 'passphrase', salt: Buffer.from(w.salt), opslimit: BigInt(w.opslimit), memlimit: BigInt(w.memlimit) };
    serializeKeyFileAad({ version: KEYFILE_VERSION, keyId: dataKey.keyId, kek: header, nonce }); // validates limits first
    k = derivedKekFor(kek, w.salt, w.opslimit, w.memlimit)!;
  } else if (kek.kind === 'passphrase') {
    const p = opts.pwhash ?? DEFAULT_PWHASH;
    const salt = randomBytes(KEYFILE_SALT_BYTES);
    header = { kind: 'passphrase', salt, opslimit: BigInt(p.opslimit), memlimit: BigInt(p.memlimit) };
    serializeKeyFileAad({ version: KEYFILE_VERSION, keyId: dataKey.keyId, kek: header, nonce }); // validates limits first
    k = await passphraseKek(kek.passphrase, salt, p.opslimit, p.memlimit);
  } else if (kek.kind === 'hostkey') {
    k = await loadHostKey(kek);
    header = { kind: 'hostkey', hostKeyId: hostKeyId(k) };
  } else {
    throw new MedvError('EINVAL_ARG', 'unknown KEK kind');
  }
  try {
    const rec = { version: KEYFILE_VERSION, keyId: dataKey.keyId, kek: header, nonce };
    const aad = serializeKeyFileAad(rec);
    const wrapped = Buffer.alloc(KEYFILE_WRAPPED_BYTES);
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(wrapped, dataKey.key, aad, null, nonce, k);
    return serializeKeyFile({ ...rec, wrappedKey: wrapped });
  } finally {
    secureFree(k);
  }
}

/**
 * Unwrap the data key from .enc bytes. Parse errors as parseKeyFile; the wrong passphrase or
 * key gives EBADKEY; a KEK of the wrong kind gives ENOKEY. No side effects either way.
 */
export async function unwrapDataKey(enc: Buffer, kek: KekSource, file?: string): Promise<DataKey> {
  const rec = parseKeyFile(enc, file);
  let k: Buffer;
  if (rec.kek.kind === 'passphrase') {
    if (kek.kind !== 'passphrase') {
      throw new MedvError('ENOKEY', 'this key file is protected by a passphrase: set MEDV_PASSPHRASE or use --passphrase-file', { file });
    }
    const [ops, mem] = [Number(rec.kek.opslimit), Number(rec.kek.memlimit)];
    k = derivedKekFor(kek, rec.kek.salt, ops, mem) ?? await passphraseKek(kek.passphrase, rec.kek.salt, ops, mem);
  } else {
    if (kek.kind !== 'hostkey') throw new MedvError('ENOKEY', 'this key file is wrapped with a host key, not a passphrase', { file });
    k = await loadHostKey(kek);
    if (!hostKeyId(k).equals(rec.kek.hostKeyId)) {
      secureFree(k);
      throw new MedvError('EBADKEY', `wrong passphrase or key: the key file was wrapped with another host key than ${kek.keyFile}`, { file });
    }
  }
  const out = secureAlloc(DATA_KEY_BYTES);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, null, rec.wrappedKey, rec.aad, rec.nonce, k);
  } catch {
    secureFree(out);
    throw new MedvError('EBADKEY', 'wrong passphrase or key (the data key did not unwrap)', { file });
  } finally {
    secureFree(k);
  }
  return DataKey.adopt(rec.keyId, out, file);
}

/**
 * Write `dataKey` wrapped under `kek` to `encPath`, atomically and never over an existing file:
 * written and fsynced under a temporary name, then published by link (src/core/fsio.ts).
 */
export async function writeKeyFile(encPath: string, dataKey: DataKey, kek: KekSource, opts: WrapOptions = {}): Promise<void> {
  const staging = beginStaging([encPath], (f) => `key file exists: ${f}`);
  try {
    await writeKeyFileAt(staging.tempFor(encPath), dataKey, kek, opts);
    await staging.publish();
  } catch (e) {
    await staging.abort().catch(() => undefined);
    throw e;
  }
}

/**
 * Write the key file bytes to a new file `path` (O_EXCL, mode 0600) and fsync it. For a key
 * file published together with its .evhd (see createEvhdFile); on failure removes `path`.
 */
export async function writeKeyFileAt(path: string, dataKey: DataKey, kek: KekSource, opts: WrapOptions = {}): Promise<void> {
  await writeWrappedAt(path, await wrapDataKey(dataKey, kek, opts));
}

/**
 * Publish key file bytes already made by wrapDataKey at `encPath` (refuses an existing file), as
 * writeKeyFile does: for a writer that wraps its key early, while it does other work.
 */
export async function writeWrappedKeyFile(encPath: string, bytes: Buffer): Promise<void> {
  const staging = beginStaging([encPath], (f) => `key file exists: ${f}`);
  try {
    await writeWrappedAt(staging.tempFor(encPath), bytes);
    await staging.publish();
  } catch (e) {
    await staging.abort().catch(() => undefined);
    throw e;
  }
}

async function writeWrappedAt(path: string, bytes: Buffer): Promise<void> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    await fh.write(bytes, 0, bytes.length, 0);
    await fh.sync();
    await fh.close();
    fh = undefined;
  } catch (e) {
    if (fh) {
      await fh.close().catch(() => undefined);
      await fs.promises.unlink(path).catch(() => undefined);
    }
    throw fromSystemError(e, path);
  }
}

/**
 * Read and unwrap an .enc file: read once, never through a symlink or from a FIFO, and never more
 * than one byte past the format's size (a huge file is refused, not loaded; src/core/fsio.ts).
 */
export async function readKeyFile(encPath: string, kek: KekSource): Promise<DataKey> {
  let bytes: Buffer | undefined;
  try {
    bytes = readBoundedSync(encPath, KEYFILE_SIZE, 'key file');
  } catch (e) {
    if (e instanceof MedvError && e.code === 'ETOOLARGE') throw new MedvError('EFORMAT', `not a key file: ${KEYFILE_SIZE} bytes expected`, { file: encPath }, { cause: e });
    throw e;
  }
  if (!bytes) throw new MedvError('ENOENT', `no such file: ${encPath}`, { file: encPath });
  return unwrapDataKey(bytes, kek, encPath);
}

