import type { BlockCapabilities, BlockDevice, WriteOptions } from '../../../src/block/device.js';
import { MedvError } from '../../../src/errors.js';

/**
 * A pass-through BlockDevice that logs reads and mutations and can fail: after `failAfter`
 * mutations (write, writeZeroes, discard, resize) every further mutation throws EIO without
 * touching the device below — as if the machine stopped there.
 */
export class InjectingDevice implements BlockDevice {
  reads: Array<[number, number]> = [];
  mutations = 0;
  failAfter = Infinity;

  constructor(readonly inner: BlockDevice) {}

  get size(): number { return this.inner.size; }
  get readOnly(): boolean { return this.inner.readOnly; }
  get capabilities(): BlockCapabilities { return this.inner.capabilities; }
  get description(): string { return `injecting(${this.inner.description})`; }

  private mutate(): void {
    if (this.mutations >= this.failAfter) throw new MedvError('EIO', 'injected failure', { file: this.description });
    this.mutations++;
  }

  read(offset: number, length: number): Promise<Buffer> { this.reads.push([offset, length]); return this.inner.read(offset, length); }
  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> { this.mutate(); await this.inner.write(offset, data, options); }
  flush(): Promise<void> { return this.inner.flush(); }
  async discard(offset: number, length: number): Promise<void> { this.mutate(); await this.inner.discard(offset, length); }
  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> { this.mutate(); await this.inner.writeZeroes(offset, length, options); }
  async resize(newSize: number): Promise<void> { this.mutate(); await this.inner.resize!(newSize); }
  close(): Promise<void> { return this.inner.close(); }
}
