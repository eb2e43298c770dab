/**
 * A host key bound to the machine and the user: the client's host key file holds the key only
 * wrapped, under a wrap key kept outside the client root (a 0600 file of the user's, e.g.
 * `$XDG_CONFIG_HOME/medv/host-wrap.key`), and, where systemd-creds can use a TPM2, sealed by the
 * TPM as well. A copy of the client root alone opens nowhere: not on another machine, not under
 * another account (docs/security.md).
 *
 *   bytes 0..7   "MEDVHKW1"
 *   byte  8      protector: 1 = wrap key file; 2 = wrap key file, then systemd-creds (TPM2)
 *   bytes 9..    protector 1: nonce (24) | XChaCha20-Poly1305(host key, key = wrap key,
 *                                                            AD = bytes 0..8) + tag (16)
 *                protector 2: the output of `systemd-creds encrypt --name=medv-host-key` of the
 *                             protector-1 payload (nonce | ciphertext | tag)
 *
 * A raw 32-byte host key file (written by an earlier medv, or given with --host-key) still loads;
 * src/repo/hostkey.ts wraps a client's in place on first use. Unwrapping through systemd-creds
 * costs a process (and a TPM operation), so an unwrapped key is kept for the life of the process,
 * keyed by the identity of both files (device, inode, size, change time).
 */
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { MedvError, fromSystemError } from '../core/errors.js';
import { readSecretSync } from '../core/fsio.js';
import { secureAlloc, secureFree } from './secure.js';
import { sodium } from '../core/sodium.js';

export const WRAPPED_HOST_KEY_MAGIC = Buffer.from('MEDVHKW1', 'latin1');
export const WRAP_KEY_BYTES = 32;
const HOST_KEY_BYTES = 32;
const NONCE = 24;
const TAG = 16;
const HEADER = WRAPPED_HOST_KEY_MAGIC.length + 1;
const PAYLOAD = NONCE + HOST_KEY_BYTES + TAG;
/** Smallest wrapped host key file (protector 1). */
export const WRAPPED_HOST_KEY_MIN = HEADER + PAYLOAD;
/** Largest wrapped host key file read (a systemd-creds blob of 72 bytes is a few hundred). */
export const WRAPPED_HOST_KEY_MAX = 16 * 1024;
const CREDENTIAL_NAME = 'medv-host-key';

export type Protector = 'file' | 'file+tpm2';

/** Does `bytes` look like a wrapped host key (the magic)? */
export function isWrappedHostKey(bytes: Buffer): boolean {
  return bytes.length > HEADER && bytes.subarray(0, WRAPPED_HOST_KEY_MAGIC.length).equals(WRAPPED_HOST_KEY_MAGIC);
}

function systemdCreds(args: string[], input: Buffer): Buffer {
  const r = spawnSync('systemd-creds', args, { input, maxBuffer: WRAPPED_HOST_KEY_MAX, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C' } });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr?.toString('utf8').trim().split('\n').pop() ?? `exit ${r.status}`);
    throw new MedvError('EBADKEY', `systemd-creds ${args[0]} failed: ${why}`);
  }
  return r.stdout;
}

/** Does systemd-creds report a usable TPM2 here (`systemd-creds has-tpm2` exits 0)? */
export function hasTpm2(): boolean {
  const r = spawnSync('systemd-creds', ['has-tpm2'], { stdio: 'ignore', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  return !r.error && r.status === 0;
}

/**
 * The wrapped form of `hostKey` (32 bytes, secure memory) under `wrapKey` (32 bytes). `tpm`: also
 * seal with systemd-creds using that key type ('tpm2'; 'host' is systemd's root-only machine
 * secret, used by tests of this path on machines without a TPM).
 */
export function wrapHostKey(hostKey: Buffer, wrapKey: Buffer, tpm?: 'tpm2' | 'host'): Buffer {
  if (hostKey.length !== HOST_KEY_BYTES || wrapKey.length !== WRAP_KEY_BYTES) throw new MedvError('EINTERNAL', 'host key and wrap key are 32 bytes');
  const header = Buffer.concat([WRAPPED_HOST_KEY_MAGIC, Buffer.from([tpm ? 2 : 1])]);
  const payload = Buffer.alloc(PAYLOAD);
  sodium.randombytes_buf(payload.subarray(0, NONCE));
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(payload.subarray(NONCE), hostKey, header, null, payload.subarray(0, NONCE), wrapKey);
  if (!tpm) return Buffer.concat([header, payload]);
  return Buffer.concat([header, systemdCreds(['encrypt', `--name=${CREDENTIAL_NAME}`, `--with-key=${tpm}`, '-', '-'], payload)]);
}

/** Which protector a wrapped host key uses. */
export function protectorOf(bytes: Buffer): Protector {
  if (!isWrappedHostKey(bytes)) throw new MedvError('EFORMAT', 'not a wrapped host key');
  const p = bytes[WRAPPED_HOST_KEY_MAGIC.length];
  if (p === 1) return 'file';
  if (p === 2) return 'file+tpm2';
  throw new MedvError('EVERSION', `wrapped host key with unknown protector ${p}`, { offset: WRAPPED_HOST_KEY_MAGIC.length });
}

/** The message every "does not open here" failure gives: the client root was made elsewhere. */
function bound(keyFile: string, wrapKeyFile: string, why: string): MedvError {
  return new MedvError('EBADKEY', `the host key ${keyFile} is bound to another machine or user (${why}): a client root copied from another machine or account cannot be used; log in again into a new client root here (medv login --client-root DIR)`,
    { file: keyFile, wrapKeyFile, reason: 'bound' });
}

/** The wrap key (32 bytes, secure memory), or EBADKEY "bound" when it is not there. */
export function readWrapKey(wrapKeyFile: string, keyFile: string): Buffer {
  const k = secureAlloc(WRAP_KEY_BYTES);
  try {
    return readSecretSync(wrapKeyFile, { what: 'host key wrap key', size: WRAP_KEY_BYTES, into: k });
  } catch (e) {
    secureFree(k);
    if (e instanceof MedvError && e.code === 'ENOENT') throw bound(keyFile, wrapKeyFile, `its wrap key ${wrapKeyFile} does not exist here`);
    throw e;
  }
}

/** Unwrapped keys of this process, by the identity of the key file and the wrap key file. */
const cache = new Map<string, Buffer>();

function identity(...files: string[]): string | undefined {
  try {
    return files.map((f) => { const s = fs.statSync(f); return `${s.dev}:${s.ino}:${s.size}:${s.ctimeMs}`; }).join('|');
  } catch {
    return undefined;
  }
}

/**
 * Unwrap a wrapped host key file's bytes into secure memory (the caller frees it). EBADKEY
 * (data.reason 'bound') when the wrap key is missing or another, or the TPM does not open it.
 */
export function unwrapHostKey(bytes: Buffer, keyFile: string, wrapKeyFile: string): Buffer {
  const protector = protectorOf(bytes);
  const id = protector === 'file+tpm2' ? identity(keyFile, wrapKeyFile) : undefined;
  const hit = id !== undefined ? cache.get(id) : undefined;
  if (hit) {
    const out = secureAlloc(HOST_KEY_BYTES);
    hit.copy(out);
    return out;
  }
  const header = bytes.subarray(0, HEADER);
  let payload = bytes.subarray(HEADER);
  if (protector === 'file+tpm2') {
    try {
      payload = systemdCreds(['decrypt', `--name=${CREDENTIAL_NAME}`, '-', '-'], payload);
    } catch (e) {
      throw bound(keyFile, wrapKeyFile, `this machine's TPM does not open it: ${(e as Error).message}`);
    }
  }
  if (payload.length !== PAYLOAD) throw new MedvError('ECORRUPT', `wrapped host key payload is ${payload.length} bytes, not ${PAYLOAD}`, { file: keyFile });
  const wrapKey = readWrapKey(wrapKeyFile, keyFile);
  const out = secureAlloc(HOST_KEY_BYTES);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, null, payload.subarray(NONCE), header, payload.subarray(0, NONCE), wrapKey);
  } catch {
    secureFree(out);
    throw bound(keyFile, wrapKeyFile, `it does not open with the wrap key ${wrapKeyFile}`);
  } finally {
    secureFree(wrapKey);
  }
  if (id !== undefined) {
    const kept = secureAlloc(HOST_KEY_BYTES);
    out.copy(kept);
    cache.set(id, kept);
  }
  return out;
}

/** The bytes of a host key file (raw or wrapped), read as a secret: ours, 0600, no symlink, bounded. */
export function readHostKeyFile(keyFile: string): Buffer {
  try {
    return readSecretSync(keyFile, { what: 'host key file', max: WRAPPED_HOST_KEY_MAX });
  } catch (e) {
    throw fromSystemError(e, keyFile);
  }
}
