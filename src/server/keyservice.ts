/**
 * Image keys and client reports as the API sees them (the library under api.ts's key routes):
 *
 * - publish: the console sends an image's content key, repository key and trusted signers; they
 *   are wrapped under the server key (serverkey.ts) and stored, replacing earlier keys of the image.
 * - grant: a user asks for a workspace with an X25519 public key of its client; if the newest
 *   version of a policy that names the user (or a group of theirs) has a workspace of that name,
 *   the keys of its image are unwrapped into secure memory, sealed to the client key
 *   (keyrelease.ts) and answered with the workspace's settings. Otherwise 403, the same answer
 *   whether or not the workspace exists.
 * - reports: what clients say their workspaces are doing, the latest per (client, user, workspace).
 *
 * Every publish, release and refusal is in the audit log (never a key byte).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { DataKey, DATA_KEY_BYTES, KEY_ID_BYTES } from '../crypto/datakey.js';
import { secureAlloc, secureFree } from '../crypto/secure.js';
import { CLIENT_KEY_BYTES, MAX_SIGNERS, SIGNER_BYTES, checkClientKey, sealImageKeys, type ImageKeySet } from '../api/keyrelease.js';
import { checkClientId, checkImageName, checkWorkspaceName, isFileOfImage } from '../api/names.js';
import { pickWorkspace } from './entitlement.js';
import type { ClientControls } from './controls.js';
import type { ServerKey } from './serverkey.js';
import { type ClientFilter, type ClientRow, type HistoryFilter, type HistoryRow, LIMITS, type PageOf, type PageQuery, type ReportRow, type Store } from './store/index.js';

export const REPORT_STATES = ['running', 'stopped', 'suspended', 'updating', 'failed', 'offline'] as const;
export type ReportState = typeof REPORT_STATES[number];
export const MAX_REPORTS = 64;
const MAX_VERSION = 2 ** 31 - 1;
/** A report dated further ahead of the server's clock is refused: it would outrank every later one. */
export const MAX_REPORT_AHEAD_MS = 24 * 3600_000;
const BLOB_VERSION = 1;

const arg = (msg: string) => new MedvError('EINVAL_ARG', msg);

function field(o: Record<string, unknown>, k: string, what: string): unknown {
  if (!(k in o)) throw arg(`${what} is missing`);
  return o[k];
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw arg(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

function hexBytes(v: unknown, n: number, what: string): Buffer {
  if (typeof v !== 'string' || v.length !== 2 * n || !/^[0-9a-fA-F]+$/.test(v)) throw arg(`${what} must be ${2 * n} hex digits (${n} bytes)`);
  return Buffer.from(v, 'hex');
}

/** Strict padded base64 of exactly `n` bytes, decoded into `into` (a secure buffer for keys) or a new buffer. */
function base64Bytes(v: unknown, n: number, what: string, into?: Buffer): Buffer {
  const len = 4 * Math.ceil(n / 3);
  if (typeof v !== 'string' || v.length !== len || !/^[A-Za-z0-9+/]+={0,2}$/.test(v)) throw arg(`${what} must be base64 of ${n} bytes (${len} characters)`);
  const b = Buffer.from(v, 'base64');
  try {
    if (b.length !== n || b.toString('base64') !== v) throw arg(`${what} must be base64 of ${n} bytes (${len} characters)`);
    if (!into) return Buffer.from(b);
    b.copy(into);
    return into;
  } finally {
    b.fill(0);
  }
}

function dataKey(v: unknown, what: string): DataKey {
  const o = obj(v, what);
  const id = hexBytes(field(o, 'id', `${what}.id`), KEY_ID_BYTES, `${what}.id`);
  const key = secureAlloc(DATA_KEY_BYTES);
  try {
    base64Bytes(field(o, 'key', `${what}.key`), DATA_KEY_BYTES, `${what}.key`, key);
  } catch (e) {
    secureFree(key);
    throw e;
  }
  try {
    return DataKey.adopt(id, key);
  } catch {
    throw arg(`${what}.key is not a usable key (equal halves)`);
  }
}

/** What the database keeps, before wrapping: [1][content id][content key][repository id][repository key][n][n signers]. */
function serializeKeys(k: ImageKeySet): Buffer {
  const n = k.signers.length;
  const buf = secureAlloc(1 + 2 * (KEY_ID_BYTES + DATA_KEY_BYTES) + 1 + n * SIGNER_BYTES);
  let p = 0;
  buf[p++] = BLOB_VERSION;
  for (const d of [k.content, k.repository]) { p += d.keyId.copy(buf, p); p += d.key.copy(buf, p); }
  buf[p++] = n;
  for (const s of k.signers) p += s.copy(buf, p);
  return buf;
}

function parseKeys(image: string, plain: Buffer): ImageKeySet {
  const fixed = 1 + 2 * (KEY_ID_BYTES + DATA_KEY_BYTES) + 1;
  if (plain.length < fixed || plain[0] !== BLOB_VERSION) throw new MedvError('ECRYPTO', `the stored keys of image ${image} are damaged`);
  const n = plain[fixed - 1];
  if (plain.length !== fixed + n * SIGNER_BYTES || n > MAX_SIGNERS) throw new MedvError('ECRYPTO', `the stored keys of image ${image} are damaged`);
  const keys: DataKey[] = [];
  let p = 1;
  for (let i = 0; i < 2; i++) {
    const id = Buffer.from(plain.subarray(p, p + KEY_ID_BYTES));
    p += KEY_ID_BYTES;
    const k = secureAlloc(DATA_KEY_BYTES);
    plain.copy(k, 0, p, p + DATA_KEY_BYTES);
    p += DATA_KEY_BYTES;
    keys.push(DataKey.adopt(id, k));
  }
  p++;
  const signers: Buffer[] = [];
  for (let i = 0; i < n; i++, p += SIGNER_BYTES) signers.push(Buffer.from(plain.subarray(p, p + SIGNER_BYTES)));
  return { image, content: keys[0], repository: keys[1], signers };
}

export interface PolicyRef { name: string; version: number }
export interface GrantAnswer {
  workspace: string;
  image: string;
  policy: PolicyRef;
  settings: Record<string, unknown>;
  latestVersion: number | null;
  /** base64 of crypto_box_seal(canonical plaintext, clientKey). */
  sealed: string;
}

/** The highest N such that DIR/images/<image>_<N>.ckm.index is a regular file, or null. */
export async function latestVersion(root: string, image: string): Promise<number | null> {
  const dir = join(root, 'images');
  let names: string[];
  try { names = await fs.promises.readdir(dir); } catch { return null; }
  const versions = names.map((n) => isFileOfImage(n, image)).filter((f) => f?.kind === 'index').map((f) => f!.version).sort((a, b) => b - a);
  for (const v of versions) {
    try {
      if ((await fs.promises.lstat(join(dir, `${image}_${v}.ckm.index`))).isFile()) return v;
    } catch { /* gone meanwhile */ }
  }
  return null;
}

export class KeyService {
  constructor(readonly store: Store, readonly serverKey: ServerKey, readonly root: string, readonly controls?: ClientControls) {}

  /** POST /api/admin/image-keys */
  async publish(body: Record<string, unknown>, actor: string): Promise<{ image: string; replaced: boolean }> {
    const image = checkImageName(field(body, 'image', 'image'), 'image');
    const signersIn = field(body, 'signers', 'signers');
    if (!Array.isArray(signersIn) || signersIn.length > MAX_SIGNERS) throw arg(`signers must be a list of at most ${MAX_SIGNERS} Ed25519 public keys (64 hex digits each)`);
    const signers = signersIn.map((s, i) => hexBytes(s, SIGNER_BYTES, `signers[${i}]`));
    const keys: DataKey[] = [];
    try {
      keys.push(dataKey(field(body, 'content', 'content'), 'content'));
      keys.push(dataKey(field(body, 'repository', 'repository'), 'repository'));
      const plain = serializeKeys({ image, content: keys[0], repository: keys[1], signers });
      let wrapped: string;
      try {
        wrapped = this.serverKey.wrap(image, plain).toString('base64');
      } finally {
        secureFree(plain);
      }
      if (wrapped.length > LIMITS.wrappedKeys) throw new MedvError('EINTERNAL', 'wrapped keys longer than their column');
      const replaced = await this.store.putImageKeys(image, wrapped);
      await this.store.audit({ actor, action: 'keys.publish', target: image, detail: { replaced, imageId: keys[0].keyId.toString('hex'), repositoryKeyId: keys[1].keyId.toString('hex'), signers: signers.map((s) => s.toString('hex').slice(0, 16)) } });
      return { image, replaced };
    } finally {
      for (const k of keys) k.dispose();
    }
  }

  /** POST /api/workspaces/grant */
  async grant(user: string, body: Record<string, unknown>): Promise<GrantAnswer> {
    const workspace = checkWorkspaceName(field(body, 'workspace', 'workspace'));
    const client = checkClientId(field(body, 'client', 'client'));
    const clientKey = base64Bytes(field(body, 'clientKey', 'clientKey'), CLIENT_KEY_BYTES, 'clientKey');
    checkClientKey(clientKey);
    // the administrator's orders (lock, wipe, revoke) answer before anything else, entitled or not
    await this.controls?.check(user, client, workspace);
    const found = pickWorkspace(await this.store.policiesFor(user), workspace);
    if (!found) {
      await this.store.audit({ actor: user, action: 'keys.deny', target: workspace, detail: { client, reason: 'not entitled' } });
      throw new MedvError('EDENIED', `user ${user} is not entitled to workspace ${workspace}`, { httpStatus: 403 });
    }
    const expires = found.settings.expires;
    if (typeof expires === 'string' && new Date().toISOString().slice(0, 10) > expires) {
      await this.store.audit({ actor: user, action: 'keys.deny', target: workspace, detail: { client, policy: found.policy, reason: 'expired' } });
      throw new MedvError('EEXPIRED', `workspace ${workspace} expired on ${expires}: its policy lets it start until that day; ask your administrator`, { expires });
    }
    const image = checkImageName(found.settings.image, 'image');
    const wrapped = await this.store.getImageKeys(image);
    if (wrapped === undefined) {
      await this.store.audit({ actor: user, action: 'keys.deny', target: workspace, detail: { client, image, policy: found.policy, reason: 'no keys published' } });
      throw new MedvError('ENOKEY', `no keys published for image ${image} (medv admin image-keys publish)`);
    }
    const plain = this.serverKey.unwrap(image, Buffer.from(wrapped, 'base64'));
    let set: ImageKeySet;
    try {
      set = parseKeys(image, plain);
    } finally {
      secureFree(plain);
    }
    let sealed: Buffer;
    try {
      sealed = sealImageKeys(set, clientKey);
    } finally {
      set.content.dispose();
      set.repository.dispose();
    }
    const latest = await latestVersion(this.root, image);
    await this.store.audit({ actor: user, action: 'keys.release', target: workspace, detail: { client, image, policy: found.policy, clientKey: clientKey.toString('hex') } });
    const offlineDays = typeof found.settings.offlineDays === 'number' ? found.settings.offlineDays : 0;
    await this.store.clients.recordGrant({ client, user, workspace, image, policy: found.policy.name, policyVersion: found.policy.version, offlineDays, grantedAt: Date.now() });
    return { workspace, image, policy: found.policy, settings: found.settings, latestVersion: latest, sealed: sealed.toString('base64') };
  }

  /** POST /api/reports */
  async report(user: string, body: Record<string, unknown>): Promise<{ stored: number }> {
    const client = checkClientId(field(body, 'client', 'client'));
    const list = field(body, 'reports', 'reports');
    if (!Array.isArray(list) || list.length < 1 || list.length > MAX_REPORTS) throw arg(`reports must be a list of 1 to ${MAX_REPORTS} reports`);
    const rows: ReportRow[] = list.map((v, i) => {
      const w = `reports[${i}]`;
      const r = obj(v, w);
      for (const k of Object.keys(r)) if (!['workspace', 'version', 'state', 'lastError', 'at'].includes(k)) throw arg(`${w}.${k.slice(0, 40)} is not a report field`);
      const workspace = checkWorkspaceName(field(r, 'workspace', `${w}.workspace`), `${w}.workspace`);
      const version = field(r, 'version', `${w}.version`);
      if (version !== null && (typeof version !== 'number' || !Number.isInteger(version) || version < 1 || version > MAX_VERSION)) throw arg(`${w}.version must be null or an integer from 1 to ${MAX_VERSION}`);
      const state = field(r, 'state', `${w}.state`);
      if (typeof state !== 'string' || !(REPORT_STATES as readonly string[]).includes(state)) throw arg(`${w}.state must be one of ${REPORT_STATES.join(', ')}`);
      const lastError = r.lastError;
      if (lastError !== undefined && lastError !== null && (typeof lastError !== 'string' || lastError.length > LIMITS.lastError)) throw arg(`${w}.lastError must be a string of at most ${LIMITS.lastError} characters`);
      const at = field(r, 'at', `${w}.at`);
      const ms = typeof at === 'string' && at.length <= 40 && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/.test(at) ? Date.parse(at) : NaN;
      if (!Number.isFinite(ms) || ms < 0) throw arg(`${w}.at must be an ISO 8601 time such as 2026-12-02T10:00:00Z`);
      if (ms > Date.now() + MAX_REPORT_AHEAD_MS) throw arg(`${w}.at is more than a day ahead of the server's clock (check the client's clock)`);
      return { client, user, workspace, version: version as number | null, state, lastError: (lastError as string | null | undefined) ?? null, reportedAt: ms };
    });
    return { stored: await this.store.putReports(rows) };
  }

  /**
   * Run `use` with the keys published for `image` (unwrapped into secure memory, disposed after);
   * ENOKEY when none are published. The server's image test uses them to fetch a version.
   */
  async withImageKeys<T>(image: string, use: (keys: ImageKeySet) => Promise<T>): Promise<T> {
    const wrapped = await this.store.getImageKeys(image);
    if (wrapped === undefined) throw new MedvError('ENOKEY', `no keys published for image ${image} (medv admin image-keys publish)`);
    const plain = this.serverKey.unwrap(image, Buffer.from(wrapped, 'base64'));
    let set: ImageKeySet;
    try {
      set = parseKeys(image, plain);
    } finally {
      secureFree(plain);
    }
    try {
      return await use(set);
    } finally {
      set.content.dispose();
      set.repository.dispose();
    }
  }

  /** The trusted signers published with `image`'s keys (public keys), or undefined when none are published. */
  async signersOf(image: string): Promise<Buffer[] | undefined> {
    if ((await this.store.getImageKeys(image)) === undefined) return undefined;
    return this.withImageKeys(image, async (k) => k.signers);
  }

  /** The latest report of each client, user and workspace, with the client's last grant beside it. */
  clientsPage(f: ClientFilter, p: PageQuery): Promise<PageOf<ClientRow>> {
    return this.store.clients.reports(f, p);
  }

  /** Every report received (the last HISTORY_PER_KEY of each client, user and workspace), newest first. */
  historyPage(f: HistoryFilter, p: PageQuery): Promise<PageOf<HistoryRow>> {
    return this.store.clients.history(f, p);
  }

  listClients(): ReturnType<Store['listReports']> {
    return this.store.listReports();
  }

  close(): void {
    this.serverKey.dispose();
  }
}
