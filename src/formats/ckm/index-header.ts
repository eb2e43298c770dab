/**
 * The `.ckm.index` file: a signed header, the run directory, then the run records.
 * Pure parse/serialize; the Ed25519 signature itself is made and checked in src/pack (this module
 * only says which bytes are signed).
 *
 * Layout (integers little-endian):
 *   off  size  field
 *     0     8  magic "MEDVCKMI"
 *     8     2  format version (1)
 *    10     2  header length H (everything up to and including the signature)
 *    12     4  block size (4096)
 *    16     4  blocks per run (256)
 *    20     4  image version number N
 *    24    16  image id (the key id of the image content key)
 *    40     8  virtual size in bytes
 *    48     4  run count R = ceil(virtual size / 1 MiB)
 *    52     4  pack count P (1..4096)
 *    56     8  table length T: bytes of all run records
 *    64    32  root hash: BLAKE2b-256 of the run directory (R x 20 bytes)
 *    96    32  signer: the console's Ed25519 public key
 *   128     8  created, Unix seconds
 *   136     1  name length L (1..64)
 *   137     L  image name (A-Z a-z 0-9 . _ -)
 *  137+L  P x 32  packs, ascending version, each: u32 version (<= N), u32 reserved 0,
 *                 u64 pack file length, 16-byte salt (the pack header's salt)
 *  H-64    64  Ed25519 signature of bytes 0..H-65
 *     H  R x 20  run directory: per run a 16-byte run hash and a u32 compressed record length
 *  H+20R    T  run records, in run order, back to back (offsets derived from the lengths)
 * The file is exactly H + 20R + T bytes.
 *
 * Trust chain: signature -> header (root hash, packs, salts) -> run directory (root hash) ->
 * each run record (its hash) -> each block (its id and its AEAD tag).
 */
import { MedvError } from '../../core/errors.js';
import {
  type CkmContext, CKM_BLOCK_SIZE, CKM_IMAGE_ID_BYTES, CKM_MAX_VERSION, CKM_MAX_VIRTUAL_SIZE, CKM_RUN_BLOCKS, CKM_RUN_BYTES,
  IMAGE_NAME_RE, Reader, Writer, checkImageName, checkImageVersion, checkLength, ckmError,
} from './common.js';
import { blake2b } from './hash.js';
import { PACK_HEADER_SIZE, PACK_SALT_BYTES } from './pack.js';
import { RUN_HASH_BYTES, RUN_RECORD_COMPRESSED_MAX } from './run.js';

export const INDEX_MAGIC = Buffer.from('MEDVCKMI', 'latin1');
export const INDEX_FORMAT_VERSION = 1;
export const INDEX_FIXED_BYTES = 137;
export const INDEX_PACK_ENTRY_BYTES = 32;
export const INDEX_MAX_PACKS = 4096;
export const SIGNATURE_BYTES = 64;
export const PUBLIC_KEY_BYTES = 32;
export const ROOT_HASH_BYTES = 32;
export const DIR_ENTRY_BYTES = RUN_HASH_BYTES + 4;
/** Largest header: fixed part, longest name, most packs, signature. */
export const INDEX_MAX_HEADER = INDEX_FIXED_BYTES + 64 + INDEX_MAX_PACKS * INDEX_PACK_ENTRY_BYTES + SIGNATURE_BYTES;

export interface PackRef {
  version: number;
  /** Length of the pack file in bytes. */
  length: number;
  salt: Buffer;
}

export interface IndexHeader {
  name: string;
  version: number;
  imageId: Buffer;
  virtualSize: number;
  runCount: number;
  tableLength: number;
  rootHash: Buffer;
  signer: Buffer;
  /** Unix seconds. */
  created: number;
  packs: PackRef[];
}

export interface ParsedIndexHeader extends IndexHeader {
  headerLength: number;
  /** The bytes the signature covers. */
  signed: Buffer;
  signature: Buffer;
}

export function runCountFor(virtualSize: number): number {
  return Math.ceil(virtualSize / CKM_RUN_BYTES);
}

/** Blocks in run `run` of a disk of `virtualSize` bytes (the last run may be short). */
export function runSlots(virtualSize: number, run: number): number {
  const start = run * CKM_RUN_BYTES;
  return Math.min(CKM_RUN_BLOCKS, Math.ceil((virtualSize - start) / CKM_BLOCK_SIZE));
}

export function headerLengthFor(name: string, packs: number): number {
  return INDEX_FIXED_BYTES + Buffer.byteLength(name, 'utf8') + packs * INDEX_PACK_ENTRY_BYTES + SIGNATURE_BYTES;
}

function checkHeader(h: IndexHeader): void {
  checkImageName(h.name);
  checkImageVersion(h.version);
  checkLength('image id', h.imageId, CKM_IMAGE_ID_BYTES);
  checkLength('root hash', h.rootHash, ROOT_HASH_BYTES);
  checkLength('signer public key', h.signer, PUBLIC_KEY_BYTES);
  if (!Number.isSafeInteger(h.virtualSize) || h.virtualSize < 1 || h.virtualSize > CKM_MAX_VIRTUAL_SIZE) throw new MedvError('EINVAL_ARG', `virtual size ${h.virtualSize} out of range`);
  if (h.runCount !== runCountFor(h.virtualSize)) throw new MedvError('EINVAL_ARG', `run count ${h.runCount} does not match the virtual size`);
  if (!Number.isSafeInteger(h.tableLength) || h.tableLength < 0) throw new MedvError('EINVAL_ARG', 'bad table length');
  if (h.packs.length < 1 || h.packs.length > INDEX_MAX_PACKS) throw new MedvError('EINVAL_ARG', `pack count ${h.packs.length} out of range`);
  let prev = 0;
  for (const p of h.packs) {
    if (!Number.isSafeInteger(p.version) || p.version <= prev || p.version > h.version) throw new MedvError('EINVAL_ARG', `pack versions must ascend and not pass ${h.version}`);
    if (!Number.isSafeInteger(p.length) || p.length < PACK_HEADER_SIZE) throw new MedvError('EINVAL_ARG', `pack ${p.version} length ${p.length} out of range`);
    checkLength('pack salt', p.salt, PACK_SALT_BYTES);
    prev = p.version;
  }
}

/** The signed part of the header (everything before the signature). */
export function serializeIndexHeaderSigned(h: IndexHeader): Buffer {
  checkHeader(h);
  const w = new Writer();
  const name = Buffer.from(h.name, 'utf8');
  w.bytes(INDEX_MAGIC);
  w.u16(INDEX_FORMAT_VERSION);
  w.u16(headerLengthFor(h.name, h.packs.length));
  w.u32(CKM_BLOCK_SIZE);
  w.u32(CKM_RUN_BLOCKS);
  w.u32(h.version);
  w.bytes(h.imageId);
  w.u64(h.virtualSize);
  w.u32(h.runCount);
  w.u32(h.packs.length);
  w.u64(h.tableLength);
  w.bytes(h.rootHash);
  w.bytes(h.signer);
  w.u64(Math.max(0, Math.floor(h.created)));
  w.u8(name.length);
  w.bytes(name);
  for (const p of h.packs) {
    w.u32(p.version);
    w.u32(0);
    w.u64(p.length);
    w.bytes(p.salt);
  }
  return w.done();
}

/** The whole header: signed part then `signature`. */
export function serializeIndexHeader(h: IndexHeader, signature: Buffer): Buffer {
  checkLength('signature', signature, SIGNATURE_BYTES);
  return Buffer.concat([serializeIndexHeaderSigned(h), signature]);
}

/**
 * Parse the header from the first bytes of an index (at least the header; more is ignored).
 * Order: magic, format version, header length, then every field. The signature is NOT checked
 * here: the caller must verify `signature` over `signed` before trusting anything else.
 */
export function parseIndexHeader(buf: Buffer, ctx?: CkmContext): ParsedIndexHeader {
  const r = new Reader(buf, ctx, 'index header');
  if (buf.length < INDEX_MAGIC.length || !buf.subarray(0, INDEX_MAGIC.length).equals(INDEX_MAGIC)) {
    if (buf.length < INDEX_MAGIC.length && INDEX_MAGIC.subarray(0, buf.length).equals(buf)) r.need(INDEX_FIXED_BYTES);
    throw ckmError('EFORMAT', 'not a medv image index (bad magic)', ctx, 0);
  }
  r.pos = 8;
  const fmt = r.u16();
  if (fmt !== INDEX_FORMAT_VERSION) throw ckmError('EVERSION', `index format version ${fmt} is not supported (expected ${INDEX_FORMAT_VERSION})`, ctx, 8);
  const headerLength = r.u16();
  if (headerLength < INDEX_FIXED_BYTES + 1 + INDEX_PACK_ENTRY_BYTES + SIGNATURE_BYTES) throw ckmError('EFORMAT', `index header length ${headerLength} too small`, ctx, 10);
  r.need(headerLength - r.pos);
  const blockSize = r.u32();
  if (blockSize !== CKM_BLOCK_SIZE) throw ckmError('EUNSUPPORTED', `block size ${blockSize} (only ${CKM_BLOCK_SIZE})`, ctx, 12);
  const runBlocks = r.u32();
  if (runBlocks !== CKM_RUN_BLOCKS) throw ckmError('EUNSUPPORTED', `${runBlocks} blocks per run (only ${CKM_RUN_BLOCKS})`, ctx, 16);
  const version = r.u32();
  if (version < 1 || version > CKM_MAX_VERSION) throw ckmError('EFORMAT', `image version ${version} out of range`, ctx, 20);
  const imageId = r.bytes(CKM_IMAGE_ID_BYTES);
  const virtualSize = r.u64n('virtual size');
  if (virtualSize < 1 || virtualSize > CKM_MAX_VIRTUAL_SIZE) throw ckmError('EFORMAT', `virtual size ${virtualSize} out of range`, ctx, 40);
  const runCount = r.u32();
  if (runCount !== runCountFor(virtualSize)) throw ckmError('EFORMAT', `run count ${runCount} does not match virtual size ${virtualSize}`, ctx, 48);
  const packCount = r.u32();
  if (packCount < 1 || packCount > INDEX_MAX_PACKS) throw ckmError('EFORMAT', `pack count ${packCount} out of range`, ctx, 52);
  const tableLength = r.u64n('table length');
  if (tableLength > runCount * RUN_RECORD_COMPRESSED_MAX) throw ckmError('EFORMAT', `table length ${tableLength} larger than ${runCount} runs can be`, ctx, 56);
  const rootHash = r.bytes(ROOT_HASH_BYTES);
  const signer = r.bytes(PUBLIC_KEY_BYTES);
  const created = r.u64n('creation time');
  const nameAt = r.pos;
  const nameLength = r.u8();
  if (nameLength < 1 || nameLength > 64) throw ckmError('EFORMAT', `image name length ${nameLength} out of range`, ctx, nameAt);
  const name = r.bytes(nameLength).toString('utf8');
  if (!IMAGE_NAME_RE.test(name)) throw ckmError('EFORMAT', `image name ${JSON.stringify(name)} has characters a file name must not`, ctx, nameAt + 1);
  if (headerLength !== headerLengthFor(name, packCount)) throw ckmError('EFORMAT', `index header length ${headerLength} does not match its name and ${packCount} packs`, ctx, 10);
  const packs: PackRef[] = [];
  let prev = 0;
  for (let i = 0; i < packCount; i++) {
    const at = r.pos;
    const v = r.u32();
    const reserved = r.u32();
    const length = r.u64n('pack length');
    const salt = r.bytes(PACK_SALT_BYTES);
    if (v <= prev || v > version) throw ckmError('EFORMAT', `pack versions must ascend and not pass ${version} (got ${v})`, ctx, at);
    if (reserved !== 0) throw ckmError('EFORMAT', 'reserved pack field is not zero', ctx, at + 4);
    if (length < PACK_HEADER_SIZE) throw ckmError('EFORMAT', `pack ${v} length ${length} is shorter than its header`, ctx, at + 8);
    packs.push({ version: v, length, salt });
    prev = v;
  }
  const signedEnd = r.pos;
  const signature = r.bytes(SIGNATURE_BYTES);
  return {
    name, version, imageId, virtualSize, runCount, tableLength, rootHash, signer, created, packs,
    headerLength, signed: Buffer.from(buf.subarray(0, signedEnd)), signature,
  };
}

export interface RunDirectory {
  hashes: Buffer[];
  lengths: number[];
  /** Offset of each run record from the start of the index file. */
  offsets: number[];
}

export function rootHashOf(directory: Buffer): Buffer {
  return blake2b(directory, ROOT_HASH_BYTES);
}

export function serializeRunDirectory(hashes: Buffer[], lengths: number[]): Buffer {
  if (hashes.length !== lengths.length) throw new MedvError('EINVAL_ARG', 'run directory: hashes and lengths differ in count');
  const b = Buffer.alloc(hashes.length * DIR_ENTRY_BYTES);
  hashes.forEach((h, i) => {
    checkLength('run hash', h, RUN_HASH_BYTES);
    h.copy(b, i * DIR_ENTRY_BYTES);
    b.writeUInt32LE(lengths[i], i * DIR_ENTRY_BYTES + RUN_HASH_BYTES);
  });
  return b;
}

/**
 * Parse the run directory (the R x 20 bytes after the header) and check it against the root hash
 * of the (already verified) header, then every record length and the table length.
 */
export function parseRunDirectory(buf: Buffer, header: ParsedIndexHeader, ctx?: CkmContext): RunDirectory {
  const size = header.runCount * DIR_ENTRY_BYTES;
  if (buf.length < size) throw ckmError('ETRUNCATED', `run directory is ${buf.length} bytes, expected ${size}`, ctx, buf.length);
  const dir = buf.subarray(0, size);
  if (!rootHashOf(dir).equals(header.rootHash)) throw ckmError('ECHECKSUM', 'run directory does not match the root hash of the signed header', ctx, 0);
  const hashes: Buffer[] = [];
  const lengths: number[] = [];
  const offsets: number[] = [];
  let at = header.headerLength + size;
  for (let i = 0; i < header.runCount; i++) {
    hashes.push(Buffer.from(dir.subarray(i * DIR_ENTRY_BYTES, i * DIR_ENTRY_BYTES + RUN_HASH_BYTES)));
    const len = dir.readUInt32LE(i * DIR_ENTRY_BYTES + RUN_HASH_BYTES);
    if (len > RUN_RECORD_COMPRESSED_MAX) throw ckmError('EFORMAT', `run ${i} record length ${len} out of range`, ctx, i * DIR_ENTRY_BYTES + RUN_HASH_BYTES);
    lengths.push(len);
    offsets.push(at);
    at += len;
  }
  const total = at - header.headerLength - size;
  if (total !== header.tableLength) throw ckmError('ECORRUPT', `run records add up to ${total} bytes, the header says ${header.tableLength}`, ctx, 0);
  return { hashes, lengths, offsets };
}

/** Total bytes of an index file with this header. */
export function indexFileLength(h: ParsedIndexHeader): number {
  return h.headerLength + h.runCount * DIR_ENTRY_BYTES + h.tableLength;
}
