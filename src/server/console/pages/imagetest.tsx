/**
 * The image test (imagetest.ts) in the console: start it from an image's page, watch it (phase,
 * serial output, and while the VM runs a live view of its screen: noVNC over the WebSocket of
 * vncproxy.ts), see the screenshot kept with the version, stop it early. The same service as
 * POST /api/admin/images/test and GET /api/admin/images/test.
 */
import { MedvError } from '../../../core/errors.js';
import { checkImageName } from '../../../api/names.js';
import type { TestRecord } from '../../imagetest.js';
import { type Answer, type Ctx, page, redirect } from '../context.js';
import { Badge, Csrf, Time, seg } from '../components.js';
import type { Html } from '../html.js';
import { Page } from '../layout.js';
import { pageHeaders } from '../headers.js';

function tests(ctx: Ctx) {
  if (!ctx.services.tests) throw new MedvError('ENOENT', 'this server does not run image tests');
  return ctx.services.tests;
}

function target(ctx: Ctx): { image: string; version: number } {
  return { image: checkImageName(ctx.params[0]), version: Number(ctx.params[1]) };
}

const ACTIVE = ['fetching', 'booting', 'running', 'shown', 'stopping'];
const PHASE: Record<string, string> = {
  fetching: 'fetching the version from the repository', booting: 'starting the VM', running: 'running: waiting for the guest to be ready',
  shown: 'screenshot taken; the VM stays up for the live view', stopping: 'stopping the VM', done: 'done', failed: 'failed',
};

function Status(p: { r: TestRecord | undefined; base: string; serial: string }): Html {
  const r = p.r;
  if (!r) return <div id="test-status" class="panel"><p>This version has not been tested yet.</p></div>;
  const active = ACTIVE.includes(r.phase);
  return (
    <div id="test-status" class="panel" hx-get={active ? `${p.base}/test` : undefined} hx-trigger={active ? 'every 2s' : undefined} hx-select="#test-status" hx-swap="outerHTML" data-phase={r.phase}>
      <dl class="facts">
        <dt>State</dt><dd><Badge tone={r.phase === 'failed' ? 'bad' : r.phase === 'done' ? (r.outcome === 'ready' ? 'ok' : 'warn') : 'plain'}>{PHASE[r.phase] ?? r.phase}</Badge></dd>
        <dt>Started</dt><dd><Time iso={r.startedAt} relative /> by {r.by}</dd>
        {r.accel ? <><dt>VM</dt><dd>{`${r.memoryMiB ?? '?'} MiB, ${r.accel === 'kvm' ? 'KVM' : 'TCG (no KVM on this server)'}, no network, read-only`}</dd></> : ''}
        {r.readyAt ? <><dt>Ready</dt><dd><Time iso={r.readyAt} /></dd></> : ''}
        {r.outcome === 'timeout' ? <><dt>Ready</dt><dd>not seen before the timeout: the screenshot was taken anyway</dd></> : ''}
        {r.endedAt ? <><dt>Ended</dt><dd><Time iso={r.endedAt} /></dd></> : ''}
        {r.error ? <><dt>Error</dt><dd class="error">{r.error}</dd></> : ''}
      </dl>
      {r.screenshot ? <><h2>Screenshot</h2><figure><img src={`${p.base}/screen.png`} alt={`The screen of ${r.image} version ${r.version} when it ${r.outcome === 'ready' ? 'said it was ready' : 'had not said it was ready at the timeout'}`} class="shot" /><figcaption>{r.outcome === 'ready' ? 'Taken when the guest said it was ready; kept with the version.' : 'Taken at the timeout; kept with the version.'}</figcaption></figure></> : ''}
      <h2>Serial output</h2>
      <pre class="doc serial" aria-label="Serial output"><code>{p.serial || '(none yet)'}</code></pre>
    </div>
  );
}

export async function imageTestPage(ctx: Ctx): Promise<Answer> {
  const { image, version } = target(ctx);
  const t = tests(ctx);
  const r = t.status(image, version);
  const base = `/console/images/${seg(image)}/v/${version}`;
  const running = r?.phase === 'running' || r?.phase === 'shown';
  const early = r !== undefined && ['fetching', 'booting'].includes(r.phase);
  return page(
    <Page {...ctx.frame} title={`Test of ${image} version ${version}`} nav="images" refresh={early ? 2 : undefined} modules={running ? ['vnc.js'] : undefined}>
      <h1>{`Test of ${image} version ${version}`}</h1>
      <p class="sub">The version boots read-only on this server (its writes are discarded), with the memory of its policy and no network; a screenshot is taken when the guest says it is ready, or after the timeout, and kept with the version. <a href={`/console/images/${seg(image)}`}>{`Back to ${image}`}</a></p>
      <div class="actions">
        {r && ACTIVE.includes(r.phase)
          ? <form method="post" action={`${base}/test/stop`}><Csrf token={ctx.frame.csrf} /><button type="submit" class="secondary">Stop the test now</button></form>
          : <form method="post" action={`${base}/test`}><Csrf token={ctx.frame.csrf} /><button type="submit">{r ? 'Test again' : 'Start the test'}</button></form>}
      </div>
      {running ? (
        <section aria-labelledby="h-live">
          <h2 id="h-live">Live view</h2>
          <p id="vnc-status" role="status">Connecting to the test VM's screen…</p>
          <div id="vnc-screen" class="vnc" data-ws={`${base}/vnc?t=${ctx.frame.csrf}`} role="img" aria-label="Live view of the test VM's screen"></div>
        </section>
      ) : ''}
      <Status r={r} base={base} serial={t.serial(image, version, 16 * 1024)} />
    </Page>,
  );
}

export async function startImageTest(ctx: Ctx): Promise<Answer> {
  const { image, version } = target(ctx);
  await tests(ctx).start(image, version, ctx.session!.user);
  return redirect(`/console/images/${seg(image)}/v/${version}/test`);
}

export async function stopImageTest(ctx: Ctx): Promise<Answer> {
  const { image, version } = target(ctx);
  tests(ctx).cancel(image, version);
  return redirect(`/console/images/${seg(image)}/v/${version}/test`);
}

export async function imageTestScreenshot(ctx: Ctx): Promise<Answer> {
  const { image, version } = target(ctx);
  const png = tests(ctx).screenshot(image, version);
  if (!png) throw new MedvError('ENOENT', 'no screenshot kept for this version');
  ctx.res.writeHead(200, { ...pageHeaders(ctx.secure), 'Content-Type': 'image/png', 'Content-Length': png.length });
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : png);
  return { kind: 'sent' };
}
