/**
 * `medv admin` for what the web console does beyond accounts (one command per console action):
 * user role and groups; policy diff, preview and unpublish; image list, test and prune on the
 * server; client lock, unlock, wipe and revoke. Each is one /api/admin/ call (docs/api.md), with
 * --json like every command. Registered by admin.ts.
 */
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { MedvError } from '../core/errors.js';
import { printJson } from './common.js';
import { adminCall, adminToken, age, printable, serverOptions, table } from './admin.js';

type Opts = Record<string, unknown>;

/** The options and the codes (beyond every admin command's) of the console's verbs: their help lists the exit statuses. */
const consoleOptions = (c: Command): Command =>
  serverOptions(c, ['EINVAL_ARG', 'ENOENT'], { EINVAL_ARG: 'bad argument', ENOENT: 'no such user, policy, image or version' });
const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
const bytes = (n: number) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : n < 1073741824 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 1073741824).toFixed(2)} GiB`);
const q = (o: Record<string, string | number | undefined>) => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)])).toString();

interface Preview {
  name: string; current: number | null; next: number;
  users: { gained: string[]; lost: string[]; kept: number };
  workspaces: { gained: { user: string; workspace: string }[]; lost: { user: string; workspace: string }[]; changed: { user: string; workspace: string }[] };
  clients: { losing: { client: string; user: string; workspace: string }[]; changing: { client: string; user: string; workspace: string }[] };
}

function printPreview(p: Preview, verb: string): void {
  process.stdout.write(`${verb} policy ${p.name} as version ${p.next} (${p.current === null ? 'none in force now' : `version ${p.current} in force now`}) reaches:\n`);
  process.stdout.write(`  users gaining it: ${p.users.gained.length ? p.users.gained.join(', ') : 'none'}\n`);
  process.stdout.write(`  users losing it:  ${p.users.lost.length ? p.users.lost.join(', ') : 'none'}\n`);
  process.stdout.write(`  workspaces: ${count(p.workspaces.gained.length, 'gained')}, ${count(p.workspaces.lost.length, 'lost')}, ${p.workspaces.changed.length} changed\n`);
  for (const c of p.clients.losing) process.stdout.write(`  client ${c.client} (${c.user}) loses ${c.workspace} at its next contact\n`);
  for (const c of p.clients.changing) process.stdout.write(`  client ${c.client} (${c.user}) gets new settings of ${c.workspace} at its next contact\n`);
}

export function addConsoleCommands(admin: Command, nouns: { user: Command; policy: Command }): void {
  const { user, policy } = nouns;

  consoleOptions(user.command('role <user> <role>')
    .description('make a user an administrator (role admin: medv admin and the console with their own login) or an ordinary user')
    .addHelpText('after', `
The console asks on every request: a user made ordinary gets 403 on every console page at once.

Examples:
  medv admin user role ann admin --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token`))
    .action(async (name: string, role: string, o: Opts) => {
      if (role !== 'admin' && role !== 'user') throw new MedvError('EINVAL_ARG', `role must be admin or user, not ${JSON.stringify(role).slice(0, 40)}`);
      const r = await adminCall<{ user: string; role: string }>(o, 'POST', `/api/admin/users/${encodeURIComponent(name)}/role`, { role });
      if (o.json) printJson(r);
      else process.stdout.write(`${r.user} is now ${r.role === 'admin' ? 'an administrator' : 'an ordinary user'}\n`);
    });

  consoleOptions(user.command('groups <user> [groups...]')
    .description('set the groups of a user (created when missing; none: no group)')
    .addHelpText('after', `
Policies entitle groups as well as users: the user's workspaces change at the next grant.

Examples:
  medv admin user groups alice finance lab --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token`))
    .action(async (name: string, groups: string[], o: Opts) => {
      const r = await adminCall<{ user: string; groups: string[] }>(o, 'POST', `/api/admin/users/${encodeURIComponent(name)}/groups`, { groups });
      if (o.json) printJson(r);
      else process.stdout.write(`${r.user} is in ${r.groups.length ? r.groups.join(', ') : 'no group'}\n`);
    });

  consoleOptions(policy.command('diff <name>')
    .description('what changed between two versions of a policy, field by field')
    .option('--from <n>', 'the older version (default: the one before --to)')
    .option('--to <n>', 'the newer version (default: the newest)')
    .addHelpText('after', `
Lists of names compare as sets; workspaces and applications are matched by name.

Examples:
  medv admin policy diff finance --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin policy diff finance --from 1 --to 3 --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token --json`))
    .action(async (name: string, o: Opts) => {
      const { versions } = await adminCall<{ versions: { version: number }[] }>(o, 'GET', `/api/admin/policies/versions?${q({ name })}`);
      const to = o.to !== undefined ? String(o.to) : String(versions[0].version);
      const from = o.from !== undefined ? String(o.from) : String(versions.find((v) => v.version < Number(to))?.version ?? to);
      const r = await adminCall<{ changes: { path: string; kind: string; before?: unknown; after?: unknown }[] }>(o, 'GET', `/api/admin/policies/diff?${q({ name, from, to })}`);
      if (o.json) { printJson(r); return; }
      if (!r.changes.length) process.stdout.write(`versions ${from} and ${to} of ${name} are the same\n`);
      for (const c of r.changes) {
        const v = c.kind === 'changed' ? `${JSON.stringify(c.before)} -> ${JSON.stringify(c.after)}` : JSON.stringify(c.kind === 'added' ? c.after : c.before);
        process.stdout.write(`${c.kind.padEnd(8)}${c.path}: ${printable(v)}\n`);
      }
    });

  consoleOptions(policy.command('preview <file>')
    .description('who publishing a policy document would reach, without publishing it')
    .addHelpText('after', `
Users gaining or losing the policy, workspaces gained, lost or changed per user, and the clients
that learn it at their next contact. The document is checked first (exit 5 naming the bad field).

Examples:
  medv admin policy preview finance.json --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token`))
    .action(async (file: string, o: Opts) => {
      const { readPolicyFile } = await import('./admin.js');
      const r = await adminCall<Preview>(o, 'POST', '/api/admin/policies/preview', readPolicyFile(file));
      if (o.json) printJson(r);
      else printPreview(r, 'publishing');
    });

  consoleOptions(policy.command('unpublish <name>')
    .description('unpublish a policy: its next version entitles nobody (every version is kept; publish again to undo)')
    .option('--dry-run', 'say who it would reach and change nothing')
    .addHelpText('after', `
Clients learn it at their next contact: they are refused the policy's workspaces (offline, they go
on until their offline allowance ends).

Examples:
  medv admin policy unpublish finance --dry-run --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin policy unpublish finance --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token --json`))
    .action(async (name: string, o: Opts) => {
      if (o.dryRun) {
        const p = await adminCall<Preview>(o, 'GET', `/api/admin/policies/unpublish?${q({ name })}`);
        if (o.json) printJson(p); else printPreview(p, 'unpublishing');
        return;
      }
      const r = await adminCall<{ name: string; version: number }>(o, 'POST', '/api/admin/policies/unpublish', { name });
      if (o.json) printJson(r);
      else process.stdout.write(`policy ${r.name} unpublished (version ${r.version} entitles nobody)\n`);
    });

  const image = admin.command('image').description('the images published on the server: versions, update sizes, tests, retention');

  consoleOptions(image.command('list [name]')
    .description('every image on the server, or every version of one with what a client one version behind downloads')
    .addHelpText('after', `
Without a name: each image, its versions, size, whether its keys are published, the client
workspaces on it. With a name: each version's pack and index size, blocks new in it, the update a
client holding the version before downloads (from the two indexes), the signature as clients will
judge it, the clients on it, and its last test.

Examples:
  medv admin image list --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin image list win10 --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token --json`))
    .action(async (name: string | undefined, o: Opts) => {
      if (!name) {
        const r = await adminCall<{ images: { name: string; versions: number; latest: number | null; bytes: number; keys: { published: boolean }; clients: number }[] }>(o, 'GET', '/api/admin/images');
        if (o.json) { printJson(r); return; }
        table([['IMAGE', 'VERSIONS', 'NEWEST', 'SIZE', 'KEYS', 'CLIENTS'], ...r.images.map((i) => [i.name, String(i.versions), i.latest === null ? '-' : String(i.latest), bytes(i.bytes), i.keys.published ? 'published' : 'none', String(i.clients)])]);
        return;
      }
      const r = await adminCall<{ list: { version: number; packBytes: number | null; indexBytes: number | null; signature: string; clients: number; cost?: { blocks: number; newBlocks: number; update: { from: number | null; bytes: number } } }[] }>(o, 'GET', `/api/admin/images/versions?${q({ name })}`);
      if (o.json) { printJson(r); return; }
      table([['VERSION', 'PACK', 'INDEX', 'BLOCKS (NEW)', 'UPDATE', 'SIGNATURE', 'CLIENTS'], ...r.list.map((v) => [
        String(v.version), v.packBytes === null ? '-' : bytes(v.packBytes), v.indexBytes === null ? '-' : bytes(v.indexBytes),
        v.cost ? `${v.cost.blocks} (${v.cost.newBlocks})` : '-', v.cost ? `${bytes(v.cost.update.bytes)}${v.cost.update.from === null ? ' (all)' : ` from v${v.cost.update.from}`}` : '-',
        v.signature, String(v.clients)])]);
    });

  consoleOptions(image.command('test <name>')
    .description('boot a version read-only on the server (TCG where there is no KVM), keep a screenshot and its serial log with it')
    .requiredOption('--version <n>', 'the version to test')
    .option('--wait', 'wait until the test is over (the VM stays up for the console\'s live view for medv serve --image-test-hold, unless --stop)')
    .option('--stop', 'with --wait: stop the VM as soon as the screenshot is taken')
    .option('--screenshot <file>', 'with --wait: save the screenshot (PNG) to this file')
    .addHelpText('after', `
The server fetches the version into an encrypted disk with its published keys, boots it without
network, waits for "ready" (or a login prompt) on its serial line or --image-test-timeout, takes a
screenshot, and later stops the VM and deletes the disk and its keys. The console shows it live.
One test runs at a time (another: exit 9).

Examples:
  medv admin image test win10 --version 3 --wait --stop --screenshot win10-3.png --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token`))
    .action(async (name: string, o: Opts) => {
      const version = Number(o.version);
      if (!Number.isInteger(version) || version < 1) throw new MedvError('EINVAL_ARG', `--version must be a whole number from 1, not ${JSON.stringify(o.version)}`);
      let r = await adminCall<{ phase: string }>(o, 'POST', '/api/admin/images/test', { name, version });
      if (o.wait) {
        let stopped = false;
        for (;;) {
          const s = await adminCall<{ test: { phase: string; outcome?: string; error?: string; screenshot: boolean } | null }>(o, 'GET', `/api/admin/images/test?${q({ name, version })}`);
          r = s.test ?? r;
          if (s.test && ['done', 'failed'].includes(s.test.phase)) break;
          if (o.stop && !stopped && s.test?.phase === 'shown') {
            await adminCall(o, 'POST', '/api/admin/images/test/stop', { name, version });
            stopped = true;
          }
          await new Promise((res) => setTimeout(res, 1000));
        }
        if (o.screenshot && (r as { screenshot?: boolean }).screenshot) {
          const { apiBytes } = await import('../client/api.js');
          writeFileSync(String(o.screenshot), (await apiBytes(String(o.server), `/api/admin/images/test/screenshot?${q({ name, version })}`, { token: adminToken(o), ca: o.ca as string | undefined })).bytes);
        }
      }
      if (o.json) { printJson(r); return; }
      const t = r as { phase: string; outcome?: string; error?: string };
      process.stdout.write(t.phase === 'done' ? `test of ${name} version ${version}: ${t.outcome === 'ready' ? 'the guest said it was ready' : 'no ready signal before the timeout'}; screenshot kept\n`
        : t.phase === 'failed' ? `test of ${name} version ${version} failed: ${t.error}\n` : `test of ${name} version ${version} started (${t.phase}); watch it in the console\n`);
      if (t.phase === 'failed') process.exitCode = 1;
    });

  consoleOptions(image.command('prune <name>')
    .description('keep the N newest versions of an image in the server\'s repository, delete the rest')
    .requiredOption('--keep <n>', 'versions to keep (1 or more)')
    .option('--dry-run', 'say what would be deleted and delete nothing')
    .addHelpText('after', `
The same retention as medv image prune on a folder, run by the server on its own repository: older
indexes first, then the packs no kept index needs (a version may need packs of earlier ones).
The answer counts the client workspaces still on a version that goes.

Examples:
  medv admin image prune win10 --keep 2 --dry-run --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token`))
    .action(async (name: string, o: Opts) => {
      const r = await adminCall<{ keptVersions: number[]; deleted: string[]; bytesFreed: number; clientsOnRemoved: number }>(o, 'POST', '/api/admin/images/prune', { name, keep: Number(o.keep), dryRun: !!o.dryRun });
      if (o.json) { printJson(r); return; }
      process.stdout.write(`${o.dryRun ? 'would delete' : 'deleted'} ${count(r.deleted.length, 'file')} (${bytes(r.bytesFreed)}); kept versions ${r.keptVersions.join(', ')}${r.clientsOnRemoved ? `; ${count(r.clientsOnRemoved, 'client workspace')} still on a version that goes` : ''}\n`);
      for (const f of r.deleted) process.stdout.write(`  ${f}\n`);
    });

  const client = admin.command('client').description('orders that reach a client (or every client of a user) at its next contact: lock, unlock, wipe, revoke');
  const orderOptions = (c: Command) => consoleOptions(c
    .option('--user <name>', 'every client of this user instead of one client')
    .option('--workspace <name>', 'only this workspace (default: every workspace)'));
  const subject = (id: string | undefined, o: Opts) => {
    if ((id === undefined) === (o.user === undefined)) throw new MedvError('EINVAL_ARG', 'name one client, or --user for every client of a user');
    return id !== undefined ? { scope: 'client', subject: id } : { scope: 'user', subject: String(o.user) };
  };
  const ORDER_HELP = `
A client contacts the server at every workspace start it can; offline, it goes on until its
policy's offline allowance ends (the console shows the date). The order stands until unlock.
The client's start then fails with exit 15 (locked) or 16 (wiped), naming --reason.`;
  for (const [action, what] of [['lock', 'the workspace does not start, offline neither, until unlocked; its data stays'], ['wipe', 'the client deletes the workspace\'s keys, then its disks and saved state'], ['revoke', 'no more keys (for a user: their logins end too)']] as const) {
    orderOptions(client.command(`${action} [client]`)
      .description(`${action}: ${what}`)
      .requiredOption('--reason <text>', 'why (the user sees it)')
      .addHelpText('after', `${ORDER_HELP}

Examples:
  medv admin client ${action} 3fe07c13070b3e54 --reason "reported stolen" --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token
  medv admin client ${action} --user alice --workspace desk --reason "left the team" --server https://console.example --json`))
      .action(async (id: string | undefined, o: Opts) => {
        const r = await adminCall<{ action: string; scope: string; subject: string; workspace: string | null; tokensRevoked?: number }>(o, 'POST', '/api/admin/controls', { action, ...subject(id, o), workspace: o.workspace, reason: o.reason });
        if (o.json) { printJson(r); return; }
        process.stdout.write(`${r.action} order given to ${r.scope} ${r.subject}${r.workspace ? ` for workspace ${r.workspace}` : ''}: it reaches the client at its next contact${r.tokensRevoked !== undefined ? ` (${count(r.tokensRevoked, 'token')} revoked now)` : ''}\n`);
      });
  }
  orderOptions(client.command('unlock [client]')
    .description('clear the orders (lock, wipe, revoke) of a client or user')
    .option('--only <action>', 'clear only this order (lock, wipe or revoke)')
    .addHelpText('after', `${ORDER_HELP}

Examples:
  medv admin client unlock 3fe07c13070b3e54 --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token`))
    .action(async (id: string | undefined, o: Opts) => {
      const r = await adminCall<{ cleared: number }>(o, 'POST', '/api/admin/controls/clear', { ...subject(id, o), ...(o.workspace !== undefined ? { workspace: o.workspace } : {}), ...(o.only !== undefined ? { action: o.only } : {}) });
      if (o.json) printJson(r);
      else process.stdout.write(`${count(r.cleared, 'order')} cleared\n`);
    });
  consoleOptions(client.command('orders [client]')
    .description('the standing orders of a client or user (or all), and the wipes clients confirmed')
    .option('--user <name>', 'a user\'s orders')
    .addHelpText('after', `
Examples:
  medv admin client orders --server http://127.0.0.1:8080 --token-file /srv/medv/admin.token`))
    .action(async (id: string | undefined, o: Opts) => {
      const s = id !== undefined ? { scope: 'client', subject: id } : o.user !== undefined ? { scope: 'user', subject: String(o.user) } : {};
      const r = await adminCall<{ controls: { action: string; scope: string; subject: string; workspace: string | null; reason: string; by: string; at: string }[]; wipes: { client: string; user: string; workspace: string; at: string }[] }>(o, 'GET', `/api/admin/controls?${q(s as Record<string, string>)}`);
      if (o.json) { printJson(r); return; }
      table([['ORDER', 'FOR', 'WORKSPACE', 'GIVEN', 'BY', 'REASON'], ...r.controls.map((c) => [c.action, `${c.scope} ${c.subject}`, c.workspace ?? '*', `${age(Date.now() - Date.parse(c.at))} ago`, c.by, printable(c.reason)])]);
      for (const w of r.wipes) process.stdout.write(`wiped: client ${w.client}, user ${w.user}, workspace ${w.workspace}, ${age(Date.now() - Date.parse(w.at))} ago\n`);
    });
}
