/**
 * Where the key-encryption key comes from (passphrase file, MEDV_PASSPHRASE, host key file), without
 * loading any cryptography: commands that only pass the KEK on (`medv vm start` hands it to the
 * supervisor) stay quick to start. Deriving and using it is ./kek.ts.
 */
import * as fs from 'node:fs';
import { MedvError, fromSystemError } from '../core/errors.js';

export type KekSource = { kind: 'passphrase'; passphrase: string } | { kind: 'hostkey'; keyFile: string };


/** Largest passphrase file we read (a passphrase, not a document). */
const MAX_PASSPHRASE_FILE = 64 * 1024;

/**
 * Where the passphrase comes from, in order: `passphraseFile` (its contents, one trailing newline
 * removed), the MEDV_PASSPHRASE environment variable, the host key file if given.
 * Otherwise ENOKEY. A passphrase file that group or others may access is used, with one warning
 * line through `warn` (default: stderr); a host key file like that is refused when loaded
 * (loadHostKey).
 */
export function kekFromEnvironment(opts: { passphraseFile?: string; hostKeyFile?: string; warn?: (line: string) => void } = {}): KekSource {
  if (opts.passphraseFile !== undefined) {
    const file = opts.passphraseFile;
    let raw: Buffer;
    let fd: number | undefined;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY);
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'passphrase file is not a regular file', { file });
      if (st.size > MAX_PASSPHRASE_FILE) throw new MedvError('EINVAL_ARG', `passphrase file is larger than ${MAX_PASSPHRASE_FILE} bytes`, { file });
      if (st.mode & 0o077) {
        const warn = opts.warn ?? ((line: string) => { process.stderr.write(`${line}\n`); });
        warn(`medv: warning: passphrase file ${file} is accessible by group or others (mode ${modeString(st.mode)}); chmod 600 it`);
      }
      raw = Buffer.alloc(st.size);
      let done = 0;
      while (done < raw.length) {
        const n = fs.readSync(fd, raw, done, raw.length - done, done);
        if (n === 0) break;
        done += n;
      }
      raw = raw.subarray(0, done);
    } catch (e) {
      throw fromSystemError(e, file);
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
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

/** `0600`-style text of a file mode, for messages. */
export const modeString = (mode: number) => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
