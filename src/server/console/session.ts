/**
 * Console sessions. A sign-in makes a new random id (32 bytes, base64url, from libsodium): the
 * browser holds it in an `HttpOnly; SameSite=Strict` cookie (`Secure` over HTTPS), the database
 * only its BLAKE2b-256 (store/sessions.ts), so a copy of the database opens no session.
 *
 * - A new id at every sign-in; an id the browser brought before signing in is never promoted
 *   (no fixation: the pre-sign-in cookie is another cookie, used only for the sign-in form's CSRF
 *   token, and it is cleared at sign-in).
 * - Idle expiry (30 min without a request) and absolute expiry (12 h after sign-in), checked on
 *   every request; a disabled account's sessions stop at once. The last-seen time is written at
 *   most once a minute.
 * - At most `maxPerUser` sessions per account (the least recently used go first), so no one can
 *   grow the table by signing in again and again; expired rows are deleted hourly.
 * - Logout deletes the session; "log out everywhere" deletes every session of the account.
 */
import type { IncomingMessage } from 'node:http';
import { TOKEN_RE, newToken, tokenHash } from '../accounts.js';
import type { Store } from '../store/index.js';

export interface SessionOptions {
  idleMs: number;
  absoluteMs: number;
  maxPerUser: number;
}

export const SESSION_DEFAULTS: SessionOptions = { idleMs: 30 * 60_000, absoluteMs: 12 * 3600_000, maxPerUser: 16 };

/** The session cookie, and the cookie that carries the sign-in form's CSRF secret before there is a session. */
export const SESSION_COOKIE = 'medv_console';
export const PRESESSION_COOKIE = 'medv_console_pre';
export const COOKIE_PATH = '/console';
const TOUCH_EVERY_MS = 60_000;

export interface ConsoleSession {
  /** The raw id (from the cookie; never stored): the CSRF token is derived from it. */
  id: string;
  hash: string;
  user: string;
  created: number;
  expires: number;
  /** When the session ends if no request comes (idle expiry), or at its absolute expiry if sooner. */
  idleUntil: number;
}

/** The value of cookie `name` in the request, if it looks like one of our ids. */
export function cookieValue(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (typeof header !== 'string' || header.length > 8192) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    const v = part.slice(eq + 1).trim();
    if (TOKEN_RE.test(v)) return v;
  }
  return undefined;
}

/** A Set-Cookie value: HttpOnly, SameSite=Strict, Path=/console, Secure when `secure`; `maxAge` 0 deletes it. */
export function setCookie(name: string, value: string, secure: boolean, maxAgeS?: number): string {
  return [`${name}=${value}`, `Path=${COOKIE_PATH}`, 'HttpOnly', 'SameSite=Strict', ...(secure ? ['Secure'] : []), ...(maxAgeS !== undefined ? [`Max-Age=${maxAgeS}`] : [])].join('; ');
}

export class ConsoleSessions {
  readonly o: SessionOptions;
  private readonly cleanup: NodeJS.Timeout;

  constructor(private readonly store: Store, o: Partial<SessionOptions> = {}) {
    this.o = { ...SESSION_DEFAULTS, ...o };
    this.cleanup = setInterval(() => { store.sessions.dropExpired(Date.now(), this.o.idleMs).catch(() => undefined); }, 3600_000);
    this.cleanup.unref();
  }

  close(): void {
    clearInterval(this.cleanup);
  }

  /** A new session for `user` (after its password was checked): the id for the cookie. */
  async create(user: string, address: string, now = Date.now()): Promise<{ id: string; expires: number }> {
    const id = newToken();
    const expires = now + this.o.absoluteMs;
    await this.store.sessions.add(tokenHash(id), user, address.slice(0, 64), now, expires);
    await this.store.sessions.trim(user, this.o.maxPerUser);
    return { id, expires };
  }

  /** The live session of cookie id `id`, or undefined (unknown, expired, idle too long, account disabled). */
  async lookup(id: string | undefined, now = Date.now()): Promise<ConsoleSession | undefined> {
    if (!id || !TOKEN_RE.test(id)) return undefined;
    const hash = tokenHash(id);
    const s = await this.store.sessions.find(hash);
    if (!s) return undefined;
    if (s.disabled || s.expires <= now || s.lastSeen + this.o.idleMs <= now) {
      await this.store.sessions.remove(hash);
      return undefined;
    }
    let lastSeen = s.lastSeen;
    if (now - s.lastSeen >= TOUCH_EVERY_MS) {
      await this.store.sessions.touch(hash, now);
      lastSeen = now;
    }
    return { id, hash, user: s.user, created: s.created, expires: s.expires, idleUntil: Math.min(s.expires, lastSeen + this.o.idleMs) };
  }

  async end(s: ConsoleSession): Promise<void> {
    await this.store.sessions.remove(s.hash);
  }

  /** Every console session of `user`; how many there were. */
  endAll(user: string): Promise<number> {
    return this.store.sessions.removeAllOf(user);
  }

  list(user: string): ReturnType<Store['sessions']['listOf']> {
    return this.store.sessions.listOf(user);
  }
}
