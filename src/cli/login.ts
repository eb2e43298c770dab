/** `medv login`: a password for an expiring token, kept 0600 for the other commands. Thin over src/client/api.ts. */
import * as fs from 'node:fs';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { MedvError, fromSystemError } from '../core/errors.js';
import { DEFAULT_HELP } from '../core/paths.js';
import { printJson, RAISES, raises } from './common.js';
import { parseDuration } from '../core/units.js';

type Opts = Record<string, unknown>;
const PASSWORD_MAX = 1024;

/** A password from a file (`-`: stdin), one trailing newline dropped. */
function passwordFromFile(file: string): string {
  let buf: Buffer;
  try {
    if (file === '-') buf = fs.readFileSync(0);
    else {
      const st = fs.statSync(file);
      if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'the password file is not a regular file', { file });
      if (st.size > PASSWORD_MAX + 2) throw new MedvError('EINVAL_ARG', `the password file is larger than ${PASSWORD_MAX} bytes`, { file });
      buf = fs.readFileSync(file);
    }
  } catch (e) {
    throw fromSystemError(e, file);
  }
  if (buf.length > PASSWORD_MAX + 2) throw new MedvError('EINVAL_ARG', `the password is longer than ${PASSWORD_MAX} bytes`);
  const pw = buf.toString('utf8').replace(/\r?\n$/, '');
  buf.fill(0);
  if (!pw) throw new MedvError('EINVAL_ARG', 'the password file is empty', { file });
  return pw;
}

/** Read a line from the terminal without echo (raw mode); Ctrl-C or Ctrl-D abandons. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    let pw = '';
    const done = (err?: MedvError) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err); else resolve(pw);
    };
    const onData = (d: Buffer) => {
      for (const ch of d.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003' || ch === '\u0004') return done(new MedvError('ENOKEY', 'no password given'));
        if (ch === '\u007f' || ch === '\b') pw = pw.slice(0, -1);
        else if (ch >= ' ') pw += ch;
        if (Buffer.byteLength(pw) > PASSWORD_MAX) return done(new MedvError('EINVAL_ARG', `the password is longer than ${PASSWORD_MAX} bytes`));
      }
    };
    // echo off before the prompt shows: nothing typed after it is echoed
    stdin.setRawMode(true);
    process.stderr.write(prompt);
    stdin.resume();
    stdin.on('data', onData);
  });
}

/** The password from --password-file, else the terminal (asked twice when `confirm`), else ENOKEY. */
export async function readPassword(file: string | undefined, prompt: string, confirm = false): Promise<string> {
  if (file !== undefined) return passwordFromFile(file);
  if (!process.stdin.isTTY) throw new MedvError('ENOKEY', 'no password: give --password-file FILE (or --password-file - to read stdin); stdin is not a terminal to ask on');
  const pw = await promptHidden(prompt);
  if (!pw) throw new MedvError('ENOKEY', 'no password given');
  if (confirm && (await promptHidden('Again: ')) !== pw) throw new MedvError('EINVAL_ARG', 'the two passwords differ');
  return pw;
}

export function loginCommand(): Command {
  return raises(new Command('login'), [...RAISES.server, 'ENOKEY', 'EINVAL_ARG', 'EINSECURE', 'EUNSAFE', 'ENOENT'], {
    EDENIED: 'wrong user name or password (the server does not say which)', ENOKEY: 'no password given',
    EINSECURE: 'a password that would go to a remote http:// server', EUNSAFE: 'an unsafe client root',
    ERATELIMIT: 'too many failed logins (wait for the time the message gives)', ENETWORK: 'network failure',
  })
    .description('log in to a medv server: exchanges a password for an expiring token kept in a 0600 file')
    .requiredOption('--server <url>', 'the medv server, e.g. https://console.example:8080')
    .requiredOption('--user <name>', 'user name')
    .option('--password-file <file>', 'read the password from a file (- for stdin); default: ask on the terminal without echo')
    .option('--client-root <dir>', `client repositories where the login is kept (default ${DEFAULT_HELP.clientRoot})`)
    .option('--token-out <file>', 'also write the token in the clear to FILE (0600) for scripts that call the API themselves')
    .option('--ca <file>', 'trust this CA (PEM) for an https:// server instead of the system\'s (pin your console\'s CA)')
    .option('--lifetime <duration>', 'ask for a token shorter-lived than the server\'s default: seconds, or with s, m, h, d')
    .option('--json', 'print {server, user, expires, clientRoot, credentials[, tokenFile]} (never the token)')
    .addHelpText('after', `
The login is kept in the client data repository: the server, the user and the CA in
data/Local/Config/Client.json, the token sealed under this client's host key in
data/Users/<user>/Credentials.dat. \`medv workspace\` uses it until it expires or you log in
again. The password is never printed or stored. Over plain HTTP the server accepts passwords only
from the same host (loopback); use https:// (with --ca naming the CA of a server whose certificate
is not signed by a system CA) from elsewhere.

Examples:
  medv login --server http://127.0.0.1:8080 --user alice
  medv login --server https://console.example --user alice --password-file ~/.medv-pw --json
  medv login --server https://10.0.0.5:8443 --ca console-ca.pem --user alice
  printf %s "$PW" | medv login --server https://console.example --user ci --password-file -`)
    .action(async (o: Opts) => {
      const { login, saveLogin, serverBase } = await import('../client/api.js');
      const { openClient, saveClientLogin } = await import('../workspace/client.js');
      const server = serverBase(String(o.server));
      const lifetime = o.lifetime !== undefined ? Math.ceil(parseDuration(String(o.lifetime), '--lifetime') / 1000) : undefined;
      const ctx = await openClient(o.clientRoot as string | undefined);
      const password = await readPassword(o.passwordFile as string | undefined, `Password for ${String(o.user)} at ${server}: `);
      const ca = o.ca !== undefined ? resolve(String(o.ca)) : undefined;
      const r = await login(server, String(o.user), password, lifetime, ca);
      await saveClientLogin(ctx, r, ca);
      const credentials = join(ctx.root.users, r.user, 'Credentials.dat');
      const tokenFile = o.tokenOut !== undefined ? String(o.tokenOut) : undefined;
      if (tokenFile) saveLogin(tokenFile, r);
      if (o.json) printJson({ server: r.server, user: r.user, expires: r.expires, clientRoot: ctx.root.root, credentials, ...(tokenFile ? { tokenFile } : {}) });
      else process.stdout.write(`logged in to ${r.server} as ${r.user} until ${r.expires}; login sealed in ${credentials}${tokenFile ? `; token in ${tokenFile}` : ''}\n`);
    });
}
