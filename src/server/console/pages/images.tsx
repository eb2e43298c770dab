/**
 * Images: every image in the repository (versions, size, keys, clients) and one image's versions
 * with what each costs: pack and index size, blocks new in that version, the bytes a client one
 * version behind downloads (from the two indexes, before anyone deploys it), the signature as
 * clients will judge it, and the clients that report it. The same calls as GET /api/admin/images
 * and /api/admin/images/versions (catalog.ts).
 */
import { checkImageName } from '../../../api/names.js';
import { textParam } from '../../listing.js';
import type { SignatureState, VersionInfo } from '../../catalog.js';
import { type Answer, type Ctx, page } from '../context.js';
import { Badge, DataTable, Field, Filters, Time, bytes, count, href, seg } from '../components.js';
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

const SIGNATURE: Record<SignatureState, [string, 'ok' | 'warn' | 'bad']> = {
  trusted: ['signed by a published signer', 'ok'],
  untrusted: ['signer not among the published signers: clients refuse it', 'bad'],
  'no-keys': ['signature valid; no keys published', 'warn'],
  invalid: ['refused', 'bad'],
  'no-index': ['pack without an index', 'warn'],
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
  return page(
    <Page {...ctx.frame} title={`Image ${name}`} nav="images">
      <h1>Image {name}</h1>
      <div class="panel">
        <dl class="facts">
          <dt>Versions</dt><dd>{count(img.versions)} (newest {img.latest ?? '–'}), {bytes(img.bytes)} in the repository</dd>
          <dt>Keys</dt><dd>{img.keys.published ? <>published <Time iso={img.keys.updated} relative /></> : 'not published: no client can be granted this image (medv admin image-keys publish)'}</dd>
          <dt>Client workspaces</dt><dd>{img.clients ? <a href={href('/console/clients', { image: name })}>{count(img.clients)}</a> : 'none reported'}</dd>
        </dl>
      </div>
      <DataTable caption="Every version, newest first. The update is what a client holding the version before downloads: changed blocks and the changed part of the index."
        columns={[{ label: 'Version', num: true }, 'Created', { label: 'Pack', num: true }, { label: 'Index', num: true }, { label: 'Blocks (new here)', num: true }, 'Update download', 'Signature', { label: 'Clients', num: true }]}
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
          </tr>
        ))} />
    </Page>,
  );
}
