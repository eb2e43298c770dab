import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { MedvError, fromSystemError } from '../core/errors.js';
import { blockDeviceSize } from '../core/fsio.js';
import { type FileMap, native } from '../native.js';
import { writeZeroesByWriting } from './emulate.js';
import { type BlockCapabilities, type BlockDevice, type Extent, type FileRange, type FileRangeOptions, type WriteOptions, defaultCapabilities } from './device.js';
import { type LockMode, lockFile } from './flock.js';

export type { LockMode } from './flock.js';

const fsRead = promisify(fs.read);
const fsWrite = promisify(fs.write);
const fsFdatasync = promisify(fs.fdatasync);
const fsFtruncate = promisify(fs.ftruncate);
const fsClose = promisify(fs.close);
const fsOpen = promisify(fs.open);
const fsFstat = promisify(fs.fstat);
/** Files from this size are mapped for fileRange({ mapped }) (a mapping costs a few system calls once). */
const MAP_MIN = 1 << 20;

export interface FileOpenOptions {
  readOnly?: boolean;
  /** Create the file (fails if it exists) with this size. */
  create?: boolean;
  size?: number;
  /**
   * Kernel lock taken on open (flock, never waiting; see flock.ts): 'exclusive' (default when
   * writable or created), 'shared' (default when read-only) or 'none'. A conflicting lock held by
   * any other open — another process, or another open in this one — gives EBUSY naming the holder.
   */
  lock?: LockMode;
  /**
   * Map the file for fileRange({ mapped }) (default true). False for a file read once, in order (a
   * seed): the touched pages of a shared mapping count in the process's RSS, while pread's copies
   * out of the page cache do not stay; readers then pread (and decrypt) in the same thread-pool job.
   */
  map?: boolean;
  /**
   * Refuse (EREADONLY) a regular file with more than one hard link: writes through this name would
   * change every other name of it too (an image base linked into several workspaces' version
   * folders, src/workspace/deploy.ts). Checked on the opened descriptor.
   */
  unshared?: boolean;
}

/**
 * A plain file (or a block device, of fixed size) as a BlockDevice, resizable when it is a file. Reads past EOF inside `size` return zeros
 * (sparse tail); the size is the file's length.
 */
export class FileDevice implements BlockDevice {
  readonly capabilities: BlockCapabilities;
  private closed = false;
  /** See mapCovering. */
  private mapping: { map: FileMap; length: number } | undefined;
  private mapTried = false;

  private constructor(readonly path: string, private readonly fd: number, private currentSize: number, readonly readOnly: boolean, fixedSize = false,
    private readonly mayMap = true) {
    // With the addon, discard punches holes and write-zeroes zeroes ranges with fallocate(2);
    // without it (or on a file system that refuses), zeros are written and discard changes nothing.
    this.capabilities = defaultCapabilities({
      resizable: !readOnly && !fixedSize, fua: 'native',
      zero: native.available ? 'native' : 'emulate',
      trim: native.available ? 'native' : 'emulate',
    });
  }

  static async open(path: string, options: FileOpenOptions = {}): Promise<FileDevice> {
    const readOnly = options.readOnly ?? false;
    let fd: number;
    try {
      if (options.create) {
        fd = await fsOpen(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
      } else {
        // O_NONBLOCK: a FIFO (or a device that waits for a carrier) must not hang the open; its
        // type is refused just below, on the descriptor. Regular files and block devices ignore it.
        fd = await fsOpen(path, (readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR) | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
      }
    } catch (e) {
      throw fromSystemError(e, path);
    }
    try {
      const st = await fsFstat(fd);
      if (st.isDirectory()) throw new MedvError('EINVAL_ARG', `is a directory, not a disk: ${path}`, { file: path });
      if (!st.isFile() && !st.isBlockDevice()) throw new MedvError('EINVAL_ARG', 'not a regular file', { file: path });
      if (options.unshared && st.isFile() && st.nlink > 1) {
        throw new MedvError('EREADONLY', `${path} is shared: it has ${st.nlink} names (hard links; a workspace's image base is linked into every workspace of that image), so writing it would change the disks of all of them`, { file: path, links: st.nlink });
      }
      lockFile(fd, path, options.lock ?? (readOnly && !options.create ? 'shared' : 'exclusive'));
      // A block device's size is not in its inode (fstat says 0): the kernel says it in sysfs, in 512-byte sectors.
      let size = st.isBlockDevice() ? blockDeviceSize(st.rdev, path) : st.size;
      if (options.create && options.size) {
        await fsFtruncate(fd, options.size);
        size = options.size;
      }
      return new FileDevice(path, fd, size, readOnly, st.isBlockDevice(), options.map ?? true);
    } catch (e) {
      await fsClose(fd).catch(() => undefined);
      throw fromSystemError(e, path);
    }
  }

  get size(): number { return this.currentSize; }
  get description(): string { return this.path; }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRead(offset, length);
    const buf = Buffer.allocUnsafe(length);
    await this.readAt(buf, offset);
    return buf;
  }

  async readInto(buf: Buffer, offset: number): Promise<void> {
    this.checkRead(offset, buf.length);
    await this.readAt(buf, offset);
  }

  /**
   * See BlockDevice.fileRange: the device's bytes are the file's, at the same offsets. The mapping
   * (`mapped`) is made on first use, of the file's size then; a range past it (the file grew since)
   * comes without one, as do ranges of small files, of a file opened with `map: false`, and all
   * ranges where mmap is unavailable.
   */
  fileRange(offset: number, length: number, options?: FileRangeOptions): FileRange | undefined {
    if (this.closed || !(offset >= 0) || !(length > 0) || offset + length > this.currentSize) return undefined;
    const map = options?.mapped ? this.mapCovering(offset + length) : undefined;
    return map ? { fd: this.fd, position: offset, map } : { fd: this.fd, position: offset };
  }

  /** The file's mapping if it reaches `end`: made on first use; none for small files or where mmap
   *  is unavailable. */
  private mapCovering(end: number): FileMap | undefined {
    if (!this.mapping && !this.mapTried && this.mayMap && this.currentSize >= MAP_MIN) {
      this.mapTried = true;
      try {
        const map = native.mapFile(this.fd, this.currentSize);
        if (map) this.mapping = { map, length: this.currentSize };
      } catch { /* not mappable (a pipe, a special file system): pread it is */ }
    }
    return this.mapping && end <= this.mapping.length ? this.mapping.map : undefined;
  }

  /** Before the file shrinks or closes: no new reads through the mapping (those in flight finish). */
  private unmap(): void {
    if (this.mapping) native.unmapFile(this.mapping.map);
    this.mapping = undefined;
    this.mapTried = false;
  }

  /** See BlockDevice.readIntoNow: all of it from the page cache (preadv2 RWF_NOWAIT), or false. */
  readIntoNow(buf: Buffer, offset: number): boolean {
    const length = buf.length;
    if (this.closed || length === 0 || offset < 0 || offset + length > this.currentSize) return false;
    try {
      return native.preadNoWait(this.fd, buf, 0, offset) === length;
    } catch {
      return false; // readInto() reports it
    }
  }

  private checkRead(offset: number, length: number): void {
    this.assertOpen();
    if (offset < 0 || length < 0 || offset + length > this.currentSize) {
      throw new MedvError('ERANGE', `read [${offset}, +${length}) past end of file (size ${this.currentSize})`, { file: this.path, offset });
    }
  }

  /**
   * Zero-fills past EOF. What the page cache holds is read at once without a thread-pool hop
   * (preadv2 RWF_NOWAIT in the addon); the rest on the thread pool.
   */
  private async readAt(buf: Buffer, offset: number): Promise<void> {
    let done = 0;
    try {
      const cached = buf.length ? native.preadNoWait(this.fd, buf, 0, offset) : 0;
      if (cached > 0) done = cached;
      while (done < buf.length) {
        const n = (await fsRead(this.fd, buf, done, buf.length - done, offset + done)).bytesRead;
        if (n === 0) { buf.fill(0, done); break; }
        done += n;
      }
    } catch (e) { throw fromSystemError(e, this.path); }
  }

  /**
   * See BlockDevice.extents: the holes of a sparse file (lseek SEEK_DATA / SEEK_HOLE, through
   * native.dataSegments) read as zeros; all of it is data where that cannot be learned. Up to
   * 1024 data segments per call; the caller asks again for the rest.
   */
  async extents(offset: number, length: number): Promise<Extent[]> {
    this.checkRead(offset, length);
    if (length === 0) return [];
    const end = offset + length;
    const found = await native.dataSegments(this.fd, offset, end, 1024).catch(() => undefined);
    if (!found) return [{ length, hole: false, zero: false }];
    const out: Extent[] = [];
    let at = offset;
    for (const [a, b] of found.segments) {
      if (a > at) out.push({ length: a - at, hole: true, zero: true });
      out.push({ length: b - a, hole: false, zero: false });
      at = b;
    }
    if (found.covered > at) out.push({ length: found.covered - at, hole: true, zero: true });
    return out.length ? out : [{ length, hole: false, zero: false }];
  }

  async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    this.assertWritable();
    let done = 0;
    try {
      while (done < data.length) {
        done += (await fsWrite(this.fd, data, done, data.length - done, offset + done)).bytesWritten;
      }
    } catch (e) { throw fromSystemError(e, this.path); }
    if (offset + data.length > this.currentSize) this.currentSize = offset + data.length;
    if (options?.fua) await this.flush();
  }

  async flush(): Promise<void> {
    this.assertOpen();
    if (this.readOnly) return;
    try { await fsFdatasync(this.fd); } catch (e) { throw fromSystemError(e, this.path); }
  }

  /** Deallocates whole file system blocks of the range (PUNCH_HOLE): they read as zeros afterwards.
   *  Without the addon, or where the file system cannot, the range is left as it is (NBD TRIM allows it). */
  async discard(offset: number, length: number): Promise<void> {
    this.assertWritable();
    const end = Math.min(offset + length, this.currentSize);
    if (end <= offset) return;
    try { await native.fallocate(this.fd, 'punch', offset, end - offset); } catch (e) { throw fromSystemError(e, this.path); }
  }

  /** The range reads zeros afterwards: ZERO_RANGE inside the file, a sparse extension past its end;
   *  zero buffers are written where fallocate is unavailable. */
  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.assertWritable();
    if (length === 0) return;
    const inside = Math.max(0, Math.min(offset + length, this.currentSize) - offset);
    let done = false;
    if (inside > 0) {
      try { done = await native.fallocate(this.fd, 'zero', offset, inside); } catch (e) { throw fromSystemError(e, this.path); }
    }
    if (!done && inside > 0) return writeZeroesByWriting(this, offset, length, options);
    if (offset + length > this.currentSize) await this.resize(offset + length);
    if (options?.fua) await this.flush();
  }

  async resize(newSize: number): Promise<void> {
    this.assertWritable();
    if (this.mapping && newSize < this.mapping.length) this.unmap();
    try { await fsFtruncate(this.fd, newSize); } catch (e) { throw fromSystemError(e, this.path); }
    this.currentSize = newSize;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unmap();
    await fsClose(this.fd).catch((e) => { throw fromSystemError(e, this.path); });
  }

  private assertOpen(): void {
    if (this.closed) throw new MedvError('ECLOSED', 'device is closed', { file: this.path });
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.readOnly) throw new MedvError('EREADONLY', 'file is open read-only', { file: this.path });
  }
}
