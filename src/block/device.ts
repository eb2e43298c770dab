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
export interface BlockCapabilities {
  /** Writes, discards and writeZeroes are refused with EREADONLY. */
  readonly readOnly: boolean;
  /** flush() makes every completed write durable (fdatasync underneath). */
  readonly canFlush: boolean;
  /** discard() may deallocate (contents of the range unspecified afterwards, as NBD TRIM). */
  readonly canDiscard: boolean;
  /** writeZeroes() is cheaper than writing a buffer of zeros. */
  readonly canWriteZeroes: boolean;
  /** write(..., {fua:true}) is durable on return. */
  readonly canFua: boolean;
  /** The device may be grown/shrunk with resize() (files and containers, not virtual disks). */
  readonly canResize: boolean;
  /** Smallest unit a client should address (NBD minimum block size); requests may still be any size. */
  readonly minBlockSize: number;
  readonly preferredBlockSize: number;
  readonly maxRequestSize: number;
}

export interface WriteOptions {
  /** Force unit access: the data is durable when the promise resolves. */
  fua?: boolean;
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
  /** Write `data` at `offset`. The caller's buffer is never modified. */
  write(offset: number, data: Buffer, options?: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  /** Hint that a range is unused (NBD TRIM): it may be deallocated; its contents are unspecified afterwards
   *  (most devices return zeros, a differencing layer may return the parent's data). */
  discard(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** Only when capabilities.canResize. */
  resize?(newSize: number): Promise<void>;
  close(): Promise<void>;
}

export const SECTOR_SIZE = 512;

export function defaultCapabilities(overrides: Partial<BlockCapabilities> = {}): BlockCapabilities {
  return {
    readOnly: false,
    canFlush: true,
    canDiscard: true,
    canWriteZeroes: true,
    canFua: true,
    canResize: false,
    minBlockSize: 1,
    preferredBlockSize: 4096,
    maxRequestSize: 32 * 1024 * 1024,
    ...overrides,
  };
}
