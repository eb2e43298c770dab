/** An error page: the status, a title and one sentence of what to do (escaped like everything else). */
import type { Html } from '../html.js';
import { type Frame, Page } from '../layout.js';

export function ErrorPage(p: Frame & { status: number; title: string; message: string }): Html {
  return (
    <Page {...p} title={p.title}>
      <h1>{p.title}</h1>
      <div class="message bad" role="alert"><p>{p.message}</p></div>
      <p class="muted">HTTP {p.status}</p>
      <p><a href="/console/">Back to the overview</a></p>
    </Page>
  );
}
