/**
 * The admin token: who may upload. A bearer token read from a file (`--admin-token-file`), or
 * generated on first start into DIR/admin.token (mode 0600). Files readable by group or others
 * are refused, as ssh refuses such a private key. Compared in constant time (of its SHA-256).
 */
import type { IncomingMessage } from 'node:http';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { MedvError } from '../core/errors.js';
import { createFileAtomicSync, readSecretSync } from '../core/fsio.js';

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
  const buf = readSecretSync(file, { what: 'admin token file', max: MAX_TOKEN });
  const token = buf.toString('utf8').trim();
  buf.fill(0);
  if (token.length < MIN_TOKEN || !/^[\x21-\x7e]+$/.test(token)) throw new MedvError('EFORMAT', `admin token must be ${MIN_TOKEN} to ${MAX_TOKEN} printable characters without spaces`, { file });
  return token;
}

/** Read `file`, or (no file given) DIR/admin.token, created with a fresh random token if missing. */
export function loadAdminToken(file: string | undefined, defaultFile: string): AdminToken {
  let created = false;
  const path = file ?? defaultFile;
  if (file === undefined) {
    // Written whole under a temporary name (mode 0600) and linked into place: never over a token
    // file that exists, never seen half-written.
    try {
      createFileAtomicSync(path, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
      created = true;
    } catch (e) {
      if (!(e instanceof MedvError && e.code === 'EEXIST')) throw e;
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
