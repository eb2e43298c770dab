/**
 * `medv demo`: what exists, end to end, on the tiny test guest (vm/). Make a dynamic VHD from the
 * guest's raw image, encrypt it, put an encrypted undo disk over it, serve the undo disk over NBD,
 * boot the guest from it under QEMU twice (KVM, or TCG when KVM cannot run it), and prove: the base
 * is untouched, no plaintext is at rest, the decrypting stack reads what the guest wrote, and
 * discarding the undo disk brings the base's state back.
 */
import { Command } from 'commander';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MedvError } from '../core/errors.js';
import type { KekSource } from '../crypto/index.js';
import type { Accelerator } from '../hypervisor/qemu.js';
import { printJson, progressBar, raises } from './common.js';
// Everything else the demo uses (QEMU driver, the test guest's fixtures under vm/, the disk stack)
// is imported inside runDemo, so `medv disk …` never loads it and works without vm/.

export interface DemoOptions {
  /** Keep the work folder (default: removed). */
  keep?: boolean;
  /** Accelerator to try first (default: KVM when usable, else TCG). */
  accel?: Accelerator;
  /** Where progress lines go (default stdout). */
  log?: (line: string) => void;
}

export interface DemoStep { step: number; title: string; ms: number }

export interface DemoResult {
  passed: boolean;
  workDir: string;
  /** The accelerator asked for, and the one the guest ran under (TCG after a KVM internal error). */
  accelRequested: Accelerator;
  accel: Accelerator;
  /** Boot counts the guest printed, one per boot. */
  boots: number[];
  /** Milliseconds from QEMU's spawn to the guest's `ready` line, per boot. */
  bootMs: number[];
  baseUnchanged: boolean;
  /** Host files in the work folder that hold the plaintext marker (must be none). */
  plaintextFiles: string[];
  markerReadsBack: boolean;
  /** Counter in the undo disk before discard, and in the base after it. */
  undoCounter: number;
  baseCounterAfterDiscard: number;
  steps: DemoStep[];
  seconds: number;
}

const BOOT_MS = 60_000;
const POWERDOWN_MS = 15_000;

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const log = options.log ?? ((s: string) => process.stdout.write(`${s}\n`));
  const t0 = performance.now();
  const { fileContainsMarker, GUEST, loadGuestLayout, markerBlock, readCounter } = await import('../hypervisor/testguest.js');
  loadGuestLayout(); // a typed error, before anything is done, when vm/ is not there
  const { defaultAccelerator, QemuProcess, withTcgFallback } = await import('../hypervisor/qemu.js');
  const { convertDisk, serveDiskFile } = await import('../disk/index.js');
  const { createUndoDisk, discardUndoDisk, openUndoDisk } = await import('../layers/undo/index.js');
  const { openDisk } = await import('../layers/open.js');

  /** Boot the guest once from `uri`, wait for it to write and be ready, power it off. */
  const bootOnce = async (uri: string, accel: Accelerator): Promise<{ boot: number; readyMs: number; serial: string }> => {
    const vm = await QemuProcess.launch({ name: 'medv-demo', accel, drives: [{ source: uri }] });
    try {
      const boot = Number((await vm.waitForSerial(GUEST.serial.boot, BOOT_MS))[1]);
      await vm.waitForSerial(GUEST.serial.markerWritten, BOOT_MS);
      await vm.waitForSerial(GUEST.serial.ready, BOOT_MS);
      const errors = vm.serial().match(GUEST.serial.error);
      if (errors) throw new MedvError('EIO', `the guest reported a disk error: ${errors[0].trim()}`);
      const readyMs = vm.serialLines().find((l) => GUEST.serial.ready.test(`${l.text}\n`))?.ms ?? 0;
      await vm.powerdown();
      const code = await vm.waitExit(POWERDOWN_MS);
      if (code !== 0) throw new MedvError('EHYPERVISOR', `QEMU exited with status ${code} after the power button`);
      return { boot, readyMs, serial: vm.serial() };
    } finally {
      await vm.kill();
    }
  };

  if (!existsSync(GUEST.image)) throw new MedvError('ENOENT', 'the test guest is not built (run npm run build)', { file: GUEST.image });
  const work = mkdtempSync(join(tmpdir(), 'medv-demo-'));
  // The demo's disks live only as long as the demo: a random passphrase unless one is given.
  const passphrase = process.env.MEDV_PASSPHRASE ?? randomBytes(16).toString('base64url');
  const kek = (): KekSource => ({ kind: 'passphrase', passphrase });
  const accelRequested = options.accel ?? defaultAccelerator();
  let accel = accelRequested;

  const steps: DemoStep[] = [];
  const step = async <T>(title: string, body: () => Promise<T>): Promise<T> => {
    const n = steps.length + 1;
    log(`${n}. ${title}`);
    const started = performance.now();
    const value = await body();
    const ms = performance.now() - started;
    steps.push({ step: n, title, ms });
    log(`   done in ${(ms / 1000).toFixed(2)} s`);
    return value;
  };

  const plainVhd = join(work, 'guest.vhd');
  const base = join(work, 'guest.evhd');
  const undo = join(work, 'guest-undo.evhd');
  const socket = join(work, 'nbd.sock');
  const uri = `nbd+unix:///?socket=${socket}`;
  try {
    log(`medv demo: encrypted disk, undo disk, NBD export, QEMU guest (accelerator ${accel}, work folder ${work})`);
    await step('convert the test guest to a dynamic VHD, encrypt it to guest.evhd (AES-256-XTS, key wrapped in guest.enc), delete the VHD', async () => {
      await convertDisk(GUEST.image, plainVhd, { type: 'dynamic' });
      await convertDisk(plainVhd, base, { kek });
      rmSync(plainVhd);
    });
    const baseHash = sha256(base);
    log(`   guest.evhd: ${statSync(base).size} bytes, sha256 ${baseHash.slice(0, 16)}…`);
    await step('create an encrypted undo disk over it: guest-undo.evhd takes the writes, the base stays read-only', () => createUndoDisk(undo, base, { kek }));

    const boots: number[] = [];
    const bootMs: number[] = [];
    for (const round of [1, 2]) {
      await step(`boot ${round}: serve the undo disk over NBD, boot the guest from it, power it off`, async () => {
        const served = await serveDiskFile(base, { socketPath: socket, undoPath: undo, kek });
        try {
          const r = await withTcgFallback(accel, (a) => bootOnce(uri, a), (e) => {
            log(`   KVM could not run the guest (${e.message.split('\n')[0]})`);
            log('   retrying under TCG (software emulation)');
          });
          accel = r.accel;
          boots.push(r.value.boot);
          bootMs.push(r.value.readyMs);
          log(`   ${uri}`);
          log(`   guest under ${accel}: boot=${r.value.boot}, marker written, ready ${Math.round(r.value.readyMs)} ms after QEMU started; powered off by the ACPI button`);
        } finally {
          await served.close();
        }
      });
    }

    const checks = await step('check the host files: the base is unchanged, no plaintext at rest', async () => {
      const baseUnchanged = sha256(base) === baseHash;
      const files = readdirSync(work).map((f) => join(work, f)).filter((f) => f !== socket && existsSync(f));
      const plaintextFiles: string[] = [];
      for (const f of files) if (await fileContainsMarker(f)) plaintextFiles.push(f);
      log(`   base guest.evhd ${baseUnchanged ? 'unchanged (same sha256)' : 'CHANGED'}`);
      log(`   scanned ${files.map((f) => f.slice(work.length + 1)).join(', ')}: marker in ${plaintextFiles.length ? plaintextFiles.join(', ') : 'none of them'}`);
      return { baseUnchanged, plaintextFiles };
    });

    const readBack = await step('read back through the decrypting stack (undo disk -> guest.evhd)', async () => {
      const view = await openUndoDisk(undo, { kek, parent: base });
      try {
        const marker = await view.device.read(GUEST.markerOffset, GUEST.markerBytes);
        const counter = readCounter(await view.device.read(GUEST.counterOffset, GUEST.sectorBytes));
        const markerReadsBack = marker.equals(markerBlock());
        log(`   LBA ${GUEST.markerLba}: ${markerReadsBack ? JSON.stringify(marker.subarray(0, GUEST.marker.length).toString('latin1')) + ' (repeated)' : 'NOT the marker'}; boot counter ${counter}`);
        return { markerReadsBack, undoCounter: counter };
      } finally {
        await view.device.close();
      }
    });

    const baseCounterAfterDiscard = await step('discard the undo disk: the base reads as before', async () => {
      await discardUndoDisk(undo, { kek });
      const after = await openDisk(base, { readOnly: true, kek });
      try {
        const counter = readCounter(await after.device.read(GUEST.counterOffset, GUEST.sectorBytes));
        log(`   undo disk gone (${existsSync(undo) ? 'STILL THERE' : 'deleted'}); the base's boot counter reads ${counter}`);
        return counter;
      } finally {
        await after.device.close();
      }
    });

    const seconds = (performance.now() - t0) / 1000;
    const failures = [
      boots.join(',') !== '1,2' && `boot counts were ${boots.join(', ')} (expected 1, 2)`,
      !checks.baseUnchanged && 'the base .evhd changed',
      checks.plaintextFiles.length > 0 && `plaintext marker in ${checks.plaintextFiles.join(', ')}`,
      !readBack.markerReadsBack && 'the marker did not read back through the decrypting stack',
      readBack.undoCounter !== 2 && `the undo disk's counter is ${readBack.undoCounter}, not 2`,
      baseCounterAfterDiscard !== 0 && `the base's counter is ${baseCounterAfterDiscard} after discard, not 0`,
    ].filter((f): f is string => typeof f === 'string');
    const result: DemoResult = {
      passed: failures.length === 0, workDir: work, accelRequested, accel, boots, bootMs,
      baseUnchanged: checks.baseUnchanged, plaintextFiles: checks.plaintextFiles, markerReadsBack: readBack.markerReadsBack,
      undoCounter: readBack.undoCounter, baseCounterAfterDiscard, steps, seconds,
    };
    const timing = steps.map((s) => `${s.step}: ${(s.ms / 1000).toFixed(2)} s`).join(', ');
    log(`timings: ${timing}`);
    if (failures.length) throw new MedvError('EINTERNAL', `demo FAILED: ${failures.join('; ')}`);
    log(`demo passed in ${seconds.toFixed(1)} s (guest ran under ${accel}${accel !== accelRequested ? `, after ${accelRequested} failed` : ''})${options.keep ? `; files kept in ${work}` : ''}`);
    return result;
  } finally {
    if (!options.keep) rmSync(work, { recursive: true, force: true });
  }
}

export function demoCommand(): Command {
  return raises(new Command('demo'), ['ENOENT', 'EINVAL_ARG', 'ENETWORK'], { ENOENT: 'the test guest is not built (npm run demo builds it)' })
    .description('run medv end to end on this machine, headless, in a temp folder: pack and publish an image, deploy and start it as a workspace, update it with TrimTransfer, revert, run a published application in the guest, start a second workspace of the image with nothing downloaded, and check that nothing is in the clear')
    .option('--disks', 'the disk-stack demo instead: encrypted disk, undo disk, NBD export, two boots of the tiny guest, checks, discard')
    .option('--keep', 'keep the work folder')
    .option('--tcg', 'use TCG (software emulation): the workspace demo\'s default; for --disks, instead of KVM')
    .option('--kvm', 'workspace demo: try KVM first (falls back to TCG on a KVM internal error)')
    .option('--json', 'print only the result, as JSON')
    .addHelpText('after', `
The workspace demo (default) uses the Linux test guest (vm/linux, built by scripts/setup.sh):
  1. console: packs it as image demo-linux v1      2. server: medv serve on 127.0.0.1, upload,
  3. client: login, workspace start (deploy v1), the guest's serial output, stop
  4. console: changes the guest's files, packs and uploads v2
  5. client: workspace start --update (TrimTransfer: bytes fetched vs image and full download)
  6. client: start again: the revertible workspace's writes are gone; workspace run: a published
     application runs in the guest through its guest agent
  7. client: a second workspace of the same image (persistent) starts with 0 bytes fetched: one
     read-only base on disk, each workspace its own writes
  8. plaintext scan
The workspace demo runs its guest under TCG unless --kvm is given: the Linux guest boots in
seconds under TCG, and its time then does not depend on KVM, which on nested virtual machines is
slower for this guest (its BIOS) or fails (docs/machines.md). A check that fails is exit status 1.

Examples:
  npm run demo
  medv demo --tcg --json
  medv demo --disks --keep`)
    .action(async (o: { keep?: boolean; tcg?: boolean; kvm?: boolean; json?: boolean; disks?: boolean }) => {
      if (o.tcg && o.kvm) throw new MedvError('EINVAL_ARG', '--tcg and --kvm exclude each other');
      if (o.disks) {
        const r = await runDemo({ keep: o.keep, accel: o.tcg ? 'tcg' : undefined, log: o.json ? () => undefined : undefined });
        if (o.json) printJson(r);
        return;
      }
      const { runWorkspaceDemo } = await import('../demo/workspace-demo.js');
      const bars = new Map<string, ReturnType<typeof progressBar>>();
      const endBars = () => { for (const b of bars.values()) b.stop(); bars.clear(); };
      const r = await runWorkspaceDemo({
        keep: o.keep, accel: o.kvm ? 'kvm' : 'tcg',
        log: o.json ? () => undefined : undefined,
        onProgress: o.json ? undefined : (label, d, t) => {
          let b = bars.get(label);
          if (!b) { endBars(); b = progressBar(label); bars.set(label, b); }
          b.update(d, t);
        },
        onProgressEnd: endBars,
      });
      endBars();
      if (o.json) printJson(r);
      if (!r.passed) process.exitCode = 1;
    });
}
