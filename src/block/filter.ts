/**
 * A pass-through layer (nbdkit's `next_ops`): every method calls the device below. A filter
 * extends it and overrides only what it changes. Layers that change data (vhd, evhd, undo)
 * implement every method themselves instead of inheriting silent pass-throughs (STYLE.md).
 */
import { MedvError } from '../core/errors.js';
import { readByCopy, readInto } from './emulate.js';
import type { BlockCapabilities, BlockDevice, Extent, FileRange, FileRangeOptions, WriteOptions } from './device.js';

export class FilterDevice implements BlockDevice {
  constructor(readonly next: BlockDevice) {}

  get size(): number { return this.next.size; }
  get readOnly(): boolean { return this.next.readOnly; }
  get capabilities(): BlockCapabilities { return this.next.capabilities; }
  get description(): string { return this.next.description; }

  read(offset: number, length: number): Promise<Buffer> { return this.next.read(offset, length); }
  /** Passed down only while this filter leaves read() alone: a filter that changes read() gets
   *  its own read() and a copy, so an override can never be bypassed. */
  readInto(buf: Buffer, offset: number): Promise<void> {
    return this.read !== FilterDevice.prototype.read ? readByCopy(this, buf, offset) : readInto(this.next, buf, offset);
  }
  /** Passed down under the same rule as readInto(). */
  readIntoNow(buf: Buffer, offset: number): boolean {
    return this.read === FilterDevice.prototype.read && this.next.readIntoNow !== undefined && this.next.readIntoNow(buf, offset);
  }
  /** Passed down only while this filter changes neither read() nor readInto(): then the file's bytes
   *  below are this filter's bytes. */
  fileRange(offset: number, length: number, options?: FileRangeOptions): FileRange | undefined {
    if (this.read !== FilterDevice.prototype.read || this.readInto !== FilterDevice.prototype.readInto) return undefined;
    return this.next.fileRange?.(offset, length, options);
  }
  write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> { return this.next.write(offset, data, options); }
  flush(): Promise<void> { return this.next.flush(); }
  discard(offset: number, length: number): Promise<void> { return this.next.discard(offset, length); }
  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> { return this.next.writeZeroes(offset, length, options); }
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.next.extents ? this.next.extents(offset, length) : Promise.resolve([{ length, hole: false, zero: false }]);
  }
  resize(newSize: number): Promise<void> {
    if (!this.next.resize) return Promise.reject(new MedvError('EUNSUPPORTED', 'device cannot be resized', { file: this.description }));
    return this.next.resize(newSize);
  }
  close(): Promise<void> { return this.next.close(); }
}
