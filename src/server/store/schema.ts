/**
 * The tables of the server store, as kysely sees them. One schema for SQLite and PostgreSQL:
 * names are the keys (no dialect-specific auto-increment), times are milliseconds since the epoch
 * (bigint; read back as numbers), booleans are 0/1 integers, documents are JSON text. Every string
 * column has a length bound, enforced by a CHECK in the database and by the code before it.
 */
import type { Generated } from 'kysely';

/** Length bounds of the string columns (characters). */
export const LIMITS = {
  name: 64,
  passwordHash: 256,
  tokenHash: 64,
  address: 64,
  action: 40,
  target: 200,
  detail: 4096,
  document: 65536,
  limiterKey: 200,
  /** image_keys.wrapped before migration 0006: base64 of nonce || ciphertext || tag. */
  wrappedKeys: 1024,
  /** image_keys.wrapped: nonce (24) || ciphertext of at most 674 bytes of keys || tag (16). */
  wrappedKeyBytes: 768,
  clientId: 64,
  state: 16,
  lastError: 1024,
  /** client_controls.reason: the administrator's words, shown to the user by the client. */
  reason: 512,
} as const;

export type Role = 'admin' | 'user';
export const ROLES: readonly Role[] = ['admin', 'user'];

export interface UsersTable {
  name: string;
  /** libsodium's crypto_pwhash_str (Argon2id, PHC string with its own salt and parameters). */
  password_hash: string;
  created: number;
  disabled: number;
  /** 'admin' may use /api/admin/ and the console with its own login; 'user' may not. */
  role: Generated<Role>;
}

export interface GroupsTable {
  name: string;
  created: number;
}

export interface MembershipTable {
  user_name: string;
  group_name: string;
}

export interface TokensTable {
  /** BLAKE2b-256 of the token, hex. The token itself is never stored. */
  hash: string;
  user_name: string;
  created: number;
  expires: number;
  revoked: number;
}

export interface PoliciesTable {
  name: string;
  version: number;
  /** 1: this version unpublishes the policy (it entitles nobody: no entitlement rows). */
  unpublished: Generated<number>;
  /** The policy document as published (JSON, validated against docs/policy.schema.json). */
  document: string;
  published: number;
  publisher: string;
}

/** Who a policy version entitles: one row per user or group named by the document. */
export interface EntitlementsTable {
  policy_name: string;
  version: number;
  kind: 'user' | 'group';
  subject: string;
}

export interface AuditTable {
  /** 16 random bytes, hex. */
  id: string;
  /** The (first) occurrence. */
  time: number;
  actor: string;
  action: string;
  target: string;
  detail: string;
  /** Occurrences this row stands for (repeated failures are aggregated, audit.ts). */
  count: Generated<number>;
  /** The last occurrence, for an aggregated row (null: time). */
  last: number | null;
  /** The client's address, when a request made the entry. */
  address: Generated<string>;
  /** The aggregation key of a repeated entry (unique), null for a single one. */
  agg: string | null;
}

/** Failed logins per key (`user:NAME` or `addr:ADDRESS`), shared by every instance on the database. */
export interface LoginFailuresTable {
  key: string;
  count: number;
  first: number;
  last: number;
  locked_until: number;
}

/**
 * The keys of an image, as the console published them, wrapped under the server key
 * (serverkey.ts: XChaCha20-Poly1305, fresh nonce, additional data "medv-image-keys-v1\0" + image).
 */
export interface ImageKeysTable {
  image: string;
  /** nonce || ciphertext || tag (BLOB / bytea). */
  wrapped: Buffer;
  updated_at: number;
}

/** A client of a user: registered by the user's grant with that client id and key. */
export interface ClientsTable {
  client: string;
  user_name: string;
  /** The X25519 public key of the client's last grant, hex. */
  client_key: string;
  first_seen: number;
  last_seen: number;
}

/** The last report of each (client, user, workspace): the one with the latest client time. */
export interface ClientReportsTable {
  client: string;
  user_name: string;
  workspace: string;
  version: number | null;
  state: string;
  last_error: string | null;
  /** The client's time of the report (ms). */
  reported_at: number;
  /** The server's time of receipt (ms). */
  received_at: number;
}

/** A console sign-in (console/session.ts): only the BLAKE2b-256 of its random id is stored. */
export interface ConsoleSessionsTable {
  hash: string;
  user_name: string;
  created: number;
  /** Last request (ms), updated at most once a minute: the idle expiry counts from it. */
  last_seen: number;
  /** Absolute expiry (ms). */
  expires: number;
  address: string;
}

/** Every report received (client_reports keeps only the latest per client, user and workspace). */
export interface ClientReportHistoryTable extends ClientReportsTable {
  /** 16 random bytes, hex. */
  id: string;
}

/** What the server last granted a client for a workspace (keyservice.ts grant). */
export interface ClientGrantsTable {
  client: string;
  user_name: string;
  workspace: string;
  image: string;
  policy_name: string;
  policy_version: number;
  /** The policy's offlineDays at the grant: the client may start offline until granted_at + this. */
  offline_days: number;
  granted_at: number;
}

/**
 * A standing order of the administrator (console/controls): `lock` (the workspace does not start),
 * `wipe` (the client deletes the workspace's keys, disks and state), `revoke` (no grant), for one
 * client (`scope` client, `subject` its id) or one user (every client of theirs); `workspace` ''
 * means every workspace. It holds until cleared.
 */
export interface ClientControlsTable {
  scope: 'client' | 'user';
  subject: string;
  workspace: string;
  action: 'lock' | 'wipe' | 'revoke';
  reason: string;
  actor: string;
  at: number;
}

/** A client's word that it wiped a workspace (the latest, per client, user and workspace). */
export interface ClientWipesTable {
  client: string;
  user_name: string;
  workspace: string;
  at: number;
}

export interface Database {
  users: UsersTable;
  groups: GroupsTable;
  membership: MembershipTable;
  tokens: TokensTable;
  policies: PoliciesTable;
  entitlements: EntitlementsTable;
  audit: AuditTable;
  login_failures: LoginFailuresTable;
  image_keys: ImageKeysTable;
  client_reports: ClientReportsTable;
  clients: ClientsTable;
  console_sessions: ConsoleSessionsTable;
  client_report_history: ClientReportHistoryTable;
  client_grants: ClientGrantsTable;
  client_controls: ClientControlsTable;
  client_wipes: ClientWipesTable;
}
