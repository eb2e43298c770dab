/**
 * Keys: data keys in secure memory, .enc key files, KEKs (passphrase, host key).
 */
import * as path from 'node:path';

export { DataKey, DATA_KEY_BYTES, KEY_ID_BYTES } from './datakey.js';
export { type KekSource, kekFromEnvironment, createHostKey, loadHostKey, hostKeyId, HOST_KEY_BYTES } from './kek.js';
export { type HostKeySource } from './kekenv.js';
export { wrapHostKey, unwrapHostKey, isWrappedHostKey, hasTpm2, protectorOf, WRAP_KEY_BYTES, type Protector } from './hostbind.js';
export { writeKeyFile, writeKeyFileAt, writeWrappedKeyFile, readKeyFile, wrapDataKey, unwrapDataKey, DEFAULT_PWHASH, type PwhashParams, type WrapOptions } from './keyfile.js';
export { secureAlloc, secureRandom, secureSeal, secureWipe, secureFree, constantTimeEqual } from './secure.js';

/** The key file beside an .evhd: foo.evhd -> foo.enc (any other name gets ".enc" appended). */
export function encPathFor(evhdPath: string): string {
  const ext = path.extname(evhdPath);
  if (ext.toLowerCase() === '.evhd') return evhdPath.slice(0, -ext.length) + '.enc';
  return evhdPath + '.enc';
}
