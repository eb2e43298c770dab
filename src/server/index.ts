/** `medv serve`: the image repository over HTTP, and users and policies under /api/ (keys later). */
export * from './http.js';
export * from './images.js';
export * from './auth.js';
export * from './names.js';
export * from './inspect.js';
export * from './publish.js';
export * from './prune.js';
export * from './range.js';
export { strongEtag } from './static.js';
export * from './serve.js';
export { Accounts, ACCOUNTS_DEFAULTS, type AccountsOptions, hashPassword, verifyPassword, tokenHash } from './accounts.js';
export { accountsApi, API_MAX_BODY } from './api.js';
export { checkPolicy, type Policy } from './policy.js';
export { POLICY_SCHEMA } from './policy-schema.js';
export { Store, redactUrl, SQLITE_FILE } from './store/index.js';
