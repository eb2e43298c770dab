import type { WriteOptions } from '../../../src/block/device.js';
import { FilterDevice } from '../../../src/block/filter.js';
import { MedvError } from '../../../src/core/errors.js';

/**
 * A pass-through BlockDevice that logs reads and mutations and can fail: after `failAfter`
 * mutations (write, writeZeroes, discard, resize) every further mutation throws EIO without
 * touching the device below — as if the machine stopped there.
 */
export class InjectingDevice extends FilterDevice {
  reads: Array<[number, number]> = [];
  mutations = 0;
  failAfter = Infinity;

  override get description(): string { return `injecting(${this.next.description})`; }

  private mutate(): void {
    if (this.mutations >= this.failAfter) throw new MedvError('EIO', 'injected failure', { file: this.description });
    this.mutations++;
  }

  override read(offset: number, length: number): Promise<Buffer> { this.reads.push([offset, length]); return super.read(offset, length); }
  override async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> { this.mutate(); await super.write(offset, data, options); }
  override async discard(offset: number, length: number): Promise<void> { this.mutate(); await super.discard(offset, length); }
  override async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> { this.mutate(); await super.writeZeroes(offset, length, options); }
  override async resize(newSize: number): Promise<void> { this.mutate(); await super.resize(newSize); }
}
