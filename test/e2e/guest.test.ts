/**
 * The tiny test guest (vm/guest.asm) under real QEMU, once per accelerator from accelerators():
 * it boots from a raw image, a fixed VHD (qemu-img's vpc) and an NBD export, counts boots on its
 * disk, writes the marker at its LBA, and powers off on the ACPI power button.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { waitForFile } from '../helpers/cli.js';
import { join } from 'node:path';
import {
  accelerators, bootCounter, bootGuest, fileContainsMarker, freshGuestImage, GUEST, QemuError, INTERNAL_ERROR_GUEST, markerBlock,
  type Accel, type GuestRun,
} from '../helpers/qemu.js';

const BOOT_MS = 60_000; // TCG on a loaded 2-core machine; KVM takes well under a second
const POWERDOWN_MS = 10_000;

/** Boots, checks the serial lines up to `ready`, presses the power button and expects QEMU to exit 0. */
async function bootAndPowerOff(run: GuestRun, expectedBoot: number): Promise<void> {
  const boot = await run.waitForSerial(GUEST.serial.ready, BOOT_MS);
  assert.ok(boot);
  const serial = run.serial();
  assert.equal(serial.match(GUEST.serial.boot)?.[1], String(expectedBoot), serial);
  assert.match(serial, GUEST.serial.markerWritten);
  assert.doesNotMatch(serial, GUEST.serial.error);
  await run.powerdown();
  await run.waitForSerial(GUEST.serial.powerdown, POWERDOWN_MS);
  assert.equal(await run.waitExit(POWERDOWN_MS), 0);
}

function report(accel: Accel, what: string, run: GuestRun): void {
  const at = (re: RegExp) => run.serialLines().find((l) => re.test(`${l.text}\n`))?.ms;
  const fmt = (ms: number | undefined) => (ms === undefined ? '-' : `${Math.round(ms)} ms`);
  console.log(`      [${accel}] ${what}: first serial line ${fmt(at(GUEST.serial.start))}, ready ${fmt(at(GUEST.serial.ready))}`);
}

describe('e2e: test guest under QEMU', function () {
  this.timeout(180_000);
  let dir: string;
  const runs: GuestRun[] = [];
  const start = async (opts: Parameters<typeof bootGuest>[0]) => {
    const run = await bootGuest(opts);
    runs.push(run);
    return run;
  };

  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'medv-guest-')); });
  afterEach(async () => {
    await Promise.all(runs.splice(0).map((r) => r.kill()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('the built image is fresh: boot code, zero counter, no marker anywhere', async () => {
    assert.ok(existsSync(GUEST.image), 'run npm run build');
    const img = readFileSync(GUEST.image);
    assert.equal(img.length, GUEST.imageBytes);
    assert.equal(img.readUInt16LE(510), 0xaa55);
    assert.equal(bootCounter(img), 0);
    assert.equal(await fileContainsMarker(GUEST.image), false);
    assert.ok(img.subarray(GUEST.markerOffset, GUEST.markerOffset + GUEST.markerBytes).every((b) => b === 0));
  });

  for (const accel of accelerators()) {
    describe(`under ${accel}`, () => {
      it('raw image: boot=1, marker, ready; the power button ends QEMU; boot=2 next time; marker at its LBA', async () => {
        const image = freshGuestImage(dir);
        const first = await start({ drive: image, accel });
        await bootAndPowerOff(first, 1);
        assert.match(first.serial(), GUEST.serial.flushed);
        report(accel, 'raw, first boot', first);

        const second = await start({ drive: image, accel });
        await bootAndPowerOff(second, 2);

        const disk = readFileSync(image);
        assert.equal(bootCounter(disk), 2);
        assert.ok(disk.subarray(GUEST.markerOffset, GUEST.markerOffset + GUEST.markerBytes).equals(markerBlock()));
        assert.equal(disk.indexOf(GUEST.marker), GUEST.markerOffset, 'the marker only where the guest wrote it');
      });

      it('fixed VHD made by qemu-img (format vpc)', async () => {
        const vhd = join(dir, 'guest.vhd');
        execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed', GUEST.image, vhd]);
        const run = await start({ drive: vhd, format: 'vpc', accel });
        await bootAndPowerOff(run, 1);
        report(accel, 'fixed VHD', run);
        // A fixed VHD is the disk's bytes followed by a 512-byte footer.
        const file = readFileSync(vhd);
        assert.equal(file.subarray(file.length - 512, file.length - 504).toString('latin1'), 'conectix');
        assert.equal(bootCounter(file), 1);
        assert.ok(file.subarray(GUEST.markerOffset, GUEST.markerOffset + GUEST.markerBytes).equals(markerBlock()));
      });

      it('NBD export (qemu-nbd on a unix socket) and a read-only drive', async () => {
        const image = freshGuestImage(dir);
        const socket = join(dir, 'nbd.sock');
        const nbd = spawn('qemu-nbd', ['--persistent', '--format=raw', `--socket=${socket}`, image], { stdio: 'ignore' });
        try {
          await waitForFile(socket, 10_000);
          const run = await start({ drive: `nbd+unix:///?socket=${socket}`, accel });
          await bootAndPowerOff(run, 1);
          report(accel, 'NBD', run);
        } finally {
          nbd.kill('SIGTERM');
          await new Promise((r) => nbd.once('close', r));
        }
        assert.equal(bootCounter(readFileSync(image)), 1);

        // Read-only (virtio-blk): the guest cannot write, says so, still reaches ready; the file is unchanged.
        const before = readFileSync(image);
        const ro = await start({ drive: image, accel, readOnly: true });
        await ro.waitForSerial(GUEST.serial.ready, BOOT_MS);
        assert.equal(ro.serial().match(GUEST.serial.boot)?.[1], '2', ro.serial());
        assert.match(ro.serial(), /MEDV-GUEST error=counter-write ah=[0-9a-f]{2}\r?\n/);
        assert.match(ro.serial(), /MEDV-GUEST error=marker-write ah=[0-9a-f]{2}\r?\n/);
        await ro.powerdown();
        assert.equal(await ro.waitExit(POWERDOWN_MS), 0);
        assert.ok(readFileSync(image).equals(before));
      });

      it(accel === 'kvm' ? 'a guest KVM cannot emulate is reported as internal-error' : 'the guest KVM cannot emulate runs under TCG', async () => {
        const image = join(dir, 'internal-error.img');
        copyFileSync(INTERNAL_ERROR_GUEST.image, image);
        const run = await start({ drive: image, accel });
        if (accel === 'tcg') {
          await run.waitForSerial(INTERNAL_ERROR_GUEST.serial.ok, BOOT_MS);
          return;
        }
        await assert.rejects(run.waitForSerial(INTERNAL_ERROR_GUEST.serial.ok, BOOT_MS), (e: unknown) => {
          assert.ok(e instanceof QemuError);
          assert.equal(e.kind, 'internal-error');
          assert.match(e.message, /internal-error under accel kvm.*Retry under TCG/s);
          return true;
        });
        assert.equal(await run.runState(), 'internal-error');
        assert.match(run.serial(), INTERNAL_ERROR_GUEST.serial.start);
      });
    });
  }
});
