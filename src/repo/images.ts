/**
 * One image in the client image repository: images/<image>/GlobalImageData.xml and its version
 * folders v<N>/ (layout and upgrade steps in ./README.md).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError, fromSystemError } from '../core/errors.js';
import { checkImageName } from '../formats/ckm/common.js';
import {
  type GlobalImageData, type ImageState, WORKSPACE_VERSION_MAX, compareEngineVersions, parseGlobalImageData, serializeGlobalImageData, serializeImageState,
} from '../formats/imagestate/index.js';
import { readBoundedSync, writeFileAtomicSync } from '../core/fsio.js';
import { type ClientRoot, checkSafeDir, ensureSafeDir } from './paths.js';

/** The layout version (GlobalImageData's WorkspaceVersion) this medv writes. */
export const CURRENT_WORKSPACE_VERSION = 2;
/** This medv's VirtualizationEngine. */
export const ENGINE_VERSION = '1.0';

const GLOBAL_FILE = 'GlobalImageData.xml';
const IMAGESTATE_FILE = 'ImageState.xml';
/** Largest GlobalImageData.xml we read. */
const GLOBAL_MAX = 64 * 1024;
const VERSION_RE = /^v([1-9][0-9]{0,9})$/;

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try { return fs.lstatSync(p); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw fromSystemError(e, p);
  }
}

export class ImageStore {
  readonly dir: string;

  constructor(readonly c: ClientRoot, readonly image: string) {
    checkImageName(image);
    this.dir = join(c.images, image);
  }

  private checkVersion(n: number): void {
    if (!Number.isSafeInteger(n) || n < 1 || n > WORKSPACE_VERSION_MAX) throw new MedvError('EINVAL_ARG', `image version ${n} must be an integer from 1 to ${WORKSPACE_VERSION_MAX}`);
  }

  /** The layout's file names in v<N>/, in deletion order (the .evhd first: the version stops counting at once). */
  layoutNames(): string[] {
    const i = this.image;
    return [`${i}.evhd`, `${i}.enc`, `${i}.evhd.index`, `${i}.undo.evhd`, `${i}.undo.enc`, `${i}.vsv`, `${i}.vsv.enc`, `${i}.vmc`, IMAGESTATE_FILE];
  }

  /** Versions present, ascending: v<N> folders (no leading zeros, N ≤ 2^31-1) holding <image>.evhd and <image>.enc as regular files. */
  versions(): number[] {
    let names: string[];
    try {
      if (!lstatOrUndefined(this.dir)) return [];
      checkSafeDir(this.dir);
      names = fs.readdirSync(this.dir);
    } catch (e) {
      throw fromSystemError(e, this.dir);
    }
    const out: number[] = [];
    for (const name of names) {
      const m = VERSION_RE.exec(name);
      if (!m) continue;
      const n = Number(m[1]);
      if (n > WORKSPACE_VERSION_MAX) continue;
      const d = join(this.dir, name);
      if (!lstatOrUndefined(d)?.isDirectory()) continue;
      if (!lstatOrUndefined(join(d, `${this.image}.evhd`))?.isFile()) continue;
      if (!lstatOrUndefined(join(d, `${this.image}.enc`))?.isFile()) continue;
      out.push(n);
    }
    return out.sort((a, b) => a - b);
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
      for (const name of this.layoutNames()) {
        const p = join(dir, name);
        const st = lstatOrUndefined(p);
        if (!st) continue;
        if (st.isDirectory()) { skipped.push(p); continue; }
        try { fs.unlinkSync(p); } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(e, p);
        }
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
