/**
 * Where the key-encryption key comes from (passphrase file, MEDV_PASSPHRASE, host key file), without
 * loading any cryptography: commands that only pass the KEK on (`medv vm start` hands it to the
 * supervisor) stay quick to start. Deriving and using it is ./kek.ts.
 */
import { MedvError } from '../core/errors.js';
import { readSecretSync } from '../core/fsio.js';

/**
 * A host key: `keyFile` holds it raw (32 bytes) or wrapped (./hostbind.ts), in which case
 * `wrapKeyFile` names the wrap key that opens it (kept outside the client root).
 */
export interface HostKeySource { kind: 'hostkey'; keyFile: string; wrapKeyFile?: string }

/**
 * A key-encryption key Argon2id already derived from a passphrase with one salt and cost (what a
 * key file records): `key` is 32 bytes in secure memory. The host service (src/host/service/keys.ts)
 * derives these once while it is unlocked, so a start or resume does not pay Argon2id again.
 */
export interface DerivedKek { salt: Buffer; opslimit: number; memlimit: number; key: Buffer }

/**
 * A passphrase, as text (the command line's) or as bytes in secure memory (the host service's key
 * cache: never a JS string there). `derived`: KEKs already derived from it, used for key files
 * whose salt and cost they match; `wrapWith`: new key files are wrapped under this one (its salt
 * and cost recorded in them) instead of a fresh salt, so a file written now (a saved state's key)
 * opens again without Argon2id while the cache holds it, and with the passphrase alone after.
 */
export interface PassphraseSource { kind: 'passphrase'; passphrase: string | Buffer; derived?: readonly DerivedKek[]; wrapWith?: DerivedKek }

export type KekSource = PassphraseSource | HostKeySource;


/** Largest passphrase file we read (a passphrase, not a document). */
const MAX_PASSPHRASE_FILE = 64 * 1024;

/**
 * Where the passphrase comes from, in order: `passphraseFile` (its contents, one trailing newline
 * removed), the MEDV_PASSPHRASE environment variable, the host key file if given.
 * Otherwise ENOKEY. The passphrase file is read as a secret (src/core/fsio.ts readSecretSync: a
 * symlink or a FIFO is refused, at most 64 KiB); one that group or others may access, or that is
 * not ours, is used, with one warning line through `warn` (default: stderr); a host key file like
 * that is refused when loaded (loadHostKey).
 */
export function kekFromEnvironment(opts: { passphraseFile?: string; hostKeyFile?: string; warn?: (line: string) => void } = {}): KekSource {
  if (opts.passphraseFile !== undefined) {
    const file = opts.passphraseFile;
    const warn = opts.warn ?? ((line: string) => { process.stderr.write(`${line}\n`); });
    const raw = readSecretSync(file, { what: 'passphrase file', max: MAX_PASSPHRASE_FILE, warn });
    let text = raw.toString('utf8');
    raw.fill(0);
    if (text.endsWith('\r\n')) text = text.slice(0, -2);
    else if (text.endsWith('\n')) text = text.slice(0, -1);
    if (text.length === 0) throw new MedvError('ENOKEY', 'passphrase file is empty', { file });
    return { kind: 'passphrase', passphrase: text };
  }
  const env = process.env.MEDV_PASSPHRASE;
  if (env !== undefined && env.length > 0) return { kind: 'passphrase', passphrase: env };
  if (opts.hostKeyFile !== undefined) return { kind: 'hostkey', keyFile: opts.hostKeyFile };
  throw new MedvError('ENOKEY', 'no passphrase: set MEDV_PASSPHRASE or use --passphrase-file');
}
