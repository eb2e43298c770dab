/** BLAKE2b for the packed-image formats: run hashes, root hashes, index delta bodies (whole or in pieces). */
import { sodium } from '../../core/sodium.js';

/** BLAKE2b of `input` with an output of `bytes` (16..64). */
export function blake2b(input: Buffer, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  sodium.crypto_generichash(out, input);
  return out;
}

/** BLAKE2b over data given in pieces. */
export class Blake2bStream {
  private readonly state = Buffer.alloc(sodium.crypto_generichash_STATEBYTES);
  constructor(private readonly bytes: number) { sodium.crypto_generichash_init(this.state, null, bytes); }
  update(b: Buffer): void { sodium.crypto_generichash_update(this.state, b); }
  digest(): Buffer {
    const out = Buffer.alloc(this.bytes);
    sodium.crypto_generichash_final(this.state, out);
    return out;
  }
}
