/**
 * Users, tokens and policies as the API sees them (the library under api.ts):
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
 *   (default 12 h) and are revoked by logout.
 * - Failed logins are counted in the database per user name and per client address, so every
 *   instance behind a load balancer sees the same counts: after `perUser` (5) failures of a name,
 *   or `perAddress` (20) from an address — an address may be a NAT in front of many users —
 *   logins are refused with ERATELIMIT (429, Retry-After) for 30 s, doubling with each further
 *   failure up to 15 min. Counts older than 15 min start again; a successful login clears its
 *   user's count (not its address's).
 */
import { type Sodium, sodium as sodiumBase } from '../core/sodium.js';
import { MedvError } from '../core/errors.js';
import { checkGroupName, checkUserName } from '../api/names.js';
import { checkPolicy, type Policy } from '../api/policy.js';
import { type DiffEntry, diffPolicies } from './policy-diff.js';
import { type PolicyPreview, previewPolicy } from './policy-preview.js';
import type {
  AuditFilter, AuditRow, GroupRow, PageOf, PageQuery, PolicySummary, PolicyVersionRow, Store, UserFilter, UserRow, UserSummary, PolicyVersion, PolicyDocument,
} from './store/index.js';

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
  perUser: number;
  perAddress: number;
  windowMs: number;
  baseLockMs: number;
  maxLockMs: number;
  /** Argon2id computations at once; `maxQueue` more may wait, beyond that ERATELIMIT. */
  maxHashing: number;
  maxQueue: number;
}

export const ACCOUNTS_DEFAULTS: AccountsOptions = {
  tokenLifetimeMs: 12 * 3600_000,
  perUser: 5,
  perAddress: 20,
  windowMs: 15 * 60_000,
  baseLockMs: 30_000,
  maxLockMs: 15 * 60_000,
  maxHashing: 2,
  maxQueue: 64,
};

function checkPassword(v: unknown): string {
  if (typeof v !== 'string') throw new MedvError('EINVAL_ARG', 'password must be a string');
  const n = Buffer.byteLength(v);
  if (n < PASSWORD_MIN || n > PASSWORD_MAX) throw new MedvError('EINVAL_ARG', `password must be ${PASSWORD_MIN} to ${PASSWORD_MAX} bytes`);
  return v;
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
export interface Session { user: string; tokenHash: string; expires: number }

export class Accounts {
  readonly o: AccountsOptions;
  private dummyHash: Promise<string>;
  private hashing = 0;
  private waiting: (() => void)[] = [];
  private cleanup: NodeJS.Timeout;
  /** Logins in progress per user name on this instance: the next waits, so parallel guesses see the count. */
  private inFlight = new Map<string, Promise<unknown>>();

  constructor(readonly store: Store, o: Partial<AccountsOptions> = {}) {
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

  private async failed(keys: [string, number][], now: number): Promise<void> {
    for (const [key, limit] of keys) {
      const count = await this.store.recordFailure(key, now, this.o.windowMs);
      if (count >= limit) await this.store.lockUntil(key, now + Math.min(this.o.maxLockMs, this.o.baseLockMs * 2 ** Math.min(20, count - limit)));
    }
  }

  /**
   * Check a user name and password under the failed-login limits, audited as `login` or
   * `login.fail` (with `via`: api or console); the user on success, else EDENIED or ERATELIMIT.
   * Checks of one name run one after the other on an instance: otherwise a burst of parallel
   * guesses would all pass the failure check before the first one is counted.
   */
  async checkCredentials(userIn: unknown, passwordIn: unknown, address: string, via: 'api' | 'console', detail: Record<string, unknown> = {}): Promise<string> {
    const user = checkUserName(userIn);
    if (typeof passwordIn !== 'string' || Buffer.byteLength(passwordIn) > PASSWORD_MAX) throw new MedvError('EINVAL_ARG', `password must be a string of at most ${PASSWORD_MAX} bytes`);
    const before = this.inFlight.get(user) ?? Promise.resolve();
    const mine = before.catch(() => undefined).then(() => this.checkNow(user, passwordIn, address, via, detail));
    const tail = mine.catch(() => undefined);
    this.inFlight.set(user, tail);
    tail.then(() => { if (this.inFlight.get(user) === tail) this.inFlight.delete(user); });
    return mine;
  }

  private async checkNow(user: string, password: string, address: string, via: 'api' | 'console', detail: Record<string, unknown>): Promise<string> {
    const now = Date.now();
    const keys: [string, number][] = [[`user:${user}`, this.o.perUser], [`addr:${address}`, this.o.perAddress]];
    const locked = (await this.store.failures(keys.map((k) => k[0]), now, this.o.windowMs)).filter((f) => f.lockedUntil > now);
    if (locked.length) {
      const retryAfter = Math.ceil((Math.max(...locked.map((f) => f.lockedUntil)) - now) / 1000);
      await this.store.audit({ actor: user, action: 'login.limited', target: user, detail: { address, via } });
      throw new MedvError('ERATELIMIT', `too many failed logins; retry in ${retryAfter} s`, { retryAfter });
    }
    const record = await this.store.getUser(user);
    const hash = record?.passwordHash ?? await this.dummyHash;
    const ok = await this.withHashSlot(() => verifyPassword(hash, password));
    if (!record || !ok || record.disabled) {
      const after = Date.now();
      await this.failed(keys, after);
      await this.store.audit({ actor: user, action: 'login.fail', target: user, detail: { address, via, reason: !record ? 'unknown user' : !ok ? 'wrong password' : 'disabled' } }, after);
      throw new MedvError('EDENIED', DENIED);
    }
    await this.store.clearFailures(`user:${user}`);
    await this.store.audit({ actor: user, action: 'login', target: user, detail: { address, via, ...detail } });
    return user;
  }

  /** POST /api/login: credentials checked (checkCredentials), then a new bearer token. */
  async login(userIn: unknown, passwordIn: unknown, address: string, lifetimeMs?: number): Promise<LoginResult> {
    const now = Date.now();
    const life = lifetimeMs === undefined ? this.o.tokenLifetimeMs : Math.min(this.o.tokenLifetimeMs, lifetimeMs);
    const expires = now + life;
    const user = await this.checkCredentials(userIn, passwordIn, address, 'api', { expires: new Date(expires).toISOString() });
    const token = newToken();
    await this.store.addToken(tokenHash(token), user, now, expires);
    return { user, token, expires: new Date(expires).toISOString() };
  }

  /** The session of a bearer token, or EDENIED (unknown, revoked, expired, disabled user). */
  async authenticate(token: string | undefined): Promise<Session> {
    if (!token || !TOKEN_RE.test(token)) throw new MedvError('EDENIED', 'a login token is required (medv login)');
    const h = tokenHash(token);
    const t = await this.store.findToken(h);
    const now = Date.now();
    if (!t || t.revoked || t.disabled || t.expires <= now) {
      throw new MedvError('EDENIED', !t || t.disabled ? 'the login token is not valid; log in again' : t.revoked ? 'the login token was revoked; log in again' : 'the login token expired; log in again');
    }
    return { user: t.user, tokenHash: h, expires: t.expires };
  }

  async logout(s: Session): Promise<void> {
    await this.store.revokeToken(s.tokenHash);
    await this.store.audit({ actor: s.user, action: 'logout', target: s.user });
  }

  async addUser(nameIn: unknown, passwordIn: unknown, groupsIn: unknown, actor: string): Promise<UserSummary> {
    const name = checkUserName(nameIn);
    const password = checkPassword(passwordIn);
    if (groupsIn !== undefined && (!Array.isArray(groupsIn) || groupsIn.length > 64)) throw new MedvError('EINVAL_ARG', 'groups must be a list of at most 64 group names');
    const groups = ((groupsIn ?? []) as unknown[]).map((g) => checkGroupName(g));
    if (await this.store.getUser(name)) throw new MedvError('EEXIST', `user ${name} already exists`, { user: name });
    const hash = await this.withHashSlot(() => hashPassword(password));
    await this.store.addUser(name, hash, groups);
    await this.store.audit({ actor, action: 'user.add', target: name, detail: { groups } });
    return (await this.store.listUsers()).find((u) => u.user === name)!;
  }

  listUsers(): Promise<UserSummary[]> {
    return this.store.listUsers();
  }

  async publishPolicy(doc: unknown, actor: string): Promise<{ name: string; version: number }> {
    const policy: Policy = checkPolicy(doc);
    const text = JSON.stringify(policy);
    const version = await this.store.publishPolicy(policy.name, text, { users: policy.users ?? [], groups: policy.groups ?? [] }, actor);
    await this.store.audit({ actor, action: 'policy.publish', target: policy.name, detail: { version } });
    return { name: policy.name, version };
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
  async unpublishPolicy(name: string, actor: string): Promise<{ name: string; version: number }> {
    const n = checkUserName(name, 'policy');
    const version = await this.store.policies.unpublish(n, actor);
    await this.store.audit({ actor, action: 'policy.unpublish', target: n, detail: { version } });
    return { name: n, version };
  }

  listPolicies(): Promise<PolicyVersion[]> {
    return this.store.listPolicies();
  }

  policiesFor(user: string): Promise<PolicyDocument[]> {
    return this.store.policiesFor(user);
  }

  /**
   * May `user` use the console? INTERIM, until accounts carry a role (issue 18: the store gets an
   * `admin`/`user` role and `medv admin user add NAME --admin`): members of the group `admins`.
   * Every console request asks again, so a change applies at once.
   */
  async isAdmin(user: string): Promise<boolean> {
    return (await this.store.groupsOf(user)).includes(ADMIN_GROUP);
  }

  // --- the lists of the admin API and the console (filters validated by listing.ts)

  usersPage(f: UserFilter, p: PageQuery): Promise<PageOf<UserRow>> {
    return this.store.lists.users(f, p);
  }

  /** One account; ENOENT when there is none. */
  async user(name: string): Promise<UserRow> {
    const u = await this.store.lists.user(checkUserName(name));
    if (!u) throw new MedvError('ENOENT', `no user ${name}`);
    return u;
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

  auditPage(f: AuditFilter, p: PageQuery): Promise<PageOf<AuditRow>> {
    return this.store.lists.audit(f, p);
  }
}

/** INTERIM (see isAdmin): the group whose members may use the console. */
export const ADMIN_GROUP = 'admins';
