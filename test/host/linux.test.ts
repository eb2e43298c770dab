/**
 * The VM host with a real Linux guest (vm/linux): a Virtual PC .vmc naming an encrypted .evhd,
 * NAT to an HTTP server this test runs on the host (QEMU's user-mode network maps 10.0.2.2 to the
 * host's loopback), the boot counter persisted on the guest's ext4 root across boots.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { runMedv, tempDir, waitForFileText } from '../helpers/cli.js';
import { LINUX_BOOT_MS, LINUX_GUEST, freshLinuxImage, writeRootFile } from '../helpers/linux-guest.js';


describe('host: the Linux guest from a .vmc and an .evhd (real QEMU)', function () {
  this.timeout(4 * LINUX_BOOT_MS);
  let dir: ReturnType<typeof tempDir>;
  let env: Record<string, string>;
  const json = (args: string[], extraEnv: Record<string, string> = {}) => {
    const r = runMedv(['vm', ...args, '--json'], { ...env, ...extraEnv });
    assert.equal(r.code, 0, `medv vm ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };

  beforeEach(() => { dir = tempDir('medv-host-linux-'); env = { MEDV_RUN_DIR: join(dir.path, 'run') }; });
  afterEach(async () => {
    runMedv(['vm', 'stop', 'lx', '--force'], env);
    await dir.cleanup();
  });

  it('boots, fetches a page over NAT, keeps its counter on the encrypted disk; with network none the fetch fails', async () => {
    let requests = 0;
    const token = `medv-host-nat-${process.pid}`;
    const server = createServer((_req, res) => { requests++; res.end(`${token}\n`); });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    try {
      const raw = freshLinuxImage(dir.path);
      writeRootFile(raw, LINUX_GUEST.urlPath, `http://10.0.2.2:${port}/\n`);
      const evhd = join(dir.path, 'linux.evhd');
      assert.equal(runMedv(['disk', 'convert', raw, evhd], env).code, 0);
      const vmc = join(dir.path, 'lx.vmc');
      const xml = [
        '<?xml version="1.0" encoding="UTF-16"?>', '<preferences>',
        '  <version type="string">2.0</version>',
        '  <hardware>',
        '    <memory><ram_size type="integer">256</ram_size></memory>',
        '    <pci_bus>',
        '      <ide_adapter><ide_controller id="0"><location id="0">',
        '        <drive_type type="integer">1</drive_type>',
        '        <pathname><relative type="string">.\\linux.evhd</relative></pathname>',
        '      </location></ide_controller></ide_adapter>',
        '      <ethernet_adapter>',
        '        <controller_count type="integer">1</controller_count>',
        '        <ethernet_controller id="0">',
        '          <ethernet_card_address type="bytes">0003FF1A2B3C</ethernet_card_address>',
        '          <virtual_network><name type="string">Shared Networking (NAT)</name></virtual_network>',
        '        </ethernet_controller>',
        '      </ethernet_adapter>',
        '    </pci_bus>',
        '  </hardware>', '</preferences>', ''].join('\r\n');
      writeFileSync(vmc, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(xml, 'utf16le')]));
      const serial = join(env.MEDV_RUN_DIR, 'lx', 'serial.log');

      // The cloud kernel has virtio drivers and no e1000; virtio disks also boot it several times faster.
      const s = json(['start', vmc, '--nic', 'virtio', '--disk-bus', 'virtio']);
      assert.equal(s.network, 'nat');
      assert.equal(s.memoryMiB, 256);
      await waitForFileText(serial, LINUX_GUEST.serial.ready, LINUX_BOOT_MS);
      const first = readFileSync(serial, 'latin1');
      assert.match(first, /medv-linux: boot 1\r?\n/);
      assert.match(first, new RegExp(`medv-linux: wget ok ${token}`));
      assert.equal(requests, 1, 'the host server saw the guest\'s request');
      assert.equal(json(['stop', 'lx', '--timeout', '60']).exitReason, 'poweroff');

      json(['start', vmc, '--nic', 'virtio', '--disk-bus', 'virtio', '--network', 'none']);
      await waitForFileText(serial, LINUX_GUEST.serial.ready, LINUX_BOOT_MS);
      const second = readFileSync(serial, 'latin1');
      assert.match(second, /medv-linux: boot 2\r?\n/, 'the counter file persisted on the encrypted disk');
      assert.match(second, /medv-linux: net none/);
      assert.match(second, /medv-linux: wget failed/);
      assert.equal(requests, 1, 'no request without a network');
      assert.equal(json(['stop', 'lx', '--timeout', '60']).exitReason, 'poweroff');
    } finally {
      server.close();
    }
  });
});
