/**
 * The tables of the server store, as kysely sees them. One schema for SQLite and PostgreSQL:
 * names are the keys (no dialect-specific auto-increment), times are milliseconds since the epoch
 * (bigint; read back as numbers), booleans are 0/1 integers, documents are JSON text. Every string
 * column has a length bound, enforced by a CHECK in the database and by the code before it.
 */

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
} as const;

export interface UsersTable {
  name: string;
  /** libsodium's crypto_pwhash_str (Argon2id, PHC string with its own salt and parameters). */
  password_hash: string;
  created: number;
  disabled: number;
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
  time: number;
  actor: string;
  action: string;
  target: string;
  detail: string;
}

/** Failed logins per key (`user:NAME` or `addr:ADDRESS`), shared by every instance on the database. */
export interface LoginFailuresTable {
  key: string;
  count: number;
  first: number;
  last: number;
  locked_until: number;
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
}
