/**
 * Acceptance: a QEMU guest boots from medv's NBD export. The real CLI serves an encrypted .evhd
 * made from the test guest (`medv disk serve X.evhd --socket S [--undo U | --read-only]`) and QEMU
 * boots it from nbd+unix, under each accelerator from accelerators() (KVM falls back to TCG when
 * it stops the guest in internal-error).
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { QemuProcess, withTcgFallback, type Accelerator } from '../../src/hypervisor/qemu.js';
import { bootCounter, fileContainsMarker, GUEST, markerBlock } from '../../src/hypervisor/testguest.js';
import { runMedv, sha256File, startMedv, tempDir } from '../helpers/cli.js';
import { accelerators } from '../helpers/qemu.js';

const BOOT_MS = 60_000;
const POWERDOWN_MS = 15_000;

function medvOk(args: string[]): string {
  const r = runMedv(args);
  assert.equal(r.code, 0, `medv ${args.join(' ')} failed (${r.code}):\n${r.stderr}`);
  return r.stdout;
}

/** `medv disk serve` until stopped; stop() sends SIGTERM and expects a clean exit. */
async function serve(args: string[]): Promise<{ uri: string; stop: () => Promise<void> }> {
  const child: ChildProcess = await startMedv(['disk', 'serve', ...args]);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const socket = args[args.indexOf('--socket') + 1];
  return {
    uri: `nbd+unix:///?socket=${socket}`,
    async stop() {
      child.kill('SIGTERM');
      assert.equal(await exited, 0, 'medv disk serve exits 0 on SIGTERM');
    },
  };
}

interface Boot { accel: Accelerator; serial: string; readyMs: number }

/** Boots the guest from `uri` until `ready`, then presses the power button and expects exit 0. */
async function bootFrom(uri: string, accel: Accelerator, readOnly = false): Promise<Boot> {
  const r = await withTcgFallback(accel, async (a) => {
    const vm = await QemuProcess.launch({ name: 'medv-boot-export', accel: a, drives: [{ source: uri, readOnly }] });
    try {
      await vm.waitForSerial(GUEST.serial.ready, BOOT_MS);
      const readyMs = vm.serialLines().find((l) => GUEST.serial.ready.test(`${l.text}\n`))!.ms;
      await vm.powerdown();
      await vm.waitForSerial(GUEST.serial.powerdown, POWERDOWN_MS);
      assert.equal(await vm.waitExit(POWERDOWN_MS), 0);
      return { serial: vm.serial(), readyMs };
    } finally {
      await vm.kill();
    }
  }, (e) => console.log(`      (KVM stopped the guest in internal-error; retrying under TCG: ${e.message.split('\n')[0]})`));
  if (r.accel !== accel) console.log(`      ran under ${r.accel} instead of ${accel}`);
  return { accel: r.accel, ...r.value };
}

function bootNumber(serial: string): number {
  const m = serial.match(GUEST.serial.boot);
  assert.ok(m, `no boot= line in:\n${serial}`);
  return Number(m[1]);
}

/** Every regular file under `dir` (sockets skipped). */
function hostFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => join(dir, f)).filter((f) => statSync(f).isFile());
}

describe('e2e: a QEMU guest boots from the export (medv disk serve)', function () {
  this.timeout(240_000);
  let tmp: ReturnType<typeof tempDir>;
  before(() => { tmp = tempDir('boot-export'); });
  after(() => tmp.cleanup());

  for (const accel of accelerators()) {
    describe(`under ${accel}`, () => {
      let dir: string;
      beforeEach(function () {
        dir = join(tmp.path, `${accel}-${this.currentTest!.title.slice(0, 8).replace(/\W/g, '_')}`);
        mkdirSync(dir);
      });

      it('through an undo disk: boot=1, served again boot=2, base unchanged, no plaintext at rest; merge commits counter and marker', async () => {
        const base = join(dir, 'guest.evhd');
        const undo = join(dir, 'guest-undo.evhd');
        const socket = join(dir, 'nbd.sock');
        medvOk(['disk', 'convert', GUEST.image, base]);
        const baseHash = sha256File(base);
        assert.equal(await fileContainsMarker(base), false);

        const boots: Boot[] = [];
        for (let round = 1; round <= 2; round++) {
          const server = await serve([base, '--socket', socket, '--undo', undo]);
          try {
            boots.push(await bootFrom(server.uri, accel));
          } finally {
            await server.stop();
          }
          const serial = boots[round - 1].serial;
          assert.equal(bootNumber(serial), round, serial);
          assert.match(serial, GUEST.serial.markerWritten);
          assert.match(serial, GUEST.serial.flushed, 'ATA FLUSH CACHE reached the export');
          assert.doesNotMatch(serial, GUEST.serial.error);
        }
        console.log(`      [${accel}] ready after ${boots.map((b) => `${Math.round(b.readyMs)} ms`).join(', ')}`);

        assert.equal(sha256File(base), baseHash, 'the base .evhd is unchanged');
        assert.ok(existsSync(undo));
        const files = hostFiles(dir);
        assert.deepEqual(files.map((f) => f.slice(dir.length + 1)).sort(), ['guest-undo.enc', 'guest-undo.evhd', 'guest.enc', 'guest.evhd']);
        for (const f of files) assert.equal(await fileContainsMarker(f), false, `plaintext marker in ${f}`);

        medvOk(['disk', 'undo', 'merge', undo]);
        assert.ok(!existsSync(undo), 'merge deletes the undo disk');
        assert.notEqual(sha256File(base), baseHash, 'merge wrote into the base');
        assert.equal(await fileContainsMarker(base), false, 'still no plaintext after merge');

        const raw = join(dir, 'out.raw');
        medvOk(['disk', 'convert', base, raw]);
        // A VHD's virtual size is rounded up to whole CHS geometry, so the raw copy may be longer.
        const disk = readFileSync(raw);
        assert.ok(disk.length >= GUEST.imageBytes);
        assert.equal(bootCounter(disk), 2);
        assert.ok(disk.subarray(GUEST.markerOffset, GUEST.markerOffset + GUEST.markerBytes).equals(markerBlock()), 'marker at its LBA');
        const image = readFileSync(GUEST.image);
        assert.ok(disk.subarray(0, GUEST.counterOffset).equals(image.subarray(0, GUEST.counterOffset)), 'boot code unchanged');
      });

      it('read-only export: the guest reports its write errors, reaches ready, and the file is unchanged', async () => {
        const base = join(dir, 'guest.evhd');
        const socket = join(dir, 'nbd.sock');
        medvOk(['disk', 'convert', GUEST.image, base]);
        const before = sha256File(base);
        const server = await serve([base, '--socket', socket, '--read-only']);
        let boot: Boot;
        try {
          boot = await bootFrom(server.uri, accel, true);
        } finally {
          await server.stop();
        }
        assert.equal(bootNumber(boot.serial), 1, boot.serial);
        assert.match(boot.serial, /MEDV-GUEST error=counter-write ah=[0-9a-f]{2}\r?\n/);
        assert.match(boot.serial, /MEDV-GUEST error=marker-write ah=[0-9a-f]{2}\r?\n/);
        assert.equal(sha256File(base), before);
        const raw = join(dir, 'out.raw');
        medvOk(['disk', 'convert', base, raw]);
        const disk = readFileSync(raw);
        assert.ok(disk.subarray(0, GUEST.imageBytes).equals(readFileSync(GUEST.image)), 'the disk still reads as the fresh image');
        assert.ok(disk.subarray(GUEST.imageBytes).every((b) => b === 0));
      });
    });
  }
});
