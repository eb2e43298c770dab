/** Shared CLI plumbing: the error -> exit status table, key options, JSON output, progress bars. */
import { Command, Option } from 'commander';
import { createRequire } from 'node:module';
import { MedvError, type ErrorCode } from '../core/errors.js';
import { humanBytes } from '../core/units.js';
import { kekFromEnvironment, type KekSource } from '../crypto/kekenv.js';

/** Exit status by error code: the one table the CLI maps errors through. */
export const EXIT_STATUS: Partial<Record<ErrorCode, number>> = {
  EINVAL_ARG: 2,
  ENOENT: 3,
  EEXIST: 3,
  EBADKEY: 4,
  ENOKEY: 4,
  ECRYPTO: 4,
  EFORMAT: 5,
  ECHECKSUM: 5,
  ETRUNCATED: 5,
  EVERSION: 5,
  ECORRUPT: 5,
  EPARENT: 5,
  EREADONLY: 6,
  EUNSUPPORTED: 7,
  EBUSY: 9,
  EAUTH: 5,
  EINSECURE: 4,
  ESIGNATURE: 5,
  EBADBLOCK: 5,
  EDENIED: 4,
  EFORBIDDEN: 4,
  EMETHOD: 2,
  EPRECONDITION: 10,
  EBADREPLY: 5,
  ENETWORK: 10,
  EHTTP: 10,
  ECHANGED: 10,
  ESAVEDSTATE: 11,
  EPOLICY: 5,
  ERATELIMIT: 10,
  ETOOLARGE: 2,
  ENOLOGIN: 4,
  EOFFLINE: 13,
  EEXPIRED: 14,
  EUNSAFE: 4,
  EENGINE: 12,
  ELOCKED: 15,
  EWIPED: 16,
};
/** Exit status of `disk check` when the disk is damaged (9 is EBUSY: the disk is locked by another open). */
export const EXIT_DAMAGED = 8;

export function exitStatusFor(e: unknown): number {
  if (e instanceof MedvError) return EXIT_STATUS[e.code] ?? 1;
  return 1;
}

/** One line on stderr, never a stack trace (set MEDV_DEBUG=1 for one). */
export function reportError(e: unknown, json: boolean): void {
  if (process.env.MEDV_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  if (json) {
    const body = e instanceof MedvError ? e.toJSON() : { code: 'EINTERNAL', message: String((e as Error)?.message ?? e) };
    process.stdout.write(`${JSON.stringify({ error: body })}\n`);
  }
  const msg = e instanceof MedvError ? `medv: ${e.message} [${e.code}]` : `medv: ${(e as Error)?.message ?? String(e)}`;
  process.stderr.write(`${msg.split('\n')[0]}\n`);
}

export interface KeyOptions { passphraseFile?: string; hostKey?: string }

export function addKeyOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--passphrase-file <file>', 'read the passphrase from a file (else MEDV_PASSPHRASE)'))
    .addOption(new Option('--host-key <file>', 'use a host key file as the key-encryption key instead of a passphrase'));
}

/** A lazy KEK: asked for only when an encrypted file is actually met. */
export function kekFrom(opts: KeyOptions): () => KekSource {
  let cached: KekSource | undefined;
  return () => (cached ??= kekFromEnvironment({ passphraseFile: opts.passphraseFile, hostKeyFile: opts.hostKey }));
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

/** A progress bar on stderr when it is a terminal; silent otherwise (scripts, CI). */
export function progressBar(label: string): { update: (done: number, total: number) => void; stop: () => void } {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  // Loaded only when a bar is drawn: commands that never draw one start faster.
  const { SingleBar, Presets } = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
  const bar = new SingleBar({
    format: `${label} [{bar}] {percentage}% | {doneMiB}/{totalMiB} MiB`,
    stream: process.stderr,
    hideCursor: true,
  }, Presets.shades_classic);
  let started = false;
  return {
    update(done, total) {
      const mib = (n: number) => (n / 1048576).toFixed(1);
      if (!started) { bar.start(total, 0, { doneMiB: mib(0), totalMiB: mib(total) }); started = true; }
      bar.update(done, { doneMiB: mib(done), totalMiB: mib(total) });
    },
    stop() { if (started) bar.stop(); },
  };
}

export function formatBytes(n: number): string {
  return n < 1024 ? `${n} B` : `${humanBytes(n)} (${n} bytes)`;
}
