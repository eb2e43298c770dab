/**
 * NBD wire protocol, the server's half: constants, what the server decodes (options, requests) and
 * what it encodes (greeting, option replies, simple and structured replies); pure, no I/O. The
 * client's half (what tests send and check) is test/helpers/nbd-codec.ts.
 *
 * Covers the fixed-newstyle handshake, option haggling (EXPORT_NAME, ABORT, LIST, INFO, GO,
 * STRUCTURED_REPLY, LIST/SET_META_CONTEXT) and the transmission phase with simple and structured
 * replies. All integers are big-endian on the wire. Every decoder checks the buffer length first
 * and throws MedvError('EPROTO', ...) naming the byte offset on bad input.
 * Reference: the NBD protocol document (NetworkBlockDevice/nbd, doc/proto.md).
 */
import { MedvError } from '../core/errors.js';

// --- magics -------------------------------------------------------------------------------------
/** 'NBDMAGIC' */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT' — newstyle server greeting and option request magic. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
export const NBD_REP_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// --- handshake flags (server) and client flags ---------------------------------------------------
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// --- transmission flags ---------------------------------------------------------------------------
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

// --- options --------------------------------------------------------------------------------------
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// --- option replies -------------------------------------------------------------------------------
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const REP_ERR = 0x80000000;
export const NBD_REP_ERR_UNSUP = REP_ERR + 1;
export const NBD_REP_ERR_POLICY = REP_ERR + 2;
export const NBD_REP_ERR_INVALID = REP_ERR + 3;
export const NBD_REP_ERR_PLATFORM = REP_ERR + 4;
export const NBD_REP_ERR_TLS_REQD = REP_ERR + 5;
export const NBD_REP_ERR_UNKNOWN = REP_ERR + 6;
export const NBD_REP_ERR_SHUTDOWN = REP_ERR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8;
export const NBD_REP_ERR_TOO_BIG = REP_ERR + 9;

// --- info types (NBD_REP_INFO payloads, NBD_OPT_INFO/GO requests) -----------------------------------
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// --- commands and command flags -------------------------------------------------------------------
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// --- structured replies ---------------------------------------------------------------------------
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = 0x8001;
export const NBD_REPLY_TYPE_ERROR_OFFSET = 0x8002;

// --- base:allocation status flags -------------------------------------------------------------------
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
/** The one metadata context this server knows. */
export const BASE_ALLOCATION = 'base:allocation';

// --- errors (reply error field) -------------------------------------------------------------------
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// --- sizes ----------------------------------------------------------------------------------------
/** Server greeting: NBDMAGIC, IHAVEOPT, 16-bit handshake flags. */
export const GREETING_SIZE = 18;
export const CLIENT_FLAGS_SIZE = 4;
export const OPTION_HEADER_SIZE = 16;
export const OPTION_REPLY_HEADER_SIZE = 20;
export const REQUEST_SIZE = 28;
export const SIMPLE_REPLY_SIZE = 16;
export const STRUCTURED_REPLY_HEADER_SIZE = 20;
/** Reply to NBD_OPT_EXPORT_NAME: size, flags, and 124 zero bytes unless NO_ZEROES was negotiated. */
export const EXPORT_NAME_REPLY_SIZE = 10;
export const EXPORT_NAME_REPLY_ZEROES = 124;
/** Strings (export names, descriptions) must be no longer than this (proto.md, Conventions). */
export const MAX_STRING = 4096;

export function optionName(opt: number): string {
  switch (opt) {
    case NBD_OPT_EXPORT_NAME: return 'EXPORT_NAME';
    case NBD_OPT_ABORT: return 'ABORT';
    case NBD_OPT_LIST: return 'LIST';
    case NBD_OPT_STARTTLS: return 'STARTTLS';
    case NBD_OPT_INFO: return 'INFO';
    case NBD_OPT_GO: return 'GO';
    case NBD_OPT_STRUCTURED_REPLY: return 'STRUCTURED_REPLY';
    case NBD_OPT_EXTENDED_HEADERS: return 'EXTENDED_HEADERS';
    case NBD_OPT_LIST_META_CONTEXT: return 'LIST_META_CONTEXT';
    case NBD_OPT_SET_META_CONTEXT: return 'SET_META_CONTEXT';
    default: return `option ${opt}`;
  }
}

export function commandName(cmd: number): string {
  switch (cmd) {
    case NBD_CMD_READ: return 'READ';
    case NBD_CMD_WRITE: return 'WRITE';
    case NBD_CMD_DISC: return 'DISC';
    case NBD_CMD_FLUSH: return 'FLUSH';
    case NBD_CMD_TRIM: return 'TRIM';
    case NBD_CMD_CACHE: return 'CACHE';
    case NBD_CMD_WRITE_ZEROES: return 'WRITE_ZEROES';
    case NBD_CMD_BLOCK_STATUS: return 'BLOCK_STATUS';
    default: return `command ${cmd}`;
  }
}

function need(buf: Buffer, offset: number, length: number, what: string): void {
  if (offset < 0 || offset + length > buf.length) {
    throw new MedvError('EPROTO', `truncated ${what}: need ${length} bytes at ${offset}, have ${buf.length - offset}`, { offset });
  }
}

// --- handshake ------------------------------------------------------------------------------------

export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(GREETING_SIZE);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

// --- options --------------------------------------------------------------------------------------

export interface OptionHeader { option: number; length: number }

export function decodeOptionHeader(buf: Buffer, offset = 0): OptionHeader {
  need(buf, offset, OPTION_HEADER_SIZE, 'option header');
  if (buf.readBigUInt64BE(offset) !== NBD_OPTS_MAGIC) throw new MedvError('EPROTO', 'bad option magic', { offset });
  return { option: buf.readUInt32BE(offset + 8), length: buf.readUInt32BE(offset + 12) };
}

export function encodeOptionReply(option: number, type: number, data?: Buffer): Buffer {
  const len = data ? data.length : 0;
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_SIZE + len);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(len, 16);
  if (data) data.copy(b, OPTION_REPLY_HEADER_SIZE);
  return b;
}

/** Data of NBD_OPT_INFO / NBD_OPT_GO: 32-bit name length, name, 16-bit count, count 16-bit info types. */
export interface InfoRequest { name: string; requests: number[] }

export function decodeInfoRequest(data: Buffer): InfoRequest {
  need(data, 0, 4, 'INFO/GO name length');
  const nameLen = data.readUInt32BE(0);
  if (nameLen > MAX_STRING) throw new MedvError('EPROTO', `export name length ${nameLen} exceeds ${MAX_STRING}`, { offset: 0 });
  need(data, 4, nameLen + 2, 'INFO/GO export name');
  const name = decodeString(data.subarray(4, 4 + nameLen), 4);
  const count = data.readUInt16BE(4 + nameLen);
  const end = 6 + nameLen + 2 * count;
  if (data.length !== end) {
    throw new MedvError('EPROTO', `INFO/GO data is ${data.length} bytes, expected ${end}`, { offset: 4 + nameLen });
  }
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { name, requests };
}

/** Export names are UTF-8 without NUL (proto.md, Conventions). */
export function decodeString(bytes: Buffer, offset = 0): string {
  if (bytes.length > MAX_STRING) throw new MedvError('EPROTO', `string of ${bytes.length} bytes exceeds ${MAX_STRING}`, { offset });
  const s = bytes.toString('utf8');
  if (s.includes('\0')) throw new MedvError('EPROTO', 'string contains NUL', { offset });
  if (!Buffer.from(s, 'utf8').equals(bytes)) throw new MedvError('EPROTO', 'string is not valid UTF-8', { offset });
  return s;
}

export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

export function encodeInfoString(type: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION, text: string): Buffer {
  const s = Buffer.from(text, 'utf8');
  const b = Buffer.allocUnsafe(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

export interface BlockSizes { minimum: number; preferred: number; maximum: number }

export function encodeInfoBlockSize(sizes: BlockSizes): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(sizes.minimum, 2);
  b.writeUInt32BE(sizes.preferred, 6);
  b.writeUInt32BE(sizes.maximum, 10);
  return b;
}

/** NBD_REP_SERVER data: 32-bit name length, name, then a human-readable description. */
export function encodeRepServer(name: string, description = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

/** Data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: export name, then queries. */
export interface MetaContextRequest { name: string; queries: string[] }

/** Decode and bounds-check a meta context request; every length is checked against the data. */
export function decodeMetaContextRequest(data: Buffer): MetaContextRequest {
  let at = 0;
  const str = (what: string): string => {
    need(data, at, 4, `${what} length`);
    const n = data.readUInt32BE(at);
    if (n > MAX_STRING) throw new MedvError('EPROTO', `${what} length ${n} exceeds ${MAX_STRING}`, { offset: at });
    need(data, at + 4, n, what);
    const s = decodeString(data.subarray(at + 4, at + 4 + n), at + 4);
    at += 4 + n;
    return s;
  };
  const name = str('export name');
  need(data, at, 4, 'query count');
  const count = data.readUInt32BE(at);
  at += 4;
  // Each query takes at least its 4-byte length: a count beyond that is a lie.
  if (count > (data.length - at) / 4) throw new MedvError('EPROTO', `query count ${count} exceeds the option data`, { offset: at - 4 });
  const queries: string[] = [];
  for (let i = 0; i < count; i++) queries.push(str('query'));
  if (at !== data.length) throw new MedvError('EPROTO', `${data.length - at} trailing bytes after the queries`, { offset: at });
  return { name, queries };
}

/** NBD_REP_META_CONTEXT data: 32-bit context id, then the context name. */
export function encodeRepMetaContext(id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(id >>> 0, 0);
  n.copy(b, 4);
  return b;
}

/** Reply to NBD_OPT_EXPORT_NAME. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(EXPORT_NAME_REPLY_SIZE + (noZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

// --- transmission ---------------------------------------------------------------------------------

export interface Request {
  flags: number;
  type: number;
  /** 64-bit opaque handle, echoed in the reply; kept as raw bytes' two halves to avoid bigint. */
  handleHi: number;
  handleLo: number;
  offset: number;
  length: number;
}

/** Largest offset the server accepts as a number; anything beyond is out of range for any device. */
const OFFSET_LIMIT = Number.MAX_SAFE_INTEGER;

/**
 * Decode a 28-byte request header. Magic is checked (a bad magic means the stream is out of sync:
 * the caller must hard-disconnect). Offsets above 2^53 are clamped to Infinity-like MAX so that the
 * range check fails cleanly with EINVAL rather than losing precision.
 */
export function decodeRequest(buf: Buffer, offset = 0, out?: Request): Request {
  need(buf, offset, REQUEST_SIZE, 'request');
  const magic = buf.readUInt32BE(offset);
  if (magic !== NBD_REQUEST_MAGIC) {
    throw new MedvError('EPROTO', `bad request magic 0x${magic.toString(16).padStart(8, '0')}`, { offset });
  }
  const hi = buf.readUInt32BE(offset + 16);
  const lo = buf.readUInt32BE(offset + 20);
  // hi * 2^32 + lo is exact when hi < 2^21; larger offsets are out of range anyway.
  const off = hi >= 0x200000 ? OFFSET_LIMIT + 1 : hi * 0x100000000 + lo;
  const r = out ?? { flags: 0, type: 0, handleHi: 0, handleLo: 0, offset: 0, length: 0 };
  r.flags = buf.readUInt16BE(offset + 4);
  r.type = buf.readUInt16BE(offset + 6);
  r.handleHi = buf.readUInt32BE(offset + 8);
  r.handleLo = buf.readUInt32BE(offset + 12);
  r.offset = off;
  r.length = buf.readUInt32BE(offset + 24);
  return r;
}

/** Write a simple reply header into `buf` at `offset` (the caller owns the buffer). */
export function writeSimpleReply(buf: Buffer, offset: number, error: number, handleHi: number, handleLo: number): void {
  buf.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, offset);
  buf.writeUInt32BE(error >>> 0, offset + 4);
  buf.writeUInt32BE(handleHi >>> 0, offset + 8);
  buf.writeUInt32BE(handleLo >>> 0, offset + 12);
}

// --- structured replies ---------------------------------------------------------------------------

/** Write a structured reply chunk header into `buf` at `offset` (the caller owns the buffer). */
export function writeStructuredReplyHeader(buf: Buffer, offset: number, flags: number, type: number,
  handleHi: number, handleLo: number, length: number): void {
  buf.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, offset);
  buf.writeUInt16BE(flags, offset + 4);
  buf.writeUInt16BE(type, offset + 6);
  buf.writeUInt32BE(handleHi >>> 0, offset + 8);
  buf.writeUInt32BE(handleLo >>> 0, offset + 12);
  buf.writeUInt32BE(length >>> 0, offset + 16);
}

/** Bytes of an NBD_REPLY_TYPE_OFFSET_DATA chunk before its data: the chunk header and the offset. */
export const OFFSET_DATA_HEADER_SIZE = STRUCTURED_REPLY_HEADER_SIZE + 8;

/** Write the header + offset of an OFFSET_DATA chunk into `buf` at `at`; `dataOffset` is a safe integer. */
export function writeOffsetDataHeader(buf: Buffer, at: number, flags: number, handleHi: number, handleLo: number,
  dataOffset: number, dataLength: number): void {
  writeStructuredReplyHeader(buf, at, flags, NBD_REPLY_TYPE_OFFSET_DATA, handleHi, handleLo, 8 + dataLength);
  buf.writeUInt32BE(Math.floor(dataOffset / 0x100000000), at + STRUCTURED_REPLY_HEADER_SIZE);
  buf.writeUInt32BE(dataOffset >>> 0, at + STRUCTURED_REPLY_HEADER_SIZE + 4);
}

/** Header + offset of an NBD_REPLY_TYPE_OFFSET_DATA chunk whose `dataLength` bytes follow separately. */
export function encodeOffsetDataHeader(flags: number, handleHi: number, handleLo: number, dataOffset: number, dataLength: number): Buffer {
  const b = Buffer.allocUnsafe(OFFSET_DATA_HEADER_SIZE);
  writeOffsetDataHeader(b, 0, flags, handleHi, handleLo, dataOffset, dataLength);
  return b;
}

/** A whole NBD_REPLY_TYPE_NONE chunk (always final). */
export function encodeNoneChunk(handleHi: number, handleLo: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE);
  writeStructuredReplyHeader(b, 0, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handleHi, handleLo, 0);
  return b;
}

/** A whole, final NBD_REPLY_TYPE_ERROR chunk; the message is cut to what the 16-bit length and MAX_STRING allow. */
export function encodeErrorChunk(handleHi: number, handleLo: number, error: number, message = ''): Buffer {
  let msg = Buffer.from(message, 'utf8');
  if (msg.length > MAX_STRING) msg = msg.subarray(0, MAX_STRING);
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + 6 + msg.length);
  writeStructuredReplyHeader(b, 0, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, handleHi, handleLo, 6 + msg.length);
  b.writeUInt32BE(error >>> 0, STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt16BE(msg.length, STRUCTURED_REPLY_HEADER_SIZE + 4);
  msg.copy(b, STRUCTURED_REPLY_HEADER_SIZE + 6);
  return b;
}

/** One base:allocation (or other context) descriptor: a run length and its status flags. */
export interface BlockDescriptor { length: number; flags: number }

/** A whole NBD_REPLY_TYPE_BLOCK_STATUS chunk for one metadata context. */
export function encodeBlockStatusChunk(flags: number, handleHi: number, handleLo: number, contextId: number,
  descriptors: readonly BlockDescriptor[]): Buffer {
  const len = 4 + 8 * descriptors.length;
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + len);
  writeStructuredReplyHeader(b, 0, flags, NBD_REPLY_TYPE_BLOCK_STATUS, handleHi, handleLo, len);
  b.writeUInt32BE(contextId >>> 0, STRUCTURED_REPLY_HEADER_SIZE);
  descriptors.forEach((d, i) => {
    b.writeUInt32BE(d.length >>> 0, STRUCTURED_REPLY_HEADER_SIZE + 4 + 8 * i);
    b.writeUInt32BE(d.flags >>> 0, STRUCTURED_REPLY_HEADER_SIZE + 8 + 8 * i);
  });
  return b;
}
