/**
 * Clients: the latest report of each client, user and workspace (version, state, when it was
 * last seen, last error, the image and offline allowance of its last grant), filtered and
 * paginated, exported as CSV; one client's report history. The same calls as GET
 * /api/admin/clients and /api/admin/clients/history (keyservice.ts, requests.ts).
 */
import { MedvError } from '../../../core/errors.js';
import { offsetPages, sendCsv } from '../../api-admin.js';
import { CLIENTS_CSV, HISTORY_CSV } from '../../csv.js';
import { checkClientId } from '../../../api/names.js';
import { REPORT_STATES } from '../../keyservice.js';
import { PAGE_MAX, pageQuery, parseClientsQuery } from '../../requests.js';
import { type Answer, type Ctx, page } from '../context.js';
import { Badge, CursorPager, DataTable, Field, Filters, Pager, Select, StateBadge, Time, ago, count, href, seg } from '../components.js';
import type { Html } from '../html.js';
import { Page } from '../layout.js';
import { pageHeaders } from '../headers.js';
import { Orders } from './controls.js';

/** What the last order did (after a redirect from the order forms). */
export function Flash(p: { ctx: Ctx }): Html {
  const order = p.ctx.query.get('order');
  if (order && ['lock', 'wipe', 'revoke'].includes(order)) return <div class="message ok" role="status">{`The ${order} order is given: it reaches the client at its next contact.`}</div>;
  if (p.ctx.query.get('cleared')) return <div class="message ok" role="status">The order is cleared: the next contact finds none.</div>;
  return <></>;
}

function keys(ctx: Ctx) {
  if (!ctx.services.keys) throw new MedvError('ENOENT', 'this server keeps no client reports');
  return ctx.services.keys;
}

function Allowance(p: { until: string | null }): Html {
  if (!p.until) return <span class="muted">–</span>;
  const left = Date.parse(p.until) - Date.now();
  if (left <= 0) return <Badge tone="bad">ended</Badge>;
  return <Badge tone={left < 48 * 3600_000 ? 'warn' : 'plain'}>{`ends ${ago(Date.parse(p.until))}`}</Badge>;
}

function shownFilters(q: URLSearchParams): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const k of ['q', 'user', 'workspace', 'state', 'image', 'version']) out[k] = q.get(k) || undefined;
  return out;
}

export async function clientsPage(ctx: Ctx): Promise<Answer> {
  const q = parseClientsQuery(ctx.query);
  const p = await keys(ctx).listClients(q);
  const shown = shownFilters(ctx.query);
  return page(
    <Page {...ctx.frame} title="Clients" nav="clients">
      <h1>Clients</h1>
      <p class="sub">The latest report of each client, user and workspace. A client reports when it starts, stops or updates a workspace; offline, it starts only within the offline allowance of its last grant.</p>
      <Filters action="/console/clients" label="Filter clients">
        <Field label="Client contains" name="q" value={shown.q} />
        <Field label="User" name="user" value={shown.user} />
        <Field label="Workspace" name="workspace" value={shown.workspace} />
        <Field label="Image" name="image" value={shown.image} />
        <Select label="State" name="state" value={shown.state} options={['', ...REPORT_STATES]} />
      </Filters>
      <div id="results">
        <div class="actions"><a class="button secondary" href={href('/console/clients.csv', shown)}>Export CSV</a></div>
        <DataTable caption={`${count(p.total)} client workspace${p.total === 1 ? '' : 's'} match.`}
          columns={['Client', 'User', 'Workspace', 'Image', { label: 'Version', num: true }, 'State', 'Last seen', 'Offline allowance', 'Last error']}
          empty="No client report matches these filters."
          rows={p.clients.map((c) => (
            <tr>
              <td><a href={`/console/clients/${seg(c.client)}`}>{c.client}</a></td>
              <td><a href={`/console/users/${seg(c.user)}`}>{c.user}</a></td>
              <td>{c.workspace}</td>
              <td>{c.image ? <a href={`/console/images/${seg(c.image)}`}>{c.image}</a> : '–'}</td>
              <td class="num">{c.version ?? '–'}</td>
              <td><StateBadge state={c.state} /></td>
              <td><Time iso={c.received} relative /></td>
              <td><Allowance until={c.offlineUntil} /></td>
              <td class="error">{c.lastError ?? ''}</td>
            </tr>
          ))} />
        <CursorPager next={p.next} cursorParam="after" base="/console/clients" params={shown} first={!q.after} shown={p.clients.length} total={p.total} />
      </div>
    </Page>,
  );
}

export async function clientPage(ctx: Ctx): Promise<Answer> {
  const client = checkClientId(ctx.params[0]);
  const [latest, p, orders, wipes] = await Promise.all([
    keys(ctx).listClients({ client, limit: PAGE_MAX }),
    keys(ctx).historyPage({ client }, pageQuery(ctx.query)),
    ctx.services.controls?.list('client', client) ?? [],
    ctx.services.controls?.wipes({ client }) ?? [],
  ]);
  const mine = latest.clients;
  const offlineUntil = mine.map((r) => r.offlineUntil).filter((x): x is string => !!x).sort().pop() ?? null;
  return page(
    <Page {...ctx.frame} title={`Client ${client}`} nav="clients">
      <h1>Client {client}</h1>
      <Flash ctx={ctx} />
      <h2>Now</h2>
      <DataTable caption="The latest report of each user and workspace on this client." columns={['User', 'Workspace', 'Image', { label: 'Version', num: true }, 'State', 'Last seen', 'Offline allowance']} empty="This client has no current report."
        rows={mine.map((c) => (
          <tr>
            <td><a href={`/console/users/${seg(c.user)}`}>{c.user}</a></td><td>{c.workspace}</td><td>{c.image ?? '–'}</td><td class="num">{c.version ?? '–'}</td>
            <td><StateBadge state={c.state} /></td><td><Time iso={c.received} relative /></td><td><Allowance until={c.offlineUntil} /></td>
          </tr>
        ))} />
      {ctx.services.controls ? <Orders ctx={ctx} scope="client" subject={client} orders={orders} wipes={wipes} workspaces={[...new Set(mine.map((r) => r.workspace))]} offlineUntil={offlineUntil} /> : ''}
      <h2 id="history">Report history</h2>
      <div class="actions"><a class="button secondary" href={`/console/clients/${seg(client)}/history.csv`}>Export CSV</a></div>
      <div id="results">
        <DataTable caption="Every report received from this client, newest first (client time)." columns={['Reported', 'Received', 'User', 'Workspace', { label: 'Version', num: true }, 'State', 'Error']} empty="No report."
          rows={p.rows.map((r) => (
            <tr>
              <td><Time iso={r.at} /></td><td><Time iso={r.received} /></td><td>{r.user}</td><td>{r.workspace}</td><td class="num">{r.version ?? '–'}</td>
              <td><StateBadge state={r.state} /></td><td class="error">{r.lastError ?? ''}</td>
            </tr>
          ))} />
        <Pager page={p} base={`/console/clients/${seg(client)}`} params={{}} />
      </div>
    </Page>,
  );
}

export async function clientsCsv(ctx: Ctx): Promise<Answer> {
  const q = parseClientsQuery(ctx.query);
  const k = keys(ctx);
  await sendCsv(ctx.res, 'clients.csv', CLIENTS_CSV, async (after) => {
    const p = await k.listClients({ ...q, limit: PAGE_MAX, ...(after ? { after: parseClientsQuery(new URLSearchParams({ after })).after } : {}) });
    return { rows: p.clients, next: p.next };
  }, pageHeaders(ctx.secure));
  return { kind: 'sent' };
}

export async function clientHistoryCsv(ctx: Ctx): Promise<Answer> {
  const client = checkClientId(ctx.params[0]);
  const k = keys(ctx);
  await sendCsv(ctx.res, `${client}-history.csv`, HISTORY_CSV, offsetPages((p) => k.historyPage({ client }, p)), pageHeaders(ctx.secure));
  return { kind: 'sent' };
}
