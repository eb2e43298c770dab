/**
 * Automation end to end from a shell script with nothing but `curl --unix-socket` and
 * docs/host-api.yaml (test/host/automation.sh): start a VM, wait for a serial line from
 * /v1/events, suspend, resume, stop; real service, real QEMU.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freshGuestImage } from '../helpers/qemu.js';
import { REPO_ROOT, TEST_PASSPHRASE, tempDir, waitForPidExit } from '../helpers/cli.js';
import { startHost } from '../helpers/hostapi.js';

describe('host API: automation from a shell script with curl (real service, real QEMU)', function () {
  this.timeout(180_000);

  it('start, a serial line from /v1/events, suspend, resume, stop', async () => {
    const dir = tempDir('host-auto');
    const run = join(dir.path, 'run');
    const host = await startHost({ MEDV_RUN_DIR: run });
    try {
      const pass = join(dir.path, 'pass');
      writeFileSync(pass, TEST_PASSPHRASE, { mode: 0o600 });
      const r = spawnSync('bash', [join(REPO_ROOT, 'test/host/automation.sh'), join(run, 'host.sock'), freshGuestImage(dir.path), pass], { encoding: 'utf8', timeout: 150_000 });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      assert.deepEqual(r.stdout.trim().split('\n'), ['started: running', 'serial: MEDV-GUEST ready', 'suspended: suspended', 'resumed: true', 'stopped: poweroff']);
    } finally {
      host.kill('SIGTERM');
      await waitForPidExit(host.pid!);
      await dir.cleanup();
    }
  });
});
