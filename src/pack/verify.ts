/**
 * verifyPack: an index's signature against trusted keys, its run directory against the root hash,
 * every run record against its hash, every pack it names (header, image id, salt, exact length),
 * and every block: authenticates, decompresses to 4 KiB, matches its id. The first failure throws
 * a typed error naming the file and offset (ESIGNATURE, ECHECKSUM, ECORRUPT, ETRUNCATED, EBADBLOCK,
 * EBADKEY, ...).
 */
import { dirname } from 'node:path';
import { MedvError } from '../core/errors.js';
import type { KekSource } from '../crypto/index.js';
import { CKM_BLOCK_SIZE } from '../formats/ckm/index.js';
import { IndexFile } from './indexfile.js';
import { type ImageKeys, openImageKeys } from './keys.js';
import { type ImageBlock, PackSet, readImageBlocks } from './read.js';

export interface OpenImageOptions {
  /** Key folder (content key of the image, repository id key, trusted signers). */
  keyDir: string;
  kek: () => KekSource;
  /** Folder of the .ckm files (default: the index's folder). */
  packDir?: string;
}

export interface VerifyResult {
  index: string;
  name: string;
  version: number;
  imageId: string;
  virtualSize: number;
  signer: string;
  packs: number[];
  blocks: number;
  /** Non-zero blocks checked. */
  checkedBlocks: number;
  deltaBlocks: number;
  seconds: number;
}

/** An opened, signature-checked image: its index, packs and keys. close() releases all three. */
export interface OpenedImage {
  index: IndexFile;
  packs: PackSet;
  keys: ImageKeys;
  blocks(): AsyncGenerator<ImageBlock>;
  close(): Promise<void>;
}

export async function openPackedImage(indexPath: string, opts: OpenImageOptions): Promise<OpenedImage> {
  const index = await IndexFile.open(indexPath);
  let keys: ImageKeys | undefined;
  let packs: PackSet | undefined;
  try {
    const h = index.header;
    keys = await openImageKeys(opts.keyDir, h.name, opts.kek);
    await index.verify(keys.trusted);
    if (!keys.imageId.equals(h.imageId)) {
      throw new MedvError('EBADKEY', `the content key for ${h.name} in ${opts.keyDir} is for image ${keys.imageId.toString('hex')}, this index is image ${h.imageId.toString('hex')}`, { file: indexPath, offset: 24 });
    }
    packs = await PackSet.open(opts.packDir ?? dirname(indexPath), h.name, h.imageId, h.packs);
  } catch (e) {
    keys?.dispose();
    await packs?.close();
    await index.close();
    throw e;
  }
  const k = keys;
  const p = packs;
  return {
    index, packs: p, keys: k,
    blocks: () => readImageBlocks(index, p, k),
    close: async () => { k.dispose(); await p.close(); await index.close(); },
  };
}

export async function verifyPack(indexPath: string, opts: OpenImageOptions & { onProgress?: (done: number, total: number) => void }): Promise<VerifyResult> {
  const started = process.hrtime.bigint();
  const img = await openPackedImage(indexPath, opts);
  try {
    const h = img.index.header;
    let checked = 0;
    let deltas = 0;
    for await (const b of img.blocks()) {
      checked++;
      if (b.entry.kind === 'delta') deltas++;
      if ((checked & 255) === 0) opts.onProgress?.(Math.min(b.offset + CKM_BLOCK_SIZE, h.virtualSize), h.virtualSize);
    }
    opts.onProgress?.(h.virtualSize, h.virtualSize);
    return {
      index: indexPath, name: h.name, version: h.version, imageId: h.imageId.toString('hex'), virtualSize: h.virtualSize,
      signer: h.signer.toString('hex'), packs: h.packs.map((p) => p.version), blocks: Math.ceil(h.virtualSize / CKM_BLOCK_SIZE),
      checkedBlocks: checked, deltaBlocks: deltas, seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
  } finally {
    await img.close();
  }
}
