/**
 * The VM host with a real Linux guest (vm/linux): a Virtual PC .vmc naming an encrypted .evhd,
 * NAT through passt to HTTP servers this test runs on the host, the boot counter persisted on the
 * guest's ext4 root across boots. The guest reaches a server on the host's own network address
 * (as any outside host would), never one bound to the host's loopback through its gateway
 * 10.0.2.2, unless that port is allowed (issue 18, item 6).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { runMedv, tempDir, waitForFileText } from '../helpers/cli.js';
import { LINUX_BOOT_MS, LINUX_GUEST, freshLinuxImage, writeRootFile } from '../helpers/linux-guest.js';

/** The host's first non-loopback IPv4 address: an address the guest reaches as an outside host. */
function hostAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}

/** An HTTP server that counts requests and answers what `answer` says now: a body, or a redirect. */
async function httpServer(host: string, answer: () => { body: string } | { location: string }): Promise<{ server: Server; port: number; requests: number }> {
  const s = { requests: 0 };
  const server = createServer((_req, res) => {
    s.requests++;
    const a = answer();
    if ('location' in a) { res.writeHead(302, { Location: a.location }); res.end(); } else res.end(`${a.body}\n`);
  });
  server.listen(0, host);
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port, get requests() { return s.requests; } };
}

describe('host: the Linux guest from a .vmc and an .evhd (real QEMU)', function () {
  this.timeout(6 * LINUX_BOOT_MS);
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

  it('NAT reaches the host\'s network address but not its loopback (unless a port is allowed); the counter persists on the encrypted disk; with network none the fetch fails', async function () {
    const outside = hostAddress();
    if (!outside) this.skip();
    const token = `medv-host-nat-${process.pid}`;
    // A service only on the host's loopback: what a guest must not reach.
    const loopback = await httpServer('127.0.0.1', () => ({ body: 'loopback service' }));
    const toLoopback = { location: `http://10.0.2.2:${loopback.port}/` };
    // A loopback service the VM may be allowed to reach; it sends the guest on to the forbidden one.
    const allowed = await httpServer('127.0.0.1', () => toLoopback);
    // What the guest fetches at every boot: a server on the host's network address (as any machine
    // on its network sees it), which sends it on where this test says.
    let next: { body: string } | { location: string } = toLoopback;
    const out = await httpServer(outside, () => next);
    try {
      const raw = freshLinuxImage(dir.path);
      writeRootFile(raw, LINUX_GUEST.urlPath, `http://${outside}:${out.port}/\n`);
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
      const boot = async (extra: string[], n: number): Promise<string> => {
        json(['start', vmc, '--nic', 'virtio', '--disk-bus', 'virtio', ...extra]);
        await waitForFileText(serial, LINUX_GUEST.serial.ready, LINUX_BOOT_MS);
        const text = readFileSync(serial, 'latin1');
        assert.match(text, new RegExp(`medv-linux: boot ${n}\\r?\\n`), 'the counter file persisted on the encrypted disk');
        assert.equal(json(['stop', 'lx', '--timeout', '60']).exitReason, 'poweroff');
        return text;
      };

      const first = await boot([], 1);
      assert.match(first, /medv-linux: net eth0 10\.0\.2\.15\/24/);
      assert.equal(out.requests, 1, 'the guest reached the host\'s network address');
      assert.equal(loopback.requests, 0, 'the guest did not reach the service on the host\'s loopback through 10.0.2.2');
      assert.match(first, /medv-linux: wget failed/);

      const second = await boot(['--network', 'none'], 2);
      assert.match(second, /medv-linux: net none/);
      assert.match(second, /medv-linux: wget failed/);
      assert.equal(out.requests, 1, 'no request without a network');

      next = { location: `http://10.0.2.2:${allowed.port}/` };
      const third = await boot(['--allow-host-port', String(allowed.port)], 3);
      assert.equal(out.requests, 2);
      assert.equal(allowed.requests, 1, 'the allowed host port is reached at 10.0.2.2');
      assert.equal(loopback.requests, 0, 'a port not allowed is still not reached');
      assert.match(third, /medv-linux: wget failed/);

      next = { body: token };
      const fourth = await boot([], 4);
      assert.match(fourth, new RegExp(`medv-linux: wget ok ${token}`), 'a page is fetched over NAT');
    } finally {
      for (const h of [loopback, out, allowed]) h.server.close();
    }
  });
});
