/** `medv serve` as a library call: the admin token, the store, the modules, the HTTP server. */
import * as fs from 'node:fs';
import { join, resolve } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { ensureDir } from '../core/fsio.js';
import { ADMIN_TOKEN_FILE, loadAdminToken } from './auth.js';
import { type HttpLimits, type RequestLog, type RunningServer, startHttpServer } from './http.js';
import { TrustedProxies } from './peer.js';
import { IMAGE_REPOSITORY_DEFAULTS, imageRepository } from './images.js';
import { Accounts, type AccountsOptions } from './accounts.js';
import { Audit, type AuditOptions } from './audit.js';
import { accountsApi } from './api.js';
import { KeyService, type KeyServiceOptions } from './keyservice.js';
import { ImageCatalog } from './catalog.js';
import { consoleModule } from './console/module.js';
import { ImageTests, UPLOAD_TESTER, type ImageTestOptions } from './imagetest.js';
import { ClientControls } from './controls.js';
import { SERVER_KEY_FILE, loadServerKey } from './serverkey.js';
import { Store } from './store/index.js';

export interface ServeOptions {
  root: string;
  host?: string;
  port?: number;
  adminTokenFile?: string;
  /** The server master key (32 bytes, 0600); default DIR/server.key, generated on first start. */
  serverKeyFile?: string;
  maxUploadSize?: number;
  maxActiveUploads?: number;
  /** Database URL (postgres://…); default SQLite in DIR/medv.db. */
  db?: string;
  /** Accept passwords and tokens over plain HTTP from other hosts (a TLS proxy in front). */
  allowPlainHttp?: boolean;
  /** HTTPS: certificate chain and private key files (PEM); the key file must be 0600. */
  tlsCert?: string;
  tlsKey?: string;
  /** The console's image test: timeout, hold, ready pattern, accelerator. */
  imageTests?: Partial<Pick<ImageTestOptions, 'timeoutMs' | 'holdMs' | 'readyPattern' | 'accel'>>;
  /** Test every version an upload completes (the console's image test, by `(upload)`). */
  imageTestOnUpload?: boolean;
  /** Deadlines and connection limits of the HTTP edge (http.ts). */
  limits?: Partial<HttpLimits>;
  /** Proxies (CIDRs) whose X-Forwarded-For and X-Forwarded-Proto are believed (peer.ts). */
  trustProxy?: string[];
  /** Login token lifetime, failed-login limits. */
  accounts?: Partial<AccountsOptions>;
  /** Audit log retention, row cap, aggregation window. */
  audit?: Partial<AuditOptions>;
  /** Clients per user, report rows per user. */
  keys?: Partial<KeyServiceOptions>;
  onLog?: (entry: RequestLog) => void;
}

export interface Serving extends RunningServer {
  root: string;
  adminTokenFile: string;
  serverKeyFile: string;
  /** True when this start generated the admin token. */
  tokenCreated: boolean;
  /** The SQLite file or the PostgreSQL URL (without its password). */
  database: string;
}

/** A PEM file, at most 1 MiB; a private key must not be readable by group or others. */
function readPem(file: string, secret: boolean): Buffer {
  try {
    const st = fs.statSync(file);
    if (!st.isFile() || st.size > 1 << 20) throw new MedvError('EINVAL_ARG', 'not a PEM file of at most 1 MiB', { file });
    if (secret && (st.mode & 0o077) !== 0) throw new MedvError('EINSECURE', `TLS key file permissions ${(st.mode & 0o777).toString(8)} are too open: it must not be readable by group or others (chmod 600)`, { file });
    return fs.readFileSync(file);
  } catch (e) {
    throw fromSystemError(e, file);
  }
}

export async function serveRepository(o: ServeOptions): Promise<Serving> {
  const root = resolve(o.root);
  // the root holds the database, the admin token and the server key: nobody else may write into it
  ensureDir(root, { mode: 0o755, forbid: 0o022, parents: true });
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw new MedvError('EINVAL_ARG', 'give both --tls-cert and --tls-key, or neither');
  const trustProxy = new TrustedProxies(o.trustProxy ?? []);
  const tls = o.tlsCert !== undefined && o.tlsKey !== undefined ? { cert: readPem(o.tlsCert, false), key: readPem(o.tlsKey, true) } : undefined;
  const token = loadAdminToken(o.adminTokenFile, join(root, ADMIN_TOKEN_FILE));
  const serverKey = loadServerKey(o.serverKeyFile, join(root, SERVER_KEY_FILE));
  // set once the image tests exist (below): the repository is made first
  let onVersionPublished: ((name: string, version: number) => void) | undefined;
  const images = imageRepository({
    ...IMAGE_REPOSITORY_DEFAULTS,
    root,
    token,
    onVersionPublished: (name, version) => onVersionPublished?.(name, version),
    ...(o.maxUploadSize !== undefined ? { maxUploadSize: o.maxUploadSize } : {}),
    ...(o.maxActiveUploads !== undefined ? { maxActiveUploads: o.maxActiveUploads } : {}),
  });
  let store: Store;
  try {
    store = await Store.open(root, o.db);
  } catch (e) {
    serverKey.dispose();
    await images.close();
    throw e;
  }
  const audit = new Audit(store, o.audit);
  await audit.prune();
  const accounts = new Accounts(store, audit, o.accounts);
  const controls = new ClientControls(store, audit);
  const keys = new KeyService(store, serverKey, root, audit, o.keys);
  keys.controls = controls;
  const catalog = new ImageCatalog(root, store, audit, keys);
  const tests = new ImageTests({ ...o.imageTests, root, store, audit, keys });
  // a failure here must not keep the server down; it is said on stderr (the leftovers stay until the next start)
  await tests.recover().catch((e: unknown) => process.emitWarning(`image tests: could not clean up after the last run: ${(e as Error).message}`));
  if (o.imageTestOnUpload) {
    // one test at a time: a version uploaded while another is tested is not tested (said on stderr; the console can test it)
    onVersionPublished = (name, version) => {
      tests.start(name, version, UPLOAD_TESTER).catch((e: unknown) => process.emitWarning(`image test of ${name} version ${version} after its upload not started: ${(e as Error).message}`));
    };
  }
  const api = accountsApi({ accounts, audit, token, keys, catalog, tests, controls, allowPlainHttp: o.allowPlainHttp });
  const web = consoleModule({ accounts, audit, keys, catalog, tests, controls, isAdmin: (u) => accounts.isAdmin(u), allowPlainHttp: o.allowPlainHttp });
  let running;
  try {
    running = await startHttpServer({ host: o.host ?? '127.0.0.1', port: o.port ?? 8080, modules: [images, api, web], onLog: o.onLog, tls, limits: o.limits, trustProxy });
  } catch (e) {
    await images.close();
    await api.close();
    await web.close();
    throw e;
  }
  return { ...running, root, adminTokenFile: token.file, serverKeyFile: serverKey.file, tokenCreated: token.created, database: store.where };
}
