/**
 * READ replies sent from the page cache: when the device can say where a range lies in a file it
 * holds open (BlockDevice.fileRange; a plain FileDevice, and filters that leave reads alone), the
 * reply's header and then that range go to the socket with sendfile(2) (native.sendFileReply), which
 * hands a unix socket references to the cached pages: no buffer of ours, no copy on our side.
 * Everything here runs on the event loop and never blocks on the socket.
 */
import type * as net from 'node:net';
import type { BlockDevice } from '../block/device.js';
import { native } from '../native.js';

/** SO_SNDBUF asked for every connection (the kernel doubles it, capped by net.core.wmem_max):
 *  the default (~200 KiB) is less than one 256 KiB reply. */
const SEND_BUFFER = 2 << 20;

/**
 * The socket's descriptor (Socket._handle.fd: undocumented but long-standing, like _handle in
 * userbuffer.ts), or -1: then no READ is sent from the page cache. Gives the socket room for
 * several large replies at once (fewer turns where it fills up midway).
 */
export function sendfileSocket(socket: net.Socket): number {
  const fd = (socket as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== 'number' || !Number.isSafeInteger(fd) || fd < 0) return -1;
  native.setSendBuffer(fd, SEND_BUFFER);
  return fd;
}

/** Whether all of [offset, +length) of `device` is a file range whose pages are all cached now. */
export function rangeCached(device: BlockDevice, offset: number, length: number): boolean {
  const range = device.fileRange?.(offset, length);
  return range !== undefined && native.pageCached(range.fd, range.position, length);
}

/**
 * Send `header`, then [offset, +length) of `device`, on the non-blocking socket `sockfd`. -1 having
 * sent nothing (no file range any more, not all cached, closed): the caller reads the data instead;
 * else the bytes of header and data sent, fewer when the socket filled up (the caller sends the rest).
 */
export function sendRange(sockfd: number, device: BlockDevice, header: Buffer, offset: number, length: number): number {
  const range = device.fileRange?.(offset, length);
  return range ? native.sendFileReply(sockfd, header, range.fd, range.position, length) : -1;
}
