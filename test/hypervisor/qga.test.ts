/**
 * The guest agent client (src/hypervisor/qga.ts) against the real qemu-ga of the Linux test guest
 * (Debian's qemu-guest-agent, started by its init on org.qemu.guest_agent.0) under real QEMU:
 * sync, guest-exec with an exit status and output, an agent error, and what QMP shows of the
 * agent's and the clipboard's chardevs (present only when asked for).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { MedvError } from '../../src/core/errors.js';
import { QemuProcess } from '../../src/hypervisor/qemu.js';
import { AgentClient, AgentError } from '../../src/hypervisor/qga.js';
import { tempDir } from '../helpers/cli.js';
import { freshLinuxImage, LINUX_BOOT_MS, LINUX_GUEST } from '../helpers/linux-guest.js';
import { GUEST } from '../helpers/qemu.js';

const chardevs = async (vm: QemuProcess) => (await vm.qmp.execute<Array<{ label: string; filename: string }>>('query-chardev')).map((c) => c.label).sort();

describe('hypervisor/qga: the guest agent of the Linux test guest', function () {
  this.timeout(LINUX_BOOT_MS + 120_000);
  const dir = tempDir('medv-qga-');
  let vm: QemuProcess | undefined;
  let agent: AgentClient | undefined;

  before(async () => {
    const socket = join(dir.path, 'qga.sock');
    vm = await QemuProcess.launch({
      name: 'medv-qga-test', accel: 'tcg', memoryMiB: 256,
      drives: [{ source: freshLinuxImage(dir.path), iface: 'virtio' }],
      qmpSocket: join(dir.path, 'qmp.sock'), guestAgent: { socket },
    });
    await vm.waitForSerial(/medv-linux: agent started \S+\r?\n/, LINUX_BOOT_MS);
    agent = await AgentClient.connect(socket);
    await agent.waitForAgent(60_000);
  });
  after(async () => {
    agent?.close();
    await vm?.kill();
    await dir.cleanup();
  });

  it('QMP shows the agent\'s chardev and no clipboard chardev (not asked for)', async () => {
    const labels = await chardevs(vm!);
    assert.ok(labels.includes('qga0'), labels.join(' '));
    assert.ok(!labels.includes('vdagent0'), labels.join(' '));
  });

  it('guest-exec: an exit status and the output of a command, argv as given (no shell unless asked)', async () => {
    const seven = await agent!.exec(['sh', '-c', 'exit 7'], { timeoutMs: 60_000 });
    assert.equal(seven.exitCode, 7);
    const cat = await agent!.exec(['cat', '/etc/medv/version'], { timeoutMs: 60_000 });
    assert.equal(cat.exitCode, 0);
    assert.equal(cat.stdout.toString(), '1\n');
    // one argument with spaces and quotes stays one argument
    const echo = await agent!.exec(['printf', '%s|', 'a b', '"$HOME"; rm -rf /'], { timeoutMs: 60_000 });
    assert.equal(echo.stdout.toString(), 'a b|"$HOME"; rm -rf /|');
  });

  it('a command that does not exist is the agent\'s typed error; a second sync still works', async () => {
    await assert.rejects(agent!.exec(['/no/such/program'], { timeoutMs: 60_000 }), (e: unknown) => e instanceof AgentError && e.code === 'EHYPERVISOR');
    await agent!.sync(30_000);
    assert.equal((await agent!.exec(['true'], { timeoutMs: 60_000 })).exitCode, 0);
  });

  it('the agent\'s error text (which echoes what it was given) reaches no terminal or log with control characters', async () => {
    await assert.rejects(agent!.exec(['/no/such/\u001b]0;owned\u0007\u001b[2J\nsecond line'], { timeoutMs: 60_000 }), (e: unknown) => {
      assert.ok(e instanceof AgentError, String(e));
      assert.doesNotMatch(e.message, /[\u0000-\u001f\u007f-\u009f]/, JSON.stringify(e.message));
      assert.match(e.message, /no\/such/);
      return true;
    });
  });

  it('argv is checked before anything is sent', async () => {
    await assert.rejects(agent!.exec([], { timeoutMs: 1000 }), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
    await assert.rejects(agent!.exec(['a\0b'], { timeoutMs: 1000 }), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
  });
});

describe('hypervisor/qga: chardevs by QMP (no guest needed)', function () {
  this.timeout(60_000);
  const dir = tempDir('medv-qga-chardev-');
  after(() => dir.cleanup());

  it('clipboard: the qemu-vdagent chardev and its port exist only when asked for', async () => {
    for (const clipboard of [false, true]) {
      const vm = await QemuProcess.launch({
        name: 'medv-clip', accel: 'tcg', drives: [{ source: GUEST.image }], qmpSocket: join(dir.path, `qmp-${clipboard}.sock`),
        ...(clipboard ? { clipboard: true } : {}),
      });
      try {
        const labels = await chardevs(vm);
        assert.equal(labels.includes('vdagent0'), clipboard, labels.join(' '));
        const devices = (await vm.qmp.execute<Array<{ name: string }>>('qom-list', { path: '/machine/peripheral' })).map((p) => p.name);
        assert.equal(devices.includes('vser0'), clipboard, devices.join(' '));
      } finally {
        await vm.kill();
      }
    }
  });
});
