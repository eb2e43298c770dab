/**
 * Shared folders read from inside the Linux guest (issue 22, part 3): the VM host exports two host
 * folders as virtio-9p shares (src/host/shares.ts), one read-only (the default) and one writable;
 * the guest with Debian's generic kernel (vm/build/linux-9p, the only test guest that can mount 9p)
 * mounts both, prints the first line of a file this test wrote in each, and tries one write: the
 * read-only share refuses it, the writable one takes it. All of it is seen on the guest's serial
 * log, as a user of the VM would see it. devices.test.ts checks the devices themselves through QMP.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { serialLogPath, startVm, stopVm } from '../../src/host/client.js';
import { vmRunDir } from '../../src/host/rundir.js';
import { AGENT_SOCKET } from '../../src/host/shape.js';
import { AgentClient } from '../../src/hypervisor/qga.js';
import { tempDir, waitForFileText } from '../helpers/cli.js';
import { LINUX_BOOT_MS, LINUX_GUEST, freshLinuxImage } from '../helpers/linux-guest.js';

describe('host: shared folders mounted and read in the Linux guest (virtio-9p)', function () {
  this.timeout(LINUX_BOOT_MS + 120_000);
  const dir = tempDir('host-shares-guest');
  const f = (...p: string[]) => join(dir.path, ...p);
  const run = () => f('run');
  after(async () => {
    await stopVm('lx9p', { root: run(), force: true }).catch(() => undefined);
    await dir.cleanup();
  });

  it('the guest reads a file the host wrote in each share; a write to the read-only share is refused, to the writable one taken', async () => {
    const token = `from the host ${process.pid}`;
    for (const [name, text] of [['ro docs', `${token} (read-only)`], ['rw', `${token} (writable)`]]) {
      fs.mkdirSync(f(name));
      fs.writeFileSync(f(name, LINUX_GUEST.shareFile), `${text}\nsecond line\n`);
    }
    await startVm({
      name: 'lx9p', memoryMiB: 256, disks: [{ path: freshLinuxImage(dir.path, 'linux-9p.img', '9p'), mode: 'normal' }],
      diskBus: 'virtio', network: 'none', display: 'none', accel: 'tcg', savedState: f('lx9p.vsv'),
      sharedFolders: [{ tag: 'docs', path: f('ro docs') }, { tag: 'rw', path: f('rw'), writable: true }],
    }, { root: run() });
    const serial = serialLogPath('lx9p', { root: run() });
    await waitForFileText(serial, LINUX_GUEST.serial.ready, LINUX_BOOT_MS);
    const text = fs.readFileSync(serial, 'latin1');
    const all = (re: RegExp) => [...text.matchAll(new RegExp(re.source, 'g'))].map((m) => m.slice(1).join(' '));
    assert.deepEqual(all(LINUX_GUEST.serial.share9p), ['docs', 'rw'], `both shares mounted:\n${text}`);
    assert.deepEqual(all(LINUX_GUEST.serial.share), [`docs ${token} (read-only)`, `rw ${token} (writable)`], 'the guest read what the host wrote');
    assert.deepEqual(all(LINUX_GUEST.serial.shareWrite), ['docs refused: Read-only file system', 'rw ok'], 'read-only is enforced by the host, not by the guest\'s mount');
    assert.doesNotMatch(text, LINUX_GUEST.serial.error);
    assert.deepEqual(fs.readdirSync(f('ro docs')), [LINUX_GUEST.shareFile], 'nothing reached the read-only folder');
    assert.deepEqual(fs.readdirSync(f('rw')), [LINUX_GUEST.shareFile], 'the guest removed the file it wrote');
    assert.equal((await stopVm('lx9p', { root: run(), timeoutS: 60 })).exitReason, 'poweroff');
  });

  it('a hostile guest writing into a writable share plants no symbolic link, setuid file or world-writable file in the host folder', async () => {
    fs.mkdirSync(f('rw2'));
    await startVm({
      name: 'lx9p', memoryMiB: 256, disks: [{ path: freshLinuxImage(dir.path, 'linux-9p-2.img', '9p'), mode: 'normal' }],
      diskBus: 'virtio', network: 'none', display: 'none', accel: 'tcg', savedState: f('lx9p.vsv'), guestAgent: true,
      sharedFolders: [{ tag: 'rw', path: f('rw2'), writable: true }],
    }, { root: run() });
    await waitForFileText(serialLogPath('lx9p', { root: run() }), LINUX_GUEST.serial.ready, LINUX_BOOT_MS);
    const agent = await AgentClient.connect(join(vmRunDir('lx9p', run()), AGENT_SOCKET));
    try {
      await agent.waitForAgent(60_000);
      const r = await agent.exec(['sh', '-c', `cd ${LINUX_GUEST.shareRoot}/rw && ln -s /etc/passwd link && echo x > suid && chmod 4777 suid && mkdir open && chmod 0777 open && ls -la`], { timeoutMs: 60_000 });
      assert.equal(r.exitCode, 0, r.stderr.toString());
    } finally {
      agent.close();
    }
    assert.equal(fs.lstatSync(f('rw2', 'link')).isSymbolicLink(), false, 'the guest\'s symbolic link is a link on the host');
    for (const name of ['suid', 'open']) {
      const mode = fs.lstatSync(f('rw2', name)).mode;
      assert.equal(mode & 0o6002, 0, `${name} has mode ${(mode & 0o7777).toString(8)} on the host`);
    }
    assert.equal((await stopVm('lx9p', { root: run(), timeoutS: 60 })).exitReason, 'poweroff');
  });
});
