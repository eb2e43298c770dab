/**
 * CSRF protection of every state-changing console request (POST), in two layers:
 *
 * 1. A token in the form (`_csrf`) or the `X-CSRF-Token` header, equal to BLAKE2b-256 keyed with
 *    the session id (before sign-in: the pre-session cookie's random value) of a fixed label. Only
 *    someone who holds the cookie can compute it, and the cookie is HttpOnly and SameSite=Strict;
 *    nothing is stored, and a token of one session is worthless with another. Compared in
 *    constant time.
 * 2. The browser's own word on where the request comes from (Sec-Fetch-Site, else Origin): a
 *    POST from another site is refused before the token is looked at.
 * Either failing is 403.
 */
import type { IncomingMessage } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { sodium } from '../../core/sodium.js';

const LABEL = Buffer.from('medv-console-csrf-v1');
export const CSRF_FIELD = '_csrf';
export const CSRF_HEADER = 'x-csrf-token';

export function csrfToken(secret: string): string {
  const out = Buffer.alloc(32);
  sodium.crypto_generichash(out, LABEL, Buffer.from(secret, 'utf8'));
  return out.toString('base64url');
}

export function csrfValid(secret: string | undefined, given: string | undefined): boolean {
  if (!secret || typeof given !== 'string' || given.length !== 43) return false;
  const want = Buffer.from(csrfToken(secret));
  const got = Buffer.from(given);
  return got.length === want.length && timingSafeEqual(got, want);
}

/**
 * False when the browser says the request comes from another site. `Sec-Fetch-Site` (every
 * current browser sends it) must be `same-origin`; without it, an `Origin` must name the Host the
 * request was sent to (its scheme is not compared: behind a TLS proxy the browser says https, we
 * see http). `Origin: null` proves nothing either way (our own pages send it: their
 * Referrer-Policy is no-referrer), so then the token alone decides.
 */
export function sameOrigin(req: IncomingMessage): boolean {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined) return site === 'same-origin';
  const origin = req.headers.origin;
  if (origin === undefined || origin === 'null') return true;
  const host = req.headers.host;
  return typeof host === 'string' && (origin === `https://${host}` || origin === `http://${host}`);
}
