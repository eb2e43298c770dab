/**
 * Deploying a version of a workspace's image into its image folder (./identity.ts): fetched with
 * TrimTransfer (src/transfer) into `<folder>/v<N>/<image>.evhd` with the older versions and the
 * pre-staged and packed folders as seeds, wrapped with the host key; then the image's
 * GlobalImageData.xml (engine minimum, layout version, VM name) and the version's `.vmc` and
 * ImageState.xml, with their read-only test copies in `Test/` (./vmfiles.ts); then retention.
 *
 * Order: `Image.json` first (which image, image id and version the folder is for; a folder whose
 * record names anything else is refused by the workspace layer, never written into), then the
 * disk. A version counts only once its disk and key are published (src/repo/images.ts), and the
 * fetch publishes them only after checking the signed index header against that same image name,
 * version and image id (a rolled-back or swapped index published under version N's URL is refused
 * before anything is created) and every block (src/transfer/output.ts): verify first, publish
 * last. A deployment that fails before the disk is published removes what it created (the record
 * and the folder, when nothing else is in it), so a refusal leaves nothing behind; an interrupted
 * download keeps its resumable partial output (`.<image>.evhd.medv-fetch/`) and the record.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { CURRENT_WORKSPACE_VERSION, IDENTITY_FILE, ensureSafeDir, ImageStore, type ClientRoot } from '../repo/index.js';
import { readCa } from '../client/http.js';
import type { KekSource } from '../crypto/index.js';
import { type WorkspaceSettings } from './settings.js';
import { writeVersionVmFiles } from './vmfiles.js';

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
  /** The workspace's store, with its identity (image name and id). */
  store: ImageStore;
  settings: WorkspaceSettings;
  version: number;
  /** The image id (content key id, 32 hex) the signed index must carry. */
  imageId: string;
  /** URL (or path) of `<image>_<N>.ckm.index`. */
  source: string;
  keyDir: string;
  kek: KekSource;
  /** The workspace's VM name (./identity.ts), recorded in GlobalImageData.xml. */
  vmName: string;
  /** CA (PEM file) an https:// server must chain to. */
  ca?: string;
  /** More disks to take blocks from (every block is checked against the image's ids). */
  extraSeeds?: string[];
  /** Versions that must survive retention (the one running). */
  inUse?: ReadonlySet<number>;
  /** Where disk seeds' block ids are cached (default src/core/paths.ts seedCacheDir()). */
  cacheDir?: string;
  onProgress?: (done: number, total: number) => void;
  onWarning?: (m: string) => void;
}

export async function deployVersion(o: DeployOptions): Promise<DeployResult> {
  const { store, settings, version } = o;
  if (!store.identity || store.identity.image !== settings.image || store.identity.imageId !== o.imageId) {
    throw new MedvError('EINVAL_ARG', `deploying ${settings.image} (image ${o.imageId}) into a store of ${store.identity?.image ?? 'no recorded image'}`);
  }
  const { fetchImage } = await import('../transfer/index.js');
  ensureSafeDir(store.dir);
  const vdir = store.versionDir(version);
  const created = !fs.existsSync(vdir);
  const recorded = store.readIdentity(version) !== undefined;
  ensureSafeDir(vdir);
  store.writeIdentity(version);
  const older = store.versions().filter((n) => n !== version).sort((a, b) => b - a).map((n) => store.diskPath(n));
  // pack folders count only when they hold an index of this image (else the fetch warns about each)
  const holdsIndex = (dir: string) => {
    try { return fs.readdirSync(dir).some((n) => n.startsWith(`${settings.image}_`) && n.endsWith('.ckm.index')); } catch { return false; }
  };
  const seeds = [...older, ...(o.extraSeeds ?? []), ...[o.root.prestaged, o.root.packed].filter(holdsIndex)];
  let r: Awaited<ReturnType<typeof fetchImage>>;
  try {
    r = await fetchImage({
      source: o.source,
      out: store.diskPath(version),
      seeds,
      keyDir: o.keyDir,
      kek: () => o.kek,
      trim: settings.useTrimTransfer !== false,
      expect: { name: settings.image, version, imageId: o.imageId },
      ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
      ...(o.ca ? { http: { ca: readCa(o.ca) } } : {}),
      onProgress: o.onProgress,
      onWarning: o.onWarning,
    });
  } catch (e) {
    // what this deployment made, when nothing else came of it (a refused index, an unreachable
    // server): gone. A folder holding a resumable partial download stays for the next start.
    if (created || !recorded) {
      let rest: string[] = ['?'];
      try { rest = fs.readdirSync(vdir).filter((n) => n !== IDENTITY_FILE); } catch { /* gone or unreadable: leave it */ }
      if (rest.length === 0) {
        fs.rmSync(join(vdir, IDENTITY_FILE), { force: true });
        if (created) { try { fs.rmdirSync(vdir); } catch { /* raced: something arrived */ } }
      }
    }
    throw e;
  }
  if (r.name !== settings.image || r.version !== version) {
    // the fetch checked the header already; this cannot happen unless it changed under us
    throw new MedvError('EBADREPLY', `the server's index ${o.source} is ${r.name} version ${r.version}, not ${settings.image} version ${version}`);
  }
  store.writeGlobal({ virtualizationEngine: settings.minEngine ?? '1.0', workspaceVersion: CURRENT_WORKSPACE_VERSION, vmName: o.vmName });
  writeVersionVmFiles(store, version, settings, o.vmName);
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
