/**
 * Sign-in, logout and "log out everywhere". The password is checked by the same function as
 * POST /api/login (accounts.ts checkCredentials: Argon2id, failed-login limits per name and per
 * address, audited), then a NEW session id is made (session.ts) whatever cookie the browser
 * brought, and the pre-sign-in cookie that carried the form's CSRF secret is cleared.
 */
import { MedvError } from '../../../core/errors.js';
import { newToken } from '../../accounts.js';
import { parseLogin } from '../../requests.js';
import { type Answer, type Ctx, page, redirect, safeNext } from '../context.js';
import { Csrf } from '../components.js';
import { csrfToken } from '../csrf.js';
import type { Html } from '../html.js';
import { type Frame, Page } from '../layout.js';
import { PRESESSION_COOKIE, SESSION_COOKIE, cookieValue, setCookie } from '../session.js';

const PRESESSION_MAX_AGE_S = 3600;

function SignIn(p: Frame & { next: string; user?: string; message?: string }): Html {
  return (
    <Page {...p} title="Sign in">
      <div class="signin panel">
        <h1>Sign in</h1>
        <p class="sub">The medv console is for administrators of this server.</p>
        {p.message ? <div class="message bad" role="alert">{p.message}</div> : ''}
        <form method="post" action="/console/login">
          <Csrf token={p.csrf} />
          <input type="hidden" name="next" value={p.next} />
          <div class="field">
            <label for="user">User name</label>
            <input id="user" name="user" autocomplete="username" required value={p.user} autofocus />
          </div>
          <div class="field">
            <label for="password">Password</label>
            <input id="password" name="password" type="password" autocomplete="current-password" required />
          </div>
          <button type="submit">Sign in</button>
        </form>
      </div>
    </Page>
  );
}

/** The pre-sign-in secret (a cookie of its own, never a session id) and the header that sets it when new. */
function presession(ctx: Ctx): { secret: string; cookie?: string } {
  const have = cookieValue(ctx.req, PRESESSION_COOKIE);
  if (have) return { secret: have };
  const secret = newToken();
  return { secret, cookie: setCookie(PRESESSION_COOKIE, secret, ctx.secure, PRESESSION_MAX_AGE_S) };
}

export async function signInForm(ctx: Ctx): Promise<Answer> {
  const next = safeNext(ctx.query.get('next'));
  const live = await ctx.services.sessions.lookup(cookieValue(ctx.req, SESSION_COOKIE));
  if (live && await ctx.services.isAdmin(live.user)) return redirect(next);
  const pre = presession(ctx);
  return page(SignIn({ ...ctx.frame, csrf: csrfToken(pre.secret), next }), 200, pre.cookie ? { 'Set-Cookie': pre.cookie } : undefined);
}

export async function signIn(ctx: Ctx): Promise<Answer> {
  const { accounts, sessions } = ctx.services;
  const next = safeNext(ctx.form.get('next'));
  const name = ctx.form.get('user') ?? '';
  const again = (status: number, message: string, headers: Record<string, string> = {}) => {
    const pre = presession(ctx);
    return page(SignIn({ ...ctx.frame, csrf: csrfToken(pre.secret), next, user: name.slice(0, 200), message }), status, { ...headers, ...(pre.cookie ? { 'Set-Cookie': pre.cookie } : {}) });
  };
  let user: string;
  try {
    // the same edge rules as POST /api/login (requests.ts), then the same check (accounts.ts)
    const b = parseLogin({ user: name, password: ctx.form.get('password') ?? '' });
    user = await accounts.checkCredentials(b.user, b.password, ctx.address, 'console');
  } catch (e) {
    if (!(e instanceof MedvError)) throw e;
    if (e.code === 'EDENIED') return again(401, 'Wrong user name or password.');
    if (e.code === 'ERATELIMIT') return again(429, `Too many failed sign-ins: try again in ${e.data.retryAfter} seconds.`, { 'Retry-After': String(e.data.retryAfter ?? 1) });
    if (e.code === 'EINVAL_ARG') return again(400, e.message);
    throw e;
  }
  if (!(await ctx.services.isAdmin(user))) {
    await ctx.services.audit.refused({ actor: user, action: 'console.refused', target: user, address: ctx.address, detail: { reason: 'not an administrator' } });
    return again(403, `The account ${user} is not an administrator: the console is for administrators only.`);
  }
  const old = await sessions.lookup(cookieValue(ctx.req, SESSION_COOKIE));
  if (old) await sessions.end(old);
  const s = await sessions.create(user, ctx.address);
  return redirect(next, { 'Set-Cookie': [setCookie(SESSION_COOKIE, s.id, ctx.secure), setCookie(PRESESSION_COOKIE, '', ctx.secure, 0)] });
}

export async function logout(ctx: Ctx): Promise<Answer> {
  const s = ctx.session!;
  await ctx.services.sessions.end(s);
  await ctx.services.audit.record({ actor: s.user, action: 'logout', target: s.user, address: ctx.address, detail: { via: 'console' } });
  return redirect('/console/login', { 'Set-Cookie': setCookie(SESSION_COOKIE, '', ctx.secure, 0) });
}

export async function logoutEverywhere(ctx: Ctx): Promise<Answer> {
  const s = ctx.session!;
  const ended = await ctx.services.sessions.endAll(s.user);
  await ctx.services.audit.record({ actor: s.user, action: 'logout.everywhere', target: s.user, address: ctx.address, detail: { via: 'console', sessions: ended } });
  return redirect('/console/login', { 'Set-Cookie': setCookie(SESSION_COOKIE, '', ctx.secure, 0) });
}
