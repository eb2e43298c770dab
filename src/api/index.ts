/** The wire between client and server (no I/O): name rules, the status<->code table, the policy schema, the key-release format. */
export * from './names.js';
export * from './status.js';
export { checkPolicy, type Policy } from './policy.js';
export { POLICY_SCHEMA } from './policy-schema.js';
export {
  generateClientKeyPair, clientKeyPairFrom, sealImageKeys, openReleasedKeys, releasePlaintext, checkClientKey,
  type ClientKeyPair, type ReleasedImageKeys, type ImageKeySet, MAX_SEALED, MAX_SIGNERS,
} from './keyrelease.js';
