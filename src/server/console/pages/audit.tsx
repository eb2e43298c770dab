/**
 * Audit: the audit log, newest first, filtered by user (actor or target), action (or its family:
 * `login` is login, login.fail, login.limited) and time (UTC); paginated; CSV export of every
 * matching entry. The same query as GET /api/admin/audit (listing.ts auditFilter, accounts.ts auditPage).
 */
import { sendCsv } from '../../api-admin.js';
import { AUDIT_CSV } from '../../csv.js';
import { PAGE_MAX, parseAuditQuery } from '../../requests.js';
import type { AuditRecord } from '../../store/index.js';
import { type Answer, type Ctx, page } from '../context.js';
import { CursorPager, DataTable, Field, Filters, Time, href } from '../components.js';
import type { Html } from '../html.js';
import { Page } from '../layout.js';
import { pageHeaders } from '../headers.js';

/** What the action filter offers (a family with `.*`). */
export const KNOWN_ACTIONS = [
  'login.*', 'login', 'login.fail', 'login.limited', 'logout', 'logout.everywhere', 'console.refused', 'admin.denied', 'user.*', 'user.add', 'user.disable',
  'user.enable', 'user.delete', 'user.passwd', 'user.revoke', 'user.groups', 'user.role', 'policy.*', 'policy.publish', 'policy.unpublish', 'keys.*',
  'keys.publish', 'keys.release', 'keys.deny', 'reports.refused', 'client.*', 'client.lock', 'client.wipe', 'client.revoke', 'client.unlock',
  'client.wiped', 'client.drop', 'image.*', 'image.prune', 'image.test',
];

function detailText(d: unknown): string {
  if (typeof d !== 'object' || d === null) return '';
  return Object.entries(d).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' · ');
}

export function AuditRows(p: { rows: AuditRecord[] }): Html[] {
  return p.rows.map((e) => (
    <tr>
      <td><Time iso={e.time} />{e.count > 1 ? <span class="muted">{` ×${e.count}, last `}<Time iso={e.last} /></span> : ''}</td>
      <td><a href={href('/console/audit', { user: e.actor })}>{e.actor}</a></td>
      <td><a href={href('/console/audit', { action: e.action })}>{e.action}</a></td>
      <td>{e.target}</td>
      <td class="mono">{e.address || '–'}</td>
      <td class="mono detail">{detailText(e.detail)}</td>
    </tr>
  ));
}

export const AUDIT_COLUMNS = ['Time', 'Actor', 'Action', 'Target', 'Address', 'Detail'];

function filters(q: URLSearchParams): Record<string, string | undefined> {
  return { user: q.get('user') || undefined, action: q.get('action') || undefined, since: q.get('since') || undefined, until: q.get('until') || undefined };
}

export async function auditPage(ctx: Ctx): Promise<Answer> {
  const q = parseAuditQuery(ctx.query);
  const p = await ctx.services.audit.list(q);
  const shown = filters(ctx.query);
  return page(
    <Page {...ctx.frame} title="Audit" nav="audit">
      <h1>Audit log</h1>
      <p class="sub">Sign-ins and failures, key releases and refusals, user, policy and client changes. Times are UTC; repeated refusals from one address are one entry with a count.</p>
      <Filters action="/console/audit" label="Filter the audit log">
        <Field label="User (actor or target)" name="user" value={shown.user} />
        <div class="field">
          <label for="f-action">Action (a family: login.*)</label>
          <input id="f-action" name="action" list="actions" value={shown.action} />
          <datalist id="actions">{KNOWN_ACTIONS.map((a) => <option value={a}></option>)}</datalist>
        </div>
        <Field label="Since (UTC)" name="since" type="datetime-local" value={shown.since} />
        <Field label="Until (UTC)" name="until" type="datetime-local" value={shown.until} />
      </Filters>
      <div id="results">
        <div class="actions"><a class="button secondary" href={href('/console/audit.csv', shown)}>Export CSV</a></div>
        <DataTable caption="Audit entries, newest first." columns={AUDIT_COLUMNS} rows={AuditRows({ rows: p.entries })} empty="No audit entry matches these filters." />
        <CursorPager next={p.next} cursorParam="before" base="/console/audit" params={shown} first={!q.before} shown={p.entries.length} />
      </div>
    </Page>,
  );
}

export async function auditCsv(ctx: Ctx): Promise<Answer> {
  const q = parseAuditQuery(ctx.query);
  const fixed = { ...q, until: Math.min(q.until ?? Infinity, Date.now() + 1), limit: PAGE_MAX };
  await sendCsv(ctx.res, 'audit.csv', AUDIT_CSV, async (before) => {
    const p = await ctx.services.audit.list({ ...fixed, ...(before ? { before: parseAuditQuery(new URLSearchParams({ before })).before } : {}) });
    return { rows: p.entries, next: p.next };
  }, pageHeaders(ctx.secure));
  return { kind: 'sent' };
}
