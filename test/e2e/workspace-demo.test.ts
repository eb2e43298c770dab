/**
 * `medv demo` (the workspace demo) through the CLI, headless, as CI runs it; then a scan of its kept
 * work folder (console, server, client repositories, VM run folders) and of the temp folder's
 * medv files for the guest's marker and the keys, independent of the demo's own scan.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runMedv } from '../helpers/cli.js';
import { LINUX_GUEST } from '../helpers/linux-guest.js';
import { loadHostKey, readKeyFile } from '../../src/crypto/index.js';
import { secureFree } from '../../src/crypto/secure.js';
import { defaultWrapKeyFile } from '../../src/repo/hostkey.js';
import { filesUnder, scanTrees } from '../../src/demo/scan.js';

describe('e2e: medv demo (workspaces)', function () {
  this.timeout(600_000);
  let work = '';
  after(() => { if (work) fs.rmSync(work, { recursive: true, force: true }); });

  it('passes headless: v1 deployed, v2 fetched with TrimTransfer, the revertible run reverted, an application run in the guest, a second workspace of the image fetched nothing, nothing in the clear', async () => {
    const before = new Set(fs.readdirSync(tmpdir()));
    const r = runMedv(['demo', '--keep', '--json'], { MEDV_PASSPHRASE: undefined });
    assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 4000));
    const out = JSON.parse(r.stdout);
    work = out.workDir;
    assert.equal(out.passed, true);
    assert.deepEqual(out.boots.map((b: { version: string; boot: number }) => [b.version, b.boot]), [['1', 1], ['2', 1], ['2', 1], ['2', 1]]);
    // the published application ran in the guest through its agent: version 2's /etc/medv/version
    assert.deepEqual(out.application, { name: 'version', argv: ['cat', '/etc/medv/version'], exitCode: 0, output: '2\n' });
    assert.ok(out.v2.fetchedBytes < out.image.bytes / 50, `v2 fetched ${out.v2.fetchedBytes} of ${out.image.bytes}`);
    assert.ok(out.v2.fetchedBytes < out.v2.fullDownloadBytes / 5);
    // a second workspace of the same image: nothing fetched, the same base file, no second copy on disk
    assert.equal(out.second.workspace, 'demo-persistent');
    assert.equal(out.second.fetchedBytes, 0);
    assert.equal(out.second.shared, true);
    assert.ok(out.second.baseLinks >= 3, `base has ${out.second.baseLinks} links`);
    assert.ok(out.second.storeGrowthBytes < out.second.baseBytes / 2, `the client's images grew by ${out.second.storeGrowthBytes} B (base ${out.second.baseBytes} B)`);
    assert.ok(out.clients.some((c: { workspace: string; version: number }) => c.workspace === 'demo-persistent' && c.version === 2));
    assert.ok(out.clients.some((c: { workspace: string; version: number }) => c.workspace === 'demo-desktop' && c.version === 2));

    // our own scan: the marker, the image keys (unwrapped with the console's key file) and the client disks' data keys
    const consoleKek = { kind: 'hostkey' as const, keyFile: join(work, 'console', 'console.key') };
    // the client's host key is kept wrapped under the user's wrap key, outside the work folder
    const clientKek = { kind: 'hostkey' as const, keyFile: join(work, 'client', 'data', 'Local', 'host.key'), wrapKeyFile: defaultWrapKeyFile() };
    const hostKey = await loadHostKey(clientKek);
    const needles: Record<string, Buffer> = { marker: LINUX_GUEST.marker, 'client host key': Buffer.from(hostKey) };
    secureFree(hostKey);
    for (const [name, file, kek] of [
      ['content key', join(work, 'console', 'keys', 'images', 'demo-linux.key.enc'), consoleKek],
      ['repository key', join(work, 'console', 'keys', 'repository.key.enc'), consoleKek],
      ...filesUnder(join(work, 'client', 'images')).filter((p) => p.endsWith('.enc')).map((p) => [p, p, clientKek] as const),
    ] as const) {
      const k = await readKeyFile(file, kek);
      needles[name] = Buffer.from(k.key.subarray(0, 32));
      k.dispose();
    }
    assert.ok(Object.keys(needles).length >= 4, Object.keys(needles).join(', '));
    const fresh = fs.readdirSync(tmpdir()).filter((n) => !before.has(n) && n.startsWith('medv') && join(tmpdir(), n) !== work).map((n) => join(tmpdir(), n));
    assert.deepEqual(scanTrees([work, ...fresh], needles), []);
  });
});
