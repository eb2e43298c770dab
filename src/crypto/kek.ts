/**
 * Key-encryption keys (KEKs): what unwraps a disk's data key from its .enc file.
 *  - passphrase: Argon2id (crypto_pwhash) of the passphrase with the salt and limits stored in the file;
 *  - host key: a 32-byte random file (mode 0600) in the client data repository.
 * (The server key service of DESIGN.md wraps with a host-style 32-byte key and is built elsewhere.)
 */
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { MedvError, fromSystemError } from '../errors.js';
import { secureAlloc, secureFree } from './secure.js';
import { sodium } from './sodium.js';

export type KekSource = { kind: 'passphrase'; passphrase: string } | { kind: 'hostkey'; keyFile: string };

export const HOST_KEY_BYTES = 32;
export const HOST_KEY_ID_BYTES = 16;
const HOST_KEY_ID_CONTEXT = Buffer.from('medv host key id v1', 'latin1');

/** Largest passphrase file we read (a passphrase, not a document). */
const MAX_PASSPHRASE_FILE = 64 * 1024;

/**
 * Where the passphrase comes from, in order: `passphraseFile` (its contents, one trailing newline
 * removed), the MEDV_PASSPHRASE environment variable, the host key file if given.
 * Otherwise ENOKEY. A passphrase file that group or others may access is used, with one warning
 * line through `warn` (default: stderr); a host key file like that is refused when loaded
 * (loadHostKey).
 */
export function kekFromEnvironment(opts: { passphraseFile?: string; hostKeyFile?: string; warn?: (line: string) => void } = {}): KekSource {
  if (opts.passphraseFile !== undefined) {
    const file = opts.passphraseFile;
    let raw: Buffer;
    let fd: number | undefined;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY);
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'passphrase file is not a regular file', { file });
      if (st.size > MAX_PASSPHRASE_FILE) throw new MedvError('EINVAL_ARG', `passphrase file is larger than ${MAX_PASSPHRASE_FILE} bytes`, { file });
      if (st.mode & 0o077) {
        const warn = opts.warn ?? ((line: string) => { process.stderr.write(`${line}\n`); });
        warn(`medv: warning: passphrase file ${file} is accessible by group or others (mode ${modeString(st.mode)}); chmod 600 it`);
      }
      raw = Buffer.alloc(st.size);
      let done = 0;
      while (done < raw.length) {
        const n = fs.readSync(fd, raw, done, raw.length - done, done);
        if (n === 0) break;
        done += n;
      }
      raw = raw.subarray(0, done);
    } catch (e) {
      throw fromSystemError(e, file);
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
    let text = raw.toString('utf8');
    raw.fill(0);
    if (text.endsWith('\r\n')) text = text.slice(0, -2);
    else if (text.endsWith('\n')) text = text.slice(0, -1);
    if (text.length === 0) throw new MedvError('ENOKEY', 'passphrase file is empty', { file });
    return { kind: 'passphrase', passphrase: text };
  }
  const env = process.env.MEDV_PASSPHRASE;
  if (env !== undefined && env.length > 0) return { kind: 'passphrase', passphrase: env };
  if (opts.hostKeyFile !== undefined) return { kind: 'hostkey', keyFile: opts.hostKeyFile };
  throw new MedvError('ENOKEY', 'no passphrase: set MEDV_PASSPHRASE or use --passphrase-file');
}

const modeString = (mode: number) => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;

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
