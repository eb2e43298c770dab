/**
 * One image folder in the client image repository: GlobalImageData.xml and its version folders
 * v<N>/ (layout and upgrade steps in ./README.md). The folder is `images/<image>/` unless the
 * caller names another (src/workspace keys each workspace's folder by user, workspace and image
 * identity); the files in it are named after the image (`v<N>/<image>.evhd`).
 *
 * With an `identity` (image name and image id, the content key's id), a version counts only when
 * its `Image.json` names that image, that id and its own version number: a version folder holding
 * another image's disk (a server that changed the image behind a name, a folder copied or moved
 * by hand) is never listed as a version, and `foreign()` names it.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { checkImageName } from '../formats/ckm/common.js';
import {
  type GlobalImageData, type ImageState, WORKSPACE_VERSION_MAX, compareEngineVersions, parseGlobalImageData, serializeGlobalImageData, serializeImageState,
} from '../formats/imagestate/index.js';
import { fsyncDirSync, readBoundedSync, writeFileAtomicSync } from '../core/fsio.js';
import { type ClientRoot, checkSafeDir, ensureSafeDir } from './paths.js';

/** The layout version (GlobalImageData's WorkspaceVersion) this medv writes. */
export const CURRENT_WORKSPACE_VERSION = 2;
/** This medv's VirtualizationEngine. */
export const ENGINE_VERSION = '1.0';

const GLOBAL_FILE = 'GlobalImageData.xml';
const IMAGESTATE_FILE = 'ImageState.xml';
/** The devices the version's VM got at its last cold start, sealed (src/workspace/resumedevices.ts). */
export const VM_DEVICES_FILE = 'vm-devices.sealed';
/** A version's read-only test folder. */
const TEST_DIR = 'Test';
/** Which image a version folder holds: written last by a deployment (./README.md). */
export const IDENTITY_FILE = 'Image.json';
const IDENTITY_MAX = 4096;
const IMAGE_ID_RE = /^[0-9a-f]{32}$/;
/** A folder name of the image repository: as an image name (no separators, not a dot name). */
const FOLDER_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;

/** What a version folder holds: the image's name, its id (the content key id, 32 hex) and the version. */
export interface ImageIdentity { image: string; imageId: string }
export interface VersionIdentity extends ImageIdentity { version: number }

/** A version folder that holds something else than the store's image (or says nothing). */
export interface ForeignVersion { version: number; dir: string; holds?: VersionIdentity }

export function checkImageId(id: string): void {
  if (typeof id !== 'string' || !IMAGE_ID_RE.test(id)) throw new MedvError('EINVAL_ARG', `image id ${JSON.stringify(String(id).slice(0, 40))} must be 32 lowercase hex digits`);
}
/** Largest GlobalImageData.xml we read. */
const GLOBAL_MAX = 64 * 1024;
const VERSION_RE = /^v([1-9][0-9]{0,9})$/;

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try { return fs.lstatSync(p); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw fromSystemError(e, p);
  }
}

/** Remove the regular files `names` of `dir` (never following a link; a folder there is listed in `skipped`). */
function removeFiles(dir: string, names: readonly string[], skipped: string[]): void {
  for (const name of names) {
    const p = join(dir, name);
    const st = lstatOrUndefined(p);
    if (!st) continue;
    if (st.isDirectory()) { skipped.push(p); continue; }
    try { fs.unlinkSync(p); } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(e, p);
    }
  }
}

export interface ImageStoreOptions {
  /** Folder under images/ (default: the image name). */
  folder?: string;
  /** Count only version folders whose Image.json names this image and id. */
  identity?: ImageIdentity;
}

export class ImageStore {
  readonly dir: string;
  readonly identity?: ImageIdentity;

  constructor(readonly c: ClientRoot, readonly image: string, o: ImageStoreOptions = {}) {
    checkImageName(image);
    const folder = o.folder ?? image;
    if (!FOLDER_RE.test(folder) || folder.includes('..')) throw new MedvError('EINVAL_ARG', `image folder name ${JSON.stringify(folder.slice(0, 140))} is not a plain folder name`);
    if (o.identity) {
      if (o.identity.image !== image) throw new MedvError('EINVAL_ARG', `the identity names image ${o.identity.image}, the store ${image}`);
      checkImageId(o.identity.imageId);
      this.identity = { image: o.identity.image, imageId: o.identity.imageId };
    }
    this.dir = join(c.images, folder);
  }

  private checkVersion(n: number): void {
    if (!Number.isSafeInteger(n) || n < 1 || n > WORKSPACE_VERSION_MAX) throw new MedvError('EINVAL_ARG', `image version ${n} must be an integer from 1 to ${WORKSPACE_VERSION_MAX}`);
  }

  /** The layout's file names in v<N>/, in deletion order (the .evhd first: the version stops counting at once). */
  /** The names a version's Test/ folder may hold. */
  testLayoutNames(): string[] {
    const i = this.image;
    return [`${i}.vmc`, IMAGESTATE_FILE, `${i}.undo.evhd`, `${i}.undo.enc`, `${i}.undo.vhd`, `${i}.vsv`, `${i}.vsv.enc`];
  }

  layoutNames(): string[] {
    const i = this.image;
    return [`${i}.evhd`, `${i}.enc`, IDENTITY_FILE, `${i}.evhd.index`, `${i}.undo.evhd`, `${i}.undo.enc`, `${i}.vsv`, `${i}.vsv.enc`, `${i}.vmc`, IMAGESTATE_FILE, VM_DEVICES_FILE];
  }

  /**
   * Versions present, ascending: v<N> folders (no leading zeros, N ≤ 2^31-1) holding <image>.evhd
   * and <image>.enc as regular files, and, when the store has an identity, an Image.json naming
   * exactly it and N.
   */
  versions(): number[] {
    return this.scan().filter((v) => !this.identity || this.matches(v.holds, v.version)).map((v) => v.version);
  }

  /** Version folders with a disk that do not hold the store's image (only with an identity). */
  foreign(): ForeignVersion[] {
    if (!this.identity) return [];
    return this.scan().filter((v) => !this.matches(v.holds, v.version)).map((v) => ({ version: v.version, dir: this.versionDir(v.version), ...(v.holds ? { holds: v.holds } : {}) }));
  }

  private matches(h: VersionIdentity | undefined, n: number): boolean {
    return !!h && !!this.identity && h.image === this.identity.image && h.imageId === this.identity.imageId && h.version === n;
  }

  /** Image.json of version n: undefined when missing or not a record of ours (never thrown: it is only compared). */
  readIdentity(n: number): VersionIdentity | undefined {
    let bytes: Buffer | undefined;
    try { bytes = readBoundedSync(join(this.versionDir(n), IDENTITY_FILE), IDENTITY_MAX, IDENTITY_FILE); } catch { return undefined; }
    if (!bytes) return undefined;
    try {
      const v = JSON.parse(bytes.toString('utf8')) as Partial<VersionIdentity> & { v?: unknown };
      if (v.v !== 1 || typeof v.image !== 'string' || typeof v.imageId !== 'string' || !IMAGE_ID_RE.test(v.imageId) || !Number.isSafeInteger(v.version)) return undefined;
      return { image: v.image, imageId: v.imageId, version: v.version! };
    } catch {
      return undefined;
    }
  }

  /**
   * Record that version n holds the store's image (atomically): the last step of a deployment,
   * after the disk is published and checked. Needs an identity.
   */
  writeIdentity(n: number): void {
    if (!this.identity) throw new MedvError('EINVAL_ARG', 'this image store has no identity to record');
    const rec = { v: 1, image: this.identity.image, imageId: this.identity.imageId, version: n };
    checkSafeDir(this.versionDir(n));
    writeFileAtomicSync(join(this.versionDir(n), IDENTITY_FILE), `${JSON.stringify(rec)}\n`, { mode: 0o600 });
  }

  /** Every v<N> with the disk and key files, and what its Image.json says. */
  private scan(): Array<{ version: number; holds?: VersionIdentity }> {
    let names: string[];
    try {
      if (!lstatOrUndefined(this.dir)) return [];
      checkSafeDir(this.dir);
      names = fs.readdirSync(this.dir);
    } catch (e) {
      throw fromSystemError(e, this.dir);
    }
    const out: Array<{ version: number; holds?: VersionIdentity }> = [];
    for (const name of names) {
      const m = VERSION_RE.exec(name);
      if (!m) continue;
      const n = Number(m[1]);
      if (n > WORKSPACE_VERSION_MAX) continue;
      const d = join(this.dir, name);
      if (!lstatOrUndefined(d)?.isDirectory()) continue;
      if (!lstatOrUndefined(join(d, `${this.image}.evhd`))?.isFile()) continue;
      if (!lstatOrUndefined(join(d, `${this.image}.enc`))?.isFile()) continue;
      const holds = this.identity ? this.readIdentity(n) : undefined;
      out.push({ version: n, ...(holds ? { holds } : {}) });
    }
    return out.sort((a, b) => a.version - b.version);
  }

  newest(): number | undefined {
    const v = this.versions();
    return v.length ? v[v.length - 1] : undefined;
  }

  versionDir(n: number): string { this.checkVersion(n); return join(this.dir, `v${n}`); }
  diskPath(n: number): string { return join(this.versionDir(n), `${this.image}.evhd`); }
  savedStatePath(n: number): string { return join(this.versionDir(n), `${this.image}.vsv`); }
  undoPath(n: number): string { return join(this.versionDir(n), `${this.image}.undo.evhd`); }
  imageStatePath(n: number): string { return join(this.versionDir(n), IMAGESTATE_FILE); }
  vmcPath(n: number): string { return join(this.versionDir(n), `${this.image}.vmc`); }

  /** Write v<N>/ImageState.xml atomically (creating images/<image>/v<N>/ 0700 when missing). */
  writeImageState(n: number, s: ImageState): void {
    const bytes = serializeImageState(s);
    ensureSafeDir(this.dir);
    ensureSafeDir(this.versionDir(n));
    writeFileAtomicSync(this.imageStatePath(n), bytes, { mode: 0o600 });
  }

  /** GlobalImageData.xml, or undefined when there is none. Damaged: a typed format error naming the file. */
  readGlobal(): GlobalImageData | undefined {
    if (!lstatOrUndefined(this.dir)) return undefined;
    checkSafeDir(this.dir);
    const file = join(this.dir, GLOBAL_FILE);
    const bytes = readBoundedSync(file, GLOBAL_MAX, GLOBAL_FILE);
    if (bytes === undefined) return undefined;
    return parseGlobalImageData(bytes, { file });
  }

  writeGlobal(d: GlobalImageData): void {
    const bytes = serializeGlobalImageData(d);
    ensureSafeDir(this.dir);
    writeFileAtomicSync(join(this.dir, GLOBAL_FILE), bytes, { mode: 0o600 });
  }

  /** EENGINE when the image needs a newer engine than `engine` (default: this medv's). No GlobalImageData: fine. */
  checkEngine(engine: string = ENGINE_VERSION): void {
    const g = this.readGlobal();
    if (!g) return;
    if (compareEngineVersions(engine, g.virtualizationEngine) < 0) {
      throw new MedvError('EENGINE', `image ${this.image} needs medv engine ${g.virtualizationEngine} or later; this medv is ${engine}: update medv before starting it`,
        { file: join(this.dir, GLOBAL_FILE), image: this.image, needs: g.virtualizationEngine, engine });
    }
  }

  /**
   * Bring the image folder to CURRENT_WORKSPACE_VERSION (steps in ./README.md). Idempotent: returns
   * one line per thing done, none when already current. A layout newer than ours is EENGINE.
   */
  upgrade(): string[] {
    if (!lstatOrUndefined(this.dir)) return [];
    const g = this.readGlobal();
    const from = g?.workspaceVersion ?? 1;
    if (from > CURRENT_WORKSPACE_VERSION) {
      throw new MedvError('EENGINE', `image ${this.image} has layout version ${from}; this medv knows up to ${CURRENT_WORKSPACE_VERSION}: update medv before starting it`,
        { file: join(this.dir, GLOBAL_FILE), image: this.image, workspaceVersion: from });
    }
    if (from === CURRENT_WORKSPACE_VERSION) return [];
    const done: string[] = [];
    // v1 -> v2: every version folder has an ImageState.xml (defaults: it overrides nothing).
    for (const n of this.versions()) {
      const p = this.imageStatePath(n);
      if (lstatOrUndefined(p)) continue;
      this.writeImageState(n, { devices: {} });
      done.push(`v${n}: wrote ImageState.xml (defaults)`);
    }
    this.writeGlobal({ virtualizationEngine: g?.virtualizationEngine ?? ENGINE_VERSION, workspaceVersion: CURRENT_WORKSPACE_VERSION });
    done.push(g ? `GlobalImageData.xml: WorkspaceVersion ${from} -> ${CURRENT_WORKSPACE_VERSION}` : `GlobalImageData.xml: written (engine ${ENGINE_VERSION}, WorkspaceVersion ${CURRENT_WORKSPACE_VERSION})`);
    return done;
  }

  /**
   * Delete every version of this store (the administrator's wipe, src/workspace): first the key file
   * of every disk, undo disk and saved state in every v<N> (once they are gone, the data is
   * unreadable) and each folder fsynced, then the disks, saved states and the rest of the layout,
   * the version folders and GlobalImageData.xml, then the store's folder when empty. Only the
   * layout's names, never following a symlink; anything else is left and listed in `skipped`.
   */
  wipe(): { keys: string[]; deleted: string[]; skipped: string[] } {
    const out = { keys: [] as string[], deleted: [] as string[], skipped: [] as string[] };
    if (!lstatOrUndefined(this.dir)) return out;
    checkSafeDir(this.dir);
    const versions = fs.readdirSync(this.dir).filter((n) => VERSION_RE.test(n) && lstatOrUndefined(join(this.dir, n))?.isDirectory()).sort();
    const i = this.image;
    const drop = (p: string, into: string[]) => {
      const st = lstatOrUndefined(p);
      if (!st) return;
      if (st.isDirectory()) { out.skipped.push(p); return; }
      try { fs.unlinkSync(p); into.push(p); } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(e, p);
      }
    };
    const keyFiles = [`${i}.enc`, `${i}.undo.enc`, `${i}.vsv.enc`];
    for (const v of versions) {
      const dir = join(this.dir, v);
      checkSafeDir(dir);
      for (const k of keyFiles) drop(join(dir, k), out.keys);
      fsyncDirSync(dir);
    }
    for (const v of versions) {
      const dir = join(this.dir, v);
      for (const name of this.layoutNames()) drop(join(dir, name), out.deleted);
      const test = join(dir, TEST_DIR);
      if (lstatOrUndefined(test)?.isDirectory()) {
        checkSafeDir(test);
        for (const name of this.testLayoutNames()) drop(join(test, name), out.deleted);
        try { fs.rmdirSync(test); } catch { /* not empty: listed below */ }
      }
      for (const name of fs.readdirSync(dir).sort()) out.skipped.push(join(dir, name));
      try { fs.rmdirSync(dir); } catch { /* not empty: listed */ }
    }
    drop(join(this.dir, GLOBAL_FILE), out.deleted);
    try { fs.rmdirSync(this.dir); } catch { /* not empty */ }
    return out;
  }

  /**
   * Keep the newest version and the `keepOld` newest older ones; delete the others oldest first,
   * except a version in `inUse` or one with a saved state (<image>.vsv). Deletes only the layout's
   * file names in v<N>/ (never following symlinks), then the folder when empty; anything else
   * there is left and listed in `skipped`.
   */
  retain(keepOld: number, inUse: ReadonlySet<number>): { deleted: number[]; kept: number[]; skipped: string[] } {
    if (!Number.isSafeInteger(keepOld) || keepOld < 0) throw new MedvError('EINVAL_ARG', `keepOld must be a whole number ≥ 0, not ${keepOld}`);
    const all = this.versions();
    const deleted: number[] = [];
    const kept: number[] = [];
    const skipped: string[] = [];
    if (all.length === 0) return { deleted, kept, skipped };
    const keepByCount = new Set(all.slice(Math.max(0, all.length - 1 - keepOld)));
    for (const n of all) {
      if (keepByCount.has(n) || inUse.has(n) || lstatOrUndefined(this.savedStatePath(n))) { kept.push(n); continue; }
      const dir = this.versionDir(n);
      checkSafeDir(dir);
      removeFiles(dir, this.layoutNames(), skipped);
      // Test/: the read-only test copies (src/workspace/vmfiles.ts) and a test run's undo disk.
      const test = join(dir, TEST_DIR);
      if (lstatOrUndefined(test)?.isDirectory()) {
        checkSafeDir(test);
        removeFiles(test, this.testLayoutNames(), skipped);
        try { fs.rmdirSync(test); } catch { /* something else is there: listed below */ }
      }
      const layout = new Set(this.layoutNames());
      for (const name of fs.readdirSync(dir).sort()) if (!layout.has(name) || lstatOrUndefined(join(dir, name))?.isDirectory()) {
        if (!skipped.includes(join(dir, name))) skipped.push(join(dir, name));
      }
      try { fs.rmdirSync(dir); } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw fromSystemError(e, dir);
      }
      deleted.push(n);
    }
    return { deleted, kept, skipped };
  }
}
