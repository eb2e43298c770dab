/**
 * Lock, wipe, revoke: the administrator's standing orders for a lost or misused client, or a user,
 * and how a client meets them. A client contacts the server at every workspace start it can (the
 * grant, keyservice.ts); there the strongest order that applies answers instead of the keys:
 *
 *   revoke  403 EFORBIDDEN "… revoked by the administrator: <reason>": no keys; the client forgets its
 *           cached grant and keys (it will not start offline). For a user, their tokens are revoked
 *           too (the next contact asks them to log in, and the order still refuses them).
 *   wipe    410 EWIPED "<reason>": the client deletes that workspace's wrapped keys first (once they
 *           are gone the data is unreadable), then its disks and saved state, then says so
 *           (POST /api/workspaces/wiped); it cannot start the workspace again while the order stands.
 *   lock    423 ELOCKED "<reason>": the client forgets its cached grant and keys (no offline start)
 *           and refuses to start, naming the reason; its disks stay. Unlocking lets the next start
 *           be granted again.
 *
 * An order names a client (by its id) or a user (all their clients), and one workspace or all of
 * them; it stands until cleared ("unlock" clears any). Offline, a client learns nothing: its
 * policy's offline allowance (from its last grant) bounds how long it may go on — the console
 * shows that date beside each action. A client id is the client's own word: a client lock stops a
 * lost laptop whose root is used as it is; against a user who would make up another id, lock,
 * wipe or revoke the user.
 */
import { MedvError } from '../core/errors.js';
import { checkClientId, checkUserName, checkWorkspaceName } from '../api/names.js';
import { LIMITS, type ControlAction, type ControlRow, type ControlScope, type Store, type WipeRow } from './store/index.js';
import type { Audit } from './audit.js';

export const CONTROL_ACTIONS: readonly ControlAction[] = ['lock', 'wipe', 'revoke'];
export const CONTROL_SCOPES: readonly ControlScope[] = ['client', 'user'];
/** Strongest first: the order that answers when several apply. */
const STRENGTH: ControlAction[] = ['revoke', 'wipe', 'lock'];

export interface ControlOrder { action: ControlAction; scope: ControlScope; subject: string; workspace?: string | null; reason: string }

function checkSubject(scope: unknown, subject: unknown): { scope: ControlScope; subject: string } {
  if (scope !== 'client' && scope !== 'user') throw new MedvError('EINVAL_ARG', 'scope must be client or user');
  return { scope, subject: scope === 'client' ? checkClientId(subject) : checkUserName(subject) };
}

function checkReason(v: unknown): string {
  if (typeof v !== 'string' || !v.trim() || v.length > LIMITS.reason || /[\x00-\x08\x0b-\x1f\x7f]/.test(v)) {
    throw new MedvError('EINVAL_ARG', `reason must be 1 to ${LIMITS.reason} characters of text (the client shows it to the user)`);
  }
  return v.trim();
}

export class ClientControls {
  constructor(readonly store: Store, readonly audit: Audit) {}

  /** Give an order (or give it again with a new reason). */
  async set(o: { action?: unknown; scope?: unknown; subject?: unknown; workspace?: unknown; reason?: unknown }, actor: string, address = ''): Promise<ControlRow & { tokensRevoked?: number }> {
    if (!CONTROL_ACTIONS.includes(o.action as ControlAction)) throw new MedvError('EINVAL_ARG', `action must be one of ${CONTROL_ACTIONS.join(', ')}`);
    const action = o.action as ControlAction;
    const { scope, subject } = checkSubject(o.scope, o.subject);
    const workspace = o.workspace === undefined || o.workspace === null || o.workspace === '' ? '' : checkWorkspaceName(o.workspace);
    const reason = checkReason(o.reason);
    await this.store.controls.set(scope, subject, workspace, action, reason, actor);
    const tokensRevoked = action === 'revoke' && scope === 'user' ? await this.store.controls.revokeTokensOf(subject) : undefined;
    await this.audit.record({ actor, action: `client.${action}`, target: subject, address, detail: { scope, ...(workspace ? { workspace } : {}), reason, ...(tokensRevoked !== undefined ? { tokensRevoked } : {}) } });
    const row = (await this.store.controls.list(scope, subject)).find((r) => r.action === action && (r.workspace ?? '') === workspace)!;
    return tokensRevoked === undefined ? row : { ...row, tokensRevoked };
  }

  /** Clear orders of a subject ("unlock"): one workspace's or all, one action's or all. */
  async clear(o: { scope?: unknown; subject?: unknown; workspace?: unknown; action?: unknown }, actor: string, address = ''): Promise<{ cleared: number }> {
    const { scope, subject } = checkSubject(o.scope, o.subject);
    const workspace = o.workspace === undefined || o.workspace === null ? undefined : o.workspace === '' ? '' : checkWorkspaceName(o.workspace);
    if (o.action !== undefined && !CONTROL_ACTIONS.includes(o.action as ControlAction)) throw new MedvError('EINVAL_ARG', `action must be one of ${CONTROL_ACTIONS.join(', ')}`);
    const cleared = await this.store.controls.clear(scope, subject, workspace, o.action as ControlAction | undefined);
    await this.audit.record({ actor, action: 'client.unlock', target: subject, address, detail: { scope, ...(workspace !== undefined ? { workspace } : {}), ...(o.action ? { only: o.action } : {}), cleared } });
    return { cleared };
  }

  list(scope?: ControlScope, subject?: string): Promise<ControlRow[]> {
    return this.store.controls.list(scope, subject);
  }

  wipes(o: { client?: string; user?: string }): Promise<WipeRow[]> {
    return this.store.controls.wipes(o);
  }

  /**
   * At a grant: throws the strongest order that applies to `user` on `client` for `workspace`
   * (audited as keys.deny with the order), else returns.
   */
  async check(user: string, client: string, workspace: string, address = ''): Promise<void> {
    const orders = await this.store.controls.applying(user, client, workspace);
    if (!orders.length) return;
    const o = STRENGTH.map((a) => orders.find((x) => x.action === a)).find((x) => x !== undefined)!;
    await this.audit.refused({ actor: user, action: 'keys.deny', target: workspace, address, detail: { client, reason: `${o.action} (${o.scope} ${o.subject})` } });
    const whose = o.scope === 'client' ? `client ${client}` : `user ${user}`;
    if (o.action === 'revoke') throw new MedvError('EFORBIDDEN', `workspace ${workspace} is revoked for ${whose} by the administrator: ${o.reason}`, { reason: o.reason });
    if (o.action === 'wipe') throw new MedvError('EWIPED', `the administrator ordered workspace ${workspace} wiped on ${whose}: ${o.reason}`, { reason: o.reason });
    throw new MedvError('ELOCKED', `workspace ${workspace} is locked for ${whose} by the administrator: ${o.reason}`, { reason: o.reason });
  }

  /** POST /api/workspaces/wiped: a client says it wiped a workspace (after a wipe order); EFORBIDDEN from a client that is not this user's. */
  async wiped(user: string, body: Record<string, unknown>, address = ''): Promise<{ ok: true }> {
    const client = checkClientId(body.client);
    const workspace = checkWorkspaceName(body.workspace);
    // only from a client this user was granted on (as a report): another user cannot make the
    // console show a wipe of someone else's client as done
    if (!await this.store.isClientOf(client, user)) {
      await this.audit.refused({ actor: user, action: 'client.wiped.refused', target: workspace, address, detail: { client, reason: 'not a client of this user' } });
      throw new MedvError('EFORBIDDEN', `client ${client} has no grant for user ${user}: only a client of yours can confirm a wipe`);
    }
    await this.store.controls.recordWipe(client, user, workspace);
    await this.audit.record({ actor: user, action: 'client.wiped', target: workspace, address, detail: { client } });
    return { ok: true };
  }
}
