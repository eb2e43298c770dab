/**
 * A Virtual PC 2007 `.vmc` whose CD/DVD is bound to a host drive ("use physical drive D:", written
 * as a lone drive letter in `pathname/absolute`) starts, through the real CLI with real QEMU: with
 * the host's optical drive when the command line allows that letter and the drive holds a disc,
 * else with an empty CD/DVD drive and one warning line; never a refusal (issue 22, part 5).
 * What the guest has is QEMU's own answer (`query-block`, recorded by the supervisor in `vm status`).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST, freshGuestImage } from '../helpers/qemu.js';
import { waitForFileText } from '../helpers/cli.js';
import { vmHost } from '../helpers/vmhost.js';
import { checkAnswer } from '../helpers/hostapi.js';
import { vmDevices } from '../../src/host/client.js';

/**
 * A .vmc as Virtual PC 2007 saves one (UTF-16LE with a byte-order mark, CRLF, four-space indents,
 * typed elements, settings medv does not use left in): the hard disk on the primary master, the
 * CD/DVD on the secondary master bound to host drive `letter`.
 */
function writeVpc2007Vmc(path: string, letter: string): void {
  const xml = `<?xml version="1.0" encoding="UTF-16"?>
<preferences>
    <version type="string">2.0</version>
    <properties>
        <creator>
            <build type="string">6.0.192.0</build>
            <name type="string">Microsoft Virtual PC 2007</name>
            <version type="string">1.0</version>
        </creator>
        <modifier>
            <build type="string">6.0.192.0</build>
            <name type="string">Microsoft Virtual PC 2007</name>
            <version type="string">1.0</version>
        </modifier>
    </properties>
    <hardware>
        <memory>
            <ram_size type="integer">32</ram_size>
        </memory>
        <pci_bus>
            <ide_adapter>
                <ide_controller id="0">
                    <location id="0">
                        <drive_type type="integer">1</drive_type>
                        <pathname>
                            <absolute type="string">C:\\Virtual Machines\\Office\\disk.img</absolute>
                            <relative type="string">.\\disk.img</relative>
                        </pathname>
                    </location>
                </ide_controller>
                <ide_controller id="1">
                    <location id="0">
                        <drive_type type="integer">2</drive_type>
                        <pathname>
                            <absolute type="string">${letter}</absolute>
                            <relative type="string" />
                        </pathname>
                    </location>
                </ide_controller>
            </ide_adapter>
            <video_adapter>
                <vram_size type="integer">8</vram_size>
            </video_adapter>
        </pci_bus>
        <standard>
            <name type="string">IBM PC/AT</name>
        </standard>
    </hardware>
    <integration>
        <microsoft>
            <mouse>
                <allow type="boolean">true</allow>
            </mouse>
        </microsoft>
    </integration>
</preferences>
`;
  writeFileSync(path, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(xml.replace(/\n/g, '\r\n'), 'utf16le')]));
}

describe('host: a Virtual PC 2007 .vmc with its CD bound to a host drive (real CLI, real QEMU)', function () {
  this.timeout(120_000);
  const host = vmHost('host-vmc-cd');
  let vmc: string;

  beforeEach(() => {
    freshGuestImage(host.path, 'disk.img');
    vmc = join(host.path, 'office.vmc');
    writeVpc2007Vmc(vmc, 'D');
  });

  /**
   * Start it, see the guest run, and return what the user saw, the host service's start answer
   * (`vm start --json`) and what QEMU reports; both answers fit docs/host-api.yaml.
   */
  async function start(args: string[]): Promise<{ stderr: string; started: any; status: any }> {
    const r = host.vm(['start', vmc, '--json', ...args]);
    assert.equal(r.code, 0, `vm start: ${r.stderr}`);
    checkAnswer('POST', '/v1/vms', 201, 'application/json', Buffer.from(r.stdout));
    const started = JSON.parse(r.stdout);
    assert.equal(started.state, 'running');
    await waitForFileText(host.serialOf('office'), GUEST.serial.ready, 60_000);
    const s = host.vm(['status', 'office', '--json']);
    checkAnswer('GET', '/v1/vms/office', 200, 'application/json', Buffer.from(s.stdout));
    const status = JSON.parse(s.stdout);
    assert.equal(JSON.parse(host.vm(['stop', 'office', '--json']).stdout).exitReason, 'poweroff');
    return { stderr: r.stderr, started, status };
  }

  it('without --host-drive it starts with an empty CD/DVD drive and one warning line naming the way to allow it', async () => {
    const { stderr, started, status } = await start([]);
    const warnings = stderr.trim().split('\n').filter((l) => /CD\/DVD/.test(l));
    assert.equal(warnings.length, 1, stderr);
    assert.match(warnings[0], /^medv: warning: ide_controller 1 location 0: host drive D: not allowed \(give --host-drive D=\/dev\/sr0 .*\); the guest gets an empty CD\/DVD drive$/);
    // The service told it in its start answer, once; the CLI printed that line.
    assert.deepEqual(started.warnings, [warnings[0].replace(/^medv: warning: /, '')]);
    assert.deepEqual(status.cdDrives, [{ disc: null }], 'QEMU has one CD/DVD drive, with no disc');
  });

  it('the device policy: ImageState.xml beside it with CdDvd false drops the CD/DVD drive (QEMU has none, no warning); Clipboard true adds the qemu-vdagent chardev', async () => {
    writeFileSync(join(host.path, 'ImageState.xml'), '<?xml version="1.0" encoding="UTF-8"?>\n<ImageState version="1">\n  <Devices>\n    <CdDvd>false</CdDvd>\n    <Clipboard>true</Clipboard>\n  </Devices>\n</ImageState>\n');
    const r = host.vm(['start', vmc, '--json', '--host-drive', 'D=/dev/sr0']);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /CD\/DVD/);
    const devices = await vmDevices('office', { root: host.env.MEDV_RUN_DIR });
    assert.ok(devices.chardevs.some((c) => c.label === 'vdagent0'), JSON.stringify(devices.chardevs));
    await waitForFileText(host.serialOf('office'), GUEST.serial.ready, 60_000);
    assert.deepEqual(JSON.parse(host.vm(['status', 'office', '--json']).stdout).cdDrives ?? [], [], 'QEMU has no CD/DVD drive');
    assert.equal(JSON.parse(host.vm(['stop', 'office', '--json']).stdout).exitReason, 'poweroff');
  });

  it('a host drive that is not there (or not a block device) gives an empty drive and one warning; nothing else is opened', async () => {
    const { stderr, status } = await start(['--host-drive', 'D=/dev/medv-no-such-sr0']);
    const warnings = stderr.trim().split('\n').filter((l) => /CD\/DVD/.test(l));
    assert.equal(warnings.length, 1, stderr);
    assert.match(warnings[0], /host drive D: .*medv-no-such-sr0.*; the guest gets an empty CD\/DVD drive$/);
    assert.deepEqual(status.cdDrives, [{ disc: null }]);
    // A regular file named as the drive is no optical drive either.
    const plain = join(host.path, 'plain.iso');
    writeFileSync(plain, Buffer.alloc(64 * 1024));
    const again = await start(['--host-drive', `D=${plain}`]);
    assert.match(again.stderr, /host drive D: .*plain\.iso is not a block device; the guest gets an empty CD\/DVD drive/);
    assert.deepEqual(again.status.cdDrives, [{ disc: null }]);
  });

  it('the host drive named on the command line, holding a disc, is the guest\'s CD/DVD (no warning)', async function () {
    if (process.getuid?.() !== 0) this.skip();
    // A loop device over a small image stands in for /dev/sr0 with a disc in it.
    const disc = join(host.path, 'disc.iso');
    execFileSync('dd', ['if=/dev/urandom', `of=${disc}`, 'bs=64k', 'count=4', 'status=none']);
    const made = spawnSync('losetup', ['-f', '--show', '-r', disc], { encoding: 'utf8' });
    if (made.status !== 0) this.skip(); // no loop devices here
    const loop = made.stdout.trim();
    try {
      // The letter is matched as Virtual PC writes it, in any case.
      const { stderr, started, status } = await start(['--host-drive', `d=${loop}`]);
      assert.doesNotMatch(stderr, /CD\/DVD/, stderr);
      assert.equal(started.warnings, undefined);
      assert.deepEqual(status.cdDrives, [{ disc: loop }], 'QEMU\'s CD/DVD drive holds the host drive');
    } finally {
      host.vm(['stop', 'office', '--force']);
      spawnSync('losetup', ['-d', loop]);
    }
  });
});
