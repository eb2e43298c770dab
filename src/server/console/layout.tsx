/**
 * The frame of every console page: the document head (our stylesheet and scripts from assets.ts,
 * htmx told not to inject its own style), a skip link, the navigation with the current page
 * marked, who is signed in with logout and "log out everywhere" (POST forms with the CSRF token),
 * and the main landmark the page fills.
 */
import { type Child, type Html, doctype } from './html.js';
import type { AssetName, Assets } from './assets.js';
import { Csrf, Time } from './components.js';

export type NavKey = 'overview' | 'users' | 'groups' | 'policies' | 'images' | 'clients' | 'audit';

const NAV: [NavKey, string, string][] = [
  ['overview', 'Overview', '/console/'],
  ['users', 'Users', '/console/users'],
  ['groups', 'Groups', '/console/groups'],
  ['policies', 'Policies', '/console/policies'],
  ['images', 'Images', '/console/images'],
  ['clients', 'Clients', '/console/clients'],
  ['audit', 'Audit', '/console/audit'],
];

export interface Frame {
  assets: Assets;
  /** Signed in: the user and the CSRF token of the session; absent on the sign-in page. */
  user?: string;
  csrf: string;
  idleUntil?: number;
}

function Head(p: { title: string; assets: Assets; refresh?: number; modules?: AssetName[] }): Html {
  return (
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <meta name="referrer" content="no-referrer" />
      <meta name="htmx-config" content='{"includeIndicatorCSS": false}' />
      {p.refresh ? <meta http-equiv="refresh" content={String(p.refresh)} /> : ''}
      <title>{`${p.title} · medv console`}</title>
      <link rel="stylesheet" href={p.assets.url('console.css')} />
      <script src={p.assets.url('htmx.min.js')} defer></script>
      <script src={p.assets.url('console.js')} defer></script>
      {(p.modules ?? []).map((m) => <script type="module" src={p.assets.url(m)}></script>)}
    </head>
  );
}

/** `refresh`: reload the page every N seconds (a meta refresh: no script); `modules`: ES module scripts of the page. */
export function Page(p: Frame & { title: string; nav?: NavKey; refresh?: number; modules?: AssetName[]; children?: Child }): Html {
  return doctype(
    <html lang="en">
      <Head title={p.title} assets={p.assets} refresh={p.refresh} modules={p.modules} />
      <body>
        <a class="skip" href="#main">Skip to content</a>
        <header class="top">
          <div class="bar">
            <a class="brand" href="/console/">medv console</a>
            {p.user ? (
              <nav aria-label="Console">
                <ul>{NAV.map(([key, label, url]) => <li><a href={url} aria-current={key === p.nav ? 'page' : undefined}>{label}</a></li>)}</ul>
              </nav>
            ) : ''}
            {p.user ? (
              <div class="who">
                <span>Signed in as <strong>{p.user}</strong></span>
                <form method="post" action="/console/logout"><Csrf token={p.csrf} /><button type="submit">Log out</button></form>
                <form method="post" action="/console/logout-all" data-confirm="End every console session of this account, on every browser?">
                  <Csrf token={p.csrf} /><button type="submit">Log out everywhere</button>
                </form>
              </div>
            ) : ''}
          </div>
        </header>
        <main id="main" tabindex="-1">
          {p.children}
        </main>
        <footer class="foot">
          {p.idleUntil ? <span>Without further use this session ends at <Time iso={new Date(p.idleUntil).toISOString()} />. </span> : ''}
          medv · server-rendered console; every page is also an /api/ call and a medv admin command.
        </footer>
      </body>
    </html>,
  );
}
