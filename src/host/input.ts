/**
 * What a supervisor reads on its stdin: frames, each one JSON line, the last one possibly
 * followed by secret bytes.
 *
 *   {"pool":{…}}\n                        only a pooled supervisor (./pooled.ts): prepare QEMU and wait
 *                                         (no `shape`: the pool's spare, modules loaded, no QEMU)
 *   {"config":…,"kek":…,"secretBytes":N}\n<N bytes>   the input (SupervisorInput), then EOF
 *
 * Key material that is bytes in secure memory (the host service's key cache: a passphrase and the
 * KEKs derived from it) never becomes text: in the JSON it is a placeholder `{"$secret":[offset,
 * length]}` into the bytes after the line, which the supervisor copies into secure memory and
 * wipes. A passphrase given as text (the command line's) stays text, as before. Bounded: a frame
 * over MAX_INPUT is refused.
 */
import { MedvError } from '../core/errors.js';
import type { SupervisorInput } from './config.js';

/** Largest frame a supervisor reads (a config of a few KiB, secrets of a few hundred bytes). */
export const MAX_INPUT = 1 << 20;

type Secret = { $secret: [number, number] };

/** The input as bytes: the JSON line with placeholders, then the secrets. */
export function encodeInput(input: SupervisorInput): Buffer {
  const secrets: Buffer[] = [];
  let at = 0;
  const place = (b: Buffer): Secret => { secrets.push(b); const s: Secret = { $secret: [at, b.length] }; at += b.length; return s; };
  let kek: unknown = input.kek;
  if (input.kek?.kind === 'passphrase') {
    const k = input.kek;
    const derived = (d: { salt: Buffer; opslimit: number; memlimit: number; key: Buffer }) => ({ salt: d.salt.toString('hex'), opslimit: d.opslimit, memlimit: d.memlimit, key: place(d.key) });
    kek = {
      kind: 'passphrase',
      passphrase: typeof k.passphrase === 'string' ? k.passphrase : place(k.passphrase),
      ...(k.derived?.length ? { derived: k.derived.map(derived) } : {}),
      ...(k.wrapWith ? { wrapWith: derived(k.wrapWith) } : {}),
    };
  }
  const line = Buffer.from(`${JSON.stringify({ ...input, kek, secretBytes: at })}\n`, 'utf8');
  return Buffer.concat([line, ...secrets]);
}

/**
 * Parse an input frame: the JSON `line` and the bytes after it (exactly `secretBytes`); secrets are
 * copied into buffers from `alloc` (secure memory) and `tail` is wiped.
 */
export function decodeInput(line: string, tail: Buffer, alloc: (n: number) => Buffer): SupervisorInput {
  let raw: SupervisorInput & { secretBytes?: number };
  try { raw = JSON.parse(line) as SupervisorInput & { secretBytes?: number }; } catch { throw new MedvError('EINVAL_ARG', 'supervisor input is not JSON'); }
  if (!raw || typeof raw !== 'object' || !raw.config) throw new MedvError('EINVAL_ARG', 'supervisor input has no config');
  const n = raw.secretBytes ?? 0;
  if (!Number.isSafeInteger(n) || n !== tail.length) throw new MedvError('EINVAL_ARG', `supervisor input announces ${n} secret bytes, ${tail.length} came`);
  const take = (s: unknown): Buffer => {
    const [off, len] = (s as Secret)?.$secret ?? [];
    if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len < 0 || off + len > tail.length) throw new MedvError('EINVAL_ARG', 'supervisor input has a bad secret reference');
    const b = alloc(len);
    tail.copy(b, 0, off, off + len);
    return b;
  };
  try {
    const k = raw.kek as unknown as Record<string, unknown> | undefined;
    if (k?.kind === 'passphrase') {
      const derived = (d: Record<string, unknown>) => ({ salt: Buffer.from(String(d.salt), 'hex'), opslimit: Number(d.opslimit), memlimit: Number(d.memlimit), key: take(d.key) });
      raw.kek = {
        kind: 'passphrase',
        passphrase: typeof k.passphrase === 'string' ? k.passphrase : take(k.passphrase),
        ...(Array.isArray(k.derived) ? { derived: (k.derived as Array<Record<string, unknown>>).map(derived) } : {}),
        ...(k.wrapWith ? { wrapWith: derived(k.wrapWith as Record<string, unknown>) } : {}),
      };
    }
  } finally {
    tail.fill(0);
  }
  delete raw.secretBytes;
  return raw;
}
