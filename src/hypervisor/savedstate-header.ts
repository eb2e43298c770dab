/**
 * The plaintext header of a saved state (`.vsv`, layout in ./savedstate.ts), read without a key
 * and without loading any cryptography: a resume reads the guest's RAM size here and starts QEMU
 * while the key is still being unwrapped. Nothing in it is trusted until the frames, which bind
 * the header as associated data, and the trailer authenticate.
 */
import * as fs from 'node:fs';
import { MedvError, fromSystemError } from '../core/errors.js';
import { openFileNoFollow } from '../core/fsio.js';

export const MAGIC = Buffer.from('MEDVVSV\0', 'latin1');
export const VERSION = 2;
export const HEADER_BYTES: Record<number, number> = { 1: 52, 2: 56 };
/** Largest guest RAM a header may claim (4 TiB), so a damaged header cannot ask QEMU for more. */
export const MAX_MEMORY_MIB = 1 << 22;

/** What the plaintext header of a saved state says, read without any key (nothing in it is trusted yet). */
export interface SavedStatePeek { version: number; headerBytes: number; memoryMiB?: number }

/** Which file was read: a saved state is removed only while its name still points at the file verified. */
export interface FileKey { dev: number; ino: number }

export function readHeader(path: string): { header: Buffer; peek: SavedStatePeek; file: FileKey } {
  let head: Buffer;
  const file = openFileNoFollow(path, { what: 'saved state' });
  const key: FileKey = { dev: file.stat.dev, ino: file.stat.ino };
  try {
    const fd = file.fd;
    try {
      head = Buffer.alloc(HEADER_BYTES[VERSION]);
      const n = fs.readSync(fd, head, 0, head.length, 0);
      head = head.subarray(0, n);
    } finally { file.close(); }
  } catch (e) { throw fromSystemError(e, path); }
  if (head.length < 10) throw new MedvError('ETRUNCATED', `saved state is ${head.length} bytes, shorter than its header`, { file: path, offset: head.length });
  if (!head.subarray(0, 8).equals(MAGIC)) throw new MedvError('EFORMAT', 'not a medv saved state (bad magic)', { file: path, offset: 0 });
  const version = head.readUInt16LE(8);
  const headerBytes = HEADER_BYTES[version];
  if (headerBytes === undefined) throw new MedvError('EVERSION', `saved state version ${version} is not supported`, { file: path, offset: 8 });
  if (head.length < headerBytes) throw new MedvError('ETRUNCATED', `saved state is ${head.length} bytes, shorter than its header`, { file: path, offset: head.length });
  const peek: SavedStatePeek = { version, headerBytes };
  if (version >= 2) {
    const memoryMiB = head.readUInt32LE(52);
    if (memoryMiB < 1 || memoryMiB > MAX_MEMORY_MIB) throw new MedvError('EFORMAT', `saved state claims ${memoryMiB} MiB of guest RAM`, { file: path, offset: 52 });
    peek.memoryMiB = memoryMiB;
  }
  return { header: head.subarray(0, headerBytes), peek, file: key };
}

/** Version and (version 2) guest RAM of a saved state, from its header alone. */
export function peekSavedState(path: string): SavedStatePeek { return readHeader(path).peek; }
