/**
 * Changing accounts in the console: add a user; on a user's page disable or enable, reset the
 * password, set groups and role, revoke every token, delete. Each form posts (CSRF token, same
 * site) to one service function of accounts.ts, the same as the /api/admin/users routes, which
 * audits it with the administrator's name.
 */
import { MedvError } from '../../../core/errors.js';
import { checkGroupName, checkUserName } from '../../../api/names.js';
import { checkPassword, checkRole } from '../../accounts.js';
import { parseNewUser } from '../../requests.js';
import { type Answer, type Ctx, redirect } from '../context.js';
import { Csrf, seg } from '../components.js';
import type { Html } from '../html.js';
import type { UserSummary } from '../../store/index.js';

const groupsOf = (v: string | null) => [...new Set((v ?? '').split(/[\s,]+/).map((g) => g.trim()).filter(Boolean))].map((g) => checkGroupName(g));

/** The form that adds an account (on the users page). */
export function AddUser(p: { csrf: string }): Html {
  return (
    <details class="panel">
      <summary>Add a user</summary>
      <form class="editor" method="post" action="/console/users" aria-label="Add a user">
        <Csrf token={p.csrf} />
        <div class="grid">
          <div class="field"><label for="f-new-user">User name</label><input id="f-new-user" name="user" required autocomplete="off" /></div>
          <div class="field"><label for="f-new-password">Password (8 to 1024 bytes)</label><input id="f-new-password" name="password" type="password" required autocomplete="new-password" /></div>
          <div class="field"><label for="f-new-groups">Groups (space or comma separated)</label><input id="f-new-groups" name="groups" /></div>
          <div class="field"><label for="f-new-role">Role</label><select id="f-new-role" name="role"><option value="user" selected>user</option><option value="admin">admin (may use this console)</option></select></div>
        </div>
        <button type="submit">Add the user</button>
      </form>
    </details>
  );
}

/** The actions on one account (on its page). */
export function UserActions(p: { csrf: string; u: UserSummary; self: boolean }): Html {
  const { u } = p;
  const at = (verb: string) => `/console/users/${seg(u.user)}/${verb}`;
  return (
    <section aria-labelledby="h-manage">
      <h2 id="h-manage">Manage</h2>
      <div class="actions">
        <form method="post" action={at(u.disabled ? 'enable' : 'disable')} data-confirm={u.disabled ? undefined : `Disable ${u.user}? Their tokens stop working at once and they cannot log in.`}>
          <Csrf token={p.csrf} /><button type="submit" class={u.disabled ? undefined : 'secondary'} disabled={p.self && !u.disabled}>{u.disabled ? 'Enable' : 'Disable'}</button>
        </form>
        <form method="post" action={at('revoke')} data-confirm={`Revoke every login token of ${u.user}? Their clients must log in again.`}>
          <Csrf token={p.csrf} /><button type="submit" class="secondary">Revoke all tokens</button>
        </form>
        <form method="post" action={at('delete')} data-confirm={`Delete ${u.user} with their memberships, tokens, clients and reports? This cannot be undone.`}>
          <Csrf token={p.csrf} /><button type="submit" class="danger" disabled={p.self}>Delete</button>
        </form>
      </div>
      <div class="grid">
        <form class="editor panel" method="post" action={at('password')} aria-label="Reset the password">
          <Csrf token={p.csrf} />
          <div class="field"><label for="f-reset">New password</label><input id="f-reset" name="password" type="password" required autocomplete="new-password" /></div>
          <span class="muted hint">Every token of the user is revoked.</span>
          <button type="submit">Reset the password</button>
        </form>
        <form class="editor panel" method="post" action={at('groups')} aria-label="Set the groups">
          <Csrf token={p.csrf} />
          <div class="field"><label for="f-groups">Groups (space or comma separated)</label><input id="f-groups" name="groups" value={u.groups.join(' ')} /></div>
          <button type="submit">Set the groups</button>
        </form>
        <form class="editor panel" method="post" action={at('role')} aria-label="Set the role">
          <Csrf token={p.csrf} />
          <div class="field"><label for="f-role">Role</label><select id="f-role" name="role" disabled={p.self}><option value="user" selected={u.role === 'user'}>user</option><option value="admin" selected={u.role === 'admin'}>admin</option></select></div>
          <button type="submit" disabled={p.self}>Set the role</button>
        </form>
      </div>
    </section>
  );
}

function target(ctx: Ctx): string {
  const name = checkUserName(ctx.params[0]);
  // an administrator cannot lock themselves out of the console by mistake
  if (name === ctx.session!.user && ['disable', 'delete', 'role'].includes(ctx.params[1] ?? '')) throw new MedvError('EINVAL_ARG', 'you cannot disable, delete or demote the account you are signed in with');
  return name;
}

const done = (name: string, what: string) => redirect(`/console/users/${seg(name)}?done=${what}`);

export async function addUserAction(ctx: Ctx): Promise<Answer> {
  const f = ctx.form;
  const u = parseNewUser({ user: f.get('user') ?? '', password: f.get('password') ?? '', groups: groupsOf(f.get('groups')), role: f.get('role') ?? 'user' });
  await ctx.services.accounts.addUser(u, ctx.session!.user, ctx.address);
  return done(u.name, 'added');
}

export async function userAction(ctx: Ctx): Promise<Answer> {
  const name = target(ctx);
  const a = ctx.services.accounts;
  const actor = ctx.session!.user;
  switch (ctx.params[1]) {
    case 'disable': await a.setDisabled(name, true, actor, ctx.address); break;
    case 'enable': await a.setDisabled(name, false, actor, ctx.address); break;
    case 'revoke': await a.revokeTokens(name, actor, ctx.address); break;
    case 'password': await a.setPassword(name, checkPassword(ctx.form.get('password') ?? ''), actor, ctx.address); break;
    case 'groups': await a.setGroups(name, groupsOf(ctx.form.get('groups')), actor, ctx.address); break;
    case 'role': await a.setRole(name, checkRole(ctx.form.get('role')), actor, ctx.address); break;
    case 'delete':
      await a.deleteUser(name, actor, ctx.address);
      return redirect(`/console/users?deleted=${encodeURIComponent(name)}`);
    default: throw new MedvError('ENOENT', 'no such action');
  }
  return done(name, ctx.params[1]);
}
