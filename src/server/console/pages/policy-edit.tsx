/**
 * Writing policies: a form for a workspace entry and a JSON editor for the whole document; a
 * schema error is shown at its field (by JSON path); before anything is published, a preview of
 * who the change reaches (policy-preview.ts: users, workspaces and clients gained, lost or
 * changed) and the diff against the version in force; publishing makes the next version;
 * unpublishing, after the same preview, makes a version that entitles nobody. The service calls
 * are those of POST /api/admin/policies, /api/admin/policies/preview and /api/admin/policies/unpublish.
 */
import { MedvError } from '../../../core/errors.js';
import { checkUserName } from '../../../api/names.js';
import { type PolicyPreview, PREVIEW_LIST_MAX } from '../../policy-preview.js';
import { diffPolicies } from '../../policy-diff.js';
import { type Answer, type Ctx, page, redirect } from '../context.js';
import { Csrf, DataTable, count, seg } from '../components.js';
import type { Html } from '../html.js';
import { Page } from '../layout.js';
import { DEVICES, type Doc, type FormValues, fieldFor, fromForm, toForm, workspacesOf } from '../policy-form.js';
import { DiffList } from './policies.js';

const TEMPLATE: Doc = { name: '', users: [], groups: [], workspaces: [{ name: '', image: '', mode: 'persistent', network: 'nat', offlineDays: 0 }] };

interface FieldError { field?: string; path: string; message: string }

function pretty(doc: unknown): string {
  return JSON.stringify(doc, null, 2);
}

function FieldMessage(p: { id: string; error?: FieldError }): Html {
  return p.error?.field === p.id ? <p class="field-error" id={`e-${p.id}`}>{`${p.error.path}: ${p.error.message}`}</p> : <></>;
}

function Input(p: { id: string; label: string; value: string; error?: FieldError; type?: string; hint?: string; list?: string }): Html {
  const bad = p.error?.field === p.id;
  return (
    <div class="field">
      <label for={`f-${p.id}`}>{p.label}</label>
      <input id={`f-${p.id}`} name={p.id} type={p.type ?? 'text'} value={p.value} aria-invalid={bad ? 'true' : undefined} aria-describedby={bad ? `e-${p.id}` : undefined} list={p.list} />
      {p.hint ? <span class="muted hint">{p.hint}</span> : ''}
      <FieldMessage id={p.id} error={p.error} />
    </div>
  );
}

function Choice(p: { id: string; label: string; value: string; options: [string, string][]; error?: FieldError }): Html {
  const bad = p.error?.field === p.id;
  return (
    <div class="field">
      <label for={`f-${p.id}`}>{p.label}</label>
      <select id={`f-${p.id}`} name={p.id} aria-invalid={bad ? 'true' : undefined} aria-describedby={bad ? `e-${p.id}` : undefined}>
        {p.options.map(([v, t]) => <option value={v} selected={v === p.value}>{t}</option>)}
      </select>
      <FieldMessage id={p.id} error={p.error} />
    </div>
  );
}

function Check(p: { id: string; label: string; checked: boolean }): Html {
  return <div class="check"><input type="checkbox" id={`f-${p.id}`} name={p.id} checked={p.checked} /><label for={`f-${p.id}`}>{p.label}</label></div>;
}

function Area(p: { id: string; label: string; value: string; rows: number; error?: FieldError; hint?: string }): Html {
  const bad = p.error?.field === p.id;
  return (
    <div class="field wide">
      <label for={`f-${p.id}`}>{p.label}</label>
      <textarea id={`f-${p.id}`} name={p.id} rows={String(p.rows)} aria-invalid={bad ? 'true' : undefined} aria-describedby={bad ? `e-${p.id}` : undefined}>{p.value}</textarea>
      {p.hint ? <span class="muted hint">{p.hint}</span> : ''}
      <FieldMessage id={p.id} error={p.error} />
    </div>
  );
}

function Editor(p: { ctx: Ctx; base: Doc; v: FormValues; json: string; error?: FieldError; editing?: string }): Html {
  const { v, error } = p;
  const wss = workspacesOf(p.base);
  const jsonBad = error !== undefined && error.field === undefined;
  const title = p.editing ? `Edit policy ${p.editing}` : 'New policy';
  return (
    <Page {...p.ctx.frame} title={title} nav="policies">
      <h1>{title}</h1>
      <p class="sub">Nothing is published until you have seen who the change reaches. The fields are those of docs/policy.md; an empty field leaves its default.</p>
      {error ? <div class="message bad" role="alert">{`The policy is not valid: ${error.path} ${error.message}`}{error.field ? ' (shown at the field below)' : ' (shown at the JSON editor below)'}</div> : ''}
      <form class="editor panel" method="post" action="/console/policies/preview" aria-label="Policy form">
        <Csrf token={p.ctx.frame.csrf} />
        <input type="hidden" name="from" value="form" />
        <input type="hidden" name="base" value={JSON.stringify(p.base)} />
        <input type="hidden" name="ws" value={String(v.ws)} />
        <input type="hidden" name="memoryTable" value={v.memoryTable ? '1' : '0'} />
        <fieldset>
          <legend>Policy</legend>
          <Input id="name" label="Name" value={v.name} error={error} hint="each publish of a name makes its next version" />
          <Area id="description" label="Description" value={v.description} rows={2} error={error} />
          <Area id="users" label="Users (one per line)" value={v.users} rows={3} error={error} />
          <Area id="groups" label="Groups (one per line)" value={v.groups} rows={3} error={error} />
        </fieldset>
        <fieldset>
          <legend>{`Workspace ${v.ws + 1} of ${Math.max(wss.length, v.ws + 1)}`}</legend>
          {wss.length > 1 || p.editing ? (
            <p class="muted">Edit another: {wss.map((w, i) => <>{i ? ' · ' : ''}{i === v.ws ? <strong>{String(w.name ?? i + 1)}</strong> : <a href={`/console/policies/${seg(p.editing ?? '')}/edit?ws=${i}`}>{String(w.name || i + 1)}</a>}</>)}{p.editing ? <> · <a href={`/console/policies/${seg(p.editing)}/edit?ws=${wss.length}`}>add a workspace</a></> : ''}</p>
          ) : ''}
          <div class="grid">
            <Input id="ws_name" label="Workspace name" value={v.ws_name} error={error} />
            <Input id="ws_image" label="Image" value={v.ws_image} error={error} />
            <Choice id="ws_mode" label="Mode" value={v.ws_mode} error={error} options={[['', 'persistent (default)'], ['persistent', 'persistent'], ['revertible', 'revertible: writes discarded at stop']]} />
            <Choice id="ws_onStop" label="At stop" value={v.ws_onStop} error={error} options={[['', 'shut down (default)'], ['shutdown', 'shut down'], ['suspend', 'suspend (encrypted state kept)']]} />
            {v.memoryTable ? <div class="field"><span class="label">Memory</span><span class="muted">a table by host RAM: edit it in the JSON editor</span></div> : <Input id="ws_memory" label="Memory (MiB)" value={v.ws_memory} error={error} type="text" />}
            <Choice id="ws_network" label="Network" value={v.ws_network} error={error} options={[['', 'NAT (default)'], ['nat', 'NAT'], ['none', 'none']]} />
            <Input id="ws_offlineDays" label="Offline days" value={v.ws_offlineDays} error={error} hint="days it may start without reaching the server" />
            <Input id="ws_expires" label="Expires (last day, UTC)" value={v.ws_expires} error={error} type="date" />
            <Input id="ws_versionsToKeep" label="Older versions kept" value={v.ws_versionsToKeep} error={error} />
            <Choice id="ws_diskBus" label="Disk bus" value={v.ws_diskBus} error={error} options={[['', 'IDE (default)'], ['ide', 'IDE'], ['virtio', 'virtio']]} />
            <Choice id="ws_nic" label="Network card" value={v.ws_nic} error={error} options={[['', 'e1000 (default)'], ['e1000', 'e1000'], ['virtio', 'virtio']]} />
            <Input id="ws_minEngine" label="Oldest medv engine" value={v.ws_minEngine} error={error} />
          </div>
          <fieldset class="inline" aria-describedby={error?.field === 'devices' ? 'e-devices' : undefined}>
            <legend>Devices the guest may use</legend>
            {DEVICES.map((d) => <Check id={`dev_${d}`} label={d} checked={v.devices[d]} />)}
            <FieldMessage id="devices" error={error} />
          </fieldset>
          <div class="checks">
            <Check id="ws_suggestUpdate" label="Ask users before switching to a new version" checked={v.ws_suggestUpdate} />
            <Check id="ws_useTrimTransfer" label="Fetch only the blocks a client lacks (TrimTransfer)" checked={v.ws_useTrimTransfer} />
          </div>
          <Area id="ws_applications" label="Published applications (one per line: name | command | icon)" value={v.ws_applications} rows={3} error={error} />
        </fieldset>
        <button type="submit">Preview who this reaches</button>
      </form>
      <form class="editor panel" method="post" action="/console/policies/preview" aria-label="Policy JSON editor">
        <Csrf token={p.ctx.frame.csrf} />
        <input type="hidden" name="from" value="json" />
        <h2>JSON editor</h2>
        <div class="field wide">
          <label for="f-json">The whole document</label>
          <textarea id="f-json" name="json" rows="18" class="mono" spellcheck="false" aria-invalid={jsonBad ? 'true' : undefined} aria-describedby={jsonBad ? 'e-json' : undefined}>{p.json}</textarea>
          {jsonBad ? <p class="field-error" id="e-json">{`${error!.path}: ${error!.message}`}</p> : ''}
        </div>
        <button type="submit">Preview who this reaches</button>
      </form>
    </Page>
  );
}

async function newestDoc(ctx: Ctx, name: string): Promise<Doc> {
  const versions = await ctx.services.accounts.policyVersions(name);
  return (await ctx.services.accounts.policyVersion(name, versions[0].version)).document as Doc;
}

export async function newPolicyPage(ctx: Ctx): Promise<Answer> {
  return page(Editor({ ctx, base: TEMPLATE, v: toForm(TEMPLATE, 0), json: pretty(TEMPLATE) }));
}

export async function editPolicyPage(ctx: Ctx): Promise<Answer> {
  const name = checkUserName(ctx.params[0], 'policy');
  const doc = await newestDoc(ctx, name);
  const ws = Math.min(workspacesOf(doc).length, Number(ctx.query.get('ws') ?? 0) || 0);
  return page(Editor({ ctx, base: doc, v: toForm(doc, ws), json: pretty(doc), editing: name }));
}

function parseDoc(text: string, what: string): Doc {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    const m = /position (\d+)/.exec((e as Error).message);
    const at = m ? Number(m[1]) : undefined;
    const line = at === undefined ? '' : ` (line ${text.slice(0, at).split('\n').length}, column ${at - text.lastIndexOf('\n', at - 1)})`;
    throw new MedvError('EPOLICY', `is not JSON: ${(e as Error).message}${line}`, { path: '/', what });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new MedvError('EPOLICY', 'must be a JSON object', { path: '/' });
  return v as Doc;
}

function Reach(p: { r: PolicyPreview }): Html {
  const { r } = p;
  const cut = <T,>(xs: T[]) => xs.slice(0, PREVIEW_LIST_MAX);
  const more = (xs: unknown[]) => (xs.length > PREVIEW_LIST_MAX ? <p class="muted">{`… and ${count(xs.length - PREVIEW_LIST_MAX)} more`}</p> : '');
  return (
    <section aria-labelledby="h-reach">
      <h2 id="h-reach">Who this reaches</h2>
      <div class="cards">
        <div class="card"><span class="n">{count(r.users.gained.length)}</span><span class="label">users gain this policy</span></div>
        <div class={r.users.lost.length ? 'card alert' : 'card'}><span class="n">{count(r.users.lost.length)}</span><span class="label">users lose it</span></div>
        <div class="card"><span class="n">{count(r.workspaces.gained.length)}</span><span class="label">workspaces gained</span></div>
        <div class={r.workspaces.lost.length ? 'card alert' : 'card'}><span class="n">{count(r.workspaces.lost.length)}</span><span class="label">workspaces lost</span></div>
        <div class="card"><span class="n">{count(r.workspaces.changed.length)}</span><span class="label">workspaces changed</span></div>
        <div class={r.clients.losing.length ? 'card alert' : 'card'}><span class="n">{count(r.clients.losing.length + r.clients.changing.length)}</span><span class="label">clients affected at their next contact</span></div>
      </div>
      {r.users.gained.length ? <><h3>Users who gain it</h3><p class="names">{cut(r.users.gained).join(', ')}</p>{more(r.users.gained)}</> : ''}
      {r.users.lost.length ? <><h3>Users who lose it</h3><p class="names">{cut(r.users.lost).join(', ')}</p>{more(r.users.lost)}</> : ''}
      {r.workspaces.gained.length + r.workspaces.lost.length + r.workspaces.changed.length ? (
        <DataTable caption="Workspaces per user that appear, disappear or change (first 200 of each)." columns={['User', 'Workspace', 'Change', 'Image', 'Policy']} empty=""
          rows={[
            ...cut(r.workspaces.gained).map((x) => <tr><td>{x.user}</td><td>{x.workspace}</td><td>gained</td><td>{x.image ?? '–'}</td><td>{x.policy}</td></tr>),
            ...cut(r.workspaces.lost).map((x) => <tr><td>{x.user}</td><td>{x.workspace}</td><td>lost</td><td>{x.image ?? '–'}</td><td>{x.policy}</td></tr>),
            ...cut(r.workspaces.changed).map((x) => <tr><td>{x.user}</td><td>{x.workspace}</td><td>changed</td><td>{x.before.image === x.after.image ? (x.after.image ?? '–') : `${x.before.image ?? '–'} → ${x.after.image ?? '–'}`}</td><td>{x.before.policy === x.after.policy ? x.after.policy : `${x.before.policy} → ${x.after.policy}`}</td></tr>),
          ]} />
      ) : <p class="panel">No user gains, loses or sees a change of any workspace.</p>}
      {r.clients.losing.length + r.clients.changing.length ? (
        <DataTable caption="Clients holding a grant for a workspace that is lost or changes (first 200 of each)." columns={['Client', 'User', 'Workspace', 'At its next contact']} empty=""
          rows={[
            ...cut(r.clients.losing).map((c) => <tr><td><a href={`/console/clients/${seg(c.client)}`}>{c.client}</a></td><td>{c.user}</td><td>{c.workspace}</td><td>refused (offline it may start until its allowance ends)</td></tr>),
            ...cut(r.clients.changing).map((c) => <tr><td><a href={`/console/clients/${seg(c.client)}`}>{c.client}</a></td><td>{c.user}</td><td>{c.workspace}</td><td>gets the new settings</td></tr>),
          ]} />
      ) : ''}
    </section>
  );
}

export async function previewPolicyPage(ctx: Ctx): Promise<Answer> {
  const from = ctx.form.get('from') === 'json' ? 'json' : 'form';
  let base: Doc = TEMPLATE;
  let doc: Doc;
  let ws = 0;
  try {
    if (from === 'json') {
      doc = parseDoc(ctx.form.get('json') ?? '', 'json');
    } else {
      base = parseDoc(ctx.form.get('base') ?? '{}', 'base');
      ws = Math.max(0, Number(ctx.form.get('ws') ?? 0) || 0);
      doc = fromForm(ctx.form, base);
    }
  } catch (e) {
    if (!(e instanceof MedvError) || e.code !== 'EPOLICY') throw e;
    return page(Editor({ ctx, base, v: toForm(base, ws), json: ctx.form.get('json') ?? pretty(base), error: { path: '/', message: e.message } }), 400);
  }
  let preview: PolicyPreview;
  try {
    preview = await ctx.services.accounts.previewPolicy(doc);
  } catch (e) {
    if (!(e instanceof MedvError) || e.code !== 'EPOLICY') throw e;
    const path = String(e.data.path ?? '/');
    const message = e.message.replace(/^policy field \S+ /, '');
    const field = from === 'form' ? fieldFor(path, ws) : undefined;
    return page(Editor({ ctx, base: from === 'form' ? doc : base, v: toForm(from === 'form' ? doc : base, ws), json: from === 'json' ? (ctx.form.get('json') ?? '') : pretty(doc), error: { field, path, message } }), 400);
  }
  const name = String(doc.name);
  const current = preview.current === null ? null : (await ctx.services.accounts.policyVersion(name, preview.current)).document;
  const changes = diffPolicies(current ?? {}, doc);
  return page(
    <Page {...ctx.frame} title={`Publish policy ${name}?`} nav="policies">
      <h1>{`Publish policy ${name} as version ${preview.next}?`}</h1>
      <p class="sub">{preview.current === null ? 'No version of this policy is in force now.' : `Version ${preview.current} is in force now.`} Clients learn the change at their next contact with the server; offline, they go on with what they have until their offline allowance ends.</p>
      <Reach r={preview} />
      <h2>{`Changes from ${preview.current === null ? 'nothing' : `version ${preview.current}`}`}</h2>
      <DiffList changes={changes} />
      <div class="actions">
        <form method="post" action="/console/policies/publish">
          <Csrf token={ctx.frame.csrf} />
          <input type="hidden" name="json" value={JSON.stringify(doc)} />
          <button type="submit">{`Publish version ${preview.next}`}</button>
        </form>
        <form method="post" action="/console/policies/preview">
          <Csrf token={ctx.frame.csrf} />
          <input type="hidden" name="from" value="json" />
          <input type="hidden" name="json" value={pretty(doc)} />
          <button type="submit" class="secondary" name="back" value="1">Preview again</button>
        </form>
      </div>
      <h2>The document</h2>
      <pre class="doc"><code>{pretty(doc)}</code></pre>
    </Page>,
  );
}

export async function publishPolicyAction(ctx: Ctx): Promise<Answer> {
  const doc = parseDoc(ctx.form.get('json') ?? '', 'json');
  const r = await ctx.services.accounts.publishPolicy(doc, ctx.session!.user);
  return redirect(`/console/policies/${seg(r.name)}?published=${r.version}`);
}

export async function unpublishPolicyPage(ctx: Ctx): Promise<Answer> {
  const name = checkUserName(ctx.params[0], 'policy');
  const preview = await ctx.services.accounts.previewUnpublish(name);
  return page(
    <Page {...ctx.frame} title={`Unpublish policy ${name}?`} nav="policies">
      <h1>{`Unpublish policy ${name}?`}</h1>
      <p class="sub">{preview.current === null ? 'This policy is not in force: unpublishing changes nothing.' : `Version ${preview.next} will entitle nobody; versions up to ${preview.current} are kept and can be published again.`}</p>
      <Reach r={preview} />
      <form method="post" action={`/console/policies/${seg(name)}/unpublish`} class="actions">
        <Csrf token={ctx.frame.csrf} />
        <button type="submit" class="danger" disabled={preview.current === null}>{`Unpublish ${name}`}</button>
        <a class="button secondary" href={`/console/policies/${seg(name)}`}>Cancel</a>
      </form>
    </Page>,
  );
}

export async function unpublishPolicyAction(ctx: Ctx): Promise<Answer> {
  const name = checkUserName(ctx.params[0], 'policy');
  const r = await ctx.services.accounts.unpublishPolicy(name, ctx.session!.user);
  return redirect(`/console/policies/${seg(name)}?unpublished=${r.version}`);
}

