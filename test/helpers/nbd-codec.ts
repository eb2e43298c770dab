/**
 * NBD wire protocol, the client's half, for tests: what a client sends (options, requests) and
 * decodes (greeting, option replies, simple and structured reply headers). The server's half and
 * every constant are in src/nbd/protocol.ts, re-exported here, so a test imports one module.
 * Decoders check lengths and magics like the server's and throw MedvError('EPROTO') naming the offset.
 */
import { MedvError } from '../../src/core/errors.js';
import {
  type BlockSizes, type InfoRequest, type MetaContextRequest, GREETING_SIZE, NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT, NBD_INFO_NAME, NBD_MAGIC, NBD_OPTS_MAGIC, NBD_REP_MAGIC, NBD_REQUEST_MAGIC, NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC, OPTION_HEADER_SIZE, OPTION_REPLY_HEADER_SIZE, REQUEST_SIZE, SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_HEADER_SIZE, decodeString,
} from '../../src/nbd/protocol.js';

export * from '../../src/nbd/protocol.js';

/** The error bit of an option reply type. */
const REP_ERR = 0x80000000;

function need(buf: Buffer, offset: number, length: number, what: string): void {
  if (offset < 0 || offset + length > buf.length) {
    throw new MedvError('EPROTO', `truncated ${what}: need ${length} bytes at ${offset}, have ${buf.length - offset}`, { offset });
  }
}

/** A bigint known to be < 2^64 as a number, or an error if it exceeds 2^53. */
function safeNumber(v: bigint, what: string, offset: number): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new MedvError('EPROTO', `${what} ${v} is too large`, { offset });
  return Number(v);
}

// --- handshake ------------------------------------------------------------------------------------

export interface Greeting { handshakeFlags: number }

/** Check the newstyle greeting. */
export function decodeGreeting(buf: Buffer, offset = 0): Greeting {
  need(buf, offset, GREETING_SIZE, 'greeting');
  if (buf.readBigUInt64BE(offset) !== NBD_MAGIC) throw new MedvError('EPROTO', 'bad NBDMAGIC in greeting', { offset });
  if (buf.readBigUInt64BE(offset + 8) !== NBD_OPTS_MAGIC) {
    throw new MedvError('EPROTO', 'not a newstyle greeting (IHAVEOPT expected)', { offset: offset + 8 });
  }
  return { handshakeFlags: buf.readUInt16BE(offset + 16) };
}

// --- options --------------------------------------------------------------------------------------

export function encodeOptionHeader(option: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(OPTION_HEADER_SIZE);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(length >>> 0, 12);
  return b;
}

/** Encode a whole option request (header + data). */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([encodeOptionHeader(option, data.length), data]);
}

export interface OptionReplyHeader { option: number; type: number; length: number }

export function decodeOptionReplyHeader(buf: Buffer, offset = 0): OptionReplyHeader {
  need(buf, offset, OPTION_REPLY_HEADER_SIZE, 'option reply header');
  if (buf.readBigUInt64BE(offset) !== NBD_REP_MAGIC) throw new MedvError('EPROTO', 'bad option reply magic', { offset });
  return { option: buf.readUInt32BE(offset + 8), type: buf.readUInt32BE(offset + 12), length: buf.readUInt32BE(offset + 16) };
}

export function isOptionError(type: number): boolean { return (type & REP_ERR) !== 0; }

/** Data of NBD_OPT_INFO / NBD_OPT_GO: 32-bit name length, name, 16-bit count, count 16-bit info types. */
export function encodeInfoRequest(req: InfoRequest): Buffer {
  const name = Buffer.from(req.name, 'utf8');
  const b = Buffer.allocUnsafe(4 + name.length + 2 + 2 * req.requests.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(req.requests.length, 4 + name.length);
  req.requests.forEach((r, i) => b.writeUInt16BE(r, 6 + name.length + 2 * i));
  return b;
}

export type Info =
  | { type: typeof NBD_INFO_EXPORT; size: number; flags: number }
  | { type: typeof NBD_INFO_NAME; name: string }
  | { type: typeof NBD_INFO_DESCRIPTION; description: string }
  | ({ type: typeof NBD_INFO_BLOCK_SIZE } & BlockSizes)
  | { type: number; unknown: Buffer };

/** Decode the data of an NBD_REP_INFO reply. */
export function decodeInfo(data: Buffer): Info {
  need(data, 0, 2, 'NBD_REP_INFO type');
  const type = data.readUInt16BE(0);
  switch (type) {
    case NBD_INFO_EXPORT:
      if (data.length !== 12) throw new MedvError('EPROTO', `INFO_EXPORT is ${data.length} bytes, expected 12`, { offset: 0 });
      return { type, size: safeNumber(data.readBigUInt64BE(2), 'export size', 2), flags: data.readUInt16BE(10) };
    case NBD_INFO_NAME: return { type, name: decodeString(data.subarray(2), 2) };
    case NBD_INFO_DESCRIPTION: return { type, description: decodeString(data.subarray(2), 2) };
    case NBD_INFO_BLOCK_SIZE:
      if (data.length !== 14) throw new MedvError('EPROTO', `INFO_BLOCK_SIZE is ${data.length} bytes, expected 14`, { offset: 0 });
      return { type, minimum: data.readUInt32BE(2), preferred: data.readUInt32BE(6), maximum: data.readUInt32BE(10) };
    default: return { type, unknown: data.subarray(2) };
  }
}

/** NBD_REP_SERVER data: 32-bit name length, name, then a human-readable description. */
export function decodeRepServer(data: Buffer): { name: string; description: string } {
  need(data, 0, 4, 'NBD_REP_SERVER');
  const len = data.readUInt32BE(0);
  need(data, 4, len, 'NBD_REP_SERVER name');
  return { name: decodeString(data.subarray(4, 4 + len), 4), description: decodeString(data.subarray(4 + len), 4 + len) };
}

/** Data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: export name, then queries. */
export function encodeMetaContextRequest(req: MetaContextRequest): Buffer {
  const parts: Buffer[] = [];
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    const n = Buffer.allocUnsafe(4);
    n.writeUInt32BE(b.length);
    parts.push(n, b);
  };
  str(req.name);
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(req.queries.length);
  parts.push(count);
  for (const q of req.queries) str(q);
  return Buffer.concat(parts);
}

/** NBD_REP_META_CONTEXT data: 32-bit context id, then the context name. */
export function decodeRepMetaContext(data: Buffer): { id: number; name: string } {
  need(data, 0, 4, 'NBD_REP_META_CONTEXT');
  return { id: data.readUInt32BE(0), name: decodeString(data.subarray(4), 4) };
}

// --- transmission ---------------------------------------------------------------------------------

export function encodeRequest(req: { flags?: number; type: number; handle: bigint; offset: number | bigint; length: number }): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_SIZE);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(req.flags ?? 0, 4);
  b.writeUInt16BE(req.type, 6);
  b.writeBigUInt64BE(req.handle, 8);
  b.writeBigUInt64BE(BigInt(req.offset), 16);
  b.writeUInt32BE(req.length >>> 0, 24);
  return b;
}

export interface SimpleReply { error: number; handle: bigint }

export function decodeSimpleReply(buf: Buffer, offset = 0): SimpleReply {
  need(buf, offset, SIMPLE_REPLY_SIZE, 'simple reply');
  const magic = buf.readUInt32BE(offset);
  if (magic !== NBD_SIMPLE_REPLY_MAGIC) {
    throw new MedvError('EPROTO', `bad reply magic 0x${magic.toString(16).padStart(8, '0')}`, { offset });
  }
  return { error: buf.readUInt32BE(offset + 4), handle: buf.readBigUInt64BE(offset + 8) };
}

export interface StructuredReplyHeader { flags: number; type: number; handle: bigint; length: number }

/** Decode a structured reply chunk header. */
export function decodeStructuredReplyHeader(buf: Buffer, offset = 0): StructuredReplyHeader {
  need(buf, offset, STRUCTURED_REPLY_HEADER_SIZE, 'structured reply header');
  const magic = buf.readUInt32BE(offset);
  if (magic !== NBD_STRUCTURED_REPLY_MAGIC) {
    throw new MedvError('EPROTO', `bad structured reply magic 0x${magic.toString(16).padStart(8, '0')}`, { offset });
  }
  return { flags: buf.readUInt16BE(offset + 4), type: buf.readUInt16BE(offset + 6), handle: buf.readBigUInt64BE(offset + 8), length: buf.readUInt32BE(offset + 16) };
}
