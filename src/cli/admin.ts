/** `medv admin`: users, policies and image keys on a medv server, and its clients' reports, with the admin token. Thin over src/client/api.ts. */
import * as fs from 'node:fs';
import { Command } from 'commander';
import { MedvError, fromSystemError } from '../core/errors.js';
import { DEFAULT_HELP, consoleKeyDir } from '../core/paths.js';
import { addKeyOptions, kekFrom, printJson, type KeyOptions } from './common.js';
import { readTokenFile } from './image-repo.js';
import { readPassword } from './login.js';

type Opts = Record<string, unknown>;
const POLICY_MAX = 64 * 1024;

function adminToken(o: Opts): string {
  const token = o.tokenFile ? readTokenFile(String(o.tokenFile)) : process.env.MEDV_ADMIN_TOKEN;
  if (!token) throw new MedvError('ENOKEY', 'no admin token: give --token-file (the server\'s <root>/admin.token) or set MEDV_ADMIN_TOKEN');
  return token;
}

function serverOptions(c: Command): Command {
  return c
    .requiredOption('--server <url>', 'the medv server, e.g. http://console:8080')
    .option('--token-file <file>', 'file holding the admin token (default $MEDV_ADMIN_TOKEN)')
    .option('--ca <file>', 'trust this CA (PEM) for an https:// server instead of the system\'s')
    .option('--json', 'print the result as JSON');
}

function readPolicyFile(file: string): unknown {
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'not a regular file', { file });
    if (st.size > POLICY_MAX) throw new MedvError('ETOOLARGE', `a policy document is at most ${POLICY_MAX} bytes`, { file });
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw fromSystemError(e, file);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new MedvError('EFORMAT', `not JSON: ${(e as Error).message}`, { file });
  }
}

export function adminCommand(): Command {
  const admin = new Command('admin').description('manage users, policies and image keys on a medv server, and see its clients (with its admin token)');
  const user = admin.command('user').description('user accounts');
  const policy = admin.command('policy').description('workspace policies (docs/policy.md)');
  const imageKeys = admin.command('image-keys').description('image keys the server releases to entitled clients');

  serverOptions(user.command('add <user>')
    .description('create a user (the password is hashed with Argon2id by the server)')
    .option('--password-file <file>', 'read the password from a file (- for stdin); default: ask twice on the terminal')
    .option('--group <group>', 'add the user to a group (created if missing); repeat for several', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .addHelpText('after', `
Names are 1 to 64 letters, digits, '.', '_', '@' or '-'; passwords 8 to 1024 bytes.
Exit status: 0 created; 2 bad name or password; 3 the user exists; 4 wrong admin token; 10 network.

Examples:
  medv admin user add alice --group finance --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin user add bob --password-file bob.pw --group lab --group finance --server https://console.example --json`))
    .action(async (name: string, o: Opts) => {
      const token = adminToken(o);
      const password = await readPassword(o.passwordFile as string | undefined, `Password for ${name}: `, true);
      const { apiRequest } = await import('../client/api.js');
      const r = await apiRequest<{ user: string; groups: string[]; created: string }>(String(o.server), 'POST', '/api/admin/users', { token, ca: o.ca as string | undefined, body: { user: name, password, groups: o.group } });
      if (o.json) printJson(r);
      else process.stdout.write(`user ${r.user} created${r.groups.length ? ` in ${r.groups.join(', ')}` : ''}\n`);
    });

  serverOptions(user.command('list')
    .description('list users and their groups')
    .addHelpText('after', `
Examples:
  medv admin user list --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  MEDV_ADMIN_TOKEN=… medv admin user list --server https://console.example --json`))
    .action(async (o: Opts) => {
      const token = adminToken(o);
      const { apiRequest } = await import('../client/api.js');
      const r = await apiRequest<{ users: { user: string; groups: string[]; created: string; disabled: boolean }[] }>(String(o.server), 'GET', '/api/admin/users', { token, ca: o.ca as string | undefined });
      if (o.json) { printJson(r); return; }
      for (const u of r.users) process.stdout.write(`${u.user}\t${u.groups.join(',') || '-'}\t${u.created}${u.disabled ? '\tdisabled' : ''}\n`);
    });

  serverOptions(policy.command('publish <file>')
    .description('publish a policy document (JSON); each publish of a name makes its next version')
    .addHelpText('after', `
The document is checked against docs/policy.schema.json by the server; a refusal names the bad
field as a JSON pointer, e.g. "policy field /workspaces/0/memory does not match any allowed form".
Every version is kept; users see the newest version of each policy that names them or their groups.
Exit status: 0 published; 5 the document is not JSON or fails the schema; 4 wrong admin token.

Examples:
  medv admin policy publish finance.json --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin policy publish lab.json --server https://console.example --json`))
    .action(async (file: string, o: Opts) => {
      const token = adminToken(o);
      const doc = readPolicyFile(file);
      const { apiRequest } = await import('../client/api.js');
      const r = await apiRequest<{ name: string; version: number }>(String(o.server), 'POST', '/api/admin/policies', { token, ca: o.ca as string | undefined, body: doc });
      if (o.json) printJson(r);
      else process.stdout.write(`policy ${r.name} version ${r.version} published\n`);
    });

  serverOptions(policy.command('list')
    .description('list published policies (every version)')
    .addHelpText('after', `
Examples:
  medv admin policy list --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token --json`))
    .action(async (o: Opts) => {
      const token = adminToken(o);
      const { apiRequest } = await import('../client/api.js');
      const r = await apiRequest<{ policies: { name: string; version: number; published: string; publisher: string }[] }>(String(o.server), 'GET', '/api/admin/policies', { token, ca: o.ca as string | undefined });
      if (o.json) { printJson(r); return; }
      for (const p of r.policies) process.stdout.write(`${p.name}\tv${p.version}\t${p.published}\t${p.publisher}\n`);
    });
  serverOptions(addKeyOptions(imageKeys.command('publish <name>'))
    .description('publish the keys of image NAME from the console\'s key folder to the server')
    .option('--keys <dir>', `the console key folder (default ${DEFAULT_HELP.keys})`)
    .addHelpText('after', `
Sends the image's content key (images/NAME.key.enc), the repository key (repository.key.enc)
and the trusted signers (console.sign.pub and trusted/*.pub) to the server, which keeps them
wrapped under its server key and releases them, sealed to each client's own key, to the users a
policy entitles to a workspace of this image. The key files are unwrapped with MEDV_PASSPHRASE,
--passphrase-file or --host-key, as medv image pack wrapped them. Publishing again replaces them.
Exit status: 0 published; 4 no such keys, wrong passphrase or wrong admin token; 10 network.

Examples:
  medv admin image-keys publish win10 --keys /srv/medv/keys --passphrase-file console.pass --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin image-keys publish lab --keys keys --host-key console.key --server https://console.example --ca ca.pem --json`))
    .action(async (name: string, o: Opts & KeyOptions) => {
      const token = adminToken(o);
      const { openImageKeys } = await import('../pack/index.js');
      const keys = await openImageKeys((o.keys as string | undefined) ?? consoleKeyDir(), name, kekFrom(o));
      try {
        const { publishImageKeys } = await import('../client/api.js');
        const { content, repository } = keys.dataKeys;
        const r = await publishImageKeys(String(o.server), token, { image: name, content, repository, signers: keys.trusted }, o.ca as string | undefined);
        const out = { image: name, imageId: keys.imageId.toString('hex'), signers: keys.trusted.map((s) => s.toString('hex')), replaced: r.replaced };
        if (o.json) printJson(out);
        else process.stdout.write(`keys of image ${name} (id ${out.imageId}, ${out.signers.length} signer${out.signers.length === 1 ? '' : 's'}) ${r.replaced ? 'replaced' : 'published'}\n`);
      } finally {
        keys.dispose();
      }
    });

  serverOptions(admin.command('clients')
    .description('what each client last reported about its workspaces')
    .addHelpText('after', `
One row per client, user and workspace: the version it runs, its state (running, stopped,
suspended, updating, failed, offline), how long ago the client reported it, and its last error.

Examples:
  medv admin clients --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  MEDV_ADMIN_TOKEN=… medv admin clients --server https://console.example --json`))
    .action(async (o: Opts) => {
      const token = adminToken(o);
      const { listClients } = await import('../client/api.js');
      const clients = await listClients(String(o.server), token, o.ca as string | undefined);
      if (o.json) { printJson({ clients }); return; }
      const rows = [['CLIENT', 'USER', 'WORKSPACE', 'VERSION', 'STATE', 'AGE', 'LAST ERROR'],
        ...clients.map((c) => [c.client, c.user, c.workspace, c.version === null ? '-' : String(c.version), c.state, age(Date.now() - Date.parse(c.at)), (c.lastError ?? '').replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 120)])];
      const width = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      for (const r of rows) process.stdout.write(`${r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(width[i]))).join('  ').trimEnd()}\n`);
    });
  return admin;
}

/** 42s, 5m, 3h, 2d (a report from the future: 0s). */
function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
