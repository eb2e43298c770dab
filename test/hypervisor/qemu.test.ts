/**
 * The QEMU driver: qemuArgv (pure) and, against a real qemu-system-x86_64, launch failures,
 * QMP through QemuProcess, and withTcgFallback on the guest KVM cannot emulate.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MedvError } from '../../src/core/errors.js';
import {
  blockdevOptions, isInternalError, kvmStatus, QemuError, QemuProcess, qemuArgv, withTcgFallback, type LaunchSpec,
} from '../../src/hypervisor/qemu.js';
import { QmpError } from '../../src/hypervisor/qmp.js';
import { INTERNAL_ERROR_GUEST } from '../../src/hypervisor/testguest.js';
import { accelerators } from '../helpers/qemu.js';

const base: LaunchSpec = { accel: 'tcg', drives: [], qmpSocket: '/run/x/qmp.sock' };

/** The value after each occurrence of `flag`. */
function values(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
}

describe('hypervisor/qemu: qemuArgv', () => {
  it('a minimal machine: binary, accel, memory, no defaults, COM1 on stdio, QMP on the socket', () => {
    const argv = qemuArgv(base);
    assert.equal(argv[0], 'qemu-system-x86_64');
    assert.deepEqual(values(argv, '-accel'), ['tcg']);
    assert.deepEqual(values(argv, '-m'), ['32']);
    assert.deepEqual(values(argv, '-M'), ['pc']);
    for (const flag of ['-nodefaults', '-no-user-config', '-no-reboot']) assert.ok(argv.includes(flag), flag);
    assert.deepEqual(values(argv, '-display'), ['none']);
    assert.deepEqual(values(argv, '-chardev'), ['stdio,id=com1,signal=off', 'socket,id=qmp,path=/run/x/qmp.sock,server=on,wait=off']);
    assert.deepEqual(values(argv, '-serial'), ['chardev:com1']);
    assert.deepEqual(values(argv, '-mon'), ['chardev=qmp,mode=control']);
    assert.deepEqual(values(argv, '-blockdev'), []);
  });

  it('name, memory, binary and extra arguments', () => {
    const argv = qemuArgv({ ...base, accel: 'kvm', name: 'vm1', memoryMiB: 512, binary: '/opt/qemu', extraArgs: ['-S'] });
    assert.equal(argv[0], '/opt/qemu');
    assert.deepEqual(values(argv, '-name'), ['vm1']);
    assert.deepEqual(values(argv, '-m'), ['512']);
    assert.deepEqual(values(argv, '-accel'), ['kvm']);
    assert.equal(argv[argv.length - 1], '-S');
  });

  it('an NBD unix-socket drive on IDE boots first; the URI becomes structured -blockdev JSON', () => {
    const argv = qemuArgv({ ...base, drives: [{ source: 'nbd+unix:///?socket=/tmp/a,b.sock' }] });
    const [bd] = values(argv, '-blockdev');
    assert.deepEqual(JSON.parse(bd), {
      driver: 'raw', 'node-name': 'disk0', 'read-only': false,
      file: { driver: 'nbd', server: { type: 'unix', path: '/tmp/a,b.sock' }, 'read-only': false },
    });
    assert.deepEqual(values(argv, '-device'), ['ide-hd,drive=disk0,bus=ide.0,unit=0,bootindex=1']);
  });

  it('socket paths never change the command line: NBD sockets as JSON strings, commas doubled in option syntax', () => {
    const odd = '/run/a+b%41#c,server=off/x';
    const argv = qemuArgv({ ...base, qmpSocket: `${odd}/qmp.sock`, drives: [{ source: { nbd: { socket: `${odd}/disk0.sock` } } }], display: { kind: 'vnc', socket: `${odd}/vnc.sock` } });
    assert.deepEqual(JSON.parse(values(argv, '-blockdev')[0]).file, { driver: 'nbd', server: { type: 'unix', path: `${odd}/disk0.sock` }, 'read-only': false });
    assert.ok(values(argv, '-chardev').includes('socket,id=qmp,path=/run/a+b%41#c,,server=off/x/qmp.sock,server=on,wait=off'));
    assert.deepEqual(values(argv, '-vnc'), ['unix:/run/a+b%41#c,,server=off/x/vnc.sock']);
    // A URI keeps '+' as '+' (percent-decoding only).
    assert.deepEqual((blockdevOptions({ source: 'nbd+unix:///?socket=/a+b%23c.sock' }, 'n').file as { server: unknown }).server, { type: 'unix', path: '/a+b#c.sock' });
  });

  it('network stream: the frames on QEMU\'s fd 4 (passt behind it), never QEMU\'s user network', () => {
    const argv = qemuArgv({ ...base, network: { kind: 'stream', model: 'virtio', mac: '00:03:ff:1a:2b:3c' } });
    assert.deepEqual(values(argv, '-netdev'), ['stream,id=net0,server=off,addr.type=fd,addr.str=4']);
    assert.deepEqual(values(argv, '-device'), ['virtio-net-pci,netdev=net0,mac=00:03:ff:1a:2b:3c']);
  });

  it('NBD export names and TCP servers', () => {
    assert.deepEqual(blockdevOptions({ source: 'nbd+unix:///disk%201?socket=/s' }, 'n').file,
      { driver: 'nbd', server: { type: 'unix', path: '/s' }, export: 'disk 1', 'read-only': false });
    assert.deepEqual(blockdevOptions({ source: 'nbd://host.example:10810/x' }, 'n').file,
      { driver: 'nbd', server: { type: 'inet', host: 'host.example', port: '10810' }, export: 'x', 'read-only': false });
    assert.deepEqual((blockdevOptions({ source: 'nbd://h' }, 'n').file as { server: unknown }).server, { type: 'inet', host: 'h', port: '10809' });
  });

  it('files (absolute path), vpc format, IDE units, read-only drives on virtio', () => {
    const argv = qemuArgv({
      ...base,
      drives: [
        { source: 'rel/a.vhd', format: 'vpc' },
        { source: '/b.img' },
        { source: '/c.img' },
        { source: '/d.img', readOnly: true },
      ],
    });
    const bds = values(argv, '-blockdev').map((j) => JSON.parse(j));
    assert.equal(bds[0].driver, 'vpc');
    assert.equal(bds[0].file.filename, join(process.cwd(), 'rel/a.vhd'));
    assert.deepEqual(bds[3], { driver: 'raw', 'node-name': 'disk3', 'read-only': true, file: { driver: 'file', filename: '/d.img', 'read-only': true } });
    assert.deepEqual(values(argv, '-device'), [
      'ide-hd,drive=disk0,bus=ide.0,unit=0,bootindex=1',
      'ide-hd,drive=disk1,bus=ide.0,unit=1',
      'ide-hd,drive=disk2,bus=ide.1,unit=0',
      'virtio-blk-pci,drive=disk3',
    ]);
  });

  it('refuses bad specs with EINVAL_ARG', () => {
    const bad: Array<Partial<LaunchSpec>> = [
      { accel: 'xen' as never },
      { memoryMiB: 0 },
      { memoryMiB: 1.5 },
      { drives: [{ source: '/a', readOnly: true, iface: 'ide' }] },
      { drives: [{ source: '/a', iface: 'scsi' as never }] },
      { drives: [{ source: 'nbd+unix:///' }] },
      { drives: Array.from({ length: 5 }, () => ({ source: '/a' })) },
    ];
    for (const b of bad) {
      assert.throws(() => qemuArgv({ ...base, ...b }), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG', JSON.stringify(b));
    }
  });
});

describe('hypervisor/qemu: QemuProcess with real QEMU', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'medv-qemu-test-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a QEMU that cannot start is a QemuError of kind start, with its stderr', async () => {
    await assert.rejects(QemuProcess.launch({ accel: 'tcg', drives: [{ source: join(dir, 'missing.img') }] }), (e: unknown) => {
      assert.ok(e instanceof QemuError);
      assert.equal(e.code, 'EHYPERVISOR');
      assert.equal(e.kind, 'start');
      assert.match(e.message, /missing\.img/);
      return true;
    });
  });

  it('QMP: commands, errors as QmpError, events; kill removes the run folder', async () => {
    const vm = await QemuProcess.launch({ accel: 'tcg', drives: [] });
    try {
      assert.equal(await vm.runState(), 'running');
      await assert.rejects(vm.execute('no-such-command'), (e: unknown) => {
        assert.ok(e instanceof QmpError);
        assert.equal(e.code, 'EHYPERVISOR');
        assert.equal(e.errorClass, 'CommandNotFound');
        return true;
      });
      const stopped = vm.qmp.waitEvent('STOP', 5000);
      await vm.execute('stop');
      assert.equal((await stopped).event, 'STOP');
      assert.equal(await vm.runState(), 'paused');
      assert.ok(vm.events().some((e) => e.event === 'STOP'));
      await assert.rejects(vm.waitExit(200), (e: unknown) => e instanceof QemuError && e.kind === 'timeout' && e.code === 'ETIMEOUT');
    } finally {
      await vm.kill();
    }
    assert.ok(vm.exitStatus);
    assert.ok(!existsSync(vm.spec.qmpSocket));
    await vm.kill(); // idempotent
    await assert.rejects(vm.execute('query-status'), (e: unknown) => e instanceof MedvError && e.code === 'EHYPERVISOR');
  });

  it('QEMU exiting while a wait is pending is a QemuError of kind exited', async () => {
    const vm = await QemuProcess.launch({ accel: 'tcg', drives: [] });
    try {
      const wait = vm.waitForSerial(/never/, 10_000);
      await vm.execute('quit').catch(() => undefined);
      await assert.rejects(wait, (e: unknown) => e instanceof QemuError && e.kind === 'exited' && e.code === 'EHYPERVISOR');
      assert.equal(await vm.waitExit(5000), 0);
      await assert.rejects(vm.waitForSerial(/never/, 10_000), (e: unknown) => e instanceof QemuError && e.kind === 'exited');
    } finally {
      await vm.kill();
    }
  });

  it('withTcgFallback: the guest KVM cannot emulate fails under KVM and runs under TCG', async function () {
    if (!accelerators().includes('kvm')) this.skip();
    const image = join(dir, 'internal-error.img');
    copyFileSync(INTERNAL_ERROR_GUEST.image, image);
    const tried: string[] = [];
    let fallbackReason: unknown;
    const r = await withTcgFallback('kvm', async (accel) => {
      tried.push(accel);
      const vm = await QemuProcess.launch({ accel, drives: [{ source: image }] });
      try {
        return (await vm.waitForSerial(INTERNAL_ERROR_GUEST.serial.ok, 30_000))[0];
      } finally {
        await vm.kill();
      }
    }, (e) => { fallbackReason = e; });
    assert.deepEqual(tried, ['kvm', 'tcg']);
    assert.equal(r.accel, 'tcg');
    assert.match(r.value, INTERNAL_ERROR_GUEST.serial.ok);
    assert.ok(isInternalError(fallbackReason));
    assert.equal((fallbackReason as QemuError).accel, 'kvm');
  });

  it('withTcgFallback does not retry other failures or under TCG', async () => {
    const boom = new MedvError('EIO', 'boom');
    let calls = 0;
    await assert.rejects(withTcgFallback('kvm', async () => { calls++; throw boom; }), (e) => e === boom);
    const internal = new QemuError('internal-error', 'stuck', 'tcg');
    await assert.rejects(withTcgFallback('tcg', async () => { calls++; throw internal; }), (e) => e === internal);
    assert.equal(calls, 2);
  });

  it('kvmStatus says why KVM is or is not usable', () => {
    const s = kvmStatus();
    assert.equal(typeof s.available, 'boolean');
    if (!s.available) assert.ok(s.reason);
  });
});
