/** Overview: the deployment at a glance (overview.ts, the same as GET /api/admin/overview) and the latest audit entries. */
import { overview } from '../../overview.js';
import { type Answer, type Ctx, page } from '../context.js';
import { DataTable, Time, count, href } from '../components.js';
import type { Html } from '../html.js';
import { Page } from '../layout.js';
import { AUDIT_COLUMNS, AuditRows } from './audit.js';

function Card(p: { n: number; label: string; url: string; alert?: boolean }): Html {
  return <div class={p.alert ? 'card alert' : 'card'}><a href={p.url}><span class="n">{count(p.n)}</span><span class="label">{p.label}</span></a></div>;
}

export async function overviewPage(ctx: Ctx): Promise<Answer> {
  const o = await overview(ctx.services.accounts, ctx.services.audit, ctx.services.catalog);
  return page(
    <Page {...ctx.frame} title="Overview" nav="overview">
      <h1>Overview</h1>
      <p class="sub">As of <Time iso={o.at} />.</p>
      <section aria-labelledby="h-counts">
        <h2 id="h-counts" class="sr-only">Counts</h2>
        <div class="cards">
          <Card n={o.users} label="users" url="/console/users" />
          <Card n={o.groups} label="groups" url="/console/groups" />
          <Card n={o.policies} label="policies" url="/console/policies" />
          <Card n={o.workspaces} label="workspaces in policies" url="/console/policies" />
          <Card n={o.images} label={`images (${o.imagesWithKeys} with keys)`} url="/console/images" />
          <Card n={o.clientsSeen24h} label="clients seen in 24 h" url="/console/clients" />
          <Card n={o.clientsOnOldVersion} label="client workspaces on an old version" url="/console/images" alert={o.clientsOnOldVersion > 0} />
          <Card n={o.offlineEnding48h} label="offline allowances ending within 48 h" url="/console/clients" alert={o.offlineEnding48h > 0} />
        </div>
      </section>
      <section aria-labelledby="h-audit">
        <h2 id="h-audit">Latest audit entries</h2>
        <DataTable caption="The ten latest entries of the audit log, newest first." columns={AUDIT_COLUMNS}
          rows={AuditRows({ rows: o.latestAudit })} empty="Nothing has been audited yet." />
        <p><a href={href('/console/audit')}>The whole audit log</a></p>
      </section>
    </Page>,
  );
}
