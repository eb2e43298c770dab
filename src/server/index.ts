/** `medv serve`: the image repository over HTTP, users and policies under /api/, image keys and client reports. */
export * from './http.js';
export * from './images.js';
export * from './auth.js';
export * from './inspect.js';
export * from './publish.js';
export * from './prune.js';
export * from './range.js';
export { strongEtag } from './static.js';
export * from './serve.js';
export { Accounts, ACCOUNTS_DEFAULTS, type AccountsOptions, hashPassword, verifyPassword, tokenHash } from './accounts.js';
export { accountsApi, API_MAX_BODY } from './api.js';
export { Store, redactUrl, SQLITE_FILE } from './store/index.js';
export { KeyService, KEY_SERVICE_DEFAULTS, type KeyServiceOptions, latestVersion, REPORT_STATES, MAX_REPORTS, type GrantAnswer } from './keyservice.js';
export { Audit, AUDIT_DEFAULTS, type AuditOptions } from './audit.js';
export { TrustedProxies, peerOf, type Peer } from './peer.js';
export { loadServerKey, SERVER_KEY_FILE, SERVER_KEY_BYTES, type ServerKey } from './serverkey.js';
