/**
 * Secure memory for key material: sodium_malloc buffers (guard pages, mlock, canary), made
 * read-only while in use where practical, and zeroed when released. Key bytes never appear in
 * logs or error messages: SecureBytes prints as "[secure N bytes]".
 */
import { inspect } from 'node:util';
import { sodium } from '../core/sodium.js';

/** A fresh zero-filled secure buffer of `size` bytes (read-write). */
export function secureAlloc(size: number): Buffer {
  const buf = sodium.sodium_malloc(size);
  sodium.sodium_memzero(buf);
  return buf;
}

/** A secure buffer filled with random bytes. */
export function secureRandom(size: number): Buffer {
  const buf = sodium.sodium_malloc(size);
  sodium.randombytes_buf(buf);
  return buf;
}

/** Make a secure buffer read-only (writes fault). No-op for ordinary buffers. */
export function secureSeal(buf: Buffer): void {
  if (isSecure(buf)) sodium.sodium_mprotect_readonly(buf);
}

/** Zero a buffer (secure or not). A sealed secure buffer is made writable first. */
export function secureWipe(buf: Buffer): void {
  if (isSecure(buf)) sodium.sodium_mprotect_readwrite(buf);
  sodium.sodium_memzero(buf);
}

/**
 * Release key material now: a secure buffer is zeroed, unmapped and detached (length 0 after,
 * so a stale reference reads nothing rather than faulting); an ordinary buffer is zeroed.
 * (Secure buffers each cost guard-page mappings: freeing them promptly keeps bursts of key
 * operations from exhausting the process's memory-map limit before GC runs.)
 */
export function secureFree(buf: Buffer): void {
  if (isSecure(buf)) {
    if (buf.length === 0) return; // already freed
    sodium.sodium_mprotect_readwrite(buf);
    sodium.sodium_free(buf);
  } else {
    sodium.sodium_memzero(buf);
  }
}

function isSecure(buf: Buffer): boolean {
  return (buf as Buffer & { secure?: boolean }).secure === true;
}

/** Constant-time equality of two buffers of the same length. */
export function constantTimeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && sodium.sodium_memcmp(a, b);
}

/** Hide key bytes from util.inspect / console.log on an object that holds one. */
export function redactInspect(target: object, render: () => string): void {
  Object.defineProperty(target, inspect.custom, { value: render, enumerable: false });
}
