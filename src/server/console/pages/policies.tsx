/**
 * Policies: every policy (newest version, how many versions), one policy's versions with a form to
 * compare two, one version (who it entitles, its workspaces, the document), and the diff of two
 * versions (policy-diff.ts). The same calls as GET /api/admin/policies/summary, …/versions,
 * …/document and …/diff.
 */
import { checkUserName } from '../../../api/names.js';
import { intParam, pageQuery, textParam } from '../../requests.js';
import type { DiffEntry } from '../../policy-diff.js';
import { type Answer, type Ctx, page } from '../context.js';
import { Badge, DataTable, Field, Filters, Json, Pager, Time, count, href, seg } from '../components.js';
import type { Html } from '../html.js';
import { Page } from '../layout.js';

const MAX_VERSION = 2 ** 31 - 1;

export async function policiesPage(ctx: Ctx): Promise<Answer> {
  const q = textParam(ctx.query, 'q');
  const p = await ctx.services.accounts.policiesPage(q, pageQuery(ctx.query));
  return page(
    <Page {...ctx.frame} title="Policies" nav="policies">
      <h1>Policies</h1>
      <p class="sub">Each publish of a name makes its next version; users get the newest version of each policy that names them or their groups.</p>
      <div class="actions"><a class="button" href="/console/new-policy">New policy</a></div>
      <Filters action="/console/policies" label="Filter policies"><Field label="Name contains" name="q" value={q} /></Filters>
      <div id="results">
        <DataTable caption={`${count(p.total)} polic${p.total === 1 ? 'y' : 'ies'} match.`} columns={['Policy', { label: 'Newest version', num: true }, { label: 'Versions', num: true }, 'Published', 'By']} empty="No policy matches."
          rows={p.rows.map((r) => (
            <tr>
              <td><a href={`/console/policies/${seg(r.name)}`}>{r.name}</a></td>
              <td class="num"><a href={`/console/policies/${seg(r.name)}/v/${r.latest}`}>{r.latest}</a>{r.unpublished ? <> <Badge tone="warn">unpublished</Badge></> : ''}</td>
              <td class="num">{count(r.versions)}</td>
              <td><Time iso={r.published} relative /></td>
              <td>{r.publisher}</td>
            </tr>
          ))} />
        <Pager page={p} base="/console/policies" params={{ q }} />
      </div>
    </Page>,
  );
}

function DiffForm(p: { name: string; versions: number[]; from?: number; to?: number }): Html {
  const opts = (sel?: number) => p.versions.map((v) => <option value={String(v)} selected={v === sel}>{`version ${v}`}</option>);
  return (
    <form class="filters" method="get" action={`/console/policies/${seg(p.name)}/diff`} aria-label="Compare two versions">
      <div class="field"><label for="f-from">From</label><select id="f-from" name="from">{opts(p.from ?? p.versions[1] ?? p.versions[0])}</select></div>
      <div class="field"><label for="f-to">To</label><select id="f-to" name="to">{opts(p.to ?? p.versions[0])}</select></div>
      <button type="submit">Compare</button>
    </form>
  );
}

export async function policyPage(ctx: Ctx): Promise<Answer> {
  const name = checkUserName(ctx.params[0], 'policy');
  const versions = await ctx.services.accounts.policyVersions(name);
  const published = intParam(ctx.query, 'published', 1, MAX_VERSION);
  const unpublished = intParam(ctx.query, 'unpublished', 1, MAX_VERSION);
  const inForce = !versions[0].unpublished;
  return page(
    <Page {...ctx.frame} title={`Policy ${name}`} nav="policies">
      <h1>Policy {name}</h1>
      {published ? <div class="message ok" role="status">{`Version ${published} published: clients get it at their next contact.`}</div> : ''}
      {unpublished ? <div class="message ok" role="status">{`Unpublished (version ${unpublished} entitles nobody).`}</div> : ''}
      <div class="actions">
        <a class="button" href={`/console/policies/${seg(name)}/edit`}>{inForce ? 'Edit' : 'Edit and publish again'}</a>
        {inForce ? <a class="button secondary" href={`/console/policies/${seg(name)}/unpublish`}>Unpublish…</a> : <Badge tone="warn">unpublished</Badge>}
      </div>
      {versions.length > 1 ? <DiffForm name={name} versions={versions.map((v) => v.version)} /> : ''}
      <DataTable caption={`Every published version of ${name}, newest first; users get the newest.`} columns={[{ label: 'Version', num: true }, 'Published', 'By', '']} empty="No version."
        rows={versions.map((v, i) => (
          <tr>
            <td class="num"><a href={`/console/policies/${seg(name)}/v/${v.version}`}>{v.version}</a></td>
            <td><Time iso={v.published} relative /></td>
            <td>{v.publisher}</td>
            <td>{v.unpublished ? <Badge tone="warn">unpublishes</Badge> : i === 0 ? <Badge tone="ok">in force</Badge> : <a href={href(`/console/policies/${seg(name)}/diff`, { from: v.version, to: versions[0].version })}>{`changes since version ${v.version}`}</a>}</td>
          </tr>
        ))} />
    </Page>,
  );
}

interface Workspace { name?: unknown; image?: unknown; mode?: unknown; memory?: unknown; network?: unknown; offlineDays?: unknown; expires?: unknown }

export async function policyVersionPage(ctx: Ctx): Promise<Answer> {
  const name = checkUserName(ctx.params[0], 'policy');
  const version = Number(ctx.params[1]);
  const v = await ctx.services.accounts.policyVersion(name, version);
  const doc = v.document as { description?: unknown; users?: unknown[]; groups?: unknown[]; workspaces?: Workspace[] };
  const text = (x: unknown) => (x === undefined ? '–' : typeof x === 'string' ? x : JSON.stringify(x));
  return page(
    <Page {...ctx.frame} title={`Policy ${name} version ${version}`} nav="policies">
      <h1>Policy {name}, version {version}</h1>
      <p class="sub"><a href={`/console/policies/${seg(name)}`}>All versions of {name}</a></p>
      <div class="panel">
        <dl class="facts">
          <dt>Published</dt><dd><Time iso={v.published} relative /> by {v.publisher}</dd>
          <dt>Description</dt><dd>{typeof doc.description === 'string' ? doc.description : '–'}</dd>
          <dt>Users</dt><dd>{(doc.users ?? []).map(String).join(', ') || 'none'}</dd>
          <dt>Groups</dt><dd>{(doc.groups ?? []).map(String).join(', ') || 'none'}</dd>
        </dl>
      </div>
      <h2>Workspaces</h2>
      <DataTable caption="The workspaces this version defines." columns={['Workspace', 'Image', 'Mode', 'Memory', 'Network', { label: 'Offline days', num: true }, 'Expires']} empty="None."
        rows={(doc.workspaces ?? []).map((w) => (
          <tr>
            <td>{text(w.name)}</td>
            <td>{typeof w.image === 'string' ? <a href={`/console/images/${seg(w.image)}`}>{w.image}</a> : '–'}</td>
            <td>{text(w.mode ?? 'persistent')}</td><td>{typeof w.memory === 'number' ? `${w.memory} MiB` : text(w.memory)}</td>
            <td>{text(w.network ?? 'nat')}</td><td class="num">{text(w.offlineDays ?? 0)}</td><td>{text(w.expires)}</td>
          </tr>
        ))} />
      <h2>Document</h2>
      <Json value={v.document} />
    </Page>,
  );
}

export function DiffList(p: { changes: DiffEntry[] }): Html {
  const show = (x: unknown) => JSON.stringify(x);
  if (!p.changes.length) return <p class="panel">The two versions are the same.</p>;
  return (
    <ul class="diff">
      {p.changes.map((c) => (
        <li class={c.kind}>
          <strong>{c.kind}</strong> <code>{c.path}</code>
          {c.kind === 'changed' ? <>: <code>{show(c.before)}</code> → <code>{show(c.after)}</code></> : <>: <code>{show(c.kind === 'added' ? c.after : c.before)}</code></>}
        </li>
      ))}
    </ul>
  );
}

export async function policyDiffPage(ctx: Ctx): Promise<Answer> {
  const name = checkUserName(ctx.params[0], 'policy');
  const versions = await ctx.services.accounts.policyVersions(name);
  const from = intParam(ctx.query, 'from', 1, MAX_VERSION) ?? versions[1]?.version ?? versions[0].version;
  const to = intParam(ctx.query, 'to', 1, MAX_VERSION) ?? versions[0].version;
  const d = await ctx.services.accounts.policyDiff(name, from, to);
  return page(
    <Page {...ctx.frame} title={`Policy ${name}: version ${from} → ${to}`} nav="policies">
      <h1>Policy {name}: changes from version {from} to {to}</h1>
      <p class="sub"><a href={`/console/policies/${seg(name)}`}>All versions of {name}</a></p>
      <DiffForm name={name} versions={versions.map((v) => v.version)} from={from} to={to} />
      <h2>{count(d.changes.length)} change{d.changes.length === 1 ? '' : 's'}</h2>
      <DiffList changes={d.changes} />
    </Page>,
  );
}
