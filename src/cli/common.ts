/**
 * Shared CLI plumbing: the one exit-status table (what the code returns and what every `--help`
 * prints), the shape every leaf command has (`--json`, its exit statuses), key options, JSON
 * output, progress bars. How a command uses them: src/cli/README.md.
 */
import { Command, Option } from 'commander';
import { createRequire } from 'node:module';
import { MedvError, type ErrorCode } from '../core/errors.js';
import { humanBytes } from '../core/units.js';
import { kekFromEnvironment, type KekSource } from '../crypto/kekenv.js';
import { EXIT_STATUS } from './report.js';

export { EXIT_STATUS, exitStatusFor, printJson, printResult, reportError } from './report.js';

/** Exit status of `disk check` when the disk is damaged: a result, not an error. */
export const EXIT_DAMAGED = 8;
/** Exit status of a usage error (unknown option, missing argument), as for EINVAL_ARG. */
export const EXIT_USAGE = 2;

/** What each exit status means, in `--help` ("Exit status:"), README and docs alike. */
export const EXIT_MEANING: Readonly<Record<number, string>> = {
  0: 'success',
  1: 'any other failure (MEDV_DEBUG=1 prints where)',
  2: 'bad option or argument',
  3: 'a file is missing, or an output exists',
  4: 'a key, passphrase, login or token: missing, wrong, refused or unsafe',
  5: 'damaged or hostile input',
  6: 'read-only, or permission denied',
  7: 'unsupported',
  8: 'the disk is damaged',
  9: 'in use by another process (named in the message)',
  10: 'network or server failure',
  11: 'the disk of a suspended VM',
  12: 'the image needs a newer medv',
  13: 'the offline allowance is used up',
  14: 'expired',
  15: 'locked by an administrator (the reason is in the message)',
  16: 'wiped by an administrator: its disks and keys are gone',
  17: 'timed out (medv vm wait --timeout)',
};

/** Codes, grouped as commands raise them (a command lists the groups it can meet). */
export const RAISES = {
  /** A disk or key file named on the command line, and outputs never written over. */
  files: ['ENOENT', 'EEXIST', 'EREADONLY'],
  /** Keys of an encrypted file: passphrase, host key, key file. */
  keys: ['ENOKEY', 'EBADKEY', 'ECRYPTO', 'EINSECURE'],
  /** A disk file that fails its checks. */
  damaged: ['EFORMAT', 'ECHECKSUM', 'ETRUNCATED', 'EVERSION', 'ECORRUPT', 'EPARENT', 'EAUTH'],
  /** Opening a disk for writing: another holder, a suspended VM's disk, a feature we lack. */
  disk: ['EBUSY', 'ESAVEDSTATE', 'EUNSUPPORTED'],
  /** A medv server or repository over HTTP. */
  server: ['ENETWORK', 'EHTTP', 'EBADREPLY', 'EDENIED', 'EFORBIDDEN', 'ERATELIMIT', 'ETOOLARGE'],
} as const satisfies Record<string, readonly ErrorCode[]>;

interface ExitSpec { codes: readonly ErrorCode[]; notes: Partial<Record<ErrorCode | number, string>> }
const EXIT_SPECS = new WeakMap<Command, ExitSpec>();

/**
 * Declare the error codes a leaf command raises on purpose (its `--help` lists their exit statuses,
 * and tests check that every status a command returns is one its help lists). `notes` says what a
 * code (or a result status such as EXIT_DAMAGED) means for this command, instead of the table's words.
 */
export function raises(cmd: Command, codes: readonly ErrorCode[], notes: Partial<Record<ErrorCode | number, string>> = {}): Command {
  EXIT_SPECS.set(cmd, { codes: [...new Set(codes)], notes });
  return cmd;
}

const PASS_THROUGH = new WeakMap<Command, string>();

/**
 * Declare that a command exits with a status of something it runs (`medv workspace run`: the
 * application's), any of 0-255; `what` says so in its help, above medv's own statuses.
 */
export function passesStatus(cmd: Command, what: string): Command {
  PASS_THROUGH.set(cmd, what);
  return cmd;
}

/** Does `cmd` exit with the status of what it runs (passesStatus)? Then any of 0-255 is its to return. */
export function passesThrough(cmd: Command): boolean {
  return PASS_THROUGH.has(cmd);
}

/** The statuses a command can exit with when it fails itself: 0, 1, 2 and those of its declared codes (all of them when it declared none). */
export function exitStatuses(cmd: Command): number[] {
  const spec = EXIT_SPECS.get(cmd);
  if (!spec) return Object.keys(EXIT_MEANING).map(Number);
  const s = new Set([0, 1, EXIT_USAGE]);
  for (const c of spec.codes) s.add(EXIT_STATUS[c] ?? 1);
  for (const k of Object.keys(spec.notes)) if (/^\d+$/.test(k)) s.add(Number(k));
  return [...s].sort((a, b) => a - b);
}

/** The "Exit status:" block of a command's help, generated from EXIT_STATUS and EXIT_MEANING. */
export function exitHelp(cmd: Command): string {
  const spec = EXIT_SPECS.get(cmd);
  const rows = exitStatuses(cmd).map((status) => {
    const codes = spec ? spec.codes.filter((c) => (EXIT_STATUS[c] ?? 1) === status) : (Object.keys(EXIT_STATUS) as ErrorCode[]).filter((c) => EXIT_STATUS[c] === status);
    // Codes grouped by what they mean here: the command's note, else the table's words for the status.
    const groups = new Map<string, ErrorCode[]>();
    for (const c of codes) {
      const what = spec?.notes[c] ?? spec?.notes[status] ?? EXIT_MEANING[status];
      groups.set(what, [...(groups.get(what) ?? []), c]);
    }
    const parts = [...groups].map(([what, cs]) => `${what} (${cs.join(', ')})`);
    if (!parts.length) parts.push(spec?.notes[status] ?? EXIT_MEANING[status]);
    return wrap(parts.join('; '), `  ${String(status).padEnd(4)}`, ' '.repeat(6));
  });
  const passed = PASS_THROUGH.get(cmd);
  return `${passed ? `\nExit status: ${passed}\nWhen medv itself fails:` : `\nExit status${spec ? '' : ' (every status medv uses)'}:`}\n${rows.join('\n')}\nWith --json the result is one JSON value on stdout, and an error {"error":{"code","message","data"}}\n(with its one line on stderr too).`;
}

/** `text` in lines of at most 100 columns, the first after `first`, the others after `rest`. */
function wrap(text: string, first: string, rest: string): string {
  const lines: string[] = [];
  let line = first;
  for (const word of text.split(' ')) {
    if (line.length + word.length + 1 > 100 && line.trim()) { lines.push(line.trimEnd()); line = rest; }
    line += `${word} `;
  }
  lines.push(line.trimEnd());
  return lines.join('\n');
}

/** Every leaf (a command without subcommands) under `c`, with its path (`disk undo create`). */
export function leafCommands(c: Command, path: string[] = []): { path: string[]; cmd: Command }[] {
  if (c.commands.length === 0) return [{ path, cmd: c }];
  return c.commands.flatMap((sub) => leafCommands(sub, [...path, sub.name()]));
}

/** Gives every leaf its generated exit-status help, after the help text the command wrote itself. */
export function finishLeaves(program: Command): void {
  for (const { cmd } of leafCommands(program)) cmd.addHelpText('after', () => exitHelp(cmd));
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
