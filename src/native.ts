/**
 * Typed loader for the native addon (native/medv.cc, built to build/Release/medv.node), with a
 * pure-JS fallback for every function that passes the same tests (test/native.test.ts).
 *
 * Set MEDV_NO_NATIVE=1 to force the fallback. `native.available` says which one is in use.
 * Arguments are checked here, once, so both implementations fail the same way: MedvError
 * EINVAL_ARG for bad arguments; system errors keep Node's shape (`code` such as 'ENOENT'), so
 * callers wrap them with fromSystemError(e, file).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { promisify } from 'node:util';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { MedvError } from './core/errors.js';

const fsRead = promisify(fs.read);

export interface KvmProbeResult {
  available: boolean;
  reason?: string;
}

/** A read-only shared mapping of a file (mapFile): opaque to JS. */
export type FileMap = { readonly __fileMap: unique symbol };

/** What dataSegments found: the data of [position, covered) lies in `segments`, the rest of it is holes. */
export interface DataSegments {
  /** [start, end) byte ranges, ascending, inside [position, covered). */
  segments: Array<[number, number]>;
  /** How far the answer goes: the requested end, or less when it stopped at `max` segments. */
  covered: number;
}

export interface NativeApi {
  /** True when the compiled addon is in use, false for the JS fallback. */
  readonly available: boolean;
  /** Why the addon is not in use (only when !available). */
  readonly reason?: string;
  /**
   * AES-256-XTS over input.length / unitSize units; unit i is processed with the tweak
   * (firstUnit + i) as a 16-byte little-endian number (LUKS plain64). `output` may be `input`.
   * key: 64 bytes (two different 256-bit halves). unitSize: multiple of 16, 16 .. 16 MiB.
   */
  xtsCrypt(key: Buffer, input: Buffer, output: Buffer, firstUnit: number, unitSize: number, encrypt: boolean): void;
  /**
   * xtsCrypt on the libuv thread pool (another core), for large batches. The buffers must not be
   * touched until the promise settles. The fallback runs xtsCrypt before resolving.
   */
  xtsCryptAsync(key: Buffer, input: Buffer, output: Buffer, firstUnit: number, unitSize: number, encrypt: boolean): Promise<void>;
  /**
   * Read only what is already in the page cache, without blocking: returns the bytes read into
   * buf[offset..] (possibly short, e.g. at EOF), or -1 when nothing could be read without disk I/O
   * (or at EOF).
   * The fallback always returns -1 (callers then read on the thread pool).
   */
  preadNoWait(fd: number, buf: Buffer, offset: number, position: number): number;
  /**
   * Read buf.length bytes of file `fd` at `position` (zeros past its end), then AES-256-XTS decrypt
   * them in place as xtsCrypt(key, buf, buf, firstUnit, unitSize, false) does: one job on the libuv
   * thread pool, so the event loop does neither the copy out of the page cache nor the cipher.
   * buf.length must be a multiple of unitSize. The buffers must not be touched until the promise
   * settles. Rejects with the read's system error (Node's shape) or ECRYPTO.
   * The fallback, and an addon built before this existed, read with fs on the pool, then xtsCrypt.
   */
  preadXtsAsync(fd: number, buf: Buffer, position: number, key: Buffer, firstUnit: number, unitSize: number): Promise<void>;
  /**
   * A read-only shared mapping of [0, length) of file `fd`, for xtsFromMapAsync; undefined where it
   * is not available (the fallback, an older build). Throws the system error when mmap refuses.
   * unmapFile: no new reads; the mapping goes once the reads in flight are done.
   */
  mapFile(fd: number, length: number): FileMap | undefined;
  unmapFile(map: FileMap): void;
  /**
   * As preadXtsAsync, but the cipher reads [position, +buf.length) straight from the mapping (the
   * page cache), with no copy into our memory first. A page the kernel cannot give (the file was
   * truncated under it, an I/O error) rejects with EIO instead of killing the process (SIGBUS guard).
   */
  xtsFromMapAsync(map: FileMap, position: number, buf: Buffer, key: Buffer, firstUnit: number, unitSize: number): Promise<void>;
  /**
   * fallocate(2) on the thread pool, keeping the file size: `mode` 'punch' deallocates the range
   * (PUNCH_HOLE), 'zero' zeroes it (ZERO_RANGE). Both read back as zeros. Resolves false when the file
   * system cannot do it (the caller writes zeros); the fallback always resolves false.
   */
  fallocate(fd: number, mode: 'punch' | 'zero', offset: number, length: number): Promise<boolean>;
  /** Is KVM usable: /dev/kvm opens read-write and KVM_GET_API_VERSION == 12 (the fallback cannot ioctl). */
  kvmProbe(): KvmProbeResult;
  /**
   * flock(2) the open file `fd` without waiting (LOCK_NB): exclusive (LOCK_EX) or shared (LOCK_SH).
   * Returns true when taken, false when another open file description holds a conflicting lock.
   * The lock belongs to the open file description: it holds against other opens in this process
   * too, and goes away when the last descriptor is closed (or the process dies). Calling it again
   * on the same fd converts the lock. The fallback runs /usr/bin/flock on the inherited descriptor,
   * which takes the same kernel lock on the same open file description.
   */
  flock(fd: number, exclusive: boolean): boolean;
  /**
   * A READ reply straight from the page cache, on the event loop: `header` is sent on the
   * non-blocking socket `sockfd`, then [position, position + length) of file `fd` with sendfile(2),
   * which gives a unix socket references to the cached pages instead of a copy. Returns -1, having
   * sent nothing, unless every page of the range is cached (cachestat(2); a kernel without it always
   * gets -1); else the bytes of header + range sent, fewer when the socket is full, at end of file,
   * or on an error (the caller sends the rest its ordinary way). Never blocks.
   * The fallback, and an addon built before this existed, always return -1.
   */
  sendFileReply(sockfd: number, header: Buffer, fd: number, position: number, length: number): number;
  /** Is every page of [position, +length) of file `fd` in the page cache (cachestat(2))? False where
   *  the kernel cannot tell, in the fallback, and in an addon built before this existed. */
  pageCached(fd: number, position: number, length: number): boolean;
  /**
   * The data segments of file `fd` in [position, end) (lseek SEEK_DATA / SEEK_HOLE): what lies
   * between them is a hole, which reads as zeros. At most `max` segments; `covered` says how far
   * the answer goes (ask again from there). A file system without holes reports all of it as data.
   * Resolves undefined when the allocation cannot be learned (then it is all data to the caller).
   * The fallback, and an addon built before this existed, ask /usr/bin/perl (sysseek with whence 3
   * and 4 is lseek) on the inherited descriptor: a child process per call, so callers ask for
   * large ranges at once. Moves the descriptor's file offset, which no caller uses (I/O is positional).
   */
  dataSegments(fd: number, position: number, end: number, max: number): Promise<DataSegments | undefined>;
  /** SO_SNDBUF of socket `sockfd` (the kernel doubles it and caps it at net.core.wmem_max): the size
   *  now in effect, or -1 when refused. The fallback, and older builds, change nothing (-1). */
  setSendBuffer(sockfd: number, bytes: number): number;
  /**
   * SO_PEERCRED of a connected unix socket: the peer's pid, uid and gid as the kernel recorded them
   * at connect. undefined where it cannot be read: the fallback, an addon built before this
   * existed, or a socket without credentials (callers then rely on the socket file's mode).
   */
  peerCredentials(sockfd: number): { pid: number; uid: number; gid: number } | undefined;
}

/** The raw addon as exported by native/medv.cc (no argument typing beyond its own checks). */
type RawAddon = Omit<NativeApi, 'available' | 'reason' | 'fallocate' | 'sendFileReply' | 'pageCached' | 'setSendBuffer' | 'peerCredentials' | 'preadXtsAsync'
  | 'mapFile' | 'unmapFile' | 'xtsFromMapAsync' | 'dataSegments'> & {
  seekData?(fd: number, position: number, end: number, max: number): number[];
  preadXtsAsync?: NativeApi['preadXtsAsync'];
  mapFile?: NativeApi['mapFile'];
  unmapFile?: NativeApi['unmapFile'];
  xtsFromMapAsync?: NativeApi['xtsFromMapAsync'];
  setSendBuffer?: NativeApi['setSendBuffer'];
  peerCredentials?: NativeApi['peerCredentials'];
  sendFileReply?: NativeApi['sendFileReply'];
  pageCached?: NativeApi['pageCached'];
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<boolean> };

const MAX_UNIT = 16 * 1024 * 1024;

function badArg(message: string): MedvError {
  return new MedvError('EINVAL_ARG', message);
}

function checkXtsArgs(key: Buffer, input: Buffer, output: Buffer, firstUnit: number, unitSize: number, encrypt: boolean): number {
  if (!(key instanceof Uint8Array) || key.length !== 64) throw badArg('XTS key must be a 64-byte buffer');
  if (!(input instanceof Uint8Array) || !(output instanceof Uint8Array)) throw badArg('XTS input and output must be buffers');
  if (!Number.isSafeInteger(unitSize) || unitSize < 16 || unitSize > MAX_UNIT || unitSize % 16 !== 0) {
    throw badArg(`XTS unit size ${unitSize} must be a multiple of 16 between 16 and ${MAX_UNIT}`);
  }
  if (input.length % unitSize !== 0) throw badArg(`XTS input length ${input.length} is not a multiple of the unit size ${unitSize}`);
  if (output.length < input.length) throw badArg('XTS output is shorter than its input');
  const units = input.length / unitSize;
  if (!Number.isSafeInteger(firstUnit) || firstUnit < 0 || firstUnit + units > Number.MAX_SAFE_INTEGER) {
    throw badArg(`XTS first unit ${firstUnit} out of range`);
  }
  if (typeof encrypt !== 'boolean') throw badArg('XTS encrypt flag must be a boolean');
  if (input.buffer === output.buffer && input !== output && input.byteOffset !== output.byteOffset) {
    const a = input.byteOffset, b = output.byteOffset;
    if (a < b + input.length && b < a + input.length) throw badArg('XTS input and output overlap partially');
  }
  return units;
}

function checkIoArgs(fd: number, buf: Buffer, offset: number, position: number): void {
  if (!Number.isSafeInteger(fd) || fd < 0 || fd > 0x7fffffff) throw badArg(`invalid file descriptor ${fd}`);
  if (!(buf instanceof Uint8Array)) throw badArg('I/O buffer must be a Buffer');
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > buf.length) throw badArg(`buffer offset ${offset} out of range`);
  if (!Number.isSafeInteger(position) || position < 0) throw badArg(`file position ${position} out of range`);
}

function checkPreadXtsArgs(fd: number, buf: Buffer, position: number, key: Buffer, firstUnit: number, unitSize: number): void {
  checkFd(fd);
  checkDecryptArgs(buf, position, key, firstUnit, unitSize);
}

/** A buffer to decrypt into from file position `position`. */
function checkDecryptArgs(buf: Buffer, position: number, key: Buffer, firstUnit: number, unitSize: number): void {
  if (!(buf instanceof Uint8Array)) throw badArg('I/O buffer must be a Buffer');
  if (!Number.isSafeInteger(position) || position < 0 || position + buf.length > Number.MAX_SAFE_INTEGER) throw badArg(`file position ${position} out of range`);
  checkXtsArgs(key, buf, buf, firstUnit, unitSize, false);
}

/** buf.length bytes at `position` on the thread pool, zeros past the end of the file. */
async function preadFully(fd: number, buf: Buffer, position: number): Promise<void> {
  for (let done = 0; done < buf.length;) {
    const n = (await fsRead(fd, buf, done, buf.length - done, position + done)).bytesRead;
    if (n === 0) { buf.fill(0, done); return; }
    done += n;
  }
}

function checkFallocateArgs(fd: number, mode: string, offset: number, length: number): void {
  checkFd(fd);
  if (mode !== 'punch' && mode !== 'zero') throw badArg(`fallocate mode must be 'punch' or 'zero', not ${JSON.stringify(mode)}`);
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length <= 0 || offset + length > Number.MAX_SAFE_INTEGER) {
    throw badArg(`fallocate range offset=${offset} length=${length} is invalid`);
  }
}

function checkFd(fd: number): void {
  if (!Number.isSafeInteger(fd) || fd < 0 || fd > 0x7fffffff) throw badArg(`invalid file descriptor ${fd}`);
}

function checkSendFileArgs(sockfd: number, header: Buffer, fd: number, position: number, length: number): void {
  checkFd(sockfd);
  if (!(header instanceof Uint8Array)) throw badArg('header must be a buffer');
  checkRangeArgs(fd, position, length);
}

function checkRangeArgs(fd: number, position: number, length: number, maxLength = 0x7ffff000): void {
  checkFd(fd);
  if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0 || length > maxLength) {
    throw badArg(`file range position=${position} length=${length} is invalid`);
  }
}

function checkSendBufferArgs(sockfd: number, bytes: number): void {
  checkFd(sockfd);
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes > 1 << 30) throw badArg(`send buffer size ${bytes} is invalid`);
}

function checkSegmentArgs(fd: number, position: number, end: number, max: number): void {
  checkFd(fd);
  if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(end) || end < position) throw badArg(`file range ${position}..${end} is invalid`);
  if (!Number.isSafeInteger(max) || max < 1 || max > 1 << 20) throw badArg(`segment count ${max} is invalid`);
}

/** [start, end, start, end, …] from either implementation, checked: ascending, inside [position, end). */
function toSegments(flat: readonly number[], position: number, end: number, max: number): DataSegments {
  const segments: Array<[number, number]> = [];
  let at = position;
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const a = flat[i];
    const b = flat[i + 1];
    if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || a < at || b <= a || b > end) throw new MedvError('EIO', 'lseek SEEK_DATA/SEEK_HOLE answered out of order');
    segments.push([a, b]);
    at = b;
  }
  return { segments, covered: segments.length >= max ? at : end };
}

/** The fallback's dataSegments: lseek through perl (its sysseek passes whence 3 and 4 straight to lseek). */
const PERL_SEEK = 'open(my $f, "<&=", 3) or exit 3; my ($at, $end, $max) = @ARGV; my $n = 0; $| = 1;'
  + ' while ($at < $end && $n < $max) { my $d = sysseek($f, $at, 3); if (!defined $d) { exit 0 if $!{ENXIO}; exit 4 }'
  + ' $d += 0; last if $d >= $end; my $h = sysseek($f, $d, 4); exit 4 unless defined $h; $h += 0; $h = $end if $h > $end;'
  + ' last if $h <= $d; print "$d $h\n"; $at = $h; $n++ }';

function perlSegments(fd: number, position: number, end: number, max: number): Promise<DataSegments | undefined> {
  return new Promise((resolve) => {
    let out = '';
    let child;
    try {
      // an empty environment: no PERL5OPT/PERL5LIB to obey, and none of our secrets in the child
      child = spawn('/usr/bin/perl', ['-e', PERL_SEEK, String(position), String(end), String(max)], { stdio: ['ignore', 'pipe', 'ignore', fd], env: {} });
    } catch {
      resolve(undefined);
      return;
    }
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (d: string) => { if (out.length < 64 * (max + 1)) out += d; });
    child.on('error', () => resolve(undefined));
    child.on('close', (code) => {
      if (code !== 0) { resolve(undefined); return; }
      try {
        const flat = out.split('\n').filter((l) => l.length > 0).flatMap((l) => l.split(' ').map(Number));
        resolve(toSegments(flat, position, end, max));
      } catch {
        resolve(undefined);
      }
    });
  });
}

function checkFlockArgs(fd: number, exclusive: boolean): void {
  checkFd(fd);
  if (typeof exclusive !== 'boolean') throw badArg('flock exclusive flag must be a boolean');
}

/** Exit status /usr/bin/flock is told to use for "held by someone else" (-E), apart from its own errors. */
const FLOCK_CONFLICT = 75;

/** A decrypting read's failure: the read's system error as it is (Node's shape: `code`, e.g. EIO for a
 *  mapped page the kernel could not give), a refused argument as EINVAL_ARG, else the cipher's ECRYPTO. */
function decryptFailure(e: unknown): unknown {
  if (typeof (e as NodeJS.ErrnoException)?.code === 'string') return e;
  if (e instanceof RangeError || e instanceof TypeError) return badArg(e.message);
  return xtsFailure(e);
}

/** The cipher (libgcrypt in the addon, OpenSSL in the fallback) refused the key (e.g. equal XTS
 * halves to encrypt) or the data: ECRYPTO, without key bytes in the message. */
function xtsFailure(e: unknown): MedvError {
  return new MedvError('ECRYPTO', 'AES-256-XTS failed: the cipher refused the key (equal halves?) or the data', {}, { cause: e });
}

// ---------------------------------------------------------------------------------------------
// JS fallback

const tweakFor = (unit: number): Buffer => {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64LE(BigInt(unit), 0);
  return iv;
};



export const fallback: NativeApi = {
  available: false,
  reason: 'JS fallback',

  xtsCrypt(key, input, output, firstUnit, unitSize, encrypt) {
    const units = checkXtsArgs(key, input, output, firstUnit, unitSize, encrypt);
    try {
      for (let i = 0; i < units; i++) {
        const c = encrypt ? createCipheriv('aes-256-xts', key, tweakFor(firstUnit + i))
          : createDecipheriv('aes-256-xts', key, tweakFor(firstUnit + i));
        const part = c.update(input.subarray(i * unitSize, (i + 1) * unitSize));
        part.copy(output, i * unitSize);
        c.final();
      }
    } catch (e) {
      throw xtsFailure(e);
    }
  },

  async xtsCryptAsync(key, input, output, firstUnit, unitSize, encrypt) {
    fallback.xtsCrypt(key, input, output, firstUnit, unitSize, encrypt);
  },

  preadNoWait(fd, buf, offset, position) {
    checkIoArgs(fd, buf, offset, position);
    return -1;
  },

  async preadXtsAsync(fd, buf, position, key, firstUnit, unitSize) {
    checkPreadXtsArgs(fd, buf, position, key, firstUnit, unitSize);
    await preadFully(fd, buf, position);
    fallback.xtsCrypt(key, buf, buf, firstUnit, unitSize, false);
  },

  mapFile(fd, length) {
    checkRangeArgs(fd, 0, length, Number.MAX_SAFE_INTEGER);
    return undefined;
  },

  unmapFile() {
    throw badArg('no file map in the JS fallback');
  },

  async xtsFromMapAsync(_map, position, buf, key, firstUnit, unitSize) {
    checkDecryptArgs(buf, position, key, firstUnit, unitSize);
    throw badArg('no file map in the JS fallback');
  },

  async fallocate(fd, mode, offset, length) {
    checkFallocateArgs(fd, mode, offset, length);
    return false;
  },

  kvmProbe() {
    // No ioctl from JS: "opens read-write" is the best we can check.
    if (!fs.existsSync('/dev/kvm')) return { available: false, reason: '/dev/kvm does not exist' };
    try {
      fs.closeSync(fs.openSync('/dev/kvm', fs.constants.O_RDWR));
      return { available: true, reason: 'API version not checked (JS fallback)' };
    } catch (e) {
      return { available: false, reason: `cannot open /dev/kvm: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
    }
  },

  flock(fd, exclusive) {
    checkFlockArgs(fd, exclusive);
    // The child gets our descriptor as its fd 3: same open file description, so the lock it takes
    // is ours and outlives the child.
    const r = spawnSync('/usr/bin/flock', ['-n', '-E', String(FLOCK_CONFLICT), exclusive ? '-x' : '-s', '3'], {
      stdio: ['ignore', 'ignore', 'pipe', fd],
      env: { PATH: '/usr/bin:/bin' }, // nothing of ours (a passphrase) in a helper's environment
    });
    if (r.status === 0) return true;
    if (r.status === FLOCK_CONFLICT) return false;
    const why = r.error ? r.error.message : `/usr/bin/flock exited ${r.status ?? r.signal}: ${String(r.stderr ?? '').trim()}`;
    throw Object.assign(new Error(`flock: ${why}`), { code: 'ENOLCK', syscall: 'flock' });
  },

  sendFileReply(sockfd, header, fd, position, length) {
    checkSendFileArgs(sockfd, header, fd, position, length);
    return -1;
  },

  pageCached(fd, position, length) {
    checkRangeArgs(fd, position, length);
    return false;
  },

  setSendBuffer(sockfd, bytes) {
    checkSendBufferArgs(sockfd, bytes);
    return -1;
  },

  peerCredentials(sockfd) {
    checkFd(sockfd);
    return undefined;
  },

  async dataSegments(fd, position, end, max) {
    checkSegmentArgs(fd, position, end, max);
    return perlSegments(fd, position, end, max);
  },
};

// ---------------------------------------------------------------------------------------------
// The addon, wrapped with the same argument checks

function wrap(raw: RawAddon): NativeApi {
  return {
    available: true,
    xtsCrypt(key, input, output, firstUnit, unitSize, encrypt) {
      checkXtsArgs(key, input, output, firstUnit, unitSize, encrypt);
      try {
        raw.xtsCrypt(key, input, output, firstUnit, unitSize, encrypt);
      } catch (e) {
        throw xtsFailure(e);
      }
    },
    async xtsCryptAsync(key, input, output, firstUnit, unitSize, encrypt) {
      checkXtsArgs(key, input, output, firstUnit, unitSize, encrypt);
      try {
        await raw.xtsCryptAsync(key, input, output, firstUnit, unitSize, encrypt);
      } catch (e) {
        throw xtsFailure(e);
      }
    },
    preadNoWait(fd, buf, offset, position) { checkIoArgs(fd, buf, offset, position); return raw.preadNoWait(fd, buf, offset, position); },
    async preadXtsAsync(fd, buf, position, key, firstUnit, unitSize) {
      checkPreadXtsArgs(fd, buf, position, key, firstUnit, unitSize);
      if (!raw.preadXtsAsync) {
        await preadFully(fd, buf, position);
        return this.xtsCryptAsync(key, buf, buf, firstUnit, unitSize, false);
      }
      try {
        await raw.preadXtsAsync(fd, buf, position, key, firstUnit, unitSize);
      } catch (e) {
        throw decryptFailure(e);
      }
    },
    mapFile(fd, length) {
      checkRangeArgs(fd, 0, length, Number.MAX_SAFE_INTEGER);
      return raw.mapFile && length > 0 ? raw.mapFile(fd, length) : undefined;
    },
    unmapFile(map) { raw.unmapFile!(map); },
    async xtsFromMapAsync(map, position, buf, key, firstUnit, unitSize) {
      checkDecryptArgs(buf, position, key, firstUnit, unitSize);
      try {
        await raw.xtsFromMapAsync!(map, position, buf, key, firstUnit, unitSize);
      } catch (e) {
        throw decryptFailure(e);
      }
    },
    async fallocate(fd, mode, offset, length) { checkFallocateArgs(fd, mode, offset, length); return raw.fallocate(fd, mode === 'punch' ? 0 : 1, offset, length); },
    kvmProbe() { return raw.kvmProbe(); },
    flock(fd, exclusive) { checkFlockArgs(fd, exclusive); return raw.flock(fd, exclusive); },
    sendFileReply(sockfd, header, fd, position, length) {
      checkSendFileArgs(sockfd, header, fd, position, length);
      return raw.sendFileReply ? raw.sendFileReply(sockfd, header, fd, position, length) : -1;
    },
    pageCached(fd, position, length) {
      checkRangeArgs(fd, position, length);
      return raw.pageCached ? raw.pageCached(fd, position, length) : false;
    },
    setSendBuffer(sockfd, bytes) {
      checkSendBufferArgs(sockfd, bytes);
      return raw.setSendBuffer ? raw.setSendBuffer(sockfd, bytes) : -1;
    },
    peerCredentials(sockfd) {
      checkFd(sockfd);
      return raw.peerCredentials ? raw.peerCredentials(sockfd) : undefined;
    },
    async dataSegments(fd, position, end, max) {
      checkSegmentArgs(fd, position, end, max);
      if (!raw.seekData) return perlSegments(fd, position, end, max);
      return toSegments(raw.seekData(fd, position, end, max), position, end, max);
    },
  };
}

/** Try to load the compiled addon; returns the raw module or the reason it is unusable. */
function loadAddon(): { addon?: RawAddon; reason?: string } {
  // dist/src/native.js -> ../../build/Release; src/native.ts (tsx) -> ../build/Release
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    path.join(here, '..', '..', 'build', 'Release', 'medv.node'),
    path.join(here, '..', 'build', 'Release', 'medv.node'),
  ];
  let reason = 'build/Release/medv.node not found (run `npx node-gyp rebuild`)';
  for (const file of candidates) {
    if (!fs.existsSync(file)) continue;
    try {
      const mod = createRequire(import.meta.url)(file) as Partial<RawAddon>;
      const names: Array<keyof RawAddon> = ['xtsCrypt', 'xtsCryptAsync', 'preadNoWait', 'fallocate', 'kvmProbe', 'flock'];
      const missing = names.filter((n) => typeof mod[n] !== 'function');
      if (missing.length) { reason = `${file} lacks ${missing.join(', ')} (stale build?)`; continue; }
      return { addon: mod as RawAddon };
    } catch (e) {
      reason = `${file} failed to load: ${(e as Error).message}`;
    }
  }
  return { reason };
}

function select(): NativeApi {
  if (process.env.MEDV_NO_NATIVE === '1') return { ...fallback, reason: 'MEDV_NO_NATIVE=1' };
  const { addon, reason } = loadAddon();
  return addon ? wrap(addon) : { ...fallback, reason };
}

/** The implementation in use: the addon when it loads (and MEDV_NO_NATIVE is not 1), else the fallback. */
export const native: NativeApi = select();

/** The addon wrapped with the typed checks, or undefined when it cannot load (tests, benchmarks). */
export function nativeAddon(): NativeApi | undefined {
  const { addon } = loadAddon();
  return addon ? wrap(addon) : undefined;
}
