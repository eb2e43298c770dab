/**
 * The one interface for everything that stores bytes addressed by offset: files, memory,
 * VHD layers, the EVHD encryption layer, undo disks. A layer takes the device below as its
 * constructor argument and never reaches past it (see DESIGN.md, "The block stack").
 *
 * Offsets and lengths are byte counts as JS numbers (exact up to 2^53, far past any disk).
 * Requests are validated once at the edge (validateRequest); layers may assert.
 * Devices must tolerate many requests in flight at once: a layer that does read-modify-write
 * or metadata updates serialises what needs it internally.
 */
import type { FileMap } from '../native.js';

/**
 * How a device supports an optional operation (nbdkit's can_zero / can_fua / can_trim):
 * - 'native':  the device does it itself, cheaper than the emulation;
 * - 'emulate': the method works, but only as its emulation (see src/block/emulate.ts);
 * - 'none':    the operation is not offered (a caller must not advertise it to its own clients).
 */
export type Support = 'none' | 'emulate' | 'native';

/** One fact each. Whether the device accepts writes is `BlockDevice.readOnly`, in one place. */
export interface BlockCapabilities {
  /** writeZeroes(): native = cheaper than writing zeros (may deallocate); emulate = writes zero buffers. */
  readonly zero: Support;
  /** write(..., {fua:true}): native = durable on return by itself; emulate = the caller flushes after. */
  readonly fua: Support;
  /** discard(): native = may deallocate (contents unspecified afterwards, as after a TRIM);
   *  emulate = accepted as a hint that changes nothing. */
  readonly trim: Support;
  /** resize() is available (files and containers, not virtual disks). */
  readonly resizable: boolean;
  /** Smallest unit a client should address (an exporter's minimum block size); requests may still be any size. */
  readonly minBlockSize: number;
  readonly preferredBlockSize: number;
  readonly maxRequestSize: number;
}

export interface WriteOptions {
  /** Force unit access: the data is durable when the promise resolves. */
  fua?: boolean;
}

/** A run of the device with one allocation state (what an exporter reports as its allocation map). */
export interface Extent {
  length: number;
  /** Not allocated in this device or below it (reads as zeros or as nothing stored). */
  hole: boolean;
  /** Reads as zeros. */
  zero: boolean;
}

/** See BlockDevice.fileRange: device bytes [offset, +length) are file bytes [position, +length). */
export interface FileRange {
  /** The open file (read only: never written, moved or closed through this). */
  readonly fd: number;
  readonly position: number;
  /** A read-only mapping of the whole file that covers the range (only when asked for and kept). */
  readonly map?: FileMap;
}

export interface FileRangeOptions {
  /** Ask for `map` too (a device may map the file on first use). */
  mapped?: boolean;
}

export interface BlockDevice {
  /** Size in bytes. For resizable devices it changes with resize(). */
  readonly size: number;
  readonly readOnly: boolean;
  readonly capabilities: BlockCapabilities;
  /** Human-readable description (path, layer) used in error messages. */
  readonly description: string;

  /** Read `length` bytes at `offset` into a new buffer. Reads past `size` are an error. */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Read `buf.length` bytes at `offset` into the caller's buffer (a server reads straight into a
   * reused reply buffer: no fresh allocation per request). Optional: `readInto()` in emulate.ts
   * falls back to read() and a copy. The device writes only into `buf` and keeps no reference to it
   * once the promise settles; after a rejection the buffer's contents are unspecified.
   */
  readInto?(buf: Buffer, offset: number): Promise<void>;
  /**
   * Optional fast path of small reads: fill `buf` with the `buf.length` bytes at `offset` now,
   * without waiting, when everything they need is at hand (page cache, cached metadata). True when
   * `buf` holds them; false when the device would have to wait, or declines (any length, any
   * reason): `buf` is then unspecified and the caller uses readInto(). Never throws: a failure is a
   * false, and readInto() then reports it. A server answers a cached 4 KiB read this way with no
   * promise, no buffer of its own and no copy.
   */
  readIntoNow?(buf: Buffer, offset: number): boolean;
  /**
   * Optional: where [offset, offset + length) lies, byte for byte, in a file this device holds open,
   * for a caller that reads that file itself (sendfile(2) of cached pages; a cipher reading a
   * mapping on the thread pool). Undefined when the device cannot say (not a plain file, out of
   * range, closed, a layer that changes the bytes): the caller then uses readInto(). With
   * `options.mapped`, the range also carries a read-only mapping of the file where the device keeps
   * one. The answer holds only for the current synchronous step (the device may be resized or
   * closed later): ask again rather than keep it. The caller only reads through it, and what it
   * starts with it must settle before the device is closed, as for any read in flight.
   */
  fileRange?(offset: number, length: number, options?: FileRangeOptions): FileRange | undefined;
  /** Write `data` at `offset`. The caller's buffer is never modified nor kept after the promise settles. */
  write(offset: number, data: Buffer, options?: WriteOptions): Promise<void>;
  /** Make every completed write durable. */
  flush(): Promise<void>;
  /** Hint that a range is unused (a TRIM): it may be deallocated; its contents are unspecified afterwards
   *  (most devices return zeros, a differencing layer may return the parent's data). */
  discard(offset: number, length: number): Promise<void>;
  /** The range reads back as zeros afterwards. */
  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /**
   * Allocation of [offset, offset + length): consecutive extents starting at `offset` that cover at
   * least a first part of the range (never empty). A device without it is all data.
   */
  extents?(offset: number, length: number): Promise<Extent[]>;
  /** Only when capabilities.resizable. */
  resize?(newSize: number): Promise<void>;
  close(): Promise<void>;
}

export const SECTOR_SIZE = 512;

export function defaultCapabilities(overrides: Partial<BlockCapabilities> = {}): BlockCapabilities {
  return {
    zero: 'emulate',
    fua: 'emulate',
    trim: 'emulate',
    resizable: false,
    minBlockSize: 1,
    preferredBlockSize: 4096,
    maxRequestSize: 32 * 1024 * 1024,
    ...overrides,
  };
}
