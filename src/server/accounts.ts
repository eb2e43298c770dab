/**
 * Users, tokens and policies: the service functions under /api/ (api.ts) and the console. Their
 * arguments are already checked at the edge (requests.ts, with the name rules of src/api/names.ts
 * and checkPassword/checkRole here); every change an administrator makes is audited with the actor's name.
 *
 * - Passwords: Argon2id through libsodium's crypto_pwhash_str (a PHC string with its own random
 *   salt and parameters). Parameters: OPSLIMIT_INTERACTIVE (2 passes) and MEMLIMIT_INTERACTIVE
 *   (64 MiB), libsodium's level for online logins: a login costs ~0.1 s of one core on an idle
 *   machine (0.26 s measured on this loaded 2-core machine: wrong password 255 ms, unknown user 261 ms) and 64 MiB, which an attacker who steals the
 *   database pays per guess, while a server under a burst of logins stays usable. At most
 *   `maxHashing` hashes run at once (each takes 64 MiB), more wait in a bounded queue.
 * - Unknown users are verified against a dummy hash made at start, so "no such user" and "wrong
 *   password" take the same time and get the same answer.
 * - Tokens: 32 random bytes, base64url; only BLAKE2b-256 of a token is stored. They expire
 *   (default 12 h), are revoked by logout, by a password reset and by `revoke`, and stop working
 *   at once when their user is disabled or deleted.
 * - Failed logins (counted in the database, so every instance behind a load balancer sees the
 *   same counts) are keyed so that nobody can lock out a user who knows their password from an
 *   address the attacker does not share (issue 18 item 16):
 *     name + address: after `perNameAddress` (5) failures of a name from one address, that name
 *       is refused from that address (429, Retry-After) for 30 s, doubling up to 15 min;
 *     address: after `perAddress` (20) failures from one address, whatever the names, that
 *       address is refused the same way (an address may be a NAT in front of many users: higher);
 *     name: failures of a name from every address are counted too, but they never refuse: past
 *       `perName` (10) they slow the name down. Checks of one name run one at a time on an
 *       instance, and after each failed check past the threshold the next check of that name
 *       waits 1 s, doubling per further failure up to 8 s. A right password is answered at once
 *       when its turn comes; waiting attempts from addresses that have not failed for the name go
 *       first, and when too many wait (`nameQueue`) an attempt from an address that has already
 *       failed for the name is refused (429) to make room.
 *   Counts older than 15 min start again; a successful login clears its name+address count.
 *   Behind a reverse proxy the address is the one X-Forwarded-For names (`--trust-proxy`, peer.ts);
 *   without it every client has the proxy's address and the address lock applies to all of them.
 */
import { type Sodium, sodium as sodiumBase } from '../core/sodium.js';
import { MedvError } from '../core/errors.js';
import { checkPolicy, type Policy } from '../api/policy.js';
import {
  type DeletedUser, type GroupRow, type PageOf, type PageQuery, type PolicySummary, type PolicyVersionRow, ROLES, type Role,
  type Store, type UserFilter, type UserRow, type UserSummary, type PolicyVersion, type PolicyDocument,
} from './store/index.js';
import { checkUserName } from '../api/names.js';
import { type DiffEntry, diffPolicies } from './policy-diff.js';
import { type PolicyPreview, previewPolicy } from './policy-preview.js';
import type { Audit } from './audit.js';

/** The password-string functions of sodium-native, beside the subset src/crypto/sodium.ts types. */
const sodium = sodiumBase as Sodium & {
  crypto_pwhash_STRBYTES: number;
  crypto_pwhash_str_async(out: Buffer, passwd: Buffer, opslimit: number, memlimit: number): Promise<void>;
  crypto_pwhash_str_verify_async(str: Buffer, passwd: Buffer): Promise<boolean>;
};

export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 1024;
export const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;

export interface AccountsOptions {
  /** Lifetime of a login token (ms); a login may ask for less. */
  tokenLifetimeMs: number;
  /** Failures of one name from one address before that pair is locked. */
  perNameAddress: number;
  /** Failures from one address (any names) before the address is locked. */
  perAddress: number;
  /** Failures of one name from all addresses before its checks are slowed (never refused). */
  perName: number;
  windowMs: number;
  baseLockMs: number;
  maxLockMs: number;
  /** The wait before the next check of a slowed name: this, doubling per further failure, up to slowMaxMs. */
  slowBaseMs: number;
  slowMaxMs: number;
  /** Logins of one name waiting for their turn on this instance. */
  nameQueue: number;
  /** Argon2id computations at once; `maxQueue` more may wait, beyond that ERATELIMIT. */
  maxHashing: number;
  maxQueue: number;
}

export const ACCOUNTS_DEFAULTS: AccountsOptions = {
  tokenLifetimeMs: 12 * 3600_000,
  perNameAddress: 5,
  perAddress: 20,
  perName: 10,
  windowMs: 15 * 60_000,
  baseLockMs: 30_000,
  maxLockMs: 15 * 60_000,
  slowBaseMs: 1000,
  slowMaxMs: 8000,
  nameQueue: 16,
  maxHashing: 2,
  maxQueue: 64,
};

export function checkPassword(v: unknown): string {
  if (typeof v !== 'string') throw new MedvError('EINVAL_ARG', 'password must be a string');
  const n = Buffer.byteLength(v);
  if (n < PASSWORD_MIN || n > PASSWORD_MAX) throw new MedvError('EINVAL_ARG', `password must be ${PASSWORD_MIN} to ${PASSWORD_MAX} bytes`);
  return v;
}

export function checkRole(v: unknown): Role {
  if (typeof v !== 'string' || !(ROLES as readonly string[]).includes(v)) throw new MedvError('EINVAL_ARG', `role must be one of ${ROLES.join(', ')}`);
  return v as Role;
}

/** BLAKE2b-256 of a token, hex: what the database holds. */
export function tokenHash(token: string): string {
  const out = Buffer.alloc(32);
  sodium.crypto_generichash(out, Buffer.from(token, 'utf8'));
  return out.toString('hex');
}

export function newToken(): string {
  const b = Buffer.alloc(32);
  sodium.randombytes_buf(b);
  return b.toString('base64url');
}

const OPS = sodium.crypto_pwhash_OPSLIMIT_INTERACTIVE;
const MEM = sodium.crypto_pwhash_MEMLIMIT_INTERACTIVE;

export async function hashPassword(password: string): Promise<string> {
  const out = Buffer.alloc(sodium.crypto_pwhash_STRBYTES);
  const pw = Buffer.from(password, 'utf8');
  try {
    await sodium.crypto_pwhash_str_async(out, pw, OPS, MEM);
  } finally {
    pw.fill(0);
  }
  return out.toString('utf8').replace(/\0+$/, '');
}

export async function verifyPassword(hash: string, password: string): Promise<boolean> {
  const h = Buffer.alloc(sodium.crypto_pwhash_STRBYTES);
  if (Buffer.byteLength(hash) >= h.length) return false;
  h.write(hash, 'utf8');
  const pw = Buffer.from(password, 'utf8');
  try {
    return await sodium.crypto_pwhash_str_verify_async(h, pw);
  } catch {
    return false;
  } finally {
    pw.fill(0);
  }
}

const DENIED = 'wrong user name or password';

export interface LoginResult { user: string; token: string; expires: string }
export interface Session { user: string; role: Role; tokenHash: string; expires: number }
export interface NewUser { name: string; password: string; groups: string[]; role: Role }

interface Waiter { fresh: boolean; go: () => void; refuse: (e: MedvError) => void }

/**
 * One check of a name at a time on this instance, the next one no sooner than `readyAt`; attempts
 * from addresses that have not failed for the name wait ahead of the others.
 */
class NameGate {
  busy = false;
  readyAt = 0;
  waiting: Waiter[] = [];
}

export class Accounts {
  readonly o: AccountsOptions;
  private dummyHash: Promise<string>;
  private hashing = 0;
  private waiting: (() => void)[] = [];
  private cleanup: NodeJS.Timeout;
  private gates = new Map<string, NameGate>();

  constructor(readonly store: Store, readonly audit: Audit, o: Partial<AccountsOptions> = {}) {
    this.o = { ...ACCOUNTS_DEFAULTS, ...o };
    this.dummyHash = hashPassword(newToken());
    this.dummyHash.catch(() => undefined);
    this.cleanup = setInterval(() => {
      store.dropExpiredTokens().catch(() => undefined);
      store.dropStaleFailures(Date.now(), this.o.windowMs).catch(() => undefined);
    }, 3600_000);
    this.cleanup.unref();
  }

  close(): void {
    clearInterval(this.cleanup);
  }

  /** Run one Argon2id computation within the concurrency bound. */
  private async withHashSlot<T>(f: () => Promise<T>): Promise<T> {
    if (this.hashing >= this.o.maxHashing) {
      if (this.waiting.length >= this.o.maxQueue) throw new MedvError('ERATELIMIT', 'the server is busy with other logins; retry shortly', { retryAfter: 1 });
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.hashing++;
    }
    try {
      return await f();
    } finally {
      const next = this.waiting.shift();
      if (next) next(); else this.hashing--;
    }
  }

  /** Wait for the turn of `name` (NameGate); resolves with the release, which holds the gate `holdMs` longer. */
  private async turn(name: string, fresh: boolean): Promise<(holdMs: number) => void> {
    let gate = this.gates.get(name);
    if (!gate) { gate = new NameGate(); this.gates.set(name, gate); }
    const g = gate;
    if (g.busy || g.waiting.length) {
      if (g.waiting.length >= this.o.nameQueue) {
        const busy = () => new MedvError('ERATELIMIT', `too many logins of ${name} are waiting; retry shortly`, { retryAfter: Math.ceil(this.o.slowMaxMs / 1000) });
        const victim = fresh ? g.waiting.map((w) => !w.fresh).lastIndexOf(true) : -1;
        if (victim < 0) throw busy();
        g.waiting.splice(victim, 1)[0].refuse(busy());
      }
      await new Promise<void>((go, refuse) => {
        const w: Waiter = { fresh, go, refuse };
        const at = fresh ? g.waiting.findIndex((x) => !x.fresh) : -1;
        if (at < 0) g.waiting.push(w); else g.waiting.splice(at, 0, w);
      });
    }
    g.busy = true;
    const wait = g.readyAt - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    return (holdMs: number) => {
      g.readyAt = Date.now() + holdMs;
      const next = g.waiting.shift();
      if (next) { next.go(); return; }
      g.busy = false;
      if (holdMs <= 0) { if (this.gates.get(name) === g) this.gates.delete(name); return; }
      setTimeout(() => { if (!g.busy && !g.waiting.length && this.gates.get(name) === g) this.gates.delete(name); }, holdMs).unref();
    };
  }

  private lockFor(count: number, limit: number): number {
    return Math.min(this.o.maxLockMs, this.o.baseLockMs * 2 ** Math.min(20, count - limit));
  }

  /** ERATELIMIT when the name+address pair or the address is locked (never for the name alone). */
  private async refuseIfLocked(user: string, address: string, keys: { pair: string; addr: string; name: string }, now: number): Promise<{ fresh: boolean }> {
    const states = await this.store.failures([keys.pair, keys.addr], now, this.o.windowMs);
    const locked = states.filter((f) => f.lockedUntil > now);
    if (locked.length) {
      const retryAfter = Math.ceil((Math.max(...locked.map((f) => f.lockedUntil)) - now) / 1000);
      await this.audit.refused({ actor: user, action: 'login.limited', target: user, address, detail: { lock: locked.map((f) => (f.key === keys.addr ? 'address' : 'name and address')).join(', ') } });
      throw new MedvError('ERATELIMIT', `too many failed logins; retry in ${retryAfter} s`, { retryAfter });
    }
    return { fresh: !states.some((f) => f.key === keys.pair && f.count > 0) };
  }

  /**
   * Check a name and password under the failed-login limits: the user, or EDENIED (the same for an
   * unknown name and a wrong password), or ERATELIMIT. A success is audited as `login` (with `via`:
   * api or console, and `detail`). POST /api/login and the console's sign-in both come here.
   */
  async checkCredentials(user: string, password: string, address: string, via: 'api' | 'console', detail: Record<string, unknown> = {}): Promise<string> {
    const keys = { pair: `pair:${user}@${address}`, addr: `addr:${address}`, name: `user:${user}` };
    const { fresh } = await this.refuseIfLocked(user, address, keys, Date.now());
    const release = await this.turn(user, fresh);
    let hold = 0;
    try {
      // an attempt ahead of this one may have locked the pair or the address meanwhile
      await this.refuseIfLocked(user, address, keys, Date.now());
      const record = await this.store.getUser(user);
      const hash = record?.passwordHash ?? await this.dummyHash;
      const ok = await this.withHashSlot(() => verifyPassword(hash, password));
      if (!record || !ok || record.disabled) {
        const now = Date.now();
        for (const [key, limit] of [[keys.pair, this.o.perNameAddress], [keys.addr, this.o.perAddress]] as const) {
          const count = await this.store.recordFailure(key, now, this.o.windowMs);
          if (count >= limit) await this.store.lockUntil(key, now + this.lockFor(count, limit));
        }
        const named = await this.store.recordFailure(keys.name, now, this.o.windowMs);
        if (named >= this.o.perName) hold = Math.min(this.o.slowMaxMs, this.o.slowBaseMs * 2 ** Math.min(20, named - this.o.perName));
        await this.audit.refused({ actor: user, action: 'login.fail', target: user, address, detail: { via, reason: !record ? 'unknown user' : !ok ? 'wrong password' : 'disabled', ...(hold ? { slowedMs: hold } : {}) } }, now);
        throw new MedvError('EDENIED', DENIED);
      }
      await this.store.clearFailures(keys.pair);
      await this.audit.record({ actor: user, action: 'login', target: user, address, detail: { via, ...detail } });
      return user;
    } finally {
      release(hold);
    }
  }

  /** Log in: checkCredentials, then a new token. */
  async login(user: string, password: string, address: string, lifetimeMs?: number): Promise<LoginResult> {
    const now = Date.now();
    const life = lifetimeMs === undefined ? this.o.tokenLifetimeMs : Math.min(this.o.tokenLifetimeMs, lifetimeMs);
    const expires = now + life;
    await this.checkCredentials(user, password, address, 'api', { expires: new Date(expires).toISOString() });
    const token = newToken();
    await this.store.addToken(tokenHash(token), user, now, expires);
    return { user, token, expires: new Date(expires).toISOString() };
  }

  /** The session of a bearer token, or EDENIED (unknown, revoked, expired, deleted user), or EFORBIDDEN (a disabled account). */
  async authenticate(token: string | undefined): Promise<Session> {
    if (!token || !TOKEN_RE.test(token)) throw new MedvError('EDENIED', 'a login token is required (medv login)');
    const h = tokenHash(token);
    const t = await this.store.findToken(h);
    const now = Date.now();
    // A disabled account is not a bad credential (logging in again cannot help): 403, so a client
    // ends what it keeps of its grants (a cached grant must not go on starting offline).
    if (t && t.disabled) throw new MedvError('EFORBIDDEN', `the account ${t.user} is disabled`);
    if (!t || t.revoked || t.expires <= now) {
      throw new MedvError('EDENIED', !t ? 'the login token is not valid; log in again' : t.revoked ? 'the login token was revoked; log in again' : 'the login token expired; log in again');
    }
    return { user: t.user, role: t.role, tokenHash: h, expires: t.expires };
  }

  async logout(s: Session, address: string): Promise<void> {
    await this.store.revokeToken(s.tokenHash);
    await this.audit.record({ actor: s.user, action: 'logout', target: s.user, address });
  }

  // --- administration (the actor is "admin" for the admin token, else an admin account's name)

  /** One account (ENOENT when there is no such user). */
  async getUser(name: string): Promise<UserSummary> {
    const u = (await this.store.listUsers(name))[0];
    if (!u) throw new MedvError('ENOENT', `no user ${name}`, { user: name });
    return u;
  }

  async addUser(u: NewUser, actor: string, address = ''): Promise<UserSummary> {
    if (await this.store.getUser(u.name)) throw new MedvError('EEXIST', `user ${u.name} already exists`, { user: u.name });
    const hash = await this.withHashSlot(() => hashPassword(u.password));
    await this.store.addUser(u.name, hash, u.groups, u.role);
    await this.audit.record({ actor, action: 'user.add', target: u.name, address, detail: { groups: u.groups, role: u.role } });
    return this.getUser(u.name);
  }

  listUsers(): Promise<UserSummary[]> {
    return this.store.listUsers();
  }

  /** Disable (every token stops working at once; logins fail) or enable an account. */
  async setDisabled(name: string, disabled: boolean, actor: string, address = ''): Promise<UserSummary> {
    if (!await this.store.setDisabled(name, disabled)) throw new MedvError('ENOENT', `no user ${name}`, { user: name });
    await this.audit.record({ actor, action: disabled ? 'user.disable' : 'user.enable', target: name, address });
    return this.getUser(name);
  }

  /** A new password; every token of the user is revoked (a reset means the old one may be known). */
  async setPassword(name: string, password: string, actor: string, address = ''): Promise<{ user: string; tokensRevoked: number }> {
    if (!await this.store.getUser(name)) throw new MedvError('ENOENT', `no user ${name}`, { user: name });
    const hash = await this.withHashSlot(() => hashPassword(password));
    const r = await this.store.setPassword(name, hash);
    if (!r) throw new MedvError('ENOENT', `no user ${name}`, { user: name });
    await this.audit.record({ actor, action: 'user.passwd', target: name, address, detail: { tokensRevoked: r.tokens } });
    return { user: name, tokensRevoked: r.tokens };
  }

  async revokeTokens(name: string, actor: string, address = ''): Promise<{ user: string; tokensRevoked: number }> {
    const n = await this.store.revokeUserTokens(name);
    if (n === undefined) throw new MedvError('ENOENT', `no user ${name}`, { user: name });
    await this.audit.record({ actor, action: 'user.revoke', target: name, address, detail: { tokensRevoked: n } });
    return { user: name, tokensRevoked: n };
  }

  /** Delete an account with its memberships, tokens, clients and their reports (groups stay). */
  async deleteUser(name: string, actor: string, address = ''): Promise<DeletedUser> {
    const r = await this.store.deleteUser(name);
    if (!r) throw new MedvError('ENOENT', `no user ${name}`, { user: name });
    await this.audit.record({ actor, action: 'user.delete', target: name, address, detail: { groups: r.groups, tokens: r.tokens, clients: r.clients, reports: r.reports } });
    return r;
  }

  async publishPolicy(doc: unknown, actor: string, address = ''): Promise<{ name: string; version: number }> {
    const policy: Policy = checkPolicy(doc);
    const text = JSON.stringify(policy);
    const version = await this.store.publishPolicy(policy.name, text, { users: policy.users ?? [], groups: policy.groups ?? [] }, actor);
    await this.audit.record({ actor, action: 'policy.publish', target: policy.name, address, detail: { version } });
    return { name: policy.name, version };
  }

  listPolicies(): Promise<PolicyVersion[]> {
    return this.store.listPolicies();
  }

  policiesFor(user: string): Promise<PolicyDocument[]> {
    return this.store.policiesFor(user);
  }

  /** May `user` use the console: an account whose role is admin (asked on every console request, so a change applies at once). */
  async isAdmin(user: string): Promise<boolean> {
    const r = await this.store.getUser(user);
    return !!r && r.role === 'admin' && !r.disabled;
  }

  /** Make an account an administrator or an ordinary user (the console asks on every request: it applies at once). */
  async setRole(name: string, role: Role, actor: string, address = ''): Promise<UserSummary> {
    const before = (await this.getUser(name)).role;
    if (!await this.store.setRole(name, role)) throw new MedvError('ENOENT', `no user ${name}`, { user: name });
    await this.audit.record({ actor, action: 'user.role', target: name, address, detail: { before, after: role } });
    return this.getUser(name);
  }

  /** Replace an account's groups (created when missing; emptied ones stay). */
  async setGroups(name: string, groups: string[], actor: string, address = ''): Promise<UserSummary> {
    const before = (await this.getUser(name)).groups;
    await this.store.setGroups(name, groups);
    await this.audit.record({ actor, action: 'user.groups', target: name, address, detail: { before, after: [...new Set(groups)].sort() } });
    return this.getUser(name);
  }

  // --- the lists of the admin API and the console (filters validated by listing.ts)

  usersPage(f: UserFilter, p: PageQuery): Promise<PageOf<UserRow>> {
    return this.store.lists.users(f, p);
  }

  groupsPage(text: string | undefined, p: PageQuery): Promise<PageOf<GroupRow>> {
    return this.store.lists.groups(text, p);
  }

  policiesPage(text: string | undefined, p: PageQuery): Promise<PageOf<PolicySummary>> {
    return this.store.lists.policies(text, p);
  }

  /** Every version of policy `name`, newest first; ENOENT when there is none. */
  async policyVersions(name: string): Promise<PolicyVersionRow[]> {
    const rows = await this.store.lists.policyVersions(checkUserName(name, 'policy'));
    if (!rows.length) throw new MedvError('ENOENT', `no policy ${name}`);
    return rows;
  }

  async policyVersion(name: string, version: number): Promise<PolicyVersionRow & { document: unknown }> {
    const r = await this.store.lists.policyDocument(checkUserName(name, 'policy'), version);
    if (!r) throw new MedvError('ENOENT', `no version ${version} of policy ${name}`);
    return r;
  }

  /** The changes from version `from` to version `to` of policy `name`. */
  async policyDiff(name: string, from: number, to: number): Promise<{ name: string; from: number; to: number; changes: DiffEntry[] }> {
    const [a, b] = await Promise.all([this.policyVersion(name, from), this.policyVersion(name, to)]);
    return { name, from, to, changes: diffPolicies(a.document, b.document) };
  }

  /** Who publishing `doc` would reach (checked first: EPOLICY with the bad field's path). */
  async previewPolicy(doc: unknown): Promise<PolicyPreview> {
    const policy = checkPolicy(doc);
    return previewPolicy(this.store, policy.name, policy);
  }

  /** Who unpublishing policy `name` would reach. */
  async previewUnpublish(name: string): Promise<PolicyPreview> {
    const n = checkUserName(name, 'policy');
    if (!(await this.store.policies.newest(n))) throw new MedvError('ENOENT', `no policy ${n}`);
    return previewPolicy(this.store, n, null);
  }

  /** Unpublish policy `name`: a new version that entitles nobody; every earlier version is kept. */
  async unpublishPolicy(name: string, actor: string, address = ''): Promise<{ name: string; version: number }> {
    const n = checkUserName(name, 'policy');
    const version = await this.store.policies.unpublish(n, actor);
    await this.audit.record({ actor, action: 'policy.unpublish', target: n, address, detail: { version } });
    return { name: n, version };
  }

}
