/**
 * The NBD server, by protocol phase: listener.ts (socket file, connection admission, shutdown),
 * connection.ts (one socket: handshake then transmission, timeouts, teardown), handshake.ts
 * (options), transmission.ts (requests and replies under the memory bounds; its parts are listed
 * there and in README.md). This module keeps the API.
 */
export { serveNbd, bindNbd, checkSocketPath, type NbdServer, type NbdListener } from './listener.js';
export type { NbdServerOptions } from './options.js';
