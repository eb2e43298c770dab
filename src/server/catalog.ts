/**
 * The image catalog: every image and version published in DIR/images, as the admin API and the
 * console show it. Per version: pack and index size, the index's signer and whether its signature
 * verifies, whether that signer is among the trusted signers published with the image's keys
 * (clients refuse an index signed by anyone else), blocks new in this version and the bytes a
 * client one version behind downloads (src/pack/update-size.ts), and how many clients report it.
 *
 * Only repository file names are looked at (names.ts) and each file is opened without following
 * links (inspect.ts). The cost of a version is computed once per (index, previous index) pair and
 * kept in memory keyed by their strong ETags: published files never change in place.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { type VersionCost, versionCost } from '../pack/update-size.js';
import { IMAGES_DIR } from './images.js';
import { inspectRepoFile } from './inspect.js';
import { type PruneResult, pruneImages } from './prune.js';
import { parseRepoFileName } from '../api/names.js';
import { strongEtag } from './static.js';
import type { KeyService } from './keyservice.js';
import type { Audit } from './audit.js';
import type { Store } from './store/index.js';

export type SignatureState = 'trusted' | 'untrusted' | 'no-keys' | 'invalid' | 'no-index';

export interface VersionInfo {
  name: string;
  version: number;
  packBytes: number | null;
  indexBytes: number | null;
  /** The index's signer (64 hex), its creation time, and what clients will make of its signature. */
  signer: string | null;
  created: string | null;
  signature: SignatureState;
  /** Why the index was refused (signature: invalid). */
  problem?: string;
  /** Client workspaces reporting this version. */
  clients: number;
  cost?: VersionCost;
}

export interface ImageSummary {
  name: string;
  versions: number;
  latest: number | null;
  bytes: number;
  keys: { published: boolean; updated: string | null };
  clients: number;
}

export interface ImageDetail extends ImageSummary {
  list: VersionInfo[];
}

const MAX_CACHED = 2048;

export class ImageCatalog {
  private readonly dir: string;
  private readonly costs = new Map<string, Promise<VersionCost>>();

  constructor(root: string, private readonly store: Store, private readonly audit: Audit, private readonly keys?: KeyService) {
    this.dir = join(root, IMAGES_DIR);
  }

  /** Repository files per image name, from the folder listing (names only, nothing opened). */
  private async files(): Promise<Map<string, { packs: Map<number, number>; indexes: Map<number, number> }>> {
    let entries: fs.Dirent[];
    try {
      entries = await fs.promises.readdir(this.dir, { withFileTypes: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
      throw e;
    }
    const out = new Map<string, { packs: Map<number, number>; indexes: Map<number, number> }>();
    for (const d of entries) {
      if (!d.isFile()) continue;
      const f = parseRepoFileName(d.name);
      if (!f) continue;
      let size: number;
      try { size = (await fs.promises.lstat(join(this.dir, d.name))).size; } catch { continue; }
      const img = out.get(f.name) ?? { packs: new Map(), indexes: new Map() };
      (f.kind === 'pack' ? img.packs : img.indexes).set(f.version, size);
      out.set(f.name, img);
    }
    return out;
  }

  private async keyInfo(): Promise<Map<string, string>> {
    return new Map((await this.store.lists.imageKeys()).map((k) => [k.image, k.updated]));
  }

  private async clientsOf(image?: string): Promise<Map<string, Map<number | null, number>>> {
    const out = new Map<string, Map<number | null, number>>();
    for (const r of await this.store.clients.versionsInUse(image)) {
      const m = out.get(r.image) ?? new Map<number | null, number>();
      m.set(r.version, (m.get(r.version) ?? 0) + r.clients);
      out.set(r.image, m);
    }
    return out;
  }

  /** Every image (name order), filtered by a substring of its name. */
  async list(text?: string): Promise<ImageSummary[]> {
    const [files, keys, clients] = await Promise.all([this.files(), this.keyInfo(), this.clientsOf()]);
    const names = [...files.keys()].filter((n) => !text || n.toLowerCase().includes(text.toLowerCase())).sort();
    return names.map((name) => {
      const f = files.get(name)!;
      const versions = [...f.indexes.keys()];
      const inUse = clients.get(name);
      return {
        name,
        versions: versions.length,
        latest: versions.length ? Math.max(...versions) : null,
        bytes: [...f.packs.values(), ...f.indexes.values()].reduce((n, s) => n + s, 0),
        keys: { published: keys.has(name), updated: keys.get(name) ?? null },
        clients: inUse ? [...inUse.values()].reduce((n, c) => n + c, 0) : 0,
      };
    });
  }

  /** One image with every version, newest first; ENOENT when nothing of that name is published. */
  async image(name: string): Promise<ImageDetail> {
    const [files, keys, clients] = await Promise.all([this.files(), this.keyInfo(), this.clientsOf(name)]);
    const f = files.get(name);
    if (!f) throw new MedvError('ENOENT', `no image ${name} in the repository`);
    const signers = keys.has(name) && this.keys ? (await this.keys.signersOf(name))?.map((s) => s.toString('hex')) : undefined;
    const versions = [...new Set([...f.packs.keys(), ...f.indexes.keys()])].sort((a, b) => b - a);
    const inUse = clients.get(name) ?? new Map<number | null, number>();
    const list: VersionInfo[] = [];
    const indexed = versions.filter((v) => f.indexes.has(v));
    for (const version of versions) {
      const info: VersionInfo = {
        name, version, packBytes: f.packs.get(version) ?? null, indexBytes: f.indexes.get(version) ?? null,
        signer: null, created: null, signature: 'no-index', clients: inUse.get(version) ?? 0,
      };
      list.push(info);
      if (!f.indexes.has(version)) continue;
      const file = `${name}_${version}.ckm.index`;
      try {
        const ins = await inspectRepoFile(join(this.dir, file), file);
        info.signer = ins.signer!.toString('hex');
        info.created = new Date(ins.created! * 1000).toISOString();
        info.signature = !signers ? 'no-keys' : signers.includes(info.signer) ? 'trusted' : 'untrusted';
        const previous = indexed.find((v) => v < version);
        info.cost = await this.cost(version, previous, name);
      } catch (e) {
        info.signature = 'invalid';
        info.problem = e instanceof MedvError ? `${e.message} [${e.code}]` : 'unreadable';
      }
    }
    const summary = (await this.list()).find((s) => s.name === name)!;
    return { ...summary, list };
  }

  /**
   * Keep the `keep` newest versions of `name` in the repository (prune.ts: older indexes first,
   * then the packs no kept index needs; only files that are this image's). With `dryRun`, what
   * would go. The answer also counts the client workspaces reporting a version that goes.
   */
  async prune(name: string, keep: number, o: { dryRun: boolean; actor: string; address?: string }): Promise<Omit<PruneResult, 'dir'> & { clientsOnRemoved: number }> {
    const { dir: _dir, ...r } = await pruneImages(this.dir, { name, keep, dryRun: o.dryRun });
    const kept = new Set(r.keptVersions);
    const inUse = (await this.clientsOf(name)).get(name) ?? new Map<number | null, number>();
    const clientsOnRemoved = [...inUse].filter(([v]) => v !== null && !kept.has(v) && v < Math.min(...r.keptVersions)).reduce((n, [, c]) => n + c, 0);
    if (!o.dryRun) await this.audit.record({ actor: o.actor, action: 'image.prune', target: name, address: o.address ?? '', detail: { keep, keptVersions: r.keptVersions, deleted: r.deleted.length, bytesFreed: r.bytesFreed } });
    return { ...r, clientsOnRemoved };
  }

  private async cost(version: number, previous: number | undefined, name: string): Promise<VersionCost> {
    const path = (v: number) => join(this.dir, `${name}_${v}.ckm.index`);
    const tag = async (v: number) => strongEtag(await fs.promises.lstat(path(v), { bigint: true }));
    const k = `${name}\0${version}\0${await tag(version)}\0${previous === undefined ? '' : await tag(previous)}`;
    let p = this.costs.get(k);
    if (!p) {
      p = versionCost(path(version), previous === undefined ? undefined : path(previous));
      this.costs.set(k, p);
      p.catch(() => this.costs.delete(k));
      if (this.costs.size > MAX_CACHED) this.costs.delete(this.costs.keys().next().value!);
    }
    return p;
  }
}
