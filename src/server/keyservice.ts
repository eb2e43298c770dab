/**
 * Image keys and client reports: the service functions under the key routes of api.ts (and the
 * console). Arguments are checked at the edge (requests.ts); key material arrives and leaves as
 * Buffers in secure memory, never as JavaScript strings.
 *
 * - publish: the console sends an image's content key, repository key and trusted signers; they
 *   are wrapped under the server key (serverkey.ts) and stored as bytes, replacing earlier keys.
 * - grant: a user asks for a workspace with an X25519 public key of its client; if the newest
 *   version of a policy that names the user (or a group of theirs) has a workspace of that name,
 *   the client is registered as the user's (at most `maxClientsPerUser`: the least recently seen
 *   goes, with its reports), and the keys of its image are unwrapped into secure memory, sealed
 *   to the client key (keyrelease.ts) and answered with the workspace's settings. Otherwise 403,
 *   the same answer whether or not the workspace exists.
 * - reports: what clients say their workspaces are doing, the latest per (client, user,
 *   workspace), taken only from a client registered to the caller and only for workspaces the
 *   caller is entitled to now; at most `maxReportsPerUser` rows per user (the least recently
 *   received go). Issue 18 item 15: any user could add rows without end.
 *
 * Every publish, release and refusal is in the audit log (never a key byte).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { DataKey, DATA_KEY_BYTES, KEY_ID_BYTES } from '../crypto/datakey.js';
import { secureAlloc, secureFree } from '../crypto/secure.js';
import { MAX_SIGNERS, SIGNER_BYTES, sealImageKeys, type ImageKeySet } from '../api/keyrelease.js';
import { checkImageName, isFileOfImage } from '../api/names.js';
import type { Audit } from './audit.js';
import type { ClientControls } from './controls.js';
import { type Picked, workspacesOf } from './entitlement.js';
import type { ServerKey } from './serverkey.js';
import {
  type ClientQuery, type ClientRow, type HistoryFilter, type HistoryRow, LIMITS, type PageOf, type PageQuery, type ReportKey, type ReportRow, type Store,
} from './store/index.js';

export const REPORT_STATES = ['running', 'stopped', 'suspended', 'updating', 'failed', 'offline'] as const;
export type ReportState = typeof REPORT_STATES[number];
export const MAX_REPORTS = 64;
/** A report dated further ahead of the server's clock is refused: it would outrank every later one. */
export const MAX_REPORT_AHEAD_MS = 24 * 3600_000;
const BLOB_VERSION = 1;

export interface KeyServiceOptions {
  /** Clients one user may have registered (by grants); a new one past it drops the least recently seen. */
  maxClientsPerUser: number;
  /** Report rows kept per user. */
  maxReportsPerUser: number;
}

export const KEY_SERVICE_DEFAULTS: KeyServiceOptions = { maxClientsPerUser: 32, maxReportsPerUser: 1024 };

export interface GrantRequest { workspace: string; client: string; clientKey: Buffer }
export interface ReportInput { workspace: string; version: number | null; state: ReportState; lastError: string | null; reportedAt: number }
export interface RefusedReport { index: number; workspace: string; reason: string }
/** A page of GET /api/admin/clients: rows with their grant, how many match, the cursor of the next page. */
export interface ClientsPage { clients: ClientRow[]; total: number; next: string | null }

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

/** The workspaces of `user`'s entitled policies, first policy (by name) first (the rule of entitlement.ts). */
async function entitledWorkspaces(store: Store, user: string): Promise<Map<string, Picked>> {
  return workspacesOf(await store.policiesFor(user));
}

/** The cursor of a clients page: base64url of the JSON [client, user, workspace] of its last row. */
export function encodeClientsCursor(k: ReportKey): string {
  return Buffer.from(JSON.stringify(k)).toString('base64url');
}

export function decodeClientsCursor(v: string): ReportKey | undefined {
  if (v.length > 400 || !/^[A-Za-z0-9_-]+$/.test(v)) return undefined;
  try {
    const k = JSON.parse(Buffer.from(v, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(k) && k.length === 3 && k.every((x) => typeof x === 'string' && x.length <= 64)) return k as ReportKey;
  } catch { /* not ours */ }
  return undefined;
}

export class KeyService {
  readonly o: KeyServiceOptions;

  /** The administrator's lock, wipe and revoke orders (controls.ts), checked at every grant. */
  controls?: ClientControls;

  constructor(readonly store: Store, readonly serverKey: ServerKey, readonly root: string, readonly audit: Audit, o: Partial<KeyServiceOptions> = {}) {
    this.o = { ...KEY_SERVICE_DEFAULTS, ...o };
  }

  /** Store the keys of an image (the caller keeps and disposes `keys`). */
  async publish(keys: ImageKeySet, actor: string, address = ''): Promise<{ image: string; replaced: boolean }> {
    const plain = serializeKeys(keys);
    let wrapped: Buffer;
    try {
      wrapped = this.serverKey.wrap(keys.image, plain);
    } finally {
      secureFree(plain);
    }
    if (wrapped.length > LIMITS.wrappedKeyBytes) throw new MedvError('EINTERNAL', 'wrapped keys longer than their column');
    const replaced = await this.store.putImageKeys(keys.image, wrapped);
    await this.audit.record({ actor, action: 'keys.publish', target: keys.image, address, detail: { replaced, imageId: keys.content.keyId.toString('hex'), repositoryKeyId: keys.repository.keyId.toString('hex'), signers: keys.signers.map((s) => s.toString('hex').slice(0, 16)) } });
    return { image: keys.image, replaced };
  }

  /** POST /api/workspaces/grant */
  async grant(user: string, r: GrantRequest, address = ''): Promise<GrantAnswer> {
    const { workspace, client, clientKey } = r;
    // the administrator's orders (lock, wipe, revoke) answer before anything else, entitled or not
    await this.controls?.check(user, client, workspace, address);
    const found = (await entitledWorkspaces(this.store, user)).get(workspace);
    if (!found) {
      await this.audit.refused({ actor: user, action: 'keys.deny', target: workspace, address, detail: { client, reason: 'not entitled' } });
      throw new MedvError('EFORBIDDEN', `user ${user} is not entitled to workspace ${workspace}`);
    }
    const expires = found.settings.expires;
    if (typeof expires === 'string' && new Date().toISOString().slice(0, 10) > expires) {
      await this.audit.refused({ actor: user, action: 'keys.deny', target: workspace, address, detail: { client, policy: found.policy, reason: 'expired' } });
      throw new MedvError('EEXPIRED', `workspace ${workspace} expired on ${expires}: its policy lets it start until that day; ask your administrator`, { expires });
    }
    const dropped = await this.store.registerClient(client, user, clientKey.toString('hex'), this.o.maxClientsPerUser);
    if (dropped.length) await this.audit.record({ actor: user, action: 'client.drop', target: user, address, detail: { clients: dropped.slice(0, 8), reason: `more than ${this.o.maxClientsPerUser} clients` } });
    const image = checkImageName(found.settings.image, 'image');
    const wrapped = await this.store.getImageKeys(image);
    if (wrapped === undefined) {
      await this.audit.refused({ actor: user, action: 'keys.deny', target: workspace, address, detail: { client, image, policy: found.policy, reason: 'no keys published' } });
      throw new MedvError('ENOKEY', `no keys published for image ${image} (medv admin image-keys publish)`);
    }
    const sealed = await this.opened(image, wrapped, async (set) => sealImageKeys(set, clientKey));
    const latest = await latestVersion(this.root, image);
    await this.audit.record({ actor: user, action: 'keys.release', target: workspace, address, detail: { client, image, policy: found.policy, clientKey: clientKey.toString('hex') } });
    const offlineDays = typeof found.settings.offlineDays === 'number' ? found.settings.offlineDays : 0;
    await this.store.clients.recordGrant({ client, user, workspace, image, policy: found.policy.name, policyVersion: found.policy.version, offlineDays, grantedAt: Date.now() });
    return { workspace, image, policy: found.policy, settings: found.settings, latestVersion: latest, sealed: sealed.toString('base64') };
  }

  /**
   * POST /api/reports: EFORBIDDEN unless `client` is registered to `user` (by a grant); reports
   * for workspaces the user is not entitled to are left out and listed in `refused`.
   */
  async report(user: string, client: string, reports: ReportInput[], address = ''): Promise<{ stored: number; refused: RefusedReport[] }> {
    if (!await this.store.isClientOf(client, user)) {
      await this.audit.refused({ actor: user, action: 'reports.refused', target: client, address, detail: { reason: 'not a client of this user' } });
      throw new MedvError('EFORBIDDEN', `client ${client} has no grant for user ${user}: reports are taken from a client after it started a workspace`);
    }
    const entitled = await entitledWorkspaces(this.store, user);
    const refused: RefusedReport[] = [];
    const rows: ReportRow[] = [];
    reports.forEach((r, index) => {
      if (!entitled.has(r.workspace)) refused.push({ index, workspace: r.workspace, reason: 'not entitled' });
      else rows.push({ client, user, workspace: r.workspace, version: r.version, state: r.state, lastError: r.lastError, reportedAt: r.reportedAt });
    });
    if (refused.length) await this.audit.refused({ actor: user, action: 'reports.refused', target: client, address, detail: { reason: 'not entitled', workspaces: refused.slice(0, 8).map((x) => x.workspace) } });
    return { stored: await this.store.putReports(rows, Date.now(), this.o.maxReportsPerUser), refused };
  }

  /** GET /api/admin/clients and the console: one page in (client, user, workspace) order, filtered. */
  async listClients(q: ClientQuery): Promise<ClientsPage> {
    const p = await this.store.clients.reports(q);
    return { clients: p.clients, total: p.total, next: p.next ? encodeClientsCursor(p.next) : null };
  }


  /**
   * Run `use` with the keys published for `image` (unwrapped into secure memory, disposed after);
   * ENOKEY when none are published. The server's image test uses them to fetch a version.
   */
  async withImageKeys<T>(image: string, use: (keys: ImageKeySet) => Promise<T>): Promise<T> {
    const wrapped = await this.store.getImageKeys(image);
    if (wrapped === undefined) throw new MedvError('ENOKEY', `no keys published for image ${image} (medv admin image-keys publish)`);
    return this.opened(image, wrapped, use);
  }

  /** Unwrap stored keys into secure memory, run `use`, dispose them whatever happens. */
  private async opened<T>(image: string, wrapped: Buffer, use: (keys: ImageKeySet) => Promise<T>): Promise<T> {
    const plain = this.serverKey.unwrap(image, wrapped);
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

  /** Every report received (the last HISTORY_PER_KEY of each client, user and workspace), newest first. */
  historyPage(f: HistoryFilter, p: PageQuery): Promise<PageOf<HistoryRow>> {
    return this.store.clients.history(f, p);
  }

  close(): void {
    this.serverKey.dispose();
  }
}
