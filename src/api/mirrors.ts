/**
 * The mirror URL rule (a policy's `mirrors`, `medv image fetch --mirror`): one definition, applied
 * by the server when a policy is published (./policy.ts) and by the client before a fetch
 * (src/transfer/mirrors.ts), so that a policy the server takes is one every client takes.
 */
import { MedvError } from '../core/errors.js';

/** At most this many mirrors (a policy's list, a caller's). */
export const MAX_MIRRORS = 8;

/**
 * A mirror's base URL, checked (http or https, no user name or password, no query or fragment,
 * at most 1024 characters) and ending with '/': its files are `<base><NAME>_<N>.ckm`.
 */
export function checkMirrorUrl(url: string): string {
  let u: URL;
  // never echoed with what could be a password in it (a message ends up in logs): everything before
  // the last '@' goes, wherever the parser would end the user part ('https:u:p@h', a '#', '/' or
  // '?' in the password, a user name longer than what is shown)
  const text = String(url);
  const at = text.lastIndexOf('@');
  const shown = (at < 0 ? text : `…${text.slice(at)}`).slice(0, 200);
  const bad = (why: string) => new MedvError('EINVAL_ARG', `mirror ${JSON.stringify(shown)} ${why}`);
  if (typeof url !== 'string' || url.length > 1024) throw bad('is not a URL of at most 1024 characters');
  try { u = new URL(url); } catch { throw bad('is not a URL'); }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw bad('must be an http:// or https:// URL');
  if (u.username || u.password) throw bad('must not carry a user name or password (a mirror needs none: it serves only encrypted packs)');
  if (u.search || u.hash || url.includes('?') || url.includes('#')) throw bad('must not carry a query or fragment (it names a folder of static files)');
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u.toString();
}

/** The mirror list of a caller, checked: at most MAX_MIRRORS, no repeats. */
export function checkMirrorUrls(urls: readonly string[]): string[] {
  if (urls.length > MAX_MIRRORS) throw new MedvError('EINVAL_ARG', `at most ${MAX_MIRRORS} mirrors (got ${urls.length})`);
  const out = urls.map(checkMirrorUrl);
  const dup = out.find((u, i) => out.indexOf(u) !== i);
  if (dup) throw new MedvError('EINVAL_ARG', `mirror ${dup} is listed twice`);
  return out;
}

