/**
 * Deploying a version of a workspace's image into the client image repository: fetched with
 * TrimTransfer (src/transfer) into `images/<image>/v<N>/<image>.evhd` with the older versions and
 * the pre-staged and packed folders as seeds, wrapped with the host key; then its ImageState.xml
 * from the policy and the image's GlobalImageData.xml; then retention. The fetch itself is
 * resumable and publishes the disk only once every block checked (src/transfer/output.ts), so a
 * version folder either has a whole disk or is not a version (ImageStore.versions()).
 */
import * as fs from 'node:fs';
import { MedvError } from '../core/errors.js';
import { CURRENT_WORKSPACE_VERSION, ensureSafeDir, ImageStore, type ClientRoot } from '../repo/index.js';
import { readCa } from '../client/api.js';
import type { KekSource } from '../crypto/index.js';
import { imageStateFor, type WorkspaceSettings } from './settings.js';

export interface DeployResult {
  version: number;
  disk: string;
  /** Bytes fetched from the server, index included. */
  fetchedBytes: number;
  /** Size of the image's disk. */
  imageBytes: number;
  blocks: number;
  blocksFromSeeds: number;
  blocksFromNetwork: number;
  requests: number;
  seconds: number;
  /** Versions retention removed afterwards. */
  removed: number[];
}

export interface DeployOptions {
  root: ClientRoot;
  store: ImageStore;
  settings: WorkspaceSettings;
  version: number;
  /** URL (or path) of `<image>_<N>.ckm.index`. */
  source: string;
  keyDir: string;
  kek: KekSource;
  /** CA (PEM file) an https:// server must chain to. */
  ca?: string;
  /** Versions that must survive retention (the one running). */
  inUse?: ReadonlySet<number>;
  /** Where disk seeds' block ids are cached (default src/core/paths.ts seedCacheDir()). */
  cacheDir?: string;
  onProgress?: (done: number, total: number) => void;
  onWarning?: (m: string) => void;
}

export async function deployVersion(o: DeployOptions): Promise<DeployResult> {
  const { store, settings, version } = o;
  const { fetchImage } = await import('../transfer/index.js');
  ensureSafeDir(store.dir);
  ensureSafeDir(store.versionDir(version));
  const older = store.versions().filter((n) => n !== version).sort((a, b) => b - a).map((n) => store.diskPath(n));
  // pack folders count only when they hold an index of this image (else the fetch warns about each)
  const holdsIndex = (dir: string) => {
    try { return fs.readdirSync(dir).some((n) => n.startsWith(`${settings.image}_`) && n.endsWith('.ckm.index')); } catch { return false; }
  };
  const seeds = [...older, ...[o.root.prestaged, o.root.packed].filter(holdsIndex)];
  const r = await fetchImage({
    source: o.source,
    out: store.diskPath(version),
    seeds,
    keyDir: o.keyDir,
    kek: () => o.kek,
    trim: settings.useTrimTransfer !== false,
    ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
    ...(o.ca ? { http: { ca: readCa(o.ca) } } : {}),
    onProgress: o.onProgress,
    onWarning: o.onWarning,
  });
  if (r.name !== settings.image || r.version !== version) {
    throw new MedvError('EBADREPLY', `the server's index ${o.source} is ${r.name} version ${r.version}, not ${settings.image} version ${version}`);
  }
  store.writeImageState(version, imageStateFor(settings));
  store.writeGlobal({ virtualizationEngine: settings.minEngine ?? '1.0', workspaceVersion: CURRENT_WORKSPACE_VERSION });
  const kept = store.retain(settings.versionsToKeep ?? 1, new Set([...(o.inUse ?? []), version]));
  for (const s of kept.skipped) o.onWarning?.(`left in place: ${s}`);
  return {
    version,
    disk: store.diskPath(version),
    fetchedBytes: r.networkBytes + r.repositoryFileBytes,
    imageBytes: r.virtualSize,
    blocks: r.blocks,
    blocksFromSeeds: r.blocksFromSeeds,
    blocksFromNetwork: r.blocksFromNetwork,
    requests: r.requests,
    seconds: r.seconds,
    removed: kept.deleted,
  };
}
