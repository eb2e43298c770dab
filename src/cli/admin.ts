/** `medv admin`: users and policies on a medv server, with the admin token. Thin over src/server/api-client.ts. */
import * as fs from 'node:fs';
import { Command } from 'commander';
import { MedvError, fromSystemError } from '../errors.js';
import { printJson } from './common.js';
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
  const admin = new Command('admin').description('manage users and policies on a medv server (with its admin token)');
  const user = admin.command('user').description('user accounts');
  const policy = admin.command('policy').description('workspace policies (docs/policy.md)');

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
      const { apiRequest } = await import('../server/api-client.js');
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
      const { apiRequest } = await import('../server/api-client.js');
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
      const { apiRequest } = await import('../server/api-client.js');
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
      const { apiRequest } = await import('../server/api-client.js');
      const r = await apiRequest<{ policies: { name: string; version: number; published: string; publisher: string }[] }>(String(o.server), 'GET', '/api/admin/policies', { token, ca: o.ca as string | undefined });
      if (o.json) { printJson(r); return; }
      for (const p of r.policies) process.stdout.write(`${p.name}\tv${p.version}\t${p.published}\t${p.publisher}\n`);
    });
  return admin;
}
