/**
 * Who this client is and how it reaches its server, kept in the client data repository:
 *
 *   data/Local/Config/Client.json        {server, user, ca?, client}: not secret (0600 anyway)
 *   data/Users/<user>/Credentials.dat    the login token, sealed under the host key (src/repo/sealed.ts)
 *   data/Users/<user>/client.key.enc     the client's X25519 secret (key releases are sealed to its
 *                                        public half), wrapped with the host key like a disk key
 *   (each workspace's released keys: ./grant.ts)
 *
 * `medv login` writes the first two; the key pair is made on first use.
 */
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { isAbsolute, join } from 'node:path';
import { readBoundedSync, writeFileAtomicSync } from '../core/fsio.js';
import { clientRootPath } from '../core/paths.js';
import { MedvError } from '../core/errors.js';
import { DataKey, readKeyFile, writeKeyFileAt, type HostKeySource } from '../crypto/index.js';
import { clientHostKey, openClientRoot, readSealed, userDir, writeSealed, type ClientRoot } from '../repo/index.js';
import { clientKeyPairFrom, type ClientKeyPair } from '../api/keyrelease.js';
import { CLIENT_ID_RE } from '../api/names.js';

export interface ClientConfig {
  /** Server base URL (`https://console.example:8443`). */
  server: string;
  user: string;
  /** A CA (PEM) the server's certificate is pinned to. */
  ca?: string;
  /** This client's id in status reports (random, made once). */
  client: string;
  /** Folders of host data used as seeds by every deployment (src/transfer/hostseeds.ts); absolute paths, at most 8. */
  seedFolders?: string[];
}

export interface Credentials { server: string; user: string; token: string; expires: string }

const CONFIG_FILE = 'Client.json';
const CREDENTIALS_FILE = 'Credentials.dat';
const CREDENTIALS_PURPOSE = 'medv-credentials-v1';
const CLIENT_KEY_FILE = 'client.key.enc';
const MAX_CONFIG = 16 * 1024;

/** The client's repositories and host key: everything a workspace command starts from. */
export interface ClientContext { root: ClientRoot; kek: HostKeySource }

export async function openClient(rootPath?: string): Promise<ClientContext> {
  const root = openClientRoot(clientRootPath(rootPath));
  return { root, kek: await clientHostKey(root) };
}

export function configPath(c: ClientRoot): string { return join(c.config, CONFIG_FILE); }

/** The saved client configuration, or ENOLOGIN. */
export function readClientConfig(c: ClientRoot): ClientConfig {
  const file = configPath(c);
  const bytes = readBoundedSync(file, MAX_CONFIG, 'client configuration');
  if (!bytes) throw new MedvError('ENOLOGIN', `this client has no server yet: run medv login --server URL --user USER${c.root ? ` (client root ${c.root})` : ''}`);
  const text = bytes.toString('utf8');
  let v: Partial<ClientConfig>;
  try { v = JSON.parse(text) as Partial<ClientConfig>; } catch { throw new MedvError('EFORMAT', `${file} is not JSON`, { file }); }
  if (typeof v !== 'object' || v === null || typeof v.server !== 'string' || typeof v.user !== 'string' || typeof v.client !== 'string' || !CLIENT_ID_RE.test(v.client)
    || (v.ca !== undefined && typeof v.ca !== 'string')) {
    throw new MedvError('EFORMAT', `${file} is not a medv client configuration`, { file });
  }
  const seeds = v.seedFolders;
  if (seeds !== undefined && (!Array.isArray(seeds) || seeds.length > 8 || !seeds.every((p) => typeof p === 'string' && isAbsolute(p) && p.length <= 4096 && !p.includes('\0')))) {
    throw new MedvError('EFORMAT', `${file}: seedFolders must be a list of at most 8 absolute folder paths`, { file });
  }
  return { server: v.server, user: v.user, client: v.client, ...(v.ca ? { ca: v.ca } : {}), ...(seeds?.length ? { seedFolders: seeds } : {}) };
}

/** Record a login: the server and user for the workspace commands, the token sealed. */
export async function saveClientLogin(ctx: ClientContext, login: Credentials, ca?: string): Promise<ClientConfig> {
  let client: string | undefined;
  let seedFolders: string[] | undefined;
  try { ({ client, seedFolders } = readClientConfig(ctx.root)); } catch { /* first login */ }
  const cfg: ClientConfig = { server: login.server, user: login.user, client: client ?? randomBytes(8).toString('hex'), ...(ca ? { ca } : {}), ...(seedFolders ? { seedFolders } : {}) };
  userDir(ctx.root, login.user);
  await writeSealed(ctx.root, join('data', 'Users', login.user, CREDENTIALS_FILE), CREDENTIALS_PURPOSE, login);
  writeFileAtomicSync(configPath(ctx.root), `${JSON.stringify(cfg, null, 2)}\n`);
  return cfg;
}

/** The user's saved token, if any (an expired one is returned too: the server says so). */
export async function readCredentials(ctx: ClientContext, cfg: ClientConfig): Promise<Credentials | undefined> {
  userDir(ctx.root, cfg.user);
  const v = await readSealed<Credentials>(ctx.root, join('data', 'Users', cfg.user, CREDENTIALS_FILE), CREDENTIALS_PURPOSE);
  if (!v) return undefined;
  if (typeof v.token !== 'string' || v.user !== cfg.user || v.server !== cfg.server) return undefined;
  return v;
}

/** The client's key pair for key releases, made on first use. */
export async function clientKeyPair(ctx: ClientContext, user: string): Promise<ClientKeyPair> {
  const file = join(userDir(ctx.root, user), CLIENT_KEY_FILE);
  let key: DataKey;
  if (fs.existsSync(file)) key = await readKeyFile(file, ctx.kek);
  else {
    key = DataKey.generate();
    await writeKeyFileAt(file, key, ctx.kek);
  }
  try {
    return clientKeyPairFrom(key.key.subarray(0, 32));
  } finally {
    key.dispose();
  }
}
