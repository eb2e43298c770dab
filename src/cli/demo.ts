/**
 * `medv demo`: what exists, end to end. Make a disk from the test guest, encrypt it, put an undo disk
 * over it, serve the undo disk over NBD, boot the guest from it under QEMU (KVM, else TCG), power it
 * off with the ACPI button, prove the base is untouched and nothing is plaintext at rest, discard.
 */
import { Command } from 'commander';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { MedvError } from '../errors.js';
import type { KekSource } from '../crypto/index.js';
import { convertDisk, createDisk, serveDiskFile } from '../disk/index.js';
import { discardUndoDisk } from '../layers/undo/index.js';
import { openDisk } from '../layers/open.js';
import { defaultAccelerator, QemuProcess, type Accelerator } from '../hypervisor/qemu.js';
import { TEST_GUEST, testGuestImage } from '../hypervisor/testguest.js';
import { printJson } from './common.js';

export interface DemoOptions { keep?: boolean; accel?: Accelerator; log?: (line: string) => void }
export interface DemoResult { workDir: string; accel: Accelerator; boots: number[]; baseUnchanged: boolean; plaintextFound: string[]; seconds: number }

const sha256 = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

function containsMarker(path: string): boolean {
  const data = readFileSync(path);
  return data.indexOf(TEST_GUEST.marker.subarray(0, 32)) >= 0;
}

/** Boot the guest once from an NBD URI; falls back to TCG when KVM fails. Returns the boot count it printed. */
async function bootOnce(uri: string, runDir: string, accel: Accelerator, log: (s: string) => void): Promise<{ boot: number; accel: Accelerator }> {
  const vm = await QemuProcess.launch({ name: 'medv-demo', accel, runDir, drives: [{ source: uri, format: 'raw' }] });
  try {
    const m = await vm.waitForSerial(TEST_GUEST.serial.boot, 60_000);
    await vm.waitForSerial(TEST_GUEST.serial.ready, 60_000);
    log(`  guest says: ${vm.serial().trim().split('\n').join(' | ')}`);
    await vm.powerdown();
    await vm.waitExit(30_000);
    return { boot: Number(m[1]), accel };
  } catch (e) {
    await vm.kill();
    if (accel === 'kvm' && e instanceof MedvError && e.code === 'EHYPERVISOR') {
      log(`  KVM failed (${e.message}); retrying under TCG`);
      return bootOnce(uri, runDir, 'tcg', log);
    }
    throw e;
  }
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const log = options.log ?? ((s: string) => process.stdout.write(`${s}\n`));
  const started = Date.now();
  const image = testGuestImage();
  if (!existsSync(image)) throw new MedvError('ENOENT', `test guest not built: ${image} (run npm run build)`, { file: image });
  const work = mkdtempSync(join(tmpdir(), 'medv-demo-'));
  const passphrase = process.env.MEDV_PASSPHRASE ?? randomBytes(12).toString('base64url');
  const kek = (): KekSource => ({ kind: 'passphrase', passphrase });
  let accel = options.accel ?? defaultAccelerator();
  try {
    log(`medv demo in ${work} (accelerator: ${accel})`);
    const plainVhd = join(work, 'guest.vhd');
    const base = join(work, 'guest.evhd');
    const undo = join(work, 'guest-undo.evhd');
    log('1. create a dynamic VHD from the test guest, then encrypt it (AES-256-XTS, key wrapped in guest.enc)');
    await convertDisk(image, plainVhd, { type: 'dynamic' });
    await convertDisk(plainVhd, base, { kek });
    rmSync(plainVhd);
    const baseHash = sha256(base);
    log('2. create an encrypted undo disk over it and serve it over NBD');
    const socket = join(work, 'nbd.sock');
    const boots: number[] = [];
    for (let round = 1; round <= 2; round++) {
      const served = await serveDiskFile(base, { socketPath: socket, undoPath: undo, kek });
      try {
        log(`3.${round} boot the guest from nbd+unix://${socket}`);
        const r = await bootOnce(`nbd+unix:///?socket=${socket}`, work, accel, log);
        accel = r.accel;
        boots.push(r.boot);
      } finally {
        await served.close();
      }
    }
    const baseUnchanged = sha256(base) === baseHash;
    log(`4. boot counter went ${boots.join(' -> ')} in the undo disk; the base is ${baseUnchanged ? 'unchanged' : 'CHANGED'}`);
    const plaintextFound = [base, undo, base.replace(/\.evhd$/, '.enc'), undo.replace(/\.evhd$/, '.enc')].filter(containsMarker);
    log(`5. the guest wrote its marker; plaintext marker found in host files: ${plaintextFound.length ? plaintextFound.join(', ') : 'none'}`);
    const view = await openDisk(undo, { readOnly: true, kek });
    const sector = await view.device.read(TEST_GUEST.markerLba * 512, 32);
    await view.device.close();
    log(`   (through the decrypting stack the marker reads: ${JSON.stringify(sector.toString('latin1'))})`);
    await discardUndoDisk(undo);
    const after = await openDisk(base, { readOnly: true, kek });
    const counter = await after.device.read(TEST_GUEST.counterLba * 512, 512);
    await after.device.close();
    log(`6. discarded the undo disk: the base's boot counter reads ${TEST_GUEST.readCounter(counter)} again`);
    const seconds = (Date.now() - started) / 1000;
    const ok = baseUnchanged && plaintextFound.length === 0 && boots[1] === boots[0] + 1;
    log(ok ? `demo passed in ${seconds.toFixed(1)} s` : 'demo FAILED');
    if (!ok) throw new MedvError('EINTERNAL', 'demo checks failed');
    return { workDir: work, accel, boots, baseUnchanged, plaintextFound, seconds };
  } finally {
    if (!options.keep) rmSync(work, { recursive: true, force: true });
  }
}

export function demoCommand(): Command {
  return new Command('demo')
    .description('run what exists end to end: encrypted disk, undo disk, NBD export, QEMU guest boot, discard')
    .option('--keep', 'keep the work folder')
    .option('--tcg', 'use TCG (software emulation) instead of KVM')
    .option('--json', 'print the result as JSON')
    .action(async (o: { keep?: boolean; tcg?: boolean; json?: boolean }) => {
      const r = await runDemo({ keep: o.keep, accel: o.tcg ? 'tcg' : undefined, log: o.json ? () => undefined : undefined });
      if (o.json) printJson(r);
    });
}
