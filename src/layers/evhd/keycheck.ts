import type { DataKey } from '../../crypto/datakey.js';
import { constantTimeEqual, secureAlloc, secureFree } from '../../crypto/secure.js';
import { EVHD_MAC_BYTES, type EvhdHeader, evhdHeaderMacInput, serializeEvhdHeader } from '../../formats/evhd.js';
import { sodium } from '../../core/sodium.js';

const KCK_CONTEXT = Buffer.from('medv evhd key-check key v1', 'latin1');
const KCV_MESSAGE = Buffer.from('medv evhd key check v1', 'latin1');
const HMK_CONTEXT = Buffer.from('medv evhd header mac key v2', 'latin1');

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

/**
 * The header MAC (src/formats/evhd.ts, offset 136): BLAKE2b-256 of the MAC input (the header with
 * its checksum and MAC fields zeroed), keyed with a header-MAC key = BLAKE2b-256 keyed with the
 * data key, of its own constant (a different PRF output than the key-check key).
 */
export function evhdHeaderMac(key: DataKey, macInput: Buffer): Buffer {
  const hmk = secureAlloc(32);
  try {
    sodium.crypto_generichash(hmk, HMK_CONTEXT, key.key);
    const out = Buffer.alloc(EVHD_MAC_BYTES);
    sodium.crypto_generichash(out, macInput, hmk);
    return out;
  } finally {
    secureFree(hmk);
  }
}

/** Serialize a header with its MAC computed under `key` (every header write goes through this). */
export function sealEvhdHeader(h: EvhdHeader, key: DataKey): Buffer {
  return serializeEvhdHeader(h, (input) => evhdHeaderMac(key, input));
}

/** Does the stored MAC of these header bytes (at least 4096) match `key`? Constant time. */
export function evhdHeaderMacValid(key: DataKey, header: Buffer, stored: Buffer): boolean {
  return constantTimeEqual(evhdHeaderMac(key, evhdHeaderMacInput(header)), stored);
}
