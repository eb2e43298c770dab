/** `medv admin`: users, policies and image keys on a medv server, its clients' reports and its audit log, with the admin token (or an administrator's login). Thin over src/client/api.ts. */
import * as fs from 'node:fs';
import { Command } from 'commander';
import { MedvError, fromSystemError } from '../core/errors.js';
import { DEFAULT_HELP, consoleKeyDir } from '../core/paths.js';
import { addKeyOptions, kekFrom, printJson, RAISES, raises, type KeyOptions } from './common.js';
import type { ErrorCode } from '../core/errors.js';
import { readTokenFile } from './image-repo.js';
import { readPassword } from './login.js';
import { addConsoleCommands } from './admin-console.js';

type Opts = Record<string, unknown>;
const POLICY_MAX = 64 * 1024;

export function adminToken(o: Opts): string {
  const token = o.tokenFile ? readTokenFile(String(o.tokenFile)) : process.env.MEDV_ADMIN_TOKEN;
  if (!token) throw new MedvError('ENOKEY', 'no admin token: give --token-file (the server\'s <root>/admin.token) or set MEDV_ADMIN_TOKEN');
  return token;
}

/** What every admin command can meet: the token, the server, the network. */
const ADMIN_NOTES = { ENOKEY: 'no admin token', EDENIED: 'wrong admin token', EFORBIDDEN: 'not an administrator' };

/** The options of a command that calls the server, and the codes it raises (beyond those of every admin command). */
export function serverOptions(c: Command, codes: ErrorCode[] = [], notes: Partial<Record<ErrorCode, string>> = {}): Command {
  return raises(c, [...RAISES.server, 'ENOKEY', 'EINSECURE', 'EFORMAT', ...codes], { ...ADMIN_NOTES, EFORMAT: 'the token file does not hold one token', ...notes })
    .requiredOption('--server <url>', 'the medv server, e.g. http://console:8080')
    .option('--token-file <file>', 'file holding the admin token (default $MEDV_ADMIN_TOKEN)')
    .option('--ca <file>', 'trust this CA (PEM) for an https:// server instead of the system\'s')
    .option('--json', 'print the result as JSON');
}

export function readPolicyFile(file: string): unknown {
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
    .option('--admin', 'an administrator: may use medv admin (and the console) with their own login instead of the admin token')
    .addHelpText('after', `
Names are 1 to 64 letters, digits, '.', '_', '@' or '-'; passwords 8 to 1024 bytes.

Examples:
  medv admin user add alice --group finance --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin user add root-ann --admin --password-file ann.pw --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin user add bob --password-file bob.pw --group lab --group finance --server https://console.example --json`), ['EINVAL_ARG', 'EEXIST', 'ENOENT'], { EINVAL_ARG: 'bad name or password', EEXIST: 'the user exists', ENOENT: 'no such password file' })
    .action(async (name: string, o: Opts) => {
      const token = adminToken(o);
      const password = await readPassword(o.passwordFile as string | undefined, `Password for ${name}: `, true);
      const { apiRequest } = await import('../client/api.js');
      const r = await apiRequest<UserRow>(String(o.server), 'POST', '/api/admin/users', { token, ca: o.ca as string | undefined, body: { user: name, password, groups: o.group, role: o.admin ? 'admin' : 'user' } });
      if (o.json) printJson(r);
      else process.stdout.write(`${r.role === 'admin' ? 'administrator' : 'user'} ${r.user} created${r.groups.length ? ` in ${r.groups.join(', ')}` : ''}\n`);
    });

  const userPath = (name: string, verb = '') => `/api/admin/users/${encodeURIComponent(name)}${verb}`;
  const NO_USER: [ErrorCode[], Partial<Record<ErrorCode, string>>] = [['ENOENT'], { ENOENT: 'no such user' }];

  serverOptions(user.command('disable <user>')
    .description('disable an account: its tokens stop working at once and it cannot log in (until enabled)')
    .addHelpText('after', `
Nothing is deleted: groups, tokens (refused while disabled), clients and reports stay; \`enable\`
undoes it (tokens that have not expired work again: revoke them too if the account was misused).

Examples:
  medv admin user disable bob --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin user disable bob --server https://console.example --json`), ...NO_USER)
    .action(async (name: string, o: Opts) => {
      const r = await adminCall<UserRow>(o, 'POST', userPath(name, '/disable'));
      if (o.json) printJson(r); else process.stdout.write(`user ${r.user} disabled\n`);
    });

  serverOptions(user.command('enable <user>')
    .description('enable a disabled account again')
    .addHelpText('after', `

Example:
  medv admin user enable bob --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token`), ...NO_USER)
    .action(async (name: string, o: Opts) => {
      const r = await adminCall<UserRow>(o, 'POST', userPath(name, '/enable'));
      if (o.json) printJson(r); else process.stdout.write(`user ${r.user} enabled\n`);
    });

  serverOptions(user.command('delete <user>')
    .description('delete an account with its group memberships, tokens, clients and their reports')
    .addHelpText('after', `
What goes: the account, its group memberships (the groups stay for their other members and the
policies that name them), its tokens, the clients it registered and the reports those clients sent
as this user. The audit log keeps what the user did. A deleted name can be added again later: it
is a new account (policies that name the user directly apply to it).

Examples:
  medv admin user delete bob --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin user delete bob --server https://console.example --json`), ...NO_USER)
    .action(async (name: string, o: Opts) => {
      const r = await adminCall<{ user: string; groups: string[]; tokens: number; clients: number; reports: number }>(o, 'DELETE', userPath(name));
      if (o.json) printJson(r);
      else process.stdout.write(`user ${r.user} deleted (${r.groups.length} group membership${r.groups.length === 1 ? '' : 's'}, ${r.tokens} token${r.tokens === 1 ? '' : 's'}, ${r.clients} client${r.clients === 1 ? '' : 's'}, ${r.reports} report${r.reports === 1 ? '' : 's'})\n`);
    });

  serverOptions(user.command('passwd <user>')
    .description('set a new password for an account; every token it holds is revoked')
    .option('--password-file <file>', 'read the new password from a file (- for stdin); default: ask twice on the terminal')
    .addHelpText('after', `
The user logs in again with the new password (medv login) on every client.

Examples:
  medv admin user passwd bob --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin user passwd bob --password-file new.pw --server https://console.example --json`), ['ENOENT', 'EINVAL_ARG'], { ENOENT: 'no such user', EINVAL_ARG: 'the password is not 8 to 1024 bytes' })
    .action(async (name: string, o: Opts) => {
      const password = await readPassword(o.passwordFile as string | undefined, `New password for ${name}: `, true);
      const r = await adminCall<{ user: string; tokensRevoked: number }>(o, 'POST', userPath(name, '/password'), { password });
      if (o.json) printJson(r); else process.stdout.write(`password of ${r.user} changed; ${r.tokensRevoked} token${r.tokensRevoked === 1 ? '' : 's'} revoked\n`);
    });

  serverOptions(user.command('revoke <user>')
    .description('revoke every token of an account (it stays enabled: the user logs in again)')
    .addHelpText('after', `

Example:
  medv admin user revoke bob --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token --json`), ...NO_USER)
    .action(async (name: string, o: Opts) => {
      const r = await adminCall<{ user: string; tokensRevoked: number }>(o, 'POST', userPath(name, '/revoke'));
      if (o.json) printJson(r); else process.stdout.write(`${r.tokensRevoked} token${r.tokensRevoked === 1 ? '' : 's'} of ${r.user} revoked\n`);
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
      const r = await apiRequest<{ users: UserRow[] }>(String(o.server), 'GET', '/api/admin/users', { token, ca: o.ca as string | undefined });
      if (o.json) { printJson(r); return; }
      for (const u of r.users) process.stdout.write(`${u.user}\t${u.groups.join(',') || '-'}\t${u.created}\t${u.role}${u.disabled ? '\tdisabled' : ''}\n`);
    });

  serverOptions(policy.command('publish <file>')
    .description('publish a policy document (JSON); each publish of a name makes its next version')
    .addHelpText('after', `
The document is checked against docs/policy.schema.json by the server; a refusal names the bad
field as a JSON pointer, e.g. "policy field /workspaces/0/memory does not match any allowed form".
Every version is kept; users see the newest version of each policy that names them or their groups.

Examples:
  medv admin policy publish finance.json --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin policy publish lab.json --server https://console.example --json`), ['ENOENT', 'EINVAL_ARG', 'EPOLICY', 'ETOOLARGE'], { EFORMAT: 'the document is not JSON', EPOLICY: 'the document fails the schema (the message names the field)' })
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

Examples:
  medv admin image-keys publish win10 --keys /srv/medv/keys --passphrase-file console.pass --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin image-keys publish lab --keys keys --host-key console.key --server https://console.example --ca ca.pem --json`), [...RAISES.keys, 'ENOENT'], { ENOENT: 'no keys of that image in the key folder', EBADKEY: 'wrong passphrase or host key' })
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
    .description('what each client last reported about its workspaces, a page at a time')
    .option('--limit <n>', 'rows per page (1 to 1000)', '100')
    .option('--after <cursor>', 'the page after this cursor (printed as "next" by the page before)')
    .option('--all', 'every page, one after the other')
    .option('--client <id>', 'only this client')
    .option('--user <name>', 'only this user\'s')
    .option('--workspace <name>', 'only this workspace')
    .option('--state <state>', 'only this state (running, stopped, suspended, updating, failed, offline)')
    .option('--image <name>', 'only workspaces granted this image')
    .option('--history', 'every report received (the last 200 of each client, user and workspace), newest first, instead of the latest of each')
    .option('--csv', 'print every matching row as CSV (spreadsheet-safe) instead of a table')
    .addHelpText('after', `
One row per client, user and workspace, in that order: the version it runs, its state (running,
stopped, suspended, updating, failed, offline), how long ago the client reported it, and its last
error. A client reports only after a grant for its user, only for workspaces the user is entitled
to, and a user keeps at most --max-reports-per-user rows (medv serve).
When more rows follow, the last line (or "next" in --json) is the cursor for --after.
With --history: the reports themselves, newest first (client time), for --client, --user and
--workspace; --limit rows from --offset (default 0).

Examples:
  medv admin clients --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin clients --state failed --csv --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token > failed.csv
  medv admin clients --history --client 3fe07c13070b3e54 --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin clients --all --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  MEDV_ADMIN_TOKEN=… medv admin clients --limit 500 --after eyJ… --server https://console.example --json`), ['EINVAL_ARG'], { EINVAL_ARG: 'bad --limit, --after, --offset or filter' })
    .option('--offset <n>', 'with --history: the first row to show', '0')
    .action(async (o: Opts) => {
      const filters = new URLSearchParams();
      for (const k of ['client', 'user', 'workspace', ...(o.history ? [] : ['state', 'image'])]) if (o[k] !== undefined) filters.set(k, String(o[k]));
      if (o.csv) { await printCsv(o, `/api/admin/clients${o.history ? '/history' : ''}?${filters}&format=csv`); return; }
      if (o.history) {
        const q = new URLSearchParams(filters);
        q.set('limit', String(o.limit));
        q.set('offset', String(o.offset));
        const page = await adminCall<{ reports: HistoryRow[]; total: number; offset: number }>(o, 'GET', `/api/admin/clients/history?${q}`);
        if (o.json) { printJson(page); return; }
        table([['REPORTED', 'RECEIVED', 'CLIENT', 'USER', 'WORKSPACE', 'VERSION', 'STATE', 'ERROR'],
          ...page.reports.map((r) => [r.at, r.received, r.client, r.user, r.workspace, r.version === null ? '-' : String(r.version), r.state, printable(r.lastError ?? '').slice(0, 120)])]);
        if (page.offset + page.reports.length < page.total) process.stdout.write(`${page.total - page.offset - page.reports.length} more: --offset ${page.offset + page.reports.length}\n`);
        return;
      }
      const rows: string[][] = [['CLIENT', 'USER', 'WORKSPACE', 'VERSION', 'STATE', 'AGE', 'LAST ERROR']];
      const all: ClientRow[] = [];
      let after = o.after as string | undefined;
      let next: string | null;
      do {
        const q = new URLSearchParams(filters);
        q.set('limit', String(o.limit));
        if (after) q.set('after', after);
        const page = await adminCall<{ clients: ClientRow[]; next: string | null }>(o, 'GET', `/api/admin/clients?${q}`);
        // a report without an error has no lastError (as the client library gives it)
        all.push(...page.clients.map((c) => (c.lastError === null ? (({ lastError: _, ...rest }) => rest)(c) : c)));
        next = page.next;
        after = next ?? undefined;
      } while (o.all && next);
      if (o.json) { printJson({ clients: all, next }); return; }
      rows.push(...all.map((c) => [c.client, c.user, c.workspace, c.version === null ? '-' : String(c.version), c.state, age(Date.now() - Date.parse(c.at)), printable(c.lastError ?? '').slice(0, 120)]));
      table(rows);
      if (next) process.stdout.write(`more: --after ${next}\n`);
    });

  serverOptions(admin.command('audit')
    .description('the audit log, newest first, a page at a time')
    .option('--limit <n>', 'entries per page (1 to 1000)', '100')
    .option('--before <cursor>', 'the page after this cursor (printed as "next" by the page before)')
    .option('--since <time>', 'only entries (or repeats) at or after this time (2026-12-01, 2026-12-01T10:30, or ISO 8601 with a zone; UTC)')
    .option('--until <time>', 'only entries before this time (a bare date includes that day)')
    .option('--action <action>', 'only this action (login, login.fail, login.limited, logout, user.add, user.disable, user.enable, user.delete, user.passwd, user.revoke, user.role, user.groups, policy.publish, policy.unpublish, keys.publish, keys.release, keys.deny, reports.refused, admin.denied, client.lock, client.wipe, client.revoke, client.unlock, client.wiped, client.drop, image.prune, image.test), or a family: login.*')
    .option('--user <name>', 'only entries whose actor is this user (or "admin", "anonymous")')
    .option('--about <name>', 'only entries whose actor or target is this user')
    .option('--csv', 'print every matching entry as CSV (spreadsheet-safe) instead of a page')
    .addHelpText('after', `
Each entry: when, how many times (repeated refusals from one address within 10 minutes are one
entry with a count and the time of the last), the actor, the action, its target, the client's
address and details (never a password, token or key). The server keeps entries for
--audit-retention and at most --audit-max-rows of them.

Examples:
  medv admin audit --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin audit --action login.fail --since 2026-12-01T00:00:00Z --server https://console.example --json
  medv admin audit --action client.* --since 2026-12-01 --csv --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token > orders.csv`), ['EINVAL_ARG'])
    .action(async (o: Opts) => {
      const q = new URLSearchParams({ limit: String(o.limit) });
      for (const [k, v] of [['before', o.before], ['since', o.since], ['until', o.until], ['action', o.action], ['actor', o.user], ['user', o.about]] as const) if (v !== undefined) q.set(k, String(v));
      if (o.csv) { q.delete('limit'); q.delete('before'); await printCsv(o, `/api/admin/audit?${q}&format=csv`); return; }
      const page = await adminCall<{ entries: AuditRow[]; next: string | null }>(o, 'GET', `/api/admin/audit?${q}`);
      if (o.json) { printJson(page); return; }
      table([['TIME', 'COUNT', 'ACTOR', 'ACTION', 'TARGET', 'ADDRESS', 'DETAIL'],
        ...page.entries.map((e) => [e.time, e.count > 1 ? `${e.count} (last ${e.last})` : '1', e.actor, e.action, e.target, e.address || '-', printable(JSON.stringify(e.detail)).slice(0, 160)])]);
      if (page.next) process.stdout.write(`more: --before ${page.next}\n`);
    });
  addConsoleCommands(admin, { user, policy });
  return admin;
}

interface HistoryRow { client: string; user: string; workspace: string; version: number | null; state: string; lastError: string | null; at: string; received: string }

/** A CSV export of the server, as it is, on stdout. */
export async function printCsv(o: Opts, path: string): Promise<void> {
  const { apiBytes } = await import('../client/api.js');
  process.stdout.write((await apiBytes(String(o.server), path, { token: adminToken(o), ca: o.ca as string | undefined })).bytes);
}

interface UserRow { user: string; groups: string[]; created: string; disabled: boolean; role: 'admin' | 'user' }
interface ClientRow { client: string; user: string; workspace: string; version: number | null; state: string; lastError?: string | null; at: string; received: string }
interface AuditRow { time: string; last: string; count: number; actor: string; action: string; target: string; address: string; detail: unknown }

/** One admin request with the options' server, token and CA. */
export async function adminCall<T>(o: Opts, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const token = adminToken(o);
  const { apiRequest } = await import('../client/api.js');
  return apiRequest<T>(String(o.server), method, path, { token, ca: o.ca as string | undefined, ...(body !== undefined ? { body } : {}) });
}

/** Control characters (from reports, names) never reach the terminal. */
export const printable = (s: string) => s.replace(/[\x00-\x1f\x7f]/g, ' ');

/** Rows padded to columns, the last column as it is. */
export function table(rows: string[][]): void {
  const width = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) process.stdout.write(`${r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(width[i]))).join('  ').trimEnd()}\n`);
}

/** 42s, 5m, 3h, 2d (a report from the future: 0s). */
export function age(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
