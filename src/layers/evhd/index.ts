/**
 * The EVHD encryption layer: create, open, and convert .evhd containers (DESIGN.md, "evhd").
 * The device is in ./device.ts, the header format in src/formats/evhd.ts.
 */
import * as fs from 'node:fs';
import { dirname } from 'node:path';
import type { BlockDevice } from '../../block/device.js';
import { forEachChunk } from '../../block/copy.js';
import { FileDevice } from '../../block/file.js';
import { DataKey } from '../../crypto/datakey.js';
import { type KekSource, encPathFor, readKeyFile, writeKeyFile } from '../../crypto/index.js';
import { fsyncDir } from '../../crypto/keyfile.js';
import { constantTimeEqual } from '../../crypto/secure.js';
import { MedvError, fromSystemError } from '../../errors.js';
import { EVHD_HEADER_SIZE, EVHD_UNIT_SIZE, type EvhdHeader, newEvhdHeader, parseEvhdHeader, serializeEvhdHeader } from '../../formats/evhd.js';
import { EvhdDevice } from './device.js';
import { evhdKeyCheck } from './keycheck.js';

export { EvhdDevice } from './device.js';
export { evhdKeyCheck } from './keycheck.js';
export type { EvhdHeader } from '../../formats/evhd.js';

export type Progress = (done: number, total: number) => void;

const COPY_CHUNK = 4 * 1024 * 1024;

/** Write a fresh header (logical length 0) to `storage` and return the device over it. Takes ownership of both. */
export async function createEvhd(storage: BlockDevice, key: DataKey): Promise<EvhdDevice> {
  if (storage.readOnly) throw new MedvError('EREADONLY', 'cannot create an EVHD on read-only storage', { file: storage.description });
  const header = newEvhdHeader(key.keyId, evhdKeyCheck(key), 0n);
  await storage.write(0, serializeEvhdHeader(header));
  if (storage.size > EVHD_HEADER_SIZE && storage.capabilities.resizable && storage.resize) await storage.resize(EVHD_HEADER_SIZE);
  await storage.flush();
  return new EvhdDevice(storage, key, header, { name: storage.description });
}

/** Read and parse the plaintext header (no key needed). */
export async function readEvhdHeader(storage: BlockDevice, name?: string): Promise<EvhdHeader> {
  const file = name ?? storage.description;
  const n = Math.min(storage.size, EVHD_HEADER_SIZE);
  const buf = n > 0 ? await storage.read(0, n) : Buffer.alloc(0);
  return parseEvhdHeader(buf, file);
}

/**
 * Open an EVHD over `storage` with its data key. The key id and key-check value are verified
 * before any data unit is read: a wrong key gives EBADKEY and nothing is written. On success the
 * device owns `storage` and `key`; on failure the caller keeps them.
 */
export async function openEvhd(storage: BlockDevice, key: DataKey, opts: { readOnly?: boolean; name?: string } = {}): Promise<EvhdDevice> {
  const file = opts.name ?? storage.description;
  const header = await readEvhdHeader(storage, file);
  if (!header.keyId.equals(key.keyId)) {
    throw new MedvError('EBADKEY', `wrong passphrase or key: the key file is for key id ${key.keyId.toString('hex')}, this disk needs ${header.keyId.toString('hex')}`, { file, offset: 40 });
  }
  if (!constantTimeEqual(evhdKeyCheck(key), header.keyCheck)) {
    throw new MedvError('EBADKEY', 'wrong passphrase or key: the key-check value does not match', { file, offset: 56 });
  }
  const units = Math.ceil(Number(header.logicalLength) / EVHD_UNIT_SIZE);
  const need = EVHD_HEADER_SIZE + units * EVHD_UNIT_SIZE;
  if (storage.size < need) {
    throw new MedvError('ETRUNCATED', `EVHD holds ${header.logicalLength} bytes, which need a ${need}-byte file, but it is ${storage.size} bytes`, { file, offset: storage.size });
  }
  return new EvhdDevice(storage, key, header, { readOnly: opts.readOnly, name: file });
}

/**
 * Create `path` (an empty EVHD) and its key file (encPathFor(path)) holding a new random data key
 * wrapped under `kek`. Refuses to overwrite either file; on failure neither is left behind.
 */
export async function createEvhdFile(path: string, kek: KekSource): Promise<EvhdDevice> {
  const enc = encPathFor(path);
  if (fs.existsSync(path)) throw new MedvError('EEXIST', `file exists: ${path}`, { file: path });
  if (fs.existsSync(enc)) throw new MedvError('EEXIST', `key file exists: ${enc}`, { file: enc });
  const key = DataKey.generate();
  let storage: FileDevice;
  try {
    storage = await FileDevice.open(path, { create: true });
  } catch (e) {
    key.dispose();
    throw e;
  }
  let dev: EvhdDevice | undefined;
  try {
    dev = await createEvhd(storage, key);
    await writeKeyFile(enc, key, kek);
    await fsyncDir(dirname(path));
    return dev;
  } catch (e) {
    if (dev) await dev.close().catch(() => undefined);
    else { await storage.close().catch(() => undefined); key.dispose(); }
    await fs.promises.unlink(path).catch(() => undefined);
    throw e;
  }
}

/** Open `path` with the data key from its .enc file, unwrapped with `kek`. */
export async function openEvhdFile(path: string, kek: KekSource, opts: { readOnly?: boolean } = {}): Promise<EvhdDevice> {
  if (!fs.existsSync(path)) throw new MedvError('ENOENT', `no such file: ${path}`, { file: path });
  const key = await readKeyFile(encPathFor(path), kek);
  let storage: FileDevice | undefined;
  try {
    storage = await FileDevice.open(path, { readOnly: opts.readOnly ?? false });
    return await openEvhd(storage, key, { readOnly: opts.readOnly, name: path });
  } catch (e) {
    if (storage) await storage.close().catch(() => undefined);
    key.dispose();
    throw e;
  }
}

/**
 * Encrypt a file (normally a .vhd) into a new EVHD `dstPath` plus its .enc. decryptFile gives the
 * byte-identical source back. Refuses to overwrite; on failure removes what it created.
 */
export async function encryptFile(srcPath: string, dstPath: string, kek: KekSource, onProgress?: Progress): Promise<void> {
  const src = await FileDevice.open(srcPath, { readOnly: true });
  try {
    const dev = await createEvhdFile(dstPath, kek);
    try {
      await dev.importFrom(src, onProgress);
      if (src.size === 0) onProgress?.(0, 0);
      await dev.close();
    } catch (e) {
      await dev.close().catch(() => undefined);
      await fs.promises.unlink(dstPath).catch(() => undefined);
      await fs.promises.unlink(encPathFor(dstPath)).catch(() => undefined);
      throw e;
    }
  } finally {
    await src.close();
  }
}

/** Decrypt an EVHD into a new plain file `dstPath` (mode 0600). Refuses to overwrite; on failure removes it. */
export async function decryptFile(srcPath: string, dstPath: string, kek: KekSource, onProgress?: Progress): Promise<void> {
  const dev = await openEvhdFile(srcPath, kek, { readOnly: true });
  try {
    const out = await FileDevice.open(dstPath, { create: true });
    try {
      const total = dev.size;
      await forEachChunk(dev, total, COPY_CHUNK, async (off, data) => {
        await out.write(off, data);
        onProgress?.(off + data.length, total);
      });
      if (total === 0) onProgress?.(0, 0);
      await out.flush();
      await out.close();
    } catch (e) {
      await out.close().catch(() => undefined);
      await fs.promises.unlink(dstPath).catch(() => undefined);
      throw fromSystemError(e, dstPath);
    }
  } finally {
    await dev.close();
  }
}
