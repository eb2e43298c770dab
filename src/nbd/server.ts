/**
 * The NBD server, by protocol phase: listener.ts (socket file, connection admission, shutdown),
 * connection.ts (one socket: handshake then transmission, timeouts, teardown), handshake.ts
 * (options), transmission.ts (requests and replies, memory bounds). This module keeps the API.
 */
export { serveNbd, bindNbd, checkSocketPath, type NbdServer, type NbdListener } from './listener.js';
export type { NbdServerOptions } from './options.js';
