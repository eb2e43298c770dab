/**
 * Lock, wipe, revoke in the console (controls.ts): the standing orders of a client or a user with
 * a form to give one and buttons to clear them, shown on the client's and the user's pages. Each
 * order reaches a client at its next contact with the server; beside the form, the console says
 * until when a client that stays offline may go on (its offline allowance). The same service as
 * POST /api/admin/controls and /api/admin/controls/clear.
 */
import { MedvError } from '../../../core/errors.js';
import type { ControlRow, ControlScope, WipeRow } from '../../store/index.js';
import { type Answer, type Ctx, redirect } from '../context.js';
import { Badge, Csrf, DataTable, Time, seg } from '../components.js';
import type { Html } from '../html.js';

const WHAT: Record<string, string> = {
  lock: 'Lock: the workspace does not start (its data stays) until unlocked',
  wipe: 'Wipe: the client deletes the workspace\'s keys, then its disks and saved state',
  revoke: 'Revoke: no more keys (for a user, their logins end too)',
};

function controls(ctx: Ctx) {
  if (!ctx.services.controls) throw new MedvError('ENOENT', 'this server does not keep client orders');
  return ctx.services.controls;
}

const back = (scope: ControlScope, subject: string) => `/console/${scope === 'client' ? 'clients' : 'users'}/${seg(subject)}`;

/** The orders of a client or user, the wipes confirmed, and the form to give one. */
export function Orders(p: { ctx: Ctx; scope: ControlScope; subject: string; orders: ControlRow[]; wipes: WipeRow[]; workspaces: string[]; offlineUntil: string | null }): Html {
  const { ctx, scope, subject } = p;
  const who = scope === 'client' ? `client ${subject}` : `every client of ${subject}`;
  return (
    <section aria-labelledby="h-orders">
      <h2 id="h-orders">Lock, wipe, revoke</h2>
      <p class="sub">{`Orders reach ${who} at its next contact with the server (every workspace start it can). `}
        {p.offlineUntil === null ? 'No grant has been made here yet.'
          : Date.parse(p.offlineUntil) > Date.now()
            ? <>Its offline allowance: a client that stays offline may go on starting its workspaces until <Time iso={p.offlineUntil} relative />.</>
            : 'No offline allowance is left: it cannot start without contacting the server.'}
      </p>
      <DataTable caption="Standing orders (they hold until cleared)." columns={['Order', 'Workspace', 'Reason', 'Given', '']} empty="No order stands."
        rows={p.orders.map((o) => (
          <tr>
            <td><Badge tone={o.action === 'lock' ? 'warn' : 'bad'}>{o.action}</Badge>{o.scope !== scope ? ` (for ${o.scope} ${o.subject})` : ''}</td>
            <td>{o.workspace ?? 'every workspace'}</td>
            <td>{o.reason}</td>
            <td><Time iso={o.at} relative /> by {o.by}</td>
            <td>
              <form method="post" action="/console/controls/clear" data-confirm={`Clear the ${o.action} order?`}>
                <Csrf token={ctx.frame.csrf} />
                <input type="hidden" name="scope" value={o.scope} />
                <input type="hidden" name="subject" value={o.subject} />
                <input type="hidden" name="workspace" value={o.workspace ?? ''} />
                <input type="hidden" name="action" value={o.action} />
                <input type="hidden" name="back" value={back(scope, subject)} />
                <button type="submit" class="secondary">{o.action === 'lock' ? 'Unlock' : 'Clear'}</button>
              </form>
            </td>
          </tr>
        ))} />
      {p.wipes.length ? <DataTable caption="Wipes the clients confirmed." columns={['Client', 'User', 'Workspace', 'Wiped']} empty=""
        rows={p.wipes.map((w) => <tr><td>{w.client}</td><td>{w.user}</td><td>{w.workspace}</td><td><Time iso={w.at} relative /></td></tr>)} /> : ''}
      <form class="editor panel" method="post" action="/console/controls" aria-label={`Give an order to ${who}`} data-confirm={`Give this order to ${who}?`}>
        <Csrf token={ctx.frame.csrf} />
        <input type="hidden" name="scope" value={scope} />
        <input type="hidden" name="subject" value={subject} />
        <fieldset class="inline">
          <legend>Order</legend>
          {(['lock', 'wipe', 'revoke'] as const).map((a, i) => (
            <div class="check"><input type="radio" id={`f-action-${a}`} name="action" value={a} checked={i === 0} /><label for={`f-action-${a}`}>{WHAT[a]}</label></div>
          ))}
        </fieldset>
        <div class="grid">
          <div class="field">
            <label for="f-order-workspace">Workspace</label>
            <select id="f-order-workspace" name="workspace">
              <option value="">every workspace</option>
              {p.workspaces.map((w) => <option value={w}>{w}</option>)}
            </select>
          </div>
        </div>
        <div class="field wide">
          <label for="f-reason">Reason (the user sees it)</label>
          <textarea id="f-reason" name="reason" rows="2" required></textarea>
        </div>
        <button type="submit" class="danger">Give the order</button>
      </form>
    </section>
  );
}

/** A console path to go back to after an order: a client's or user's page, nothing else. */
function backTo(v: string | null): string {
  return v && /^\/console\/(clients|users)\/[A-Za-z0-9._%-]{1,200}$/.test(v) ? v : '/console/clients';
}

export async function giveOrder(ctx: Ctx): Promise<Answer> {
  const f = ctx.form;
  const o = await controls(ctx).set({ action: f.get('action'), scope: f.get('scope'), subject: f.get('subject'), workspace: f.get('workspace') ?? '', reason: f.get('reason') }, ctx.session!.user);
  return redirect(`${back(o.scope, o.subject)}?order=${o.action}#h-orders`);
}

export async function clearOrder(ctx: Ctx): Promise<Answer> {
  const f = ctx.form;
  const action = f.get('action');
  await controls(ctx).clear({ scope: f.get('scope'), subject: f.get('subject'), workspace: f.get('workspace') ?? undefined, action: action || undefined }, ctx.session!.user);
  return redirect(`${backTo(f.get('back'))}?cleared=1#h-orders`);
}
