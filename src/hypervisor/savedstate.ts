/**
 * Encrypted saved state (`.vsv`, key in `.vsv.enc`): QEMU's migration stream, encrypted as it
 * arrives (it never touches the disk in clear), and decrypted as it is fed back on resume.
 *
 * File layout, version 2 (integers little-endian):
 *    0   8  magic "MEDVVSV\0"
 *    8   2  version (2; version 1 files, without the two v2 parts marked *, are still read)
 *   10   2  reserved, 0
 *   12  16  key id (the .vsv.enc key file's)
 *   28  24  secretstream header (XChaCha20-Poly1305 secretstream, libsodium)
 *   52   4  * guest RAM in MiB (what QEMU is started with before anything is decrypted)
 *   56   …  frames: u32 ciphertext length, then the ciphertext (at most MAX_FRAME + 17 bytes)
 *   end     * trailer: 24-byte nonce, the metadata JSON sealed with XChaCha20-Poly1305 (key
 *             BLAKE2b-256 of the data key with its own context, the plaintext header as associated
 *             data), u32 length of nonce + ciphertext, magic "MEDVVSVM"
 * Frames 1..n-1 carry the migration stream (tag MESSAGE); the last frame carries the metadata
 * JSON (tag FINAL), written once the VM has quit and its disks are closed, so it can record the
 * disks as they are at the stop point. The plaintext header is bound into every frame as
 * associated data. The trailer repeats the metadata so a resume can check the disks before it
 * decrypts the stream, and then decrypt the stream once, feeding QEMU as it goes; the FINAL frame
 * must then carry the same bytes, and the guest runs only after that frame authenticated. A
 * truncated file (no FINAL), a flipped byte or another file's frames fail with a typed error. The
 * stream key is BLAKE2b-256 keyed with the 512-bit data key of the .vsv.enc file (wrapped with the
 * KEK like a disk key). Files are written under a temporary name; the key file is published
 * first, then the .vsv.
 */
import * as fs from 'node:fs';
import { DataKey, type KekSource, readKeyFile, wrapDataKey, writeWrappedKeyFile } from '../crypto/index.js';
import { secureAlloc, secureFree } from '../crypto/secure.js';
import { sodium } from '../core/sodium.js';
import { MedvError, fromSystemError } from '../core/errors.js';
import { type AtomicFile, openAtomicSync, openFileNoFollow } from '../core/fsio.js';
import { HEADER_BYTES, MAGIC, MAX_MEMORY_MIB, readHeader, VERSION, type FileKey, type SavedStatePeek } from './savedstate-header.js';

export { peekSavedState, type SavedStatePeek } from './savedstate-header.js';

const TRAILER_MAGIC = Buffer.from('MEDVVSVM', 'latin1');
/** Largest plaintext per frame. */
export const MAX_FRAME = 1 << 20;
/**
 * Bytes written to a .vsv after which they are flushed to disk in the background while the stream
 * goes on (SavedStateWriter.syncWritten), so that the fsync before the .vsv is published has
 * little left (a 1.7 GB .vsv left it 0.6-0.8 s at the end).
 */
const SYNC_EVERY = 64 << 20;
/** Largest metadata trailer read (the metadata lists a few disks). */
const MAX_TRAILER = 1 << 20;
const ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES;
const NONCE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
const META_ABYTES = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES;
const STREAM_KEY_CONTEXT = Buffer.from('medv vsv stream key v1', 'latin1');
const META_KEY_CONTEXT = Buffer.from('medv vsv meta key v1', 'latin1');

/** What a saved state records about the VM at its stop point. */
export interface SavedStateMeta {
  vm: string;
  memoryMiB: number;
  createdAt: string;
  /** Every file whose content the saved RAM depends on, as it was when the VM stopped. */
  disks: DiskFingerprint[];
  streamBytes: number;
  /**
   * Which VM this state belongs to (absent in files of earlier versions): each of its disks in
   * boot order with every file it reads, identified (src/host/binding.ts checks it on resume).
   */
  binding?: VmBinding;
  /** The guest's hardware in words (src/host/shape.ts hardwareOf; absent in earlier files): a resume must have the same. */
  hardware?: string;
}

export interface DiskFingerprint { path: string; size: number; mtimeNs: string; ino: number }

/** One file as a saved state records it: where, which inode on which device, its size and mtime, and a VHD's unique id. */
export interface FileIdentity { path: string; dev: string; ino: string; size: string; mtimeNs: string; uniqueId?: string }

export interface VmBinding {
  disks: Array<{
    mode: string;
    /** The disk as configured (real path), and the undo disk taking its writes, if any. */
    path: string;
    undo?: string;
    /** Every file it reads: the undo disk, the disk, each parent to the end of the chain, then the key files. */
    files: FileIdentity[];
  }>;
}

/** The identity of `path` now (links followed: the paths recorded are real paths). */
export function fileIdentity(path: string, uniqueId?: string): FileIdentity {
  const st = fs.statSync(path, { bigint: true });
  return { path, dev: st.dev.toString(), ino: st.ino.toString(), size: st.size.toString(), mtimeNs: st.mtimeNs.toString(), ...(uniqueId ? { uniqueId } : {}) };
}

export function vsvKeyPath(vsvPath: string): string { return `${vsvPath}.enc`; }

/** Size, modification time and inode of a file: what "the disk changed since" is judged by. */
export function fingerprint(path: string): DiskFingerprint {
  const st = fs.statSync(path, { bigint: true });
  return { path, size: Number(st.size), mtimeNs: st.mtimeNs.toString(), ino: Number(st.ino) };
}

function derivedKey(dataKey: DataKey, context: Buffer): Buffer {
  const k = secureAlloc(32);
  sodium.crypto_generichash(k, context, dataKey.key);
  return k;
}

/** Writes a .vsv: append migration-stream chunks, then finish(meta) publishes it. */
export class SavedStateWriter {
  private readonly state = Buffer.alloc(sodium.crypto_secretstream_xchacha20poly1305_STATEBYTES);
  private readonly header: Buffer;
  /** The .vsv under its temporary name until finish() links it into place (src/core/fsio.ts). */
  private file: AtomicFile | undefined;
  private pos = 0;
  private bytes = 0;
  /** Plaintext gathered up to a full frame (socket reads are far smaller than a frame). */
  private readonly pending = Buffer.allocUnsafe(MAX_FRAME);
  private pendingBytes = 0;
  private readonly out = Buffer.allocUnsafe(4 + MAX_FRAME + ABYTES);
  /** The key file's bytes, wrapped (Argon2id for a passphrase) while the stream is written. */
  private readonly wrapped: Promise<Buffer>;
  /** Bytes appended since the last background flush was started. */
  private unsynced = 0;
  /** A flush of what was written, in progress on the thread pool (syncWritten). */
  private syncing: Promise<void> | undefined;
  /** The descriptor those flushes use: the temporary reopened through /proc/self/fd, closed only once none is in progress. */
  private syncFd: number | undefined;

  private constructor(readonly path: string, private readonly dataKey: DataKey, kek: KekSource, memoryMiB: number) {
    this.header = Buffer.alloc(HEADER_BYTES[VERSION]);
    MAGIC.copy(this.header, 0);
    this.header.writeUInt16LE(VERSION, 8);
    dataKey.keyId.copy(this.header, 12);
    this.header.writeUInt32LE(memoryMiB, 52);
    const key = derivedKey(dataKey, STREAM_KEY_CONTEXT);
    try {
      sodium.crypto_secretstream_xchacha20poly1305_init_push(this.state, this.header.subarray(28, 52), key);
    } finally {
      secureFree(key);
    }
    this.wrapped = wrapDataKey(dataKey, kek);
    this.wrapped.catch(() => undefined); // awaited in finish(); abort() must not leave it unhandled
  }

  /** Refuses when a saved state (or a lone key file of one) already exists. */
  static create(path: string, kek: KekSource, memoryMiB: number): SavedStateWriter {
    if (!Number.isSafeInteger(memoryMiB) || memoryMiB < 1 || memoryMiB > MAX_MEMORY_MIB) throw new MedvError('EINVAL_ARG', `guest RAM ${memoryMiB} MiB is out of range`);
    if (fs.existsSync(path)) throw new MedvError('EEXIST', `a saved state exists already: ${path}`, { file: path });
    if (fs.existsSync(vsvKeyPath(path))) throw new MedvError('EEXIST', `a saved-state key file exists without its saved state (an interrupted suspend?): ${vsvKeyPath(path)}; remove it to suspend again`, { file: vsvKeyPath(path) });
    const w = new SavedStateWriter(path, DataKey.generate(), kek, memoryMiB);
    try {
      w.file = openAtomicSync(path, { mode: 0o600 });
      fs.writeSync(w.file.fd, w.header, 0, w.header.length, 0);
    } catch (e) {
      w.abort();
      throw fromSystemError(e, path);
    }
    w.pos = w.header.length;
    return w;
  }

  /** Encrypt and append a chunk of the migration stream (gathered into frames of MAX_FRAME). */
  write(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      if (this.pendingBytes === 0 && chunk.length - off >= MAX_FRAME) {
        this.frame(chunk.subarray(off, off + MAX_FRAME), sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
        off += MAX_FRAME;
        continue;
      }
      const n = chunk.copy(this.pending, this.pendingBytes, off);
      this.pendingBytes += n;
      off += n;
      if (this.pendingBytes === MAX_FRAME) this.flushPending();
    }
    this.bytes += chunk.length;
  }

  get streamBytes(): number { return this.bytes; }

  private flushPending(): void {
    if (this.pendingBytes === 0) return;
    this.frame(this.pending.subarray(0, this.pendingBytes), sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    this.pending.fill(0, 0, this.pendingBytes);
    this.pendingBytes = 0;
  }

  private frame(plain: Buffer, tag: number): void {
    if (this.file === undefined) throw new MedvError('ECLOSED', 'saved state writer is closed', { file: this.path });
    const out = plain.length <= MAX_FRAME ? this.out.subarray(0, 4 + plain.length + ABYTES) : Buffer.allocUnsafe(4 + plain.length + ABYTES);
    out.writeUInt32LE(plain.length + ABYTES, 0);
    sodium.crypto_secretstream_xchacha20poly1305_push(this.state, out.subarray(4), plain, this.header, tag);
    this.append(out);
  }

  private append(buf: Buffer): void {
    let done = 0;
    while (done < buf.length) done += fs.writeSync(this.file!.fd, buf, done, buf.length - done, this.pos + done);
    this.pos += buf.length;
    this.unsynced += buf.length;
    if (this.unsynced >= SYNC_EVERY && !this.syncing) this.syncWritten();
  }

  /**
   * Start flushing what is written so far to disk (fdatasync on the thread pool) while the caller
   * goes on; at most one at a time. Only a head start: finish() still fsyncs the whole file before
   * it publishes it, and that fsync is the one whose failure counts (this one's error is ignored).
   * Its own descriptor (the temporary reopened through /proc/self/fd, the same file whatever its
   * name) is closed only when no flush uses it, so a flush never reaches a reused descriptor number.
   */
  syncWritten(): void {
    if (this.file === undefined || this.syncing) return;
    this.unsynced = 0;
    try {
      this.syncFd ??= fs.openSync(`/proc/self/fd/${this.file.fd}`, fs.constants.O_RDONLY);
    } catch {
      return; // no /proc: the final fsync does it all
    }
    const fd = this.syncFd;
    this.syncing = new Promise((resolve) => fs.fdatasync(fd, () => { this.syncing = undefined; resolve(); }));
  }

  /** Close the flushes' descriptor once none is in progress. */
  private closeSyncFd(): void {
    const fd = this.syncFd;
    if (fd === undefined) return;
    this.syncFd = undefined;
    void (this.syncing ?? Promise.resolve()).then(() => fs.closeSync(fd));
  }

  /** Write the metadata (final frame and trailer), make it durable, publish the key file, then the .vsv. */
  async finish(meta: Omit<SavedStateMeta, 'streamBytes'>): Promise<SavedStateMeta> {
    const full: SavedStateMeta = { ...meta, streamBytes: this.bytes };
    try {
      if (full.memoryMiB !== this.header.readUInt32LE(52)) throw new MedvError('EINVAL_ARG', `saved state metadata says ${full.memoryMiB} MiB of RAM, its header ${this.header.readUInt32LE(52)}`, { file: this.path });
      this.flushPending();
      const json = Buffer.from(JSON.stringify(full), 'utf8');
      if (json.length + NONCE + META_ABYTES > MAX_TRAILER) throw new MedvError('EINVAL_ARG', 'saved state metadata is too large', { file: this.path });
      this.frame(json, sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL);
      const trailer = Buffer.alloc(NONCE + json.length + META_ABYTES + 4 + TRAILER_MAGIC.length);
      sodium.randombytes_buf(trailer.subarray(0, NONCE));
      const key = derivedKey(this.dataKey, META_KEY_CONTEXT);
      try {
        sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(trailer.subarray(NONCE, NONCE + json.length + META_ABYTES), json, this.header, null, trailer.subarray(0, NONCE), key);
      } finally { secureFree(key); }
      trailer.writeUInt32LE(NONCE + json.length + META_ABYTES, NONCE + json.length + META_ABYTES);
      TRAILER_MAGIC.copy(trailer, trailer.length - TRAILER_MAGIC.length);
      this.append(trailer);
      // The key file first, then the .vsv (fsynced, linked: never over a saved state that appeared
      // meanwhile), then the folder: a .vsv never appears without its key.
      await writeWrappedKeyFile(vsvKeyPath(this.path), await this.wrapped);
      // A flush in progress has most of the file under way; the fsync below does what is left, and
      // is the one that counts.
      await this.syncing;
      this.file!.commitNew();
      this.file = undefined;
    } catch (e) {
      this.abort();
      throw fromSystemError(e, this.path);
    }
    this.dispose();
    return full;
  }

  /** Drop the partial file (never the published names). */
  abort(): void {
    this.file?.abort();
    this.file = undefined;
    this.pending.fill(0);
    this.dispose();
  }

  /** The data key goes once its wrapping (which reads it) has settled; the flushes' descriptor once none is in progress. */
  private dispose(): void {
    this.closeSyncFd();
    void this.wrapped.finally(() => { if (!this.dataKey.disposed) this.dataKey.dispose(); }).catch(() => undefined);
  }
}

function checkMeta(meta: SavedStateMeta, path: string): SavedStateMeta {
  if (!meta || !Array.isArray(meta.disks) || !Number.isSafeInteger(meta.memoryMiB)) throw new MedvError('EFORMAT', 'saved state metadata lacks disks or memory', { file: path });
  const b = meta.binding;
  if (b !== undefined && (!b || !Array.isArray(b.disks) || !b.disks.every((d) => d && typeof d.path === 'string' && typeof d.mode === 'string' && Array.isArray(d.files)
    && d.files.every((f) => f && typeof f.path === 'string' && typeof f.ino === 'string' && typeof f.dev === 'string')))) {
    throw new MedvError('EFORMAT', 'saved state metadata has a malformed disk binding', { file: path });
  }
  if (meta.hardware !== undefined && typeof meta.hardware !== 'string') throw new MedvError('EFORMAT', 'saved state metadata has a malformed hardware record', { file: path });
  return meta;
}

/**
 * An opened saved state. Version 2: `meta` is known (and authenticated) once opened, and frames()
 * decrypts the stream in one pass. Version 1: check() verifies every frame and returns the metadata.
 */
export class SavedStateReader {
  /** True once frames() authenticated every frame up to the final one. */
  private complete = false;

  private constructor(readonly path: string, private readonly dataKey: DataKey, private readonly header: Buffer,
    private readonly streamEnd: number | undefined, private readonly trailerMeta: Buffer | undefined,
    private readonly file: FileKey, private readonly keyFile: FileKey) {}

  /** The metadata from the trailer (version 2), before the stream is decrypted. */
  get meta(): SavedStateMeta | undefined {
    return this.trailerMeta ? checkMeta(JSON.parse(this.trailerMeta.toString('utf8')) as SavedStateMeta, this.path) : undefined;
  }

  /** The header alone, without a key: version and (version 2) the guest RAM to start QEMU with. */
  static peek(path: string): SavedStatePeek { return readHeader(path).peek; }

  static async open(path: string, kek: KekSource): Promise<SavedStateReader> {
    const { header, peek, file } = readHeader(path);
    const keyPath = vsvKeyPath(path);
    const before = lstatKey(keyPath);
    const dataKey = await readKeyFile(keyPath, kek);
    try {
      // The key file is recognised by its content (its key id is the one in the .vsv's header),
      // and remembered by inode: only that file is ever removed with the saved state.
      if (!dataKey.keyId.equals(header.subarray(12, 28))) {
        throw new MedvError('EBADKEY', `saved state ${path} does not belong to key file ${keyPath}`, { file: path, offset: 12 });
      }
      const keyFile = lstatKey(keyPath);
      if (!before || !keyFile || !sameKey(before, keyFile)) throw new MedvError('ECHANGED', `key file ${keyPath} changed while it was read`, { file: keyPath });
      if (peek.version === 1) return new SavedStateReader(path, dataKey, header, undefined, undefined, file, keyFile);
      const { streamEnd, meta } = readTrailer(path, header, dataKey, file);
      const parsed = (() => { try { return JSON.parse(meta.toString('utf8')) as SavedStateMeta; } catch { throw new MedvError('EFORMAT', 'saved state metadata is not JSON', { file: path, offset: streamEnd }); } })();
      checkMeta(parsed, path);
      if (parsed.memoryMiB !== peek.memoryMiB) throw new MedvError('ECRYPTO', 'saved state header and metadata disagree on the guest RAM (tampered with)', { file: path, offset: 52 });
      return new SavedStateReader(path, dataKey, header, streamEnd, meta, file, keyFile);
    } catch (e) {
      dataKey.dispose();
      throw e;
    }
  }

  /** Decrypt every frame in order; yields stream chunks; returns the metadata of the final frame. */
  async *frames(): AsyncGenerator<Buffer, SavedStateMeta, void> {
    const state = Buffer.alloc(sodium.crypto_secretstream_xchacha20poly1305_STATEBYTES);
    const key = derivedKey(this.dataKey, STREAM_KEY_CONTEXT);
    try { sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, this.header.subarray(28, 52), key); } finally { secureFree(key); }
    const fh = await fs.promises.open(this.path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!sameKey(st, this.file)) throw new MedvError('ECHANGED', 'saved state was replaced while it was read', { file: this.path });
      const size = this.streamEnd ?? st.size;
      let pos = this.header.length;
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
          if (this.trailerMeta && !m.equals(this.trailerMeta)) throw new MedvError('ECRYPTO', 'saved state final frame and trailer disagree (tampered with)', { file: this.path, offset: pos });
          let meta: SavedStateMeta;
          try { meta = JSON.parse(m.toString('utf8')) as SavedStateMeta; } catch { throw new MedvError('EFORMAT', 'saved state metadata is not JSON', { file: this.path, offset: pos }); }
          checkMeta(meta, this.path);
          this.complete = true;
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

  /**
   * Remove this saved state and its key file. Only once every frame authenticated up to the
   * final one (frames() or check() ran to the end): a file that is not a complete medv saved
   * state under this key is never removed; and each name is removed only while it still is the
   * file that was verified (same inode), so a file put in its place meanwhile is left alone.
   */
  remove(): { removed: string[] } {
    if (!this.complete) throw new MedvError('EINVAL_ARG', 'a saved state is removed only after it was verified whole', { file: this.path });
    const removed: string[] = [];
    const keyPath = vsvKeyPath(this.path);
    const vsvNow = lstatKey(this.path);
    if (!vsvNow || !sameKey(vsvNow, this.file)) throw new MedvError('ECHANGED', 'saved state was replaced after it was verified; not removing it', { file: this.path });
    const keyNow = lstatKey(keyPath);
    if (keyNow && sameKey(keyNow, this.keyFile)) { fs.unlinkSync(keyPath); removed.push(keyPath); }
    fs.unlinkSync(this.path);
    removed.unshift(this.path);
    return { removed };
  }
}

/** dev and inode of a name (the link itself, never followed), or undefined when there is none. */
function lstatKey(path: string): FileKey | undefined {
  try { const st = fs.lstatSync(path); return { dev: st.dev, ino: st.ino }; } catch { return undefined; }
}

const sameKey = (a: FileKey, b: FileKey) => a.dev === b.dev && a.ino === b.ino;

/** Read and open the version 2 trailer: the metadata plaintext and where the frames end. */
function readTrailer(path: string, header: Buffer, dataKey: DataKey, expect: FileKey): { streamEnd: number; meta: Buffer } {
  let fd: number | undefined;
  try {
    const file = openFileNoFollow(path, { what: 'saved state' });
    fd = file.fd;
    if (!sameKey(file.stat, expect)) throw new MedvError('ECHANGED', 'saved state was replaced while it was read', { file: path });
    const size = file.stat.size;
    const tail = Buffer.alloc(4 + TRAILER_MAGIC.length);
    if (size < header.length + tail.length) throw new MedvError('ETRUNCATED', 'saved state ends before its trailer (interrupted write?)', { file: path, offset: size });
    fs.readSync(fd, tail, 0, tail.length, size - tail.length);
    if (!tail.subarray(4).equals(TRAILER_MAGIC)) throw new MedvError('ETRUNCATED', 'saved state has no trailer (interrupted write?)', { file: path, offset: size - TRAILER_MAGIC.length });
    const len = tail.readUInt32LE(0);
    const start = size - tail.length - len;
    if (len < NONCE + META_ABYTES || len > MAX_TRAILER || start < header.length) throw new MedvError('EFORMAT', `saved state trailer length ${len} is out of range`, { file: path, offset: size - tail.length });
    const sealed = Buffer.alloc(len);
    fs.readSync(fd, sealed, 0, len, start);
    const meta = Buffer.alloc(len - NONCE - META_ABYTES);
    const key = derivedKey(dataKey, META_KEY_CONTEXT);
    try {
      sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(meta, null, sealed.subarray(NONCE), header, sealed.subarray(0, NONCE), key);
    } catch {
      throw new MedvError('ECRYPTO', 'saved state metadata does not authenticate (damaged or tampered with)', { file: path, offset: start });
    } finally { secureFree(key); }
    return { streamEnd: start, meta };
  } catch (e) {
    throw fromSystemError(e, path);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
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


