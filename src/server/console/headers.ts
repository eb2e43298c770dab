/**
 * The headers of every console response. Pages: a Content-Security-Policy that allows scripts,
 * styles, images and connections only from this server (no inline script or style, no eval, no
 * plugins, no <base>, forms post only here, never framed), the same refusal of framing for old
 * browsers (X-Frame-Options), no Referer sent anywhere, no MIME sniffing, no caching of pages
 * (they carry account data), HSTS over HTTPS. Assets (assets.ts) get the same protections and a
 * year of immutable caching instead.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

function common(secure: boolean): Record<string, string> {
  return {
    'Content-Security-Policy': CONTENT_SECURITY_POLICY,
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'X-Content-Type-Options': 'nosniff',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Resource-Policy': 'same-origin',
    'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), usb=(), payment=()',
    ...(secure ? { 'Strict-Transport-Security': 'max-age=31536000' } : {}),
  };
}

/** Headers of a page or any other answer that may carry account data. */
export function pageHeaders(secure: boolean): Record<string, string> {
  return { ...common(secure), 'Cache-Control': 'no-store' };
}

/** Headers of a static asset whose URL holds its content hash. */
export function assetHeaders(secure: boolean): Record<string, string> {
  return { ...common(secure), 'Cache-Control': 'public, max-age=31536000, immutable' };
}
