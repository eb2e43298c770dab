/**
 * The admin token: who may upload. A bearer token read from a file (`--admin-token-file`), or
 * generated on first start into DIR/admin.token (mode 0600). Files readable by group or others
 * are refused, as ssh refuses such a private key. Compared in constant time (of its SHA-256).
 */
import * as fs from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { MedvError, fromSystemError } from '../core/errors.js';

export const ADMIN_TOKEN_FILE = 'admin.token';
const MIN_TOKEN = 16;
const MAX_TOKEN = 4096;

export interface AdminToken {
  file: string;
  /** True when this start created the file. */
  created: boolean;
  /** Does the request carry `Authorization: Bearer <token>`? */
  check(req: IncomingMessage): boolean;
}

function readToken(file: string): string {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'admin token file is not a regular file', { file });
    if ((st.mode & 0o077) !== 0) throw new MedvError('EINSECURE', `admin token file permissions ${(st.mode & 0o777).toString(8)} are too open: it must not be accessible by group or others (chmod 600 ${file})`, { file });
    if (st.size > MAX_TOKEN) throw new MedvError('EFORMAT', `admin token file is larger than ${MAX_TOKEN} bytes`, { file });
    const buf = Buffer.alloc(st.size);
    fs.readSync(fd, buf, 0, buf.length, 0);
    const token = buf.toString('utf8').trim();
    if (token.length < MIN_TOKEN || !/^[\x21-\x7e]+$/.test(token)) throw new MedvError('EFORMAT', `admin token must be ${MIN_TOKEN} to ${MAX_TOKEN} printable characters without spaces`, { file });
    return token;
  } catch (e) {
    throw fromSystemError(e, file);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Read `file`, or (no file given) DIR/admin.token, created with a fresh random token if missing. */
export function loadAdminToken(file: string | undefined, defaultFile: string): AdminToken {
  let created = false;
  const path = file ?? defaultFile;
  if (file === undefined) {
    try {
      const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
      try {
        fs.writeSync(fd, `${randomBytes(32).toString('base64url')}\n`);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fromSystemError(e, path);
    }
  }
  const digest = createHash('sha256').update(readToken(path)).digest();
  return {
    file: path,
    created,
    check(req) {
      const h = req.headers.authorization;
      if (typeof h !== 'string' || h.length > MAX_TOKEN + 16) return false;
      const m = /^Bearer[ ]+(\S+)\s*$/i.exec(h);
      if (!m) return false;
      return timingSafeEqual(createHash('sha256').update(m[1]).digest(), digest);
    },
  };
}
