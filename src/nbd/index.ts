export { serveNbd, type NbdServer, type NbdServerOptions } from './server.js';
export { nbdErrno } from './errno.js';
export * as protocol from './protocol.js';
