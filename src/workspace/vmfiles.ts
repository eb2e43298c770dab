/**
 * A workspace version's Virtual PC files, as the original's image repository held them:
 *
 *   v<N>/<image>.vmc           the VM (UTF-16LE with a byte-order mark, CRLF, as Virtual PC writes it):
 *                              memory, the disk `.\<image>.evhd` on the primary master (a hard link to
 *                              the shared read-only base), undo drives (the workspace's own writes),
 *                              a network adapter unless the policy says none
 *   v<N>/ImageState.xml        the policy's overrides (memory by host RAM, devices, network)
 *   v<N>/Test/<image>.vmc      the same VM for a read-only test: its disk is `..\<image>.evhd`; a test
 *   v<N>/Test/ImageState.xml   run's throw-away undo disk goes beside them (src/host/disks.ts)
 *
 * The VM host starts a workspace from `v<N>/<image>.vmc` (src/host/vmc.ts), so what an
 * administrator reads in the folder is what runs. Every file is written through src/core/fsio.ts
 * (temporary, fsync, rename) into folders checked by src/repo (0700, owner, no links).
 */
import { join } from 'node:path';
import { nameExists, readBoundedSync, writeFileAtomicSync } from '../core/fsio.js';
import { serializeImageState } from '../formats/imagestate/index.js';
import { MAX_XML_BYTES } from '../formats/vmc/index.js';
import { createVmc, serializeVmc } from '../formats/vmc/index.js';
import { ensureSafeDir, type ImageStore } from '../repo/index.js';
import { imageStateFor, memoryFor, type WorkspaceSettings } from './settings.js';

export const TEST_FOLDER = 'Test';

/** The `.vmc` of a version: its disk named relative to the .vmc's folder (`prefix` `.` or `..`). */
export function workspaceVmc(image: string, settings: WorkspaceSettings, prefix: '.' | '..'): Buffer {
  return serializeVmc(createVmc({
    memoryMB: memoryFor(settings),
    drives: [{ controller: 0, location: 0, kind: 'hard-disk', path: { relative: `${prefix}\\${image}.evhd` } }],
    // always: the disk is the user's shared read-only base (./deploy.ts); a persistent workspace
    // keeps its undo disk, a revertible one drops it at every start and stop
    undoEnabled: true,
    network: (settings.network ?? 'nat') === 'none' ? [] : [{}],
  }));
}

/** The read-only test copy of a version's .vmc. */
export function testVmcPath(store: ImageStore, version: number): string {
  return join(store.versionDir(version), TEST_FOLDER, `${store.image}.vmc`);
}

/**
 * Write a version's `.vmc` (only when it has none: an administrator's edit stays) and its
 * ImageState.xml from the current policy, and the same two in `Test/`; record the workspace's VM
 * name in GlobalImageData.xml. Returns the files written. Called under the workspace's lock.
 */
export function writeVersionVmFiles(store: ImageStore, version: number, settings: WorkspaceSettings, vmName: string): string[] {
  const written: string[] = [];
  const vdir = store.versionDir(version);
  const tdir = join(vdir, TEST_FOLDER);
  ensureSafeDir(vdir);
  ensureSafeDir(tdir);
  const imageState = serializeImageState(imageStateFor(settings));
  for (const [vmc, prefix] of [[store.vmcPath(version), '.'], [testVmcPath(store, version), '..']] as const) {
    if (nameExists(vmc)) continue;
    writeFileAtomicSync(vmc, workspaceVmc(store.image, settings, prefix), { mode: 0o600 });
    written.push(vmc);
  }
  for (const dir of [vdir, tdir]) {
    const p = join(dir, 'ImageState.xml');
    if (readBoundedSync(p, MAX_XML_BYTES, 'ImageState.xml')?.equals(imageState)) continue;
    writeFileAtomicSync(p, imageState, { mode: 0o600 });
    written.push(p);
  }
  const g = store.readGlobal();
  if (g && g.vmName !== vmName) {
    store.writeGlobal({ ...g, vmName });
    written.push(join(store.dir, 'GlobalImageData.xml'));
  }
  return written;
}
