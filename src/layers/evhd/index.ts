/**
 * The EVHD encryption layer: create, open, and convert .evhd containers (DESIGN.md, "evhd").
 * The device is in ./device.ts, the header format in src/formats/evhd.ts.
 */
import * as fs from 'node:fs';
import type { BlockDevice } from '../../block/device.js';
import { forEachChunk } from '../../block/copy.js';
import { FileDevice } from '../../block/file.js';
import { DataKey } from '../../crypto/datakey.js';
import { beginStaging } from '../../core/fsio.js';
import { type KekSource, encPathFor, readKeyFile, writeKeyFileAt } from '../../crypto/index.js';
import { constantTimeEqual } from '../../crypto/secure.js';
import { MedvError, fromSystemError } from '../../core/errors.js';
import { EVHD_HEADER_SIZE, EVHD_MAC_OFFSET, EVHD_UNIT_SIZE, type EvhdHeader, newEvhdHeader, parseEvhdHeader } from '../../formats/evhd.js';
import { EvhdDevice } from './device.js';
import { evhdHeaderMacValid, evhdKeyCheck, sealEvhdHeader } from './keycheck.js';

export { EvhdDevice } from './device.js';
export { evhdHeaderMac, evhdKeyCheck, sealEvhdHeader } from './keycheck.js';
export type { EvhdHeader } from '../../formats/evhd.js';

export type Progress = (done: number, total: number) => void;

const COPY_CHUNK = 4 * 1024 * 1024;

/** Write a fresh header (logical length 0) to `storage` and return the device over it. Takes ownership of both. */
export async function createEvhd(storage: BlockDevice, key: DataKey, opts: { name?: string } = {}): Promise<EvhdDevice> {
  if (storage.readOnly) throw new MedvError('EREADONLY', 'cannot create an EVHD on read-only storage', { file: storage.description });
  const header = newEvhdHeader(key.keyId, evhdKeyCheck(key), 0n);
  const bytes = sealEvhdHeader(header, key);
  await storage.write(0, bytes);
  if (storage.size > EVHD_HEADER_SIZE && storage.capabilities.resizable && storage.resize) await storage.resize(EVHD_HEADER_SIZE);
  await storage.flush();
  return new EvhdDevice(storage, key, parseEvhdHeader(bytes), { name: opts.name ?? storage.description });
}

/** Read and parse the plaintext header (no key needed; its MAC is checked by openEvhd). */
export async function readEvhdHeader(storage: BlockDevice, name?: string): Promise<EvhdHeader> {
  return (await readHeaderBytes(storage, name)).header;
}

async function readHeaderBytes(storage: BlockDevice, name?: string): Promise<{ header: EvhdHeader; bytes: Buffer }> {
  const file = name ?? storage.description;
  const n = Math.min(storage.size, EVHD_HEADER_SIZE);
  const bytes = n > 0 ? await storage.read(0, n) : Buffer.alloc(0);
  return { header: parseEvhdHeader(bytes, file), bytes };
}

/**
 * Open an EVHD over `storage` with its data key. The key id and key-check value, then the header
 * MAC, are verified before any data unit is read: a wrong key gives EBADKEY, a header changed
 * without the key (e.g. a forged logical length with a recomputed checksum) EAUTH; nothing is written. On success the
 * device owns `storage` and `key`; on failure the caller keeps them.
 */
export async function openEvhd(storage: BlockDevice, key: DataKey, opts: { readOnly?: boolean; name?: string } = {}): Promise<EvhdDevice> {
  const file = opts.name ?? storage.description;
  const { header, bytes } = await readHeaderBytes(storage, file);
  if (!header.keyId.equals(key.keyId)) {
    throw new MedvError('EBADKEY', `wrong passphrase or key: the key file is for key id ${key.keyId.toString('hex')}, this disk needs ${header.keyId.toString('hex')}`, { file, offset: 40 });
  }
  if (!constantTimeEqual(evhdKeyCheck(key), header.keyCheck)) {
    throw new MedvError('EBADKEY', 'wrong passphrase or key: the key-check value does not match', { file, offset: 56 });
  }
  if (!evhdHeaderMacValid(key, bytes, header.mac)) {
    throw new MedvError('EAUTH', 'EVHD header authentication failed: the header was changed without the key (or damaged)', { file, offset: EVHD_MAC_OFFSET });
  }
  const units = Math.ceil(Number(header.logicalLength) / EVHD_UNIT_SIZE);
  const need = EVHD_HEADER_SIZE + units * EVHD_UNIT_SIZE;
  if (storage.size < need) {
    throw new MedvError('ETRUNCATED', `EVHD holds ${header.logicalLength} bytes, which need a ${need}-byte file, but it is ${storage.size} bytes`, { file, offset: storage.size });
  }
  return new EvhdDevice(storage, key, header, { readOnly: opts.readOnly, name: file });
}

/** A new EVHD and its key file, still under temporary names (src/core/fsio.ts). */
export interface PendingEvhd {
  /** The empty EVHD (logical length 0), open read-write on the temporary file. */
  device: EvhdDevice;
  /** Final path of the .evhd (the key file is encPathFor(path)). */
  path: string;
  /**
   * Publish: the key file, then the .evhd (an .evhd is never visible without its key), then the
   * folder is fsynced. Flush or close the device first; the temporaries are fsynced here too.
   */
  publish(): Promise<void>;
  /** Close the device and remove the temporaries (and nothing that this run did not create). */
  abort(): Promise<void>;
}

/**
 * Start a new EVHD `path` with a fresh random data key wrapped under `kek` in encPathFor(path),
 * both under temporary names in the same folder until `publish()`. Refuses (EEXIST) when either
 * final name exists, after removing what a killed earlier run left (see src/core/fsio.ts).
 */
export async function stageEvhdFile(path: string, kek: KekSource): Promise<PendingEvhd> {
  const enc = encPathFor(path);
  const staging = beginStaging([enc, path], (f) => (f === enc ? `key file exists: ${f}` : `file exists: ${f}`));
  let storage: FileDevice | undefined;
  let dev: EvhdDevice | undefined;
  let key: DataKey | undefined = DataKey.generate();
  try {
    await writeKeyFileAt(staging.tempFor(enc), key, kek);
    storage = await FileDevice.open(staging.tempFor(path), { create: true });
    dev = await createEvhd(storage, key, { name: path });
    key = undefined; // owned by dev
  } catch (e) {
    if (dev) await dev.close().catch(() => undefined);
    else if (storage) await storage.close().catch(() => undefined);
    key?.dispose();
    await staging.abort().catch(() => undefined);
    throw e;
  }
  const device = dev;
  return {
    device,
    path,
    publish: () => staging.publish(),
    async abort() {
      await device.close().catch(() => undefined);
      await staging.abort();
    },
  };
}

/**
 * Create `path` (an empty EVHD) and its key file (encPathFor(path)) holding a new random data key
 * wrapped under `kek`, published together at once (stageEvhdFile). Refuses to overwrite either
 * file; on failure neither is left behind and nothing this call did not create is touched.
 */
export async function createEvhdFile(path: string, kek: KekSource): Promise<EvhdDevice> {
  const pending = await stageEvhdFile(path, kek);
  try {
    await pending.publish();
  } catch (e) {
    await pending.abort().catch(() => undefined);
    throw e;
  }
  return pending.device;
}

/**
 * Open `path` with the data key from its .enc file, unwrapped with `kek`. `via` opens the bytes
 * (`file`) and the key file (`keyFile`) through other paths, e.g. `/proc/self/fd/N` of files the
 * caller opened without following links (src/core/fsio.ts); `path` still names the disk.
 */
export async function openEvhdFile(path: string, kek: KekSource, opts: { readOnly?: boolean; via?: { file: string; keyFile?: string }; unshared?: boolean; map?: boolean } = {}): Promise<EvhdDevice> {
  const file = opts.via?.file ?? path;
  if (!fs.existsSync(file)) throw new MedvError('ENOENT', `no such file: ${path}`, { file: path });
  const key = await readKeyFile(opts.via?.keyFile ?? encPathFor(path), kek);
  let storage: FileDevice | undefined;
  try {
    storage = await FileDevice.open(file, { readOnly: opts.readOnly ?? false, unshared: opts.unshared, map: opts.map });
    return await openEvhd(storage, key, { readOnly: opts.readOnly, name: path });
  } catch (e) {
    if (storage) await storage.close().catch(() => undefined);
    key.dispose();
    throw e;
  }
}

/**
 * Encrypt a file (normally a .vhd) into a new EVHD `dstPath` plus its .enc. decryptFile gives the
 * byte-identical source back. Refuses to overwrite; writes under temporary names and publishes
 * both at the end, so a failed or killed run leaves neither (stageEvhdFile).
 */
export async function encryptFile(srcPath: string, dstPath: string, kek: KekSource, onProgress?: Progress): Promise<void> {
  const src = await FileDevice.open(srcPath, { readOnly: true });
  try {
    const pending = await stageEvhdFile(dstPath, kek);
    try {
      await pending.device.importFrom(src, onProgress);
      if (src.size === 0) onProgress?.(0, 0);
      await pending.device.close();
      await pending.publish();
    } catch (e) {
      await pending.abort().catch(() => undefined);
      throw e;
    }
  } finally {
    await src.close();
  }
}

/**
 * Decrypt an EVHD into a new plain file `dstPath` (mode 0600). Refuses to overwrite; writes a
 * temporary file and publishes it when complete (src/core/fsio.ts), so a failed or killed run
 * leaves nothing under `dstPath`.
 */
export async function decryptFile(srcPath: string, dstPath: string, kek: KekSource, onProgress?: Progress): Promise<void> {
  const dev = await openEvhdFile(srcPath, kek, { readOnly: true });
  try {
    const staging = beginStaging([dstPath]);
    let out: FileDevice | undefined;
    try {
      out = await FileDevice.open(staging.tempFor(dstPath), { create: true });
      const total = dev.size;
      const target = out;
      await forEachChunk(dev, total, COPY_CHUNK, async (off, data) => {
        await target.write(off, data);
        onProgress?.(off + data.length, total);
      });
      if (total === 0) onProgress?.(0, 0);
      await out.flush();
      await out.close();
      await staging.publish();
    } catch (e) {
      if (out) await out.close().catch(() => undefined);
      await staging.abort().catch(() => undefined);
      throw fromSystemError(e, dstPath);
    }
  } finally {
    await dev.close();
  }
}
