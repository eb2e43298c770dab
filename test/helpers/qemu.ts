/**
 * Test harness for real QEMU guests, a thin layer over src/hypervisor (which alone knows QEMU's
 * command line): the test guest's constants, the accelerators tests run under, and `bootGuest`.
 *
 *   const run = await bootGuest({ drive: freshGuestImage(dir), accel });
 *   try {
 *     await run.waitForSerial(GUEST.serial.ready, 30_000);
 *     await run.powerdown();
 *     assert.equal(await run.waitExit(10_000), 0);
 *   } finally { await run.kill(); }
 */
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { kvmStatus, QemuProcess, type Accelerator } from '../../src/hypervisor/qemu.js';
import { GUEST } from '../../src/hypervisor/testguest.js';

export { GUEST, INTERNAL_ERROR_GUEST, bootCounter, fileContainsMarker, markerBlock, readCounter } from '../../src/hypervisor/testguest.js';
export { QemuError, QemuProcess, withTcgFallback, isInternalError } from '../../src/hypervisor/qemu.js';
export type { QmpEvent } from '../../src/hypervisor/qmp.js';

export type Accel = Accelerator;
/** A running guest (QemuProcess). */
export type GuestRun = QemuProcess;

/** Copies the fresh guest image into `dir` and returns the copy's path. */
export function freshGuestImage(dir: string, name = 'guest.img'): string {
  if (!existsSync(GUEST.image)) throw new Error(`${GUEST.image} is missing: run \`npm run build\` (or bash scripts/setup.sh)`);
  const path = join(dir, name);
  copyFileSync(GUEST.image, path);
  return path;
}

/**
 * The accelerators tests should run under: ['kvm', 'tcg'] when KVM is usable, else ['tcg'].
 * MEDV_TEST_ACCEL=tcg (or =kvm) restricts the list to that one.
 */
export function accelerators(): Accel[] {
  const kvm = kvmStatus();
  const all: Accel[] = kvm.available ? ['kvm', 'tcg'] : ['tcg'];
  const forced = process.env.MEDV_TEST_ACCEL;
  if (forced === 'tcg') return ['tcg'];
  if (forced === 'kvm') {
    if (!kvm.available) throw new Error(`MEDV_TEST_ACCEL=kvm but KVM is not usable: ${kvm.reason}`);
    return ['kvm'];
  }
  if (forced) throw new Error(`MEDV_TEST_ACCEL must be kvm or tcg, not ${JSON.stringify(forced)}`);
  return all;
}

export interface BootOptions {
  /** A file path, or an NBD URI: nbd+unix:///[export]?socket=PATH or nbd://host[:port]/[export]. */
  drive: string;
  format?: 'raw' | 'vpc';
  /** Default: the first of accelerators(). */
  accel?: Accel;
  /** Read-only drive; implies iface 'virtio' (QEMU's ide-hd refuses read-only drives). */
  readOnly?: boolean;
  iface?: 'ide' | 'virtio';
  memoryMiB?: number;
  extraArgs?: string[];
  startTimeoutMs?: number;
}

/** Starts QEMU on one drive (the test guest by default is what boots) and connects QMP. */
export function bootGuest(opts: BootOptions): Promise<GuestRun> {
  return QemuProcess.launch({
    name: 'medv-test-guest',
    accel: opts.accel ?? accelerators()[0],
    memoryMiB: opts.memoryMiB,
    drives: [{ source: opts.drive, format: opts.format, readOnly: opts.readOnly, iface: opts.iface }],
    extraArgs: opts.extraArgs,
  }, { startTimeoutMs: opts.startTimeoutMs });
}
