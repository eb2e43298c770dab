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
}
