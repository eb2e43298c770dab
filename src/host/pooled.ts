/**
 * A pooled QEMU: started by a supervisor of the host service's pool (src/host/service/pool.ts)
 * before any VM asked for it, with the command line of a machine shape (./shape.ts) and its
 * sockets in a private folder of its own (`<run root>/.pool/<random>/`). QEMU then waits in the
 * NBD handshake of its first disk: its process start, libraries, option parsing, accelerator and
 * chardevs are done; it has read no block and the guest has not run (no firmware either). The
 * supervisor meanwhile has loaded every module a start needs (the disk layers too).
 *
 * Why the handshake and not `-S` with disks hot-plugged later: QEMU 7.2 refuses `device_add` of an
 * IDE disk once the machine is created ("Bus 'ide.0' does not support hotplugging", measured), and
 * IDE is what Virtual PC guests boot from; waiting in the handshake keeps the command line (and so
 * the guest's hardware) exactly what a cold start gives, IDE or virtio, CD drives and NIC included.
 *
 * When a VM takes it (its supervisor holds the VM's run-folder lock by then, ./supervisor-main.ts),
 * the supervisor checks the shape again, moves the sockets into the run folder (the same bound
 * sockets under new names) and goes on exactly as a cold start after QEMU's spawn: the disks are
 * opened, locked and checked before they are served, so the guest still sees no block before that.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { ensurePrivateDir } from '../core/fsio.js';
import { QemuProcess } from '../hypervisor/qemu.js';
import { bindNbd, type NbdListener } from '../nbd/server.js';
import { shapeKey, specFor, type MachineShape } from './shape.js';

export { POOLED_QEMU_GONE } from './prespawn.js';

export interface PooledQemu {
  readonly key: string;
  readonly shape: MachineShape;
  readonly dir: string;
  readonly vm: QemuProcess;
  readonly listeners: NbdListener[];
  /** Kill QEMU, close the sockets, remove the folder (a pooled QEMU nobody will take). */
  discard(): Promise<void>;
  /** The folder alone (once the sockets moved out). */
  removeDir(): void;
}

/**
 * `<root>/.pool`, made if missing. The run root itself must exist (its service made it): a pool
 * process that outlives its service and run root (removed meanwhile) does not bring them back.
 */
export function poolDir(root: string): string {
  if (!fs.existsSync(root)) throw new MedvError('ENOENT', `the run root ${root} is gone`, { file: root });
  return ensurePrivateDir(join(ensurePrivateDir(root), '.pool'));
}

/** Start QEMU for `shape` with its sockets in a new folder under `<root>/.pool/`. */
export async function preparePooled(root: string, shape: MachineShape): Promise<PooledQemu> {
  const base = poolDir(root);
  const dir = fs.mkdtempSync(join(base, 'q-')); // 0700
  const listeners: NbdListener[] = [];
  const removeDir = () => fs.rmSync(dir, { recursive: true, force: true });
  try {
    for (let i = 0; i < shape.drives.length; i++) listeners.push(await bindNbd(join(dir, `disk${i}.sock`)));
    const vm = QemuProcess.spawn(specFor(shape, dir, 'medv'));
    return {
      key: shapeKey(shape), shape, dir, vm, listeners, removeDir,
      async discard() {
        await Promise.all(listeners.map((l) => l.close().catch(() => undefined)));
        await vm.kill();
        removeDir();
      },
    };
  } catch (e) {
    await Promise.all(listeners.map((l) => l.close().catch(() => undefined)));
    removeDir();
    throw e;
  }
}
