/**
 * Encrypted saved state (`.vsv`, key in `.vsv.enc`): QEMU's migration stream, encrypted as it
 * arrives (it never touches the disk in clear), and decrypted as it is fed back on resume.
 *
 * File layout (integers little-endian):
 *    0   8  magic "MEDVVSV\0"
 *    8   2  version (1)
 *   10   2  reserved, 0
 *   12  16  key id (the .vsv.enc key file's)
 *   28  24  secretstream header (XChaCha20-Poly1305 secretstream, libsodium)
 *   52   …  frames: u32 ciphertext length, then the ciphertext (at most MAX_FRAME + 17 bytes)
 * Frames 1..n-1 carry the migration stream (tag MESSAGE); the last frame carries the metadata
 * JSON (tag FINAL), written once the VM has quit and its disks are closed, so it can record the
 * disks as they are at the stop point. The plaintext header (magic..header) is bound into every
 * frame as associated data. A truncated file (no FINAL), a flipped byte or another file's frames
 * fail with a typed error. The stream key is BLAKE2b-256 keyed with the 512-bit data key of the
 * .vsv.enc file (wrapped with the KEK like a disk key).
 * Files are written under a temporary name; the key file is published first, then the .vsv.
 */
import * as fs from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DataKey, type KekSource, readKeyFile, writeKeyFile } from '../crypto/index.js';
import { secureAlloc, secureFree } from '../crypto/secure.js';
import { sodium } from '../crypto/sodium.js';
import { MedvError, fromSystemError } from '../errors.js';

const MAGIC = Buffer.from('MEDVVSV\0', 'latin1');
const VERSION = 1;
const HEADER_BYTES = 52;
/** Largest plaintext per frame. */
export const MAX_FRAME = 1 << 20;
const ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES;
const STREAM_KEY_CONTEXT = Buffer.from('medv vsv stream key v1', 'latin1');

/** What a saved state records about the VM at its stop point. */
export interface SavedStateMeta {
  vm: string;
  memoryMiB: number;
  createdAt: string;
  /** Every file whose content the saved RAM depends on, as it was when the VM stopped. */
  disks: DiskFingerprint[];
  streamBytes: number;
}

export interface DiskFingerprint { path: string; size: number; mtimeNs: string; ino: number }

export function vsvKeyPath(vsvPath: string): string { return `${vsvPath}.enc`; }

/** Size, modification time and inode of a file: what "the disk changed since" is judged by. */
export function fingerprint(path: string): DiskFingerprint {
  const st = fs.statSync(path, { bigint: true });
  return { path, size: Number(st.size), mtimeNs: st.mtimeNs.toString(), ino: Number(st.ino) };
}

function streamKey(dataKey: DataKey): Buffer {
  const k = secureAlloc(sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES);
  sodium.crypto_generichash(k, STREAM_KEY_CONTEXT, dataKey.key);
  return k;
}

/** Writes a .vsv: append migration-stream chunks, then finish(meta) publishes it. */
export class SavedStateWriter {
  private readonly state = Buffer.alloc(sodium.crypto_secretstream_xchacha20poly1305_STATEBYTES);
  private readonly header: Buffer;
  private fd: number | undefined;
  private pos = 0;
  private bytes = 0;

  private constructor(readonly path: string, private readonly tmp: string, private readonly dataKey: DataKey, private readonly kek: KekSource) {
    this.header = Buffer.alloc(HEADER_BYTES);
    MAGIC.copy(this.header, 0);
    this.header.writeUInt16LE(VERSION, 8);
    dataKey.keyId.copy(this.header, 12);
    const key = streamKey(dataKey);
    try {
      sodium.crypto_secretstream_xchacha20poly1305_init_push(this.state, this.header.subarray(28, 52), key);
    } finally {
      secureFree(key);
    }
  }

  /** Refuses when a saved state (or a lone key file of one) already exists. */
  static create(path: string, kek: KekSource): SavedStateWriter {
    if (fs.existsSync(path)) throw new MedvError('EEXIST', `a saved state exists already: ${path}`, { file: path });
    if (fs.existsSync(vsvKeyPath(path))) throw new MedvError('EEXIST', `a saved-state key file exists without its saved state (an interrupted suspend?): ${vsvKeyPath(path)}; remove it to suspend again`, { file: vsvKeyPath(path) });
    const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.partial`);
    const w = new SavedStateWriter(path, tmp, DataKey.generate(), kek);
    try {
      w.fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      fs.writeSync(w.fd, w.header, 0, HEADER_BYTES, 0);
    } catch (e) {
      w.abort();
      throw fromSystemError(e, path);
    }
    w.pos = HEADER_BYTES;
    return w;
  }

  /** Encrypt and append a chunk of the migration stream (split into frames of at most MAX_FRAME). */
  write(chunk: Buffer): void {
    for (let off = 0; off < chunk.length; off += MAX_FRAME) {
      this.frame(chunk.subarray(off, Math.min(chunk.length, off + MAX_FRAME)), sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    }
    this.bytes += chunk.length;
  }

  get streamBytes(): number { return this.bytes; }

  private frame(plain: Buffer, tag: number): void {
    if (this.fd === undefined) throw new MedvError('ECLOSED', 'saved state writer is closed', { file: this.path });
    const out = Buffer.allocUnsafe(4 + plain.length + ABYTES);
    out.writeUInt32LE(plain.length + ABYTES, 0);
    sodium.crypto_secretstream_xchacha20poly1305_push(this.state, out.subarray(4), plain, this.header, tag);
    let done = 0;
    while (done < out.length) done += fs.writeSync(this.fd, out, done, out.length - done, this.pos + done);
    this.pos += out.length;
  }

  /** Write the metadata (final frame), make it durable, publish the key file, then the .vsv. */
  async finish(meta: Omit<SavedStateMeta, 'streamBytes'>): Promise<SavedStateMeta> {
    const full: SavedStateMeta = { ...meta, streamBytes: this.bytes };
    try {
      this.frame(Buffer.from(JSON.stringify(full), 'utf8'), sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL);
      fs.fsyncSync(this.fd!);
      fs.closeSync(this.fd!);
      this.fd = undefined;
      await writeKeyFile(vsvKeyPath(this.path), this.dataKey, this.kek);
      fs.renameSync(this.tmp, this.path);
      const dfd = fs.openSync(dirname(this.path), 'r');
      try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
    } catch (e) {
      this.abort();
      throw fromSystemError(e, this.path);
    } finally {
      this.dataKey.dispose();
    }
    return full;
  }

  /** Drop the partial file (never the published names). */
  abort(): void {
    if (this.fd !== undefined) { try { fs.closeSync(this.fd); } catch { /* closed */ } this.fd = undefined; }
    fs.rmSync(this.tmp, { force: true });
    if (!this.dataKey.disposed) this.dataKey.dispose();
  }
}

/** An opened saved state: check() verifies every frame and returns the metadata; stream() yields the plaintext. */
export class SavedStateReader {
  private constructor(readonly path: string, private readonly dataKey: DataKey, private readonly header: Buffer) {}

  static async open(path: string, kek: KekSource): Promise<SavedStateReader> {
    let header: Buffer;
    try {
      const fd = fs.openSync(path, 'r');
      try {
        header = Buffer.alloc(HEADER_BYTES);
        const n = fs.readSync(fd, header, 0, HEADER_BYTES, 0);
        if (n < HEADER_BYTES) throw new MedvError('ETRUNCATED', `saved state is ${n} bytes, shorter than its header`, { file: path, offset: n });
      } finally { fs.closeSync(fd); }
    } catch (e) { throw fromSystemError(e, path); }
    if (!header.subarray(0, 8).equals(MAGIC)) throw new MedvError('EFORMAT', 'not a medv saved state (bad magic)', { file: path, offset: 0 });
    const version = header.readUInt16LE(8);
    if (version !== VERSION) throw new MedvError('EVERSION', `saved state version ${version} is not supported`, { file: path, offset: 8 });
    const dataKey = await readKeyFile(vsvKeyPath(path), kek);
    if (!dataKey.keyId.equals(header.subarray(12, 28))) {
      dataKey.dispose();
      throw new MedvError('EBADKEY', `saved state ${path} does not belong to key file ${vsvKeyPath(path)}`, { file: path, offset: 12 });
    }
    return new SavedStateReader(path, dataKey, header);
  }

  /** Decrypt every frame in order; yields stream chunks; returns the metadata of the final frame. */
  async *frames(): AsyncGenerator<Buffer, SavedStateMeta, void> {
    const state = Buffer.alloc(sodium.crypto_secretstream_xchacha20poly1305_STATEBYTES);
    const key = streamKey(this.dataKey);
    try { sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, this.header.subarray(28, 52), key); } finally { secureFree(key); }
    const fh = await fs.promises.open(this.path, 'r');
    try {
      const size = (await fh.stat()).size;
      let pos = HEADER_BYTES;
      const lenBuf = Buffer.alloc(4);
      const tag = Buffer.alloc(1);
      for (;;) {
        if (pos + 4 > size) throw new MedvError('ETRUNCATED', 'saved state ends before its final frame (interrupted write?)', { file: this.path, offset: pos });
        await fh.read(lenBuf, 0, 4, pos);
        const clen = lenBuf.readUInt32LE(0);
        if (clen < ABYTES || clen > MAX_FRAME + ABYTES) throw new MedvError('EFORMAT', `saved state frame length ${clen} is out of range`, { file: this.path, offset: pos });
        if (pos + 4 + clen > size) throw new MedvError('ETRUNCATED', 'saved state frame runs past the end of the file', { file: this.path, offset: pos });
        const c = Buffer.allocUnsafe(clen);
        await fh.read(c, 0, clen, pos + 4);
        const m = Buffer.allocUnsafe(clen - ABYTES);
        try {
          sodium.crypto_secretstream_xchacha20poly1305_pull(state, m, tag, c, this.header);
        } catch {
          throw new MedvError('ECRYPTO', 'saved state frame does not authenticate (damaged or tampered with)', { file: this.path, offset: pos });
        }
        pos += 4 + clen;
        if (tag[0] === sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
          if (pos !== size) throw new MedvError('EFORMAT', 'saved state has bytes after its final frame', { file: this.path, offset: pos });
          let meta: SavedStateMeta;
          try { meta = JSON.parse(m.toString('utf8')) as SavedStateMeta; } catch { throw new MedvError('EFORMAT', 'saved state metadata is not JSON', { file: this.path, offset: pos }); }
          if (!meta || !Array.isArray(meta.disks) || !Number.isSafeInteger(meta.memoryMiB)) throw new MedvError('EFORMAT', 'saved state metadata lacks disks or memory', { file: this.path });
          return meta;
        }
        yield m;
      }
    } finally {
      await fh.close();
    }
  }

  /** Verify every frame without keeping the plaintext; returns the metadata. */
  async check(): Promise<SavedStateMeta> {
    const it = this.frames();
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
      r.value.fill(0);
    }
  }

  close(): void { if (!this.dataKey.disposed) this.dataKey.dispose(); }
}

/** Refuse a saved state whose disks changed since it was written (typed, names the first changed file). */
export function checkFingerprints(meta: SavedStateMeta, file: string): void {
  for (const d of meta.disks) {
    let now: DiskFingerprint;
    try { now = fingerprint(d.path); } catch { throw new MedvError('ENOENT', `saved state needs ${d.path}, which is gone`, { file }); }
    if (now.size !== d.size || now.mtimeNs !== d.mtimeNs || now.ino !== d.ino) {
      throw new MedvError('ECORRUPT', `${d.path} changed since the VM was suspended; its saved state cannot be resumed (discard it with: medv vm discard-state)`, { file });
    }
  }
}

/** Remove a saved state and its key file (only files that are a saved state: checked by magic). */
export function removeSavedState(path: string): void {
  const head = Buffer.alloc(8);
  const fd = fs.openSync(path, 'r');
  try { fs.readSync(fd, head, 0, 8, 0); } finally { fs.closeSync(fd); }
  if (!head.equals(MAGIC)) throw new MedvError('EFORMAT', 'not a medv saved state; not removing it', { file: path });
  fs.rmSync(vsvKeyPath(path), { force: true });
  fs.rmSync(path);
}
