/** Packed images: pack a disk into a signed .ckm.index + encrypted .ckm, and verify them (README.md). */
export { packImage, findPreviousIndex, type PackOptions, type PackResult, type PackStats } from './pack.js';
export { verifyPack, openPackedImage, type VerifyResult, type OpenImageOptions, type OpenedImage } from './verify.js';
export { IndexFile, verifyIndexSignature } from './indexfile.js';
export { PackSet, readImageBlocks, type ImageBlock } from './read.js';
export { BlockCodec, type CodecKeys } from './block.js';
export { ImageKeys, openImageKeys, loadTrustedKeys, imageKeyPath, parsePublicKeyFile } from './keys.js';
