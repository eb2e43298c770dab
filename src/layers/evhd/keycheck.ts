import type { DataKey } from '../../crypto/datakey.js';
import { secureAlloc, secureFree } from '../../crypto/secure.js';
import { sodium } from '../../crypto/sodium.js';

const KCK_CONTEXT = Buffer.from('medv evhd key-check key v1', 'latin1');
const KCV_MESSAGE = Buffer.from('medv evhd key check v1', 'latin1');

/**
 * The EVHD key-check value: BLAKE2b-256 keyed with a key-check key, of a constant and the key id.
 * The key-check key is BLAKE2b-256 keyed with the 512-bit data key, of another constant.
 * Both steps are PRFs, so the value reveals nothing about the data key; it lets the holder of a
 * candidate data key confirm it, which costs an attacker nothing beyond guessing 512 random
 * bits (passphrase guesses still go through Argon2id in the .enc file).
 */
export function evhdKeyCheck(key: DataKey): Buffer {
  const kck = secureAlloc(32);
  try {
    sodium.crypto_generichash(kck, KCK_CONTEXT, key.key);
    const out = Buffer.alloc(32);
    sodium.crypto_generichash(out, Buffer.concat([KCV_MESSAGE, key.keyId]), kck);
    return out;
  } finally {
    secureFree(kck);
  }
}
