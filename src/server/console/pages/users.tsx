/**
 * Users and groups: the accounts (filter by name, group, status; paginated), one account with its
 * groups, console sessions, client workspaces and latest audit entries, and the groups with their
 * member counts. The same service calls as GET /api/admin/users and /api/admin/groups.
 */
import { checkUserName } from '../../../api/names.js';
import { USER_STATUSES, pageQuery, textParam, userFilter } from '../../requests.js';
import { type Answer, type Ctx, page } from '../context.js';
import { Badge, DataTable, Field, Filters, Pager, Select, StateBadge, Time, count, href, seg } from '../components.js';
import { Page } from '../layout.js';
import { AUDIT_COLUMNS, AuditRows } from './audit.js';
import { Orders } from './controls.js';
import { Flash } from './clients.js';
import { AddUser, UserActions } from './user-actions.js';

const DONE: Record<string, string> = {
  added: 'User added.', disable: 'Disabled: their tokens stopped working and they cannot log in.', enable: 'Enabled.',
  revoke: 'Every token revoked: their clients must log in again.', password: 'Password reset; every token revoked.',
  groups: 'Groups set: their workspaces change at the next grant.', role: 'Role set: it applies at once.',
};

export async function usersPage(ctx: Ctx): Promise<Answer> {
  const f = userFilter(ctx.query);
  const p = await ctx.services.accounts.usersPage(f, pageQuery(ctx.query));
  const shown = { q: f.q, group: f.group, status: f.status };
  return page(
    <Page {...ctx.frame} title="Users" nav="users">
      <h1>Users</h1>
      {ctx.query.get('deleted') ? <div class="message ok" role="status">{`User ${ctx.query.get('deleted')} deleted.`}</div> : ''}
      <AddUser csrf={ctx.frame.csrf} />
      <Filters action="/console/users" label="Filter users">
        <Field label="Name contains" name="q" value={f.q} />
        <Field label="Group" name="group" value={f.group} />
        <Select label="Status" name="status" value={f.status} options={['', ...USER_STATUSES]} />
      </Filters>
      <div id="results">
        <DataTable caption={`${count(p.total)} user${p.total === 1 ? '' : 's'} match.`} columns={['User', 'Groups', 'Created', 'Status']} empty="No user matches these filters."
          rows={p.rows.map((u) => (
            <tr>
              <td><a href={`/console/users/${seg(u.user)}`}>{u.user}</a></td>
              <td>{u.groups.length ? u.groups.map((g, i) => <>{i ? ', ' : ''}<a href={href('/console/users', { group: g })}>{g}</a></>) : <span class="muted">none</span>}</td>
              <td><Time iso={u.created} /></td>
              <td>{u.disabled ? <Badge tone="bad">disabled</Badge> : <Badge tone="ok">active</Badge>}</td>
            </tr>
          ))} />
        <Pager page={p} base="/console/users" params={shown} />
      </div>
    </Page>,
  );
}

export async function userPage(ctx: Ctx): Promise<Answer> {
  const name = checkUserName(ctx.params[0]);
  const { accounts, keys, sessions } = ctx.services;
  const found = await accounts.getUser(name);
  const [live, clients, audit, admin, orders, wipes] = await Promise.all([
    sessions.list(name),
    keys ? keys.listClients({ user: name, limit: 100 }) : undefined,
    ctx.services.audit.list({ user: name, limit: 10 }),
    ctx.services.isAdmin(name),
    ctx.services.controls?.list('user', name) ?? [],
    ctx.services.controls?.wipes({ user: name }) ?? [],
  ]);
  const offlineUntil = (clients?.clients ?? []).map((r) => r.offlineUntil).filter((x): x is string => !!x).sort().pop() ?? null;
  return page(
    <Page {...ctx.frame} title={`User ${name}`} nav="users">
      <h1>User {name}</h1>
      <Flash ctx={ctx} />
      {DONE[ctx.query.get('done') ?? ''] ? <div class="message ok" role="status">{DONE[ctx.query.get('done')!]}</div> : ''}
      <div class="panel">
        <dl class="facts">
          <dt>Status</dt><dd>{found.disabled ? <Badge tone="bad">disabled</Badge> : <Badge tone="ok">active</Badge>}</dd>
          <dt>Console</dt><dd>{admin ? 'administrator' : 'no access (not an administrator)'}</dd>
          <dt>Groups</dt><dd>{found.groups.length ? found.groups.join(', ') : 'none'}</dd>
          <dt>Created</dt><dd><Time iso={found.created} relative /></dd>
          <dt>Console sessions</dt><dd>{live.length ? `${live.length} open, last used ` : 'none'}{live.length ? <Time iso={new Date(live[0].lastSeen).toISOString()} relative /> : ''}</dd>
        </dl>
      </div>
      <h2>Client workspaces</h2>
      <DataTable caption={`What ${name}'s clients last reported.`} columns={['Client', 'Workspace', 'Image', 'Version', 'State', 'Last seen']} empty="No client has reported for this user."
        rows={(clients?.clients ?? []).map((c) => (
          <tr>
            <td><a href={`/console/clients/${seg(c.client)}`}>{c.client}</a></td>
            <td>{c.workspace}</td><td>{c.image ?? '–'}</td><td class="num">{c.version ?? '–'}</td>
            <td><StateBadge state={c.state} /></td><td><Time iso={c.received} relative /></td>
          </tr>
        ))} />
      <UserActions csrf={ctx.frame.csrf} u={found} self={name === ctx.session!.user} />
      {ctx.services.controls ? <Orders ctx={ctx} scope="user" subject={name} orders={orders} wipes={wipes} workspaces={[...new Set((clients?.clients ?? []).map((r) => r.workspace))]} offlineUntil={offlineUntil} /> : ''}
      <h2>Latest audit entries</h2>
      <DataTable caption={`Entries where ${name} is the actor or the target.`} columns={AUDIT_COLUMNS} rows={AuditRows({ rows: audit.entries })} empty="Nothing audited for this user." />
      <p><a href={href('/console/audit', { user: name })}>All audit entries of {name}</a></p>
    </Page>,
  );
}

export async function groupsPage(ctx: Ctx): Promise<Answer> {
  const q = textParam(ctx.query, 'q');
  const p = await ctx.services.accounts.groupsPage(q, pageQuery(ctx.query));
  return page(
    <Page {...ctx.frame} title="Groups" nav="groups">
      <h1>Groups</h1>
      <p class="sub">A group exists once a user is added to it; policies entitle groups as well as users.</p>
      <Filters action="/console/groups" label="Filter groups"><Field label="Name contains" name="q" value={q} /></Filters>
      <div id="results">
        <DataTable caption={`${count(p.total)} group${p.total === 1 ? '' : 's'} match.`} columns={['Group', { label: 'Members', num: true }, 'Created']} empty="No group matches."
          rows={p.rows.map((g) => (
            <tr><td><a href={href('/console/users', { group: g.group })}>{g.group}</a></td><td class="num">{count(g.members)}</td><td><Time iso={g.created} /></td></tr>
          ))} />
        <Pager page={p} base="/console/groups" params={{ q }} />
      </div>
    </Page>,
  );
}
