import { MedvError } from '../core/errors.js';
import { type BlockCapabilities, type BlockDevice, type WriteOptions, defaultCapabilities } from './device.js';

/** A resizable in-memory device, for tests and as a scratch layer. */
export class MemoryDevice implements BlockDevice {
  readonly capabilities: BlockCapabilities;
  private data: Buffer;
  private closed = false;

  constructor(size: number, readonly readOnly = false, readonly description = 'memory') {
    this.data = Buffer.alloc(size);
    this.capabilities = defaultCapabilities({ resizable: !readOnly, fua: 'native' });
  }

  static from(contents: Buffer, readOnly = false): MemoryDevice {
    const dev = new MemoryDevice(contents.length, readOnly);
    contents.copy(dev.data);
    return dev;
  }

  get size(): number { return this.data.length; }

  /** A copy of the whole contents (tests). */
  snapshot(): Buffer { return Buffer.from(this.data); }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check(offset, length, false);
    return Buffer.from(this.data.subarray(offset, offset + length));
  }

  /** See BlockDevice.readIntoNow: memory is always at hand. */
  readIntoNow(buf: Buffer, offset: number): boolean {
    if (this.closed || offset < 0 || offset + buf.length > this.data.length) return false;
    this.data.copy(buf, 0, offset, offset + buf.length);
    return true;
  }

  async write(offset: number, data: Buffer, _options?: WriteOptions): Promise<void> {
    this.check(offset, 0, true);
    if (offset + data.length > this.data.length) await this.resize(offset + data.length);
    data.copy(this.data, offset);
  }

  async flush(): Promise<void> { this.check(0, 0, false); }

  async discard(offset: number, length: number): Promise<void> { await this.writeZeroes(offset, length); }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.check(offset, length, true);
    this.data.fill(0, offset, offset + length);
  }

  async resize(newSize: number): Promise<void> {
    this.check(0, 0, true);
    const next = Buffer.alloc(newSize);
    this.data.copy(next, 0, 0, Math.min(newSize, this.data.length));
    this.data = next;
  }

  async close(): Promise<void> { this.closed = true; }

  private check(offset: number, length: number, write: boolean): void {
    if (this.closed) throw new MedvError('ECLOSED', 'device is closed', { file: this.description });
    if (write && this.readOnly) throw new MedvError('EREADONLY', 'device is read-only', { file: this.description });
    if (offset + length > this.data.length) {
      throw new MedvError('ERANGE', `request past end of device`, { file: this.description, offset });
    }
  }
}
