/**
 * Locks between processes, as users hit them: `medv disk serve`, `undo merge` and `undo discard`
 * run as separate processes on one disk. A second writer, a merge of a served undo disk, and a
 * writable serve of an undo disk's parent are refused with EBUSY (exit 9) naming the holder; the
 * parent's file mode is never touched, so a SIGKILLed serve leaves nothing to repair.
 * Runs with the addon and with the JS fallback (MEDV_NO_NATIVE=1), both real kernel locks.
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { run, runMedv, sha256File, startMedv, tempDir } from '../helpers/cli.js';

const MiB = 1024 * 1024;

async function stop(server: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise((res) => server.once('exit', res));
  server.kill(signal);
  await exited;
}

function assertBusy(r: { code: number | null; stderr: string }, holder: ChildProcess): void {
  assert.equal(r.code, 9, `exit 9 (EBUSY), got ${r.code}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /\[EBUSY\]$/);
  assert.match(lines[0], new RegExp(`pid ${holder.pid} \\(node\\)`), 'names the process that holds the disk');
}

for (const [impl, env] of [['addon', { MEDV_NO_NATIVE: '0' }], ['JS fallback', { MEDV_NO_NATIVE: '1' }]] as const) {
  describe(`cli: locks between medv processes (${impl})`, function () {
    this.timeout(120_000);
    let dir: ReturnType<typeof tempDir>;
    let base: string;
    const servers: ChildProcess[] = [];
    const serve = async (args: string[]) => {
      const s = await startMedv(['disk', 'serve', ...args], env);
      servers.push(s);
      return s;
    };
    beforeEach(() => {
      dir = tempDir('locks');
      base = join(dir.path, 'base.vhd');
      assert.equal(runMedv(['disk', 'create', base, '--size', '16M'], env).code, 0);
    });
    afterEach(async () => {
      for (const s of servers.splice(0)) await stop(s);
      await dir.cleanup();
    });

    it('a second writable serve of one disk is refused and names the first; readers share', async () => {
      const first = await serve([base, '--socket', join(dir.path, 's1')]);
      assertBusy(runMedv(['disk', 'serve', base, '--socket', join(dir.path, 's2')], env), first);
      assertBusy(runMedv(['disk', 'serve', base, '--socket', join(dir.path, 's3'), '--read-only'], env), first);
      assertBusy(runMedv(['disk', 'info', base], env), first);
      await stop(first);
      const r1 = await serve([base, '--socket', join(dir.path, 's4'), '--read-only']);
      const r2 = await serve([base, '--socket', join(dir.path, 's5'), '--read-only']);
      assert.equal(runMedv(['disk', 'info', base], env).code, 0, 'info reads while readers serve');
      const w = runMedv(['disk', 'serve', base, '--socket', join(dir.path, 's6')], env);
      assert.equal(w.code, 9, w.stderr);
      assert.match(w.stderr, new RegExp(`pid (${r1.pid}|${r2.pid})`));
    });

    it('undo merge and discard are refused while the undo disk is served; later writes are kept', async () => {
      const undo = join(dir.path, 'undo.vhd');
      const sock = join(dir.path, 's');
      const server = await serve([base, '--socket', sock, '--undo', undo]);
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 64k', `nbd+unix:///?socket=${sock}`]);
      const before = sha256File(undo);
      assertBusy(runMedv(['disk', 'undo', 'merge', undo], env), server);
      assertBusy(runMedv(['disk', 'undo', 'discard', undo], env), server);
      assertBusy(runMedv(['disk', 'serve', base, '--socket', join(dir.path, 't'), '--undo', undo], env), server);
      assert.equal(sha256File(undo), before, 'the refused commands left the undo disk alone');
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xcd 2M 64k', `nbd+unix:///?socket=${sock}`]);
      await stop(server);
      const m = runMedv(['disk', 'undo', 'merge', undo], env);
      assert.equal(m.code, 0, m.stderr);
      run('qemu-io', ['-f', 'vpc', '-r', '-c', 'read -P 0xab 1M 64k', '-c', 'read -P 0xcd 2M 64k', base]);
    });

    it('the parent of an active undo disk cannot be served writable, only read-only', async () => {
      const undo = join(dir.path, 'undo.vhd');
      const server = await serve([base, '--socket', join(dir.path, 's'), '--undo', undo]);
      assertBusy(runMedv(['disk', 'serve', base, '--socket', join(dir.path, 't')], env), server);
      assertBusy(runMedv(['disk', 'undo', 'merge', undo], env), server);
      const reader = await serve([base, '--socket', join(dir.path, 'r'), '--read-only']);
      await stop(reader);
    });

    it('after serve --undo is SIGKILLed the parent mode is unchanged and undo merge works', async () => {
      const undo = join(dir.path, 'undo.vhd');
      const sock = join(dir.path, 's');
      const mode = statSync(base).mode;
      const baseHash = sha256File(base);
      const server = await serve([base, '--socket', sock, '--undo', undo]);
      assert.equal(statSync(base).mode, mode, 'the parent mode is not changed while in use');
      run('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a ${3 * MiB} 128k`, `nbd+unix:///?socket=${sock}`]);
      await stop(server, 'SIGKILL');
      assert.equal(statSync(base).mode, mode, 'the parent mode is unchanged after SIGKILL');
      assert.equal(sha256File(base), baseHash);
      const m = runMedv(['disk', 'undo', 'merge', undo], env);
      assert.equal(m.code, 0, m.stderr);
      run('qemu-io', ['-f', 'vpc', '-r', '-c', `read -P 0x5a ${3 * MiB} 128k`, base]);
      assert.equal(runMedv(['disk', 'check', base], env).code, 0);
    });
  });
}
