/**
 * serveNbd's options, their defaults, and what the export looks like to clients (size, transmission
 * flags, block sizes), computed in one place for the handshake and the listener.
 */
import type { BlockDevice } from '../block/device.js';
import { MedvError } from '../core/errors.js';
import * as P from './protocol.js';

export interface NbdServerOptions {
  socketPath: string;
  /** Export read-only even if the device is writable (a read-only device is always exported read-only). */
  readOnly?: boolean;
  /** Name clients must ask for; default '' accepts any name. The empty (default) name is always accepted. */
  exportName?: string;
  /** Sent to clients that ask for NBD_INFO_DESCRIPTION and in NBD_OPT_LIST. */
  description?: string;
  /** Advertised minimum block size (power of two, 1..65536); default 4096. */
  minBlockSize?: number;
  /** Advertised preferred block size; default max(minBlockSize, device preferred, 4096). */
  preferredBlockSize?: number;
  /** Advertised maximum payload; default min(32 MiB, device maxRequestSize). Larger requests get EINVAL. */
  maxBlockSize?: number;
  /** Maximum requests in flight per connection; default 64. */
  maxInFlight?: number;
  /**
   * Bytes one connection may hold before its requests stop being read: WRITE payloads until the
   * device wrote them, READ data from the device read until the kernel took the reply, reply headers
   * until sent. Default 64 MiB (never below one maximum-size request).
   */
  maxConnectionBytes?: number;
  /** The same bound over all connections together; default 256 MiB (never below maxConnectionBytes). */
  maxTotalBytes?: number;
  /** Time a client has from connecting to reaching transmission; default 10 s. */
  handshakeTimeoutMs?: number;
  /** Connections in the handshake at once; further ones are closed at once. Default 16. */
  maxHandshakes?: number;
  /** Time close() gives connections to finish their requests before destroying them; default 2 s. */
  closeGraceMs?: number;
  log?: (msg: string) => void;
}

/** Options with every default filled in and checked. */
export interface ServerLimits {
  maxInFlight: number;
  maxConnectionBytes: number;
  maxTotalBytes: number;
  handshakeTimeoutMs: number;
  maxHandshakes: number;
  closeGraceMs: number;
  sizes: P.BlockSizes;
}

/** Room reserved per request for its reply header(s) and a short error message. */
export const REPLY_OVERHEAD = 256;
/** Most descriptors in one BLOCK_STATUS reply (the spec lets a server answer a first part). */
export const MAX_DESCRIPTORS = 1024;
/** Bytes reserved for one BLOCK_STATUS reply. */
export const STATUS_RESERVE = REPLY_OVERHEAD + 4 + 8 * MAX_DESCRIPTORS;

function isPowerOfTwo(n: number): boolean { return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0; }

function positiveInt(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new MedvError('EINVAL_ARG', `${name} ${v} must be a positive integer`);
  return v;
}

export function computeBlockSizes(device: BlockDevice, opts: NbdServerOptions): P.BlockSizes {
  const caps = device.capabilities;
  let minimum = opts.minBlockSize ?? 4096;
  if (!isPowerOfTwo(minimum) || minimum > 65536) {
    throw new MedvError('EINVAL_ARG', `minBlockSize ${minimum} must be a power of two between 1 and 65536`);
  }
  // The export size should be a multiple of the minimum block size; lower it for odd-sized devices.
  while (minimum > 1 && device.size % minimum !== 0) minimum /= 2;
  const preferred = opts.preferredBlockSize ?? Math.max(minimum, caps.preferredBlockSize, 4096);
  if (!isPowerOfTwo(preferred) || preferred < minimum) {
    throw new MedvError('EINVAL_ARG', `preferredBlockSize ${preferred} must be a power of two >= ${minimum}`);
  }
  const maximum = opts.maxBlockSize ?? Math.min(32 * 1024 * 1024, caps.maxRequestSize);
  if (!Number.isInteger(maximum) || maximum < preferred || maximum % minimum !== 0 || maximum > 0xffffffff) {
    throw new MedvError('EINVAL_ARG', `maxBlockSize ${maximum} must be a multiple of ${minimum} and >= ${preferred}`);
  }
  return { minimum, preferred, maximum };
}

export function resolveLimits(device: BlockDevice, opts: NbdServerOptions): ServerLimits {
  const sizes = computeBlockSizes(device, opts);
  const oneRequest = sizes.maximum + REPLY_OVERHEAD + STATUS_RESERVE;
  const maxConnectionBytes = Math.max(positiveInt('maxConnectionBytes', opts.maxConnectionBytes ?? 64 << 20), oneRequest);
  return {
    sizes,
    maxInFlight: positiveInt('maxInFlight', opts.maxInFlight ?? 64),
    maxConnectionBytes,
    maxTotalBytes: Math.max(positiveInt('maxTotalBytes', opts.maxTotalBytes ?? 256 << 20), maxConnectionBytes),
    handshakeTimeoutMs: positiveInt('handshakeTimeoutMs', opts.handshakeTimeoutMs ?? 10_000),
    maxHandshakes: positiveInt('maxHandshakes', opts.maxHandshakes ?? 16),
    closeGraceMs: Math.max(0, opts.closeGraceMs ?? 2000),
  };
}

/** What one client sees of the export once it reaches transmission. */
export interface ExportInfo {
  size: number;
  flags: number;
  readOnly: boolean;
  sizes: P.BlockSizes;
}

/** `structured`: the client negotiated structured replies (then READ accepts DF: every READ is one chunk). */
export function exportInfo(device: BlockDevice, opts: NbdServerOptions, sizes: P.BlockSizes, structured: boolean): ExportInfo {
  const readOnly = !!opts.readOnly || device.readOnly;
  let flags = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_CAN_MULTI_CONN;
  if (structured) flags |= P.NBD_FLAG_SEND_DF;
  if (readOnly) flags |= P.NBD_FLAG_READ_ONLY;
  else {
    // FUA and WRITE_ZEROES are always offered: emulated (write + flush, zero buffers) when the device lacks them.
    flags |= P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_WRITE_ZEROES;
    if (device.capabilities.trim !== 'none') flags |= P.NBD_FLAG_SEND_TRIM;
  }
  return { size: device.size, flags, readOnly, sizes };
}
