/**
 * The `.enc` key file: one disk's data key, wrapped. Pure parse/serialize, no I/O, no crypto
 * beyond the header checksum (the wrapping itself is in src/crypto/keyfile.ts).
 *
 * Layout (216 bytes, integers little-endian):
 *
 *   off  size  field
 *     0     8  magic "MEDVKEY\0"
 *     8     2  version (1)
 *    10     1  KEK kind: 1 = passphrase (Argon2id v1.3 via crypto_pwhash), 2 = host key
 *    11     1  reserved, 0
 *    12     4  wrapped key length (80 = 64-byte data key + 16-byte Poly1305 tag)
 *    16    16  key id of the data key (random; the .evhd header carries the same id)
 *    32    16  passphrase: Argon2id salt            host key: zeros
 *    48     8  passphrase: opslimit (u64)           host key: 0
 *    56     8  passphrase: memlimit in bytes (u64)  host key: 0
 *    64    16  passphrase: zeros                    host key: host key id (keyed BLAKE2b of the host key)
 *    80    24  XChaCha20-Poly1305 nonce (random)
 *   104    80  wrapped data key: XChaCha20-Poly1305(KEK, nonce, data key, associated data = bytes 0..103)
 *   184    32  checksum: SHA-256 of bytes 0..183
 *
 * The KEK is the Argon2id output (32 bytes) for a passphrase, or the 32-byte host key itself.
 * A wrong passphrase or key fails the AEAD tag: EBADKEY, nothing else happens.
 *
 * Parsing order: length, magic, checksum, version, then every field; opslimit and memlimit are
 * bounded here (OPSLIMIT_MAX_ACCEPTED, MEMLIMIT_MAX_ACCEPTED) so hostile input is refused before
 * anyone runs Argon2 with its parameters.
 */
import { createHash } from 'node:crypto';
import { MedvError } from '../core/errors.js';

export const KEYFILE_MAGIC = Buffer.from('MEDVKEY\0', 'latin1');
export const KEYFILE_VERSION = 1;
export const KEYFILE_SIZE = 216;
export const KEYFILE_AAD_BYTES = 104;
export const KEYFILE_WRAPPED_BYTES = 80;
export const KEYFILE_NONCE_BYTES = 24;
export const KEYFILE_SALT_BYTES = 16;
export const KEYFILE_ID_BYTES = 16;

export const KEK_KIND_PASSPHRASE = 1;
export const KEK_KIND_HOSTKEY = 2;

/** libsodium's crypto_pwhash bounds we accept from a file (MIN from libsodium, MAX = SENSITIVE). */
export const OPSLIMIT_MIN_ACCEPTED = 1n;
export const OPSLIMIT_MAX_ACCEPTED = 16n;
export const MEMLIMIT_MIN_ACCEPTED = 8192n;
export const MEMLIMIT_MAX_ACCEPTED = 1024n * 1024n * 1024n;

const OFF = {
  magic: 0, version: 8, kind: 10, reserved: 11, wrappedLength: 12, keyId: 16, salt: 32,
  opslimit: 48, memlimit: 56, hostKeyId: 64, nonce: 80, wrapped: 104, checksum: 184,
} as const;

export type KeyFileKek =
  | { kind: 'passphrase'; salt: Buffer; opslimit: bigint; memlimit: bigint }
  | { kind: 'hostkey'; hostKeyId: Buffer };

export interface KeyFileRecord {
  version: number;
  keyId: Buffer;
  kek: KeyFileKek;
  nonce: Buffer;
  /** 80 bytes: ciphertext of the 64-byte data key followed by the tag. */
  wrappedKey: Buffer;
}

export type KeyFileHeader = Omit<KeyFileRecord, 'wrappedKey'>;

function fail(code: 'EFORMAT' | 'ETRUNCATED' | 'ECHECKSUM' | 'EVERSION' | 'EUNSUPPORTED', msg: string, file: string | undefined, offset: number): never {
  throw new MedvError(code, msg, { file, offset });
}

function checkLength(name: string, b: Buffer, n: number): void {
  if (!Buffer.isBuffer(b) || b.length !== n) throw new MedvError('EINVAL_ARG', `key file ${name} must be ${n} bytes`);
}

/** The first 104 bytes (what the AEAD authenticates) for a header. */
export function serializeKeyFileAad(h: KeyFileHeader): Buffer {
  checkLength('key id', h.keyId, KEYFILE_ID_BYTES);
  checkLength('nonce', h.nonce, KEYFILE_NONCE_BYTES);
  const b = Buffer.alloc(KEYFILE_AAD_BYTES);
  KEYFILE_MAGIC.copy(b, OFF.magic);
  b.writeUInt16LE(h.version, OFF.version);
  b.writeUInt32LE(KEYFILE_WRAPPED_BYTES, OFF.wrappedLength);
  h.keyId.copy(b, OFF.keyId);
  if (h.kek.kind === 'passphrase') {
    checkLength('salt', h.kek.salt, KEYFILE_SALT_BYTES);
    checkPwhashParams(h.kek.opslimit, h.kek.memlimit, undefined);
    b.writeUInt8(KEK_KIND_PASSPHRASE, OFF.kind);
    h.kek.salt.copy(b, OFF.salt);
    b.writeBigUInt64LE(h.kek.opslimit, OFF.opslimit);
    b.writeBigUInt64LE(h.kek.memlimit, OFF.memlimit);
  } else {
    checkLength('host key id', h.kek.hostKeyId, KEYFILE_ID_BYTES);
    b.writeUInt8(KEK_KIND_HOSTKEY, OFF.kind);
    h.kek.hostKeyId.copy(b, OFF.hostKeyId);
  }
  h.nonce.copy(b, OFF.nonce);
  return b;
}

export function serializeKeyFile(rec: KeyFileRecord): Buffer {
  checkLength('wrapped key', rec.wrappedKey, KEYFILE_WRAPPED_BYTES);
  const b = Buffer.alloc(KEYFILE_SIZE);
  serializeKeyFileAad(rec).copy(b, 0);
  rec.wrappedKey.copy(b, OFF.wrapped);
  checksum(b).copy(b, OFF.checksum);
  return b;
}

function checksum(b: Buffer): Buffer {
  return createHash('sha256').update(b.subarray(0, OFF.checksum)).digest();
}

function checkPwhashParams(ops: bigint, mem: bigint, file: string | undefined): void {
  if (ops < OPSLIMIT_MIN_ACCEPTED || ops > OPSLIMIT_MAX_ACCEPTED) {
    fail('EFORMAT', `Argon2id opslimit ${ops} outside ${OPSLIMIT_MIN_ACCEPTED}..${OPSLIMIT_MAX_ACCEPTED}`, file, OFF.opslimit);
  }
  if (mem < MEMLIMIT_MIN_ACCEPTED || mem > MEMLIMIT_MAX_ACCEPTED) {
    fail('EFORMAT', `Argon2id memlimit ${mem} outside ${MEMLIMIT_MIN_ACCEPTED}..${MEMLIMIT_MAX_ACCEPTED} bytes`, file, OFF.memlimit);
  }
}

function isZero(b: Buffer): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

export interface ParsedKeyFile extends KeyFileRecord {
  /** Bytes 0..103 as read: the associated data for unwrapping. */
  aad: Buffer;
}

/** Parse a whole .enc file. Hostile input gives MedvError (ETRUNCATED, EFORMAT, ECHECKSUM, EVERSION, EUNSUPPORTED). */
export function parseKeyFile(buf: Buffer, file?: string): ParsedKeyFile {
  if (!Buffer.isBuffer(buf)) throw new MedvError('EINVAL_ARG', 'key file contents must be a Buffer', { file });
  if (buf.length < KEYFILE_MAGIC.length || !buf.subarray(0, KEYFILE_MAGIC.length).equals(KEYFILE_MAGIC)) {
    if (buf.length < KEYFILE_MAGIC.length && KEYFILE_MAGIC.subarray(0, buf.length).equals(buf)) {
      fail('ETRUNCATED', `key file is ${buf.length} bytes, expected ${KEYFILE_SIZE}`, file, buf.length);
    }
    fail('EFORMAT', 'not a medv key file (bad magic)', file, 0);
  }
  if (buf.length < KEYFILE_SIZE) fail('ETRUNCATED', `key file is ${buf.length} bytes, expected ${KEYFILE_SIZE}`, file, buf.length);
  if (buf.length > KEYFILE_SIZE) fail('EFORMAT', `key file has ${buf.length - KEYFILE_SIZE} trailing bytes`, file, KEYFILE_SIZE);
  if (!checksum(buf).equals(buf.subarray(OFF.checksum, OFF.checksum + 32))) {
    fail('ECHECKSUM', 'key file checksum mismatch', file, OFF.checksum);
  }
  const version = buf.readUInt16LE(OFF.version);
  if (version !== KEYFILE_VERSION) fail('EVERSION', `key file version ${version} is not supported (expected ${KEYFILE_VERSION})`, file, OFF.version);
  if (buf[OFF.reserved] !== 0) fail('EFORMAT', 'reserved byte is not zero', file, OFF.reserved);
  const wrappedLength = buf.readUInt32LE(OFF.wrappedLength);
  if (wrappedLength !== KEYFILE_WRAPPED_BYTES) fail('EFORMAT', `wrapped key length ${wrappedLength}, expected ${KEYFILE_WRAPPED_BYTES}`, file, OFF.wrappedLength);
  const kind = buf[OFF.kind];
  const salt = buf.subarray(OFF.salt, OFF.salt + KEYFILE_SALT_BYTES);
  const opslimit = buf.readBigUInt64LE(OFF.opslimit);
  const memlimit = buf.readBigUInt64LE(OFF.memlimit);
  const hostKeyId = buf.subarray(OFF.hostKeyId, OFF.hostKeyId + KEYFILE_ID_BYTES);
  let kek: KeyFileKek;
  if (kind === KEK_KIND_PASSPHRASE) {
    checkPwhashParams(opslimit, memlimit, file);
    if (!isZero(hostKeyId)) fail('EFORMAT', 'host key id set in a passphrase key file', file, OFF.hostKeyId);
    kek = { kind: 'passphrase', salt: Buffer.from(salt), opslimit, memlimit };
  } else if (kind === KEK_KIND_HOSTKEY) {
    if (!isZero(salt)) fail('EFORMAT', 'salt set in a host-key key file', file, OFF.salt);
    if (opslimit !== 0n || memlimit !== 0n) fail('EFORMAT', 'Argon2id parameters set in a host-key key file', file, OFF.opslimit);
    kek = { kind: 'hostkey', hostKeyId: Buffer.from(hostKeyId) };
  } else {
    fail('EUNSUPPORTED', `unknown key-encryption kind ${kind}`, file, OFF.kind);
  }
  return {
    version,
    keyId: Buffer.from(buf.subarray(OFF.keyId, OFF.keyId + KEYFILE_ID_BYTES)),
    kek,
    nonce: Buffer.from(buf.subarray(OFF.nonce, OFF.nonce + KEYFILE_NONCE_BYTES)),
    wrappedKey: Buffer.from(buf.subarray(OFF.wrapped, OFF.wrapped + KEYFILE_WRAPPED_BYTES)),
    aad: Buffer.from(buf.subarray(0, KEYFILE_AAD_BYTES)),
  };
}
