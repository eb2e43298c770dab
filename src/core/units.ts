import { MedvError } from './errors.js';

/** Sizes for people: `661 B`, `11.9 KiB`, `64.0 MiB`, `128 MiB` (one decimal below 100). */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

/**
 * The one size syntax of every CLI option and library entry that reads a size typed by a person:
 * a number of bytes, or a number followed by K, M, G or T (powers of 1024), each optionally
 * followed by B or iB, in any case: `4096`, `64K`, `512M`, `512MiB`, `64GB`, `1t`. No spaces, no
 * fractions. `what` names the option in the message (`--size`). Between `min` (default 1) and
 * `max` (default 2^53 - 1), else EINVAL_ARG.
 */
export function parseSize(text: string, what = 'size', o: { min?: number; max?: number } = {}): number {
  const m = /^([0-9]{1,16})([KMGT]?)((?:i?B)?)$/i.exec(String(text));
  if (!m || (m[3] !== '' && m[2] === '' && m[3].toLowerCase() === 'ib')) {
    throw new MedvError('EINVAL_ARG', `invalid size for ${what}: ${JSON.stringify(String(text)).slice(0, 40)} (use bytes, or a number with K, M, G or T: 4096, 64K, 512M, 64G)`);
  }
  const n = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase());
  const min = o.min ?? 1;
  const max = o.max ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new MedvError('EINVAL_ARG', `${what} ${text} is out of range (${humanBytes(min)} to ${humanBytes(max)})`);
  }
  return n;
}

const DURATION_UNITS: Record<string, number> = { '': 1000, s: 1000, m: 60_000, h: 3600_000, d: 86400_000 };

/**
 * The one duration syntax: a whole number of seconds, or a number followed by s, m, h or d
 * (`30`, `90s`, `30m`, `12h`, `7d`). Returns milliseconds, between `min` (default 1 s) and `max`
 * (default 366 d), else EINVAL_ARG naming `what`.
 */
export function parseDuration(text: string, what = 'duration', o: { min?: number; max?: number } = {}): number {
  const m = /^([0-9]{1,9})([smhd]?)$/.exec(String(text));
  if (!m) throw new MedvError('EINVAL_ARG', `${what} must be a duration such as 30 (seconds), 90s, 30m, 12h or 7d, not ${JSON.stringify(String(text)).slice(0, 40)}`);
  const ms = Number(m[1]) * DURATION_UNITS[m[2]];
  const min = o.min ?? 1000;
  const max = o.max ?? 366 * 86400_000;
  if (ms < min || ms > max) throw new MedvError('EINVAL_ARG', `${what} must be from ${humanDuration(min)} to ${humanDuration(max)}`);
  return ms;
}

/** `1s`, `90s`, `30m`, `12h`, `366d`: the largest unit that divides `ms` (whole seconds). */
export function humanDuration(ms: number): string {
  for (const [u, f] of [['d', 86400_000], ['h', 3600_000], ['m', 60_000]] as const) if (ms >= f && ms % f === 0) return `${ms / f}${u}`;
  return `${Math.round(ms / 1000)}s`;
}
