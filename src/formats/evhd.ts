/**
 * EVHD: an encrypted container around the exact bytes of a VHD file (DESIGN.md, "evhd").
 * Pure parse/serialize of the 4096-byte plaintext header; the device is in src/layers/evhd/.
 *
 * File layout: header (4096 bytes) at 0, then logical unit i (4096 bytes of the inner file) at
 * file offset 4096 + i * 4096, encrypted with AES-256-XTS, tweak i (16-byte little-endian). The
 * last unit is stored whole; its bytes past the logical length are zeros before encryption.
 *
 * Header (integers little-endian). Every field that changes after creation (logical length,
 * MAC, checksum) lies in the first 512-byte sector, so a header rewrite is one sector write.
 *
 *   off  size  field
 *     0     8  magic "MEDVEVHD"
 *     8     2  version (2; version 1 had no MAC and is refused with EVERSION)
 *    10     2  reserved, 0
 *    12     4  header size (4096)
 *    16     4  unit size (4096)
 *    20     4  reserved, 0
 *    24    16  cipher name, ASCII, NUL-padded: "aes-256-xts"
 *    40    16  key id (matches the .enc key file)
 *    56    32  key-check value (src/layers/evhd/keycheck.ts: keyed BLAKE2b under a key derived from the data key)
 *    88     8  logical length in bytes (u64): the size of the inner VHD file
 *    96     8  data offset (u64, 4096)
 *   104    32  checksum: SHA-256 of the 4096 header bytes with this field zeroed
 *   136    32  MAC: keyed BLAKE2b-256 of the 4096 header bytes with the checksum and MAC fields
 *              zeroed, under a key derived from the data key (src/layers/evhd/keycheck.ts)
 *   168  3928  reserved (zeros when written; covered by the checksum and the MAC)
 *
 * Parsing order: length, magic, checksum, version, then each field. The checksum catches damage
 * without a key; the MAC is checked when the file is opened with its key (after the key check,
 * before any data unit is read), so a header changed by anyone without the key (a forged logical
 * length with a recomputed checksum) is refused. Every header write recomputes both.
 */
import { createHash } from 'node:crypto';
import { MedvError } from '../core/errors.js';

export const EVHD_MAGIC = Buffer.from('MEDVEVHD', 'latin1');
export const EVHD_VERSION = 2;
export const EVHD_HEADER_SIZE = 4096;
export const EVHD_UNIT_SIZE = 4096;
export const EVHD_CIPHER = 'aes-256-xts';
export const EVHD_KEY_ID_BYTES = 16;
export const EVHD_KEY_CHECK_BYTES = 32;
export const EVHD_MAC_BYTES = 32;
/** Largest logical length we accept: whole units must stay addressable as JS numbers. */
export const EVHD_MAX_LOGICAL_LENGTH = BigInt(Number.MAX_SAFE_INTEGER) - 2n * BigInt(EVHD_UNIT_SIZE) + 1n;

const OFF = {
  magic: 0, version: 8, reserved1: 10, headerSize: 12, unitSize: 16, reserved2: 20, cipher: 24,
  keyId: 40, keyCheck: 56, logicalLength: 88, dataOffset: 96, checksum: 104, mac: 136,
} as const;
/** Offset of the MAC field (for errors naming it). */
export const EVHD_MAC_OFFSET = OFF.mac;
const CIPHER_BYTES = 16;

export interface EvhdHeader {
  version: number;
  headerSize: number;
  unitSize: number;
  cipher: string;
  keyId: Buffer;
  keyCheck: Buffer;
  logicalLength: bigint;
  dataOffset: bigint;
  /** The header MAC as stored (zeros in a header not yet sealed). */
  mac: Buffer;
}

/** A header with the fixed fields filled in. */
export function newEvhdHeader(keyId: Buffer, keyCheck: Buffer, logicalLength: bigint = 0n): EvhdHeader {
  return {
    version: EVHD_VERSION, headerSize: EVHD_HEADER_SIZE, unitSize: EVHD_UNIT_SIZE, cipher: EVHD_CIPHER,
    keyId: Buffer.from(keyId), keyCheck: Buffer.from(keyCheck), logicalLength, dataOffset: BigInt(EVHD_HEADER_SIZE),
    mac: Buffer.alloc(EVHD_MAC_BYTES),
  };
}

function fail(code: 'EFORMAT' | 'ETRUNCATED' | 'ECHECKSUM' | 'EVERSION' | 'EUNSUPPORTED', msg: string, file: string | undefined, offset: number): never {
  throw new MedvError(code, msg, { file, offset });
}

function headerChecksum(b: Buffer): Buffer {
  const h = createHash('sha256');
  h.update(b.subarray(0, OFF.checksum));
  h.update(Buffer.alloc(32));
  h.update(b.subarray(OFF.checksum + 32, EVHD_HEADER_SIZE));
  return h.digest();
}

/** The bytes the header MAC covers: the 4096-byte header with the checksum and MAC fields zeroed (a copy). */
export function evhdHeaderMacInput(header: Buffer): Buffer {
  if (!Buffer.isBuffer(header) || header.length < EVHD_HEADER_SIZE) throw new MedvError('EINVAL_ARG', `EVHD header must be ${EVHD_HEADER_SIZE} bytes`);
  const b = Buffer.from(header.subarray(0, EVHD_HEADER_SIZE));
  b.fill(0, OFF.checksum, OFF.checksum + 32);
  b.fill(0, OFF.mac, OFF.mac + EVHD_MAC_BYTES);
  return b;
}

/**
 * The 4096 header bytes. With `mac`, the MAC field is computed over evhdHeaderMacInput of the
 * other fields (src/layers/evhd/keycheck.ts supplies it); without, `h.mac` is written as it is.
 * The checksum is computed last, over everything including the MAC.
 */
export function serializeEvhdHeader(h: EvhdHeader, mac?: (input: Buffer) => Buffer): Buffer {
  const bad = (m: string) => new MedvError('EINVAL_ARG', `EVHD header: ${m}`);
  if (!Buffer.isBuffer(h.keyId) || h.keyId.length !== EVHD_KEY_ID_BYTES) throw bad('key id must be 16 bytes');
  if (!Buffer.isBuffer(h.keyCheck) || h.keyCheck.length !== EVHD_KEY_CHECK_BYTES) throw bad('key check must be 32 bytes');
  if (typeof h.logicalLength !== 'bigint' || h.logicalLength < 0n || h.logicalLength > EVHD_MAX_LOGICAL_LENGTH) throw bad('logical length out of range');
  const cipher = Buffer.from(h.cipher, 'latin1');
  if (cipher.length >= CIPHER_BYTES) throw bad('cipher name too long');
  const b = Buffer.alloc(EVHD_HEADER_SIZE);
  EVHD_MAGIC.copy(b, OFF.magic);
  b.writeUInt16LE(h.version, OFF.version);
  b.writeUInt32LE(h.headerSize, OFF.headerSize);
  b.writeUInt32LE(h.unitSize, OFF.unitSize);
  cipher.copy(b, OFF.cipher);
  h.keyId.copy(b, OFF.keyId);
  h.keyCheck.copy(b, OFF.keyCheck);
  b.writeBigUInt64LE(h.logicalLength, OFF.logicalLength);
  b.writeBigUInt64LE(h.dataOffset, OFF.dataOffset);
  const tag = mac ? mac(evhdHeaderMacInput(b)) : h.mac;
  if (!Buffer.isBuffer(tag) || tag.length !== EVHD_MAC_BYTES) throw bad('MAC must be 32 bytes');
  tag.copy(b, OFF.mac);
  headerChecksum(b).copy(b, OFF.checksum);
  return b;
}

/** Does this buffer start like an EVHD header (magic only)? */
export function looksLikeEvhd(buf: Buffer): boolean {
  return buf.length >= EVHD_MAGIC.length && buf.subarray(0, EVHD_MAGIC.length).equals(EVHD_MAGIC);
}

/** Parse the first 4096 bytes of an .evhd file. Hostile input gives MedvError. */
export function parseEvhdHeader(buf: Buffer, file?: string): EvhdHeader {
  if (!Buffer.isBuffer(buf)) throw new MedvError('EINVAL_ARG', 'EVHD header must be a Buffer', { file });
  if (!looksLikeEvhd(buf)) {
    if (buf.length < EVHD_MAGIC.length && EVHD_MAGIC.subarray(0, buf.length).equals(buf)) {
      fail('ETRUNCATED', `EVHD header is ${buf.length} bytes, expected ${EVHD_HEADER_SIZE}`, file, buf.length);
    }
    fail('EFORMAT', 'not an EVHD file (bad magic)', file, 0);
  }
  if (buf.length < EVHD_HEADER_SIZE) fail('ETRUNCATED', `EVHD header is ${buf.length} bytes, expected ${EVHD_HEADER_SIZE}`, file, buf.length);
  const hdr = buf.subarray(0, EVHD_HEADER_SIZE);
  if (!headerChecksum(hdr).equals(hdr.subarray(OFF.checksum, OFF.checksum + 32))) {
    fail('ECHECKSUM', 'EVHD header checksum mismatch', file, OFF.checksum);
  }
  const version = hdr.readUInt16LE(OFF.version);
  if (version !== EVHD_VERSION) fail('EVERSION', `EVHD version ${version} is not supported (expected ${EVHD_VERSION})`, file, OFF.version);
  const headerSize = hdr.readUInt32LE(OFF.headerSize);
  if (headerSize !== EVHD_HEADER_SIZE) fail('EFORMAT', `EVHD header size ${headerSize}, expected ${EVHD_HEADER_SIZE}`, file, OFF.headerSize);
  const unitSize = hdr.readUInt32LE(OFF.unitSize);
  if (unitSize !== EVHD_UNIT_SIZE) fail('EUNSUPPORTED', `EVHD unit size ${unitSize} is not supported (expected ${EVHD_UNIT_SIZE})`, file, OFF.unitSize);
  const cipherField = hdr.subarray(OFF.cipher, OFF.cipher + CIPHER_BYTES);
  const nul = cipherField.indexOf(0);
  if (nul <= 0) fail('EFORMAT', 'EVHD cipher name is empty or not NUL-terminated', file, OFF.cipher);
  for (let i = nul; i < CIPHER_BYTES; i++) if (cipherField[i] !== 0) fail('EFORMAT', 'EVHD cipher name has bytes after its NUL', file, OFF.cipher + i);
  for (let i = 0; i < nul; i++) {
    const c = cipherField[i];
    if (c < 0x21 || c > 0x7e) fail('EFORMAT', 'EVHD cipher name is not printable ASCII', file, OFF.cipher + i);
  }
  const cipher = cipherField.subarray(0, nul).toString('latin1');
  if (cipher !== EVHD_CIPHER) fail('EUNSUPPORTED', `EVHD cipher '${cipher}' is not supported (expected ${EVHD_CIPHER})`, file, OFF.cipher);
  const logicalLength = hdr.readBigUInt64LE(OFF.logicalLength);
  if (logicalLength > EVHD_MAX_LOGICAL_LENGTH) fail('EFORMAT', `EVHD logical length ${logicalLength} is too large`, file, OFF.logicalLength);
  const dataOffset = hdr.readBigUInt64LE(OFF.dataOffset);
  if (dataOffset !== BigInt(EVHD_HEADER_SIZE)) fail('EFORMAT', `EVHD data offset ${dataOffset}, expected ${EVHD_HEADER_SIZE}`, file, OFF.dataOffset);
  return {
    version, headerSize, unitSize, cipher,
    keyId: Buffer.from(hdr.subarray(OFF.keyId, OFF.keyId + EVHD_KEY_ID_BYTES)),
    keyCheck: Buffer.from(hdr.subarray(OFF.keyCheck, OFF.keyCheck + EVHD_KEY_CHECK_BYTES)),
    logicalLength, dataOffset,
    mac: Buffer.from(hdr.subarray(OFF.mac, OFF.mac + EVHD_MAC_BYTES)),
  };
}
