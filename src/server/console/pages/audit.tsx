/**
 * Audit: the audit log, newest first, filtered by user (actor or target), action (or its family:
 * `login` is login, login.fail, login.limited) and time (UTC); paginated; CSV export of every
 * matching entry. The same query as GET /api/admin/audit (listing.ts auditFilter, accounts.ts auditPage).
 */
import { sendCsv } from '../../api-admin.js';
import { AUDIT_CSV } from '../../csv.js';
import { auditFilter, pageQuery } from '../../listing.js';
import type { AuditRow } from '../../store/index.js';
import { type Answer, type Ctx, page } from '../context.js';
import { DataTable, Field, Filters, Pager, Time, href } from '../components.js';
import type { Html } from '../html.js';
import { Page } from '../layout.js';
import { pageHeaders } from '../headers.js';

export const KNOWN_ACTIONS = [
  'login', 'login.fail', 'login.limited', 'logout', 'logout.everywhere', 'console.refused', 'user', 'user.add',
  'policy', 'policy.publish', 'keys', 'keys.publish', 'keys.release', 'keys.deny',
];

function detailText(d: Record<string, unknown>): string {
  return Object.entries(d).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' · ');
}

export function AuditRows(p: { rows: AuditRow[] }): Html[] {
  return p.rows.map((e) => (
    <tr>
      <td><Time iso={e.time} /></td>
      <td><a href={href('/console/audit', { user: e.actor })}>{e.actor}</a></td>
      <td><a href={href('/console/audit', { action: e.action })}>{e.action}</a></td>
      <td>{e.target}</td>
      <td class="mono">{detailText(e.detail)}</td>
    </tr>
  ));
}

function filters(q: URLSearchParams): Record<string, string | undefined> {
  return { user: q.get('user') ?? undefined, action: q.get('action') ?? undefined, since: q.get('since') ?? undefined, until: q.get('until') ?? undefined };
}

export async function auditPage(ctx: Ctx): Promise<Answer> {
  const f = auditFilter(ctx.query);
  const p = await ctx.services.accounts.auditPage(f, pageQuery(ctx.query));
  const shown = filters(ctx.query);
  return page(
    <Page {...ctx.frame} title="Audit" nav="audit">
      <h1>Audit log</h1>
      <p class="sub">Sign-ins and failures, key releases and refusals, user and policy changes. Times are UTC.</p>
      <Filters action="/console/audit" label="Filter the audit log">
        <Field label="User (actor or target)" name="user" value={shown.user} />
        <div class="field">
          <label for="f-action">Action</label>
          <input id="f-action" name="action" list="actions" value={shown.action} />
          <datalist id="actions">{KNOWN_ACTIONS.map((a) => <option value={a}></option>)}</datalist>
        </div>
        <Field label="Since (UTC)" name="since" type="datetime-local" value={shown.since} />
        <Field label="Until (UTC)" name="until" type="datetime-local" value={shown.until} />
      </Filters>
      <div id="results">
        <div class="actions"><a class="button secondary" href={href('/console/audit.csv', shown)}>Export CSV</a></div>
        <DataTable caption="Audit entries, newest first." columns={['Time', 'Actor', 'Action', 'Target', 'Detail']} rows={AuditRows({ rows: p.rows })} empty="No audit entry matches these filters." />
        <Pager page={p} base="/console/audit" params={shown} />
      </div>
    </Page>,
  );
}

export async function auditCsv(ctx: Ctx): Promise<Answer> {
  const f = auditFilter(ctx.query);
  const pinned = { ...f, until: f.until ?? Date.now() + 1 };
  await sendCsv(ctx.res, 'audit.csv', AUDIT_CSV, (p) => ctx.services.accounts.auditPage(pinned, p), pageHeaders(ctx.secure));
  return { kind: 'sent' };
}
