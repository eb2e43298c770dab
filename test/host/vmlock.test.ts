/**
 * Two `vm start` of one name at once, through the real CLI with real QEMU (the nasm guest), with
 * the addon's flock and with the JS fallback's (MEDV_NO_NATIVE=1): exactly one wins, the other is
 * refused with EBUSY before it touches the run folder, and the winner's guest, sockets and state
 * stay intact: `vm stop` stops it (issue 18, item 4).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { GUEST, freshGuestImage } from '../helpers/qemu.js';
import { runMedv, runMedvAsync, waitForFileText, waitForPidExit, type RunResult } from '../helpers/cli.js';
import { vmHost } from '../helpers/vmhost.js';
import { closeSync } from 'node:fs';
import { controlRequest } from '../../src/host/protocol.js';
import { lockRunDir } from '../../src/host/vmlock.js';

/** Run a medv command without waiting for it (so that two run at once). */
const runAsync = (args: string[], env: Record<string, string>): Promise<RunResult> => runMedvAsync(args, env);

for (const fallback of [false, true]) {
  describe(`host: one VM name, two starts at once${fallback ? ' (JS fallback flock)' : ''} (real CLI, real QEMU)`, function () {
    this.timeout(120_000);
    const host = vmHost('host-vmlock', (): Record<string, string> => (fallback ? { MEDV_NO_NATIVE: '1' } : {}));

    it('exactly one wins; the other gets EBUSY; the winner runs on intact sockets and state, and vm stop stops it', async () => {
      // Two different disks: only the run folder is shared, so nothing but the folder's lock can refuse one.
      const env = host.env;
      const a = freshGuestImage(host.path, 'a.img');
      const b = freshGuestImage(host.path, 'b.img');
      const [ra, rb] = await Promise.all([
        runAsync(['vm', 'start', a, '--name', 'twin', '--memory', '32', '--json'], env),
        runAsync(['vm', 'start', b, '--name', 'twin', '--memory', '32', '--json'], env),
      ]);
      const results = [ra, rb];
      const winners = results.filter((r) => r.code === 0);
      const losers = results.filter((r) => r.code !== 0);
      assert.equal(winners.length, 1, `exactly one start wins: ${results.map((r) => `${r.code} ${r.stderr}`).join(' | ')}`);
      assert.equal(losers[0].code, 9, losers[0].stderr);
      assert.match(losers[0].stderr, /^medv: VM twin is already (running|starting).*\[EBUSY\]$/m);
      assert.equal(losers[0].stderr.trim().split('\n').length, 1, losers[0].stderr);
      const won = JSON.parse(winners[0].stdout);
      const status = JSON.parse(runMedv(['vm', 'status', 'twin', '--json'], env).stdout);
      assert.equal(status.state, 'running');
      assert.equal(status.pid, won.pid, 'state.json is the winner\'s');
      assert.equal(status.qemuPid, won.qemuPid);
      const run = join(env.MEDV_RUN_DIR, 'twin');
      for (const f of ['control.sock', 'qmp.sock', 'disk0.sock']) assert.ok(existsSync(join(run, f)), `${f} is there`);
      assert.deepEqual(readdirSync(env.MEDV_RUN_DIR).filter((f) => f.startsWith('.supervisor-')), [], 'the loser left no log behind');
      await waitForFileText(join(run, 'serial.log'), GUEST.serial.ready, 60_000);
      assert.match(readFileSync(join(run, 'supervisor.log'), 'utf8'), new RegExp(`QEMU started \\(pid ${won.qemuPid}`), 'supervisor.log is the winner\'s');
      const stopped = runMedv(['vm', 'stop', 'twin', '--json'], env);
      assert.equal(stopped.code, 0, stopped.stderr);
      assert.equal(JSON.parse(stopped.stdout).exitReason, 'poweroff');
      // Both exit: nothing of the winner is left running that vm stop could not reach.
      await Promise.all([waitForPidExit(won.qemuPid), waitForPidExit(won.pid)]);
    });

    it('the supervisor frees the run folder once its run ended: the lock is free when its stop is answered, not only at its exit', async () => {
      const img = freshGuestImage(host.path, 'c.img');
      const started = host.json(['start', img, '--name', 'freed', '--memory', '32']);
      const run = join(host.env.MEDV_RUN_DIR, 'freed');
      const stopped = await controlRequest(join(run, 'control.sock'), 'stop', { force: true }) as { state: string };
      assert.equal(stopped.state, 'stopped');
      // Taken at once after the answer (EBUSY would throw): a start of this name right after finds it free.
      closeSync(lockRunDir(run, 'freed'));
      await waitForPidExit(started.pid);
    });
  });
}
