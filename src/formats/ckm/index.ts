/** Packed-image formats: the `.ckm` pack and the signed `.ckm.index` (see README in src/pack). */
export * from './common.js';
export * from './pack.js';
export * from './run.js';
export * from './index-header.js';
export { zstdCompress, zstdDecompress, ZSTD_LEVEL } from './zstd.js';
export * from './delta.js';
export { blake2b, Blake2bStream } from './hash.js';
