/** `medv logs`: decrypt and print the device log (src/repo/devlog.ts). */
import { Command } from 'commander';
import { DEFAULT_HELP } from '../core/paths.js';
import { RAISES, raises } from './common.js';

type Opts = Record<string, unknown>;

/** Control characters shown escaped: a log record never drives the terminal. */
function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function fieldValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=\\]+$/.test(v) ? printable(v) : printable(JSON.stringify(v));
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return printable(JSON.stringify(v) ?? String(v));
}

/** `2026-12-02T12:00:00.000Z info  message key=value` */
function formatRecord(r: { at: string; level: string; message: string; fields?: Record<string, unknown> }): string {
  const fields = r.fields ? Object.entries(r.fields).map(([k, v]) => ` ${printable(k)}=${fieldValue(v)}`).join('') : '';
  return `${printable(r.at)} ${printable(r.level).padEnd(5)} ${printable(r.message)}${fields}`;
}

export function logsCommand(): Command {
  return raises(new Command('logs'), ['EUNSAFE', 'EINSECURE', 'ENOENT', 'EFORMAT', ...RAISES.keys], { EUNSAFE: 'the host key or a folder is unsafe (readable by others, a symlink)', EFORMAT: 'a damaged host key' })
    .description('print the device log (decrypted with the host key)')
    .option('--follow', 'keep printing new records, across rotations, until interrupted (Ctrl-C)')
    .option('--json', 'one JSON object per line: {at, level, message, fields}')
    .option('--client-root <dir>', `the client repositories root (default ${DEFAULT_HELP.clientRoot})`)
    .addHelpText('after', `
The device log is <client root>/data/Local/Logs/devlog.log (rotated to devlog.log.1 … .4 at 1 MiB).
Every record is encrypted and authenticated on its own with a key derived from the host key,
<client root>/data/Local/host.key (0600), so only someone who can read that key can read the log,
and a changed record is noticed. Records print oldest first; a damaged record prints as one warn
line naming the file and offset, and the rest still print.

An empty log prints nothing (exit 0).

Examples:
  medv logs
  medv logs --follow
  medv logs --json | jq -r 'select(.level == "error") | .message'
  sudo medv logs --client-root /var/lib/medv`)
    .action(async (o: Opts) => {
      const { openClientRoot } = await import('../repo/paths.js');
      const { clientRootPath } = await import('../core/paths.js');
      const { clientHostKey } = await import('../repo/hostkey.js');
      const { readDevLog } = await import('../repo/devlog.js');
      const c = openClientRoot(clientRootPath(o.clientRoot as string | undefined));
      const kek = await clientHostKey(c);
      const ac = new AbortController();
      const onSignal = () => ac.abort();
      if (o.follow) { process.on('SIGINT', onSignal); process.on('SIGTERM', onSignal); }
      // A reader that went away (`medv logs | head`) ends the command quietly.
      const onStdoutError = () => ac.abort();
      process.stdout.on('error', onStdoutError);
      try {
        for await (const r of readDevLog(c, kek, { follow: Boolean(o.follow), signal: ac.signal })) {
          if (ac.signal.aborted) break;
          const line = o.json ? JSON.stringify(r) : formatRecord(r);
          if (!process.stdout.write(`${line}\n`)) await new Promise((res) => { process.stdout.once('drain', res); ac.signal.addEventListener('abort', res, { once: true }); });
        }
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
