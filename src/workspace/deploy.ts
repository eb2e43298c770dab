/**
 * Deploying a version of a workspace's image into its image folder (./identity.ts): unless the
 * user's base folder of the image (`<image>@<hash>`) holds that version already (another workspace
 * of the image deployed it: nothing is fetched), it is fetched there with TrimTransfer
 * (src/transfer) into `v<N>/<image>.evhd`, the older versions and the pre-staged and packed folders
 * as seeds, wrapped with the host key, under the base's lock. Then the workspace's `v<N>/` gets its
 * `Image.json` and hard links to the base's key and disk (no second copy); then the image's
 * GlobalImageData.xml (engine minimum, layout version, VM name) and the version's `.vmc` and
 * ImageState.xml, with their read-only test copies in `Test/` (./vmfiles.ts); then retention (and the base versions no workspace links to, but the newest).
 *
 * Order, in the base as in the workspace's folder: `Image.json` first (which image, image id and version the folder is for; a folder whose
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
import { lockExclusive } from '../block/flock.js';
import { MedvError } from '../core/errors.js';
import { hardLinkSync } from '../core/fsio.js';
import { CURRENT_WORKSPACE_VERSION, ENGINE_VERSION, IDENTITY_FILE, ensureSafeDir, ImageStore, type ClientRoot } from '../repo/index.js';
import { compareEngineVersions } from '../formats/imagestate/index.js';
import { readCa } from '../client/http.js';
import type { KekSource } from '../crypto/index.js';
import { type WorkspaceSettings } from './settings.js';
import { writeVersionVmFiles } from './vmfiles.js';
import type { SeedReport } from '../transfer/seeds.js';

export interface DeployResult {
  version: number;
  disk: string;
  /** Bytes fetched, index included (from mirrors too). */
  fetchedBytes: number;
  /** Of those, bytes from the policy's mirrors. */
  mirrorBytes: number;
  /** Size of the image's disk. */
  imageBytes: number;
  blocks: number;
  blocksFromSeeds: number;
  blocksFromNetwork: number;
  requests: number;
  seconds: number;
  /** Versions retention removed afterwards. */
  removed: number[];
  /** True when the base was on this client already (another workspace of the image): nothing was fetched. */
  shared: boolean;
  /** What each seed gave (none when nothing was fetched). */
  seeds: SeedReport[];
}

export interface DeployOptions {
  root: ClientRoot;
  /** The workspace's store, with its identity (image name and id). */
  store: ImageStore;
  /** The user's shared bases of this image (./identity.ts baseStore): each version is downloaded there once. */
  base: ImageStore;
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
  /** Folders of host data to take blocks from (src/transfer/hostseeds.ts; every block checked too). */
  hostSeeds?: string[];
  /** Versions that must survive retention (the one running). */
  inUse?: ReadonlySet<number>;
  /** Where disk seeds' block ids are cached (default src/core/paths.ts seedCacheDir()). */
  cacheDir?: string;
  onProgress?: (done: number, total: number) => void;
  onWarning?: (m: string) => void;
}

export async function deployVersion(o: DeployOptions): Promise<DeployResult> {
  const { store, base, settings, version } = o;
  for (const st of [store, base]) {
    if (!st.identity || st.identity.image !== settings.image || st.identity.imageId !== o.imageId) {
      throw new MedvError('EINVAL_ARG', `deploying ${settings.image} (image ${o.imageId}) into a store of ${st.identity?.image ?? 'no recorded image'}`);
    }
  }
  // an image this medv cannot run is refused before anything is fetched or created
  if (compareEngineVersions(ENGINE_VERSION, settings.minEngine ?? ENGINE_VERSION) < 0) {
    throw new MedvError('EENGINE', `image ${settings.image} needs medv engine ${settings.minEngine} or later (the policy's minEngine); this medv is ${ENGINE_VERSION}: update medv before deploying it (nothing was downloaded)`,
      { image: settings.image, needs: settings.minEngine, engine: ENGINE_VERSION });
  }
  ensureSafeDir(base.dir);
  const unlock = lockBase(base);
  try {
    const fetched = base.versions().includes(version) ? undefined : await fetchIntoBase(o);
    linkVersion(base, store, version);
    store.writeGlobal({ virtualizationEngine: settings.minEngine ?? '1.0', workspaceVersion: CURRENT_WORKSPACE_VERSION, vmName: o.vmName });
    writeVersionVmFiles(store, version, settings, o.vmName);
    const kept = store.retain(settings.versionsToKeep ?? 1, new Set([...(o.inUse ?? []), version]));
    for (const sk of kept.skipped) o.onWarning?.(`left in place: ${sk}`);
    dropUnlinkedBase(base, version);
    const r = fetched;
    return {
      version,
      disk: store.diskPath(version),
      fetchedBytes: r ? r.networkBytes + r.repositoryFileBytes : 0,
      mirrorBytes: r?.mirrorBytes ?? 0,
      imageBytes: r ? r.virtualSize : fs.statSync(base.diskPath(version)).size,
      blocks: r?.blocks ?? 0,
      blocksFromSeeds: r?.blocksFromSeeds ?? 0,
      blocksFromNetwork: r?.blocksFromNetwork ?? 0,
      requests: r?.requests ?? 0,
      seconds: r?.seconds ?? 0,
      removed: kept.deleted,
      shared: r === undefined,
      seeds: r?.seeds ?? [],
    };
  } finally {
    unlock();
  }
}

/**
 * Remove the base versions no workspace links to any more. After a deployment (`keep`: the version
 * just deployed) the newest stays, as the next update's seed; after a wipe, a base nothing links
 * to goes whole (keys first, src/repo/images.ts wipe()).
 */
function dropUnlinkedBase(base: ImageStore, keep?: number): { keys: string[]; deleted: string[]; skipped: string[] } {
  const linked = base.versions().filter((n) => n === keep || linkCount(base.diskPath(n)) > 1);
  if (keep === undefined && linked.length === 0) return base.wipe();
  const r = base.retain(0, new Set(linked));
  return { keys: [], deleted: r.deleted.map((n) => base.versionDir(n)), skipped: r.skipped };
}

/** After a wipe of a workspace: its image's base, when no other workspace links it (under the base's lock; a deployment in progress keeps it). */
export function wipeUnlinkedBase(base: ImageStore): { keys: string[]; deleted: string[]; skipped: string[] } {
  try { fs.lstatSync(base.dir); } catch { return { keys: [], deleted: [], skipped: [] }; }
  let unlock: () => void;
  try { unlock = lockBase(base); } catch (e) {
    if (e instanceof MedvError && e.code === 'EBUSY') return { keys: [], deleted: [], skipped: [base.dir] };
    throw e;
  }
  try { return dropUnlinkedBase(base); } finally { unlock(); }
}

/** How many names the file has (a base disk: its own, and one per workspace version linking it). */
function linkCount(path: string): number {
  try { return fs.lstatSync(path).nlink; } catch { return 0; }
}

/** One deployment of an image base at a time (`<base>/lock`); another start deploying it: EBUSY. */
function lockBase(base: ImageStore): () => void {
  let fd: number;
  try {
    fd = lockExclusive(join(base.dir, 'lock'), 'the image base\'s lock file');
  } catch (e) {
    if (e instanceof MedvError && e.code === 'EBUSY') throw new MedvError('EBUSY', `image ${base.image} is being deployed by another medv command; try again when it is done`, { holders: e.data.holders });
    throw e;
  }
  let held = true;
  return () => { if (held) { held = false; fs.closeSync(fd); } };
}

/**
 * A workspace's version folder gets hard links to the base's key and disk (the disk last: it makes
 * the version count), after its own Image.json: no second copy of the image is stored, and the
 * base's bytes are never written (the workspace runs with an undo disk, ./vmfiles.ts).
 */
function linkVersion(base: ImageStore, store: ImageStore, version: number): void {
  ensureSafeDir(store.dir);
  ensureSafeDir(store.versionDir(version));
  store.writeIdentity(version);
  for (const name of [`${base.image}.enc`, `${base.image}.evhd`]) {
    const from = join(base.versionDir(version), name);
    const to = join(store.versionDir(version), name);
    const st = fs.lstatSync(from);
    if (!st.isFile()) throw new MedvError('EUNSAFE', `${from} is not a regular file`, { file: from });
    hardLinkSync(from, to);
  }
}

/** Fetch version `o.version` into the base (the signed index checked first; see the file comment). */
async function fetchIntoBase(o: DeployOptions) {
  const { store, base, settings, version } = o;
  const { fetchImage } = await import('../transfer/index.js');
  const vdir = base.versionDir(version);
  const created = !fs.existsSync(vdir);
  const recorded = base.readIdentity(version) !== undefined;
  ensureSafeDir(vdir);
  base.writeIdentity(version);
  const older = [...base.versions(), ...store.versions()].filter((n) => n !== version).sort((a, b) => b - a)
    .flatMap((n) => [base, store].filter((st) => st.versions().includes(n)).slice(0, 1).map((st) => st.diskPath(n)));
  // pack folders count only when they hold an index of this image (else the fetch warns about each)
  const holdsIndex = (dir: string) => {
    try { return fs.readdirSync(dir).some((n) => n.startsWith(`${settings.image}_`) && n.endsWith('.ckm.index')); } catch { return false; }
  };
  const seeds = [...older, ...(o.extraSeeds ?? []), ...[o.root.prestaged, o.root.packed].filter(holdsIndex)];
  let r: Awaited<ReturnType<typeof fetchImage>>;
  try {
    r = await fetchImage({
      source: o.source,
      out: base.diskPath(version),
      seeds,
      ...(o.hostSeeds?.length ? { hostSeeds: o.hostSeeds } : {}),
      keyDir: o.keyDir,
      kek: () => o.kek,
      trim: settings.useTrimTransfer !== false,
      ...(settings.mirrors?.length ? { mirrors: settings.mirrors } : {}),
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
  return r;
}
