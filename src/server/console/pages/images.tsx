/**
 * Images: every image in the repository (versions, size, keys, clients) and one image's versions
 * with what each costs: pack and index size, blocks new in that version, the bytes a client one
 * version behind downloads (from the two indexes, before anyone deploys it), the signature as
 * clients will judge it, and the clients that report it. The same calls as GET /api/admin/images
 * and /api/admin/images/versions (catalog.ts).
 */
import { checkImageName } from '../../../api/names.js';
import { MedvError } from '../../../core/errors.js';
import { intParam, textParam } from '../../requests.js';
import type { SignatureState, VersionInfo } from '../../catalog.js';
import { type Answer, type Ctx, page, redirect } from '../context.js';
import { Badge, Csrf, DataTable, Field, Filters, Time, bytes, count, href, seg } from '../components.js';
import type { Html } from '../html.js';
import { Page } from '../layout.js';

export async function imagesPage(ctx: Ctx): Promise<Answer> {
  const q = textParam(ctx.query, 'q');
  const list = await ctx.services.catalog.list(q);
  return page(
    <Page {...ctx.frame} title="Images" nav="images">
      <h1>Images</h1>
      <p class="sub">Packed images published in this server's repository.</p>
      <Filters action="/console/images" label="Filter images"><Field label="Name contains" name="q" value={q} /></Filters>
      <div id="results">
        <DataTable caption={`${count(list.length)} image${list.length === 1 ? '' : 's'}.`} columns={['Image', { label: 'Versions', num: true }, { label: 'Newest', num: true }, { label: 'Size', num: true }, 'Keys', { label: 'Client workspaces', num: true }]} empty="No image is published here (medv image upload)."
          rows={list.map((i) => (
            <tr>
              <td><a href={`/console/images/${seg(i.name)}`}>{i.name}</a></td>
              <td class="num">{count(i.versions)}</td>
              <td class="num">{i.latest ?? '–'}</td>
              <td class="num">{bytes(i.bytes)}</td>
              <td>{i.keys.published ? <Badge tone="ok">published</Badge> : <Badge tone="warn">not published</Badge>}</td>
              <td class="num">{i.clients ? <a href={href('/console/clients', { image: i.name })}>{count(i.clients)}</a> : '0'}</td>
            </tr>
          ))} />
      </div>
    </Page>,
  );
}

const SIGNATURE: Record<SignatureState, [string, 'ok' | 'warn' | 'bad' | 'plain']> = {
  trusted: ['signed by a published signer', 'ok'],
  untrusted: ['signer not among the published signers: clients refuse it', 'bad'],
  'no-keys': ['signature valid; no keys published', 'warn'],
  invalid: ['refused', 'bad'],
  'no-index': ['pack only: its index was pruned (newer versions may use it) or is still uploading', 'plain'],
};

function UpdateCell(p: { v: VersionInfo }): Html {
  const c = p.v.cost;
  if (!c) return <span class="muted">–</span>;
  const u = c.update;
  return (
    <span>
      <strong>{bytes(u.bytes)}</strong>
      <span class="muted">{u.from === null ? ' (first version: everything)' : ` from version ${u.from}: ${count(u.blocks)} blocks, index ${bytes(u.indexBytes)}`}</span>
    </span>
  );
}

export async function imagePage(ctx: Ctx): Promise<Answer> {
  const name = checkImageName(ctx.params[0]);
  const img = await ctx.services.catalog.image(name);
  const pruned = intParam(ctx.query, 'pruned', 0, 1_000_000);
  return page(
    <Page {...ctx.frame} title={`Image ${name}`} nav="images">
      <h1>Image {name}</h1>
      {pruned !== undefined ? <div class="message ok" role="status">{`Pruned: ${pruned} file${pruned === 1 ? '' : 's'} deleted.`}</div> : ''}
      <div class="panel">
        <dl class="facts">
          <dt>Versions</dt><dd>{count(img.versions)} (newest {img.latest ?? '–'}), {bytes(img.bytes)} in the repository</dd>
          <dt>Keys</dt><dd>{img.keys.published ? <>published <Time iso={img.keys.updated} relative /></> : 'not published: no client can be granted this image (medv admin image-keys publish)'}</dd>
          <dt>Client workspaces</dt><dd>{img.clients ? <a href={href('/console/clients', { image: name })}>{count(img.clients)}</a> : 'none reported'}</dd>
        </dl>
      </div>
      <DataTable caption="Every version, newest first. The update is what a client holding the version before downloads: changed blocks and the changed part of the index."
        columns={[{ label: 'Version', num: true }, 'Created', { label: 'Pack', num: true }, { label: 'Index', num: true }, { label: 'Blocks (new here)', num: true }, 'Update download', 'Signature', { label: 'Clients', num: true }, 'Test']}
        empty="No version."
        rows={img.list.map((v) => (
          <tr>
            <td class="num">{v.version}</td>
            <td><Time iso={v.created} /></td>
            <td class="num">{bytes(v.packBytes)}</td>
            <td class="num">{bytes(v.indexBytes)}</td>
            <td class="num">{v.cost ? `${count(v.cost.blocks)} (${count(v.cost.newBlocks)})` : '–'}</td>
            <td><UpdateCell v={v} /></td>
            <td><Badge tone={SIGNATURE[v.signature][1]}>{SIGNATURE[v.signature][0]}</Badge>{v.problem ? <div class="error">{v.problem}</div> : ''}{v.signer ? <div class="muted mono">{`${v.signer.slice(0, 16)}…`}</div> : ''}</td>
            <td class="num">{v.clients ? <a href={href('/console/clients', { image: name, version: v.version })}>{count(v.clients)}</a> : '0'}</td>
            <td>{v.indexBytes !== null ? <TestLink ctx={ctx} image={name} version={v.version} /> : ''}</td>
          </tr>
        ))} />
      <h2 id="retention">Retention</h2>
      <form class="filters" method="get" action={`/console/images/${seg(name)}/prune`} aria-label="Prune old versions">
        <div class="field">
          <label for="f-keep">Versions to keep</label>
          <input id="f-keep" name="keep" type="number" min="1" max="1000" value={String(Math.max(1, Math.min(2, img.versions)))} />
        </div>
        <button type="submit">See what would be deleted</button>
      </form>
    </Page>,
  );
}

function TestLink(p: { ctx: Ctx; image: string; version: number }): Html {
  const r = p.ctx.services.tests?.status(p.image, p.version);
  const label = !r ? 'test…' : r.phase === 'done' ? (r.outcome === 'ready' ? 'ready: see the test' : 'no ready signal: see the test') : r.phase === 'failed' ? 'failed: see the test' : 'running…';
  return <a href={`/console/images/${seg(p.image)}/v/${p.version}/test`} aria-label={`Test of version ${p.version}: ${label}`}>{label}</a>;
}

/** What keeping N versions would delete (a dry run), with a button that does it. */
export async function imagePrunePage(ctx: Ctx): Promise<Answer> {
  const name = checkImageName(ctx.params[0]);
  const keep = intParam(ctx.query, 'keep', 1, 1000) ?? 1;
  const r = await ctx.services.catalog.prune(name, keep, { dryRun: true, actor: ctx.session!.user });
  return page(
    <Page {...ctx.frame} title={`Prune image ${name}`} nav="images">
      <h1>{`Keep the ${keep} newest version${keep === 1 ? '' : 's'} of ${name}?`}</h1>
      <p class="sub">{`Versions kept: ${r.keptVersions.join(', ') || 'none'}. Older indexes are deleted first, then the packs no kept index needs; a version's index may need packs of earlier versions, which stay.`}</p>
      {r.clientsOnRemoved ? <div class="message bad" role="alert">{`${count(r.clientsOnRemoved)} client workspace${r.clientsOnRemoved === 1 ? ' reports' : 's report'} a version that would be deleted: they keep running it, but cannot fetch it again and will update to a kept version.`}</div> : ''}
      <DataTable caption={`${count(r.deleted.length)} file${r.deleted.length === 1 ? '' : 's'} to delete, ${bytes(r.bytesFreed)} freed.`} columns={['File']} empty="Nothing to delete."
        rows={r.deleted.map((f) => <tr><td class="mono">{f}</td></tr>)} />
      {r.skipped.length ? <DataTable caption="Left alone." columns={['File', 'Why']} empty="" rows={r.skipped.map((s) => <tr><td class="mono">{s.file}</td><td>{s.reason}</td></tr>)} /> : ''}
      <form method="post" action={`/console/images/${seg(name)}/prune`} class="actions">
        <Csrf token={ctx.frame.csrf} />
        <input type="hidden" name="keep" value={String(keep)} />
        <button type="submit" class="danger" disabled={!r.deleted.length}>{`Delete ${count(r.deleted.length)} file${r.deleted.length === 1 ? '' : 's'}`}</button>
        <a class="button secondary" href={`/console/images/${seg(name)}`}>Cancel</a>
      </form>
    </Page>,
  );
}

export async function imagePruneAction(ctx: Ctx): Promise<Answer> {
  const name = checkImageName(ctx.params[0]);
  const keep = intParam(ctx.form, 'keep', 1, 1000);
  if (keep === undefined) throw new MedvError('EINVAL_ARG', 'keep is required');
  const r = await ctx.services.catalog.prune(name, keep, { dryRun: false, actor: ctx.session!.user });
  return redirect(`/console/images/${seg(name)}?pruned=${r.deleted.length}`);
}
