/** `medv vm …`: start, stop, pause, resume, inspect and list VMs; thin over src/host. */
import { Command, Option } from 'commander';
import * as fs from 'node:fs';
import { basename, dirname, extname, resolve } from 'node:path';
import { MedvError, isMedvError } from '../core/errors.js';
import type { KekSource } from '../crypto/index.js';
import { discardVmState, listVms, pauseVm, resumeVm, screenshotVm, serialLogPath, startVm, stopVm, suspendVm, vmStatus } from '../host/client.js';
import { isTerminal, type VmState } from '../host/rundir.js';
import type { VmConfig } from '../host/config.js';
import { parseDuration } from '../core/units.js';
import { addKeyOptions, kekFrom, printJson, type KeyOptions } from './common.js';

type Opts = KeyOptions & Record<string, unknown>;

function positiveInt(what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n <= 0) throw new MedvError('EINVAL_ARG', `${what} must be a positive integer, not ${JSON.stringify(v)}`);
    return n;
  };
}

/** The KEK when one is configured; undefined when none is and no disk needs one. */
function optionalKek(o: KeyOptions, disks: string[]): KekSource | undefined {
  try {
    return kekFrom(o)();
  } catch (e) {
    if (isMedvError(e, 'ENOKEY') && !disks.some((d) => extname(d).toLowerCase() === '.evhd')) return undefined;
    throw e;
  }
}

function hostPort(v: string, previous: number[] | undefined): number[] {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1 || n > 65535) throw new MedvError('EINVAL_ARG', `--allow-host-port must be a port number 1-65535, not ${JSON.stringify(v)}`);
  return [...(previous ?? []), n];
}

/** `--map-drive C=/folder` or `--host-drive D=/dev/sr0` values, by upper-case letter. */
function driveMap(specs: string[] | undefined, option = '--map-drive', example = '/absolute/folder'): Record<string, string> | undefined {
  if (!specs?.length) return undefined;
  const out: Record<string, string> = {};
  for (const s of specs) {
    const m = /^([A-Za-z])=(\/.*)$/.exec(s);
    if (!m) throw new MedvError('EINVAL_ARG', `${option} ${JSON.stringify(s)}: use LETTER=${example}`);
    out[m[1].toUpperCase()] = m[2];
  }
  return out;
}

function render(s: VmState): string {
  const lines = [
    `name:      ${s.name}`,
    `state:     ${s.state}${s.exitReason && isTerminal(s.state) ? ` (${s.exitReason})` : ''}${s.savedState && s.state === 'suspended' ? `, saved in ${s.savedState}` : ''}`,
    `pid:       supervisor ${s.pid}${s.qemuPid ? `, qemu ${s.qemuPid}` : ''}`,
    `accel:     ${s.accel ?? '-'}`,
    `memory:    ${s.memoryMiB} MiB`,
    `network:   ${s.network}`,
    `display:   ${s.display.kind}${s.display.vncSocket ? ` ${s.display.vncSocket}` : ''}`,
    `started:   ${s.startedAt}${s.stoppedAt ? `, stopped ${s.stoppedAt}` : ''}`,
  ];
  for (const d of s.disks) lines.push(`disk:      ${d.path}${d.undo ? ` (writes to ${d.undo}, ${d.undoPolicy === 'discard' ? 'discarded at stop' : 'kept'})` : ''}`);
  return `${lines.join('\n')}\n`;
}

/** The VM a `.vmc` or a disk describes, as `vm start` and `vm discard-state` read it. */
async function configFrom(disk: string, o: Opts, onWarning?: (message: string) => void): Promise<VmConfig> {
  const path = resolve(disk);
  if (!fs.existsSync(path)) throw new MedvError('ENOENT', `no such ${extname(disk).toLowerCase() === '.vmc' ? 'file' : 'disk'}: ${disk}`, { file: disk });
  const display = (o.display ?? 'none') as 'none' | 'vnc' | 'window';
  const accel = o.accel as 'kvm' | 'tcg' | undefined;
  let config: VmConfig;
  if (extname(path).toLowerCase() === '.vmc') {
    const { vmConfigFromVmc } = await import('../host/vmc.js'); // the XML parser only for a .vmc
    config = vmConfigFromVmc(path, { name: o.name as string | undefined, readOnly: Boolean(o.readOnly), undo: Boolean(o.undo), display, accel, driveMap: driveMap(o.mapDrive as string[] | undefined), hostDrives: driveMap(o.hostDrive as string[] | undefined, '--host-drive', '/dev/sr0'), onWarning });
    if (o.memory !== undefined) config.memoryMiB = Number(o.memory);
    if (o.network !== undefined) config.network = o.network as 'none' | 'nat';
    if (o.mac !== undefined) config.mac = String(o.mac);
  } else {
    config = {
      name: String(o.name ?? basename(path, extname(path))),
      memoryMiB: o.memory === undefined ? 128 : Number(o.memory),
      disks: [{ path, mode: o.readOnly ? 'test' : o.undo ? 'undo' : 'normal' }],
      network: (o.network as 'none' | 'nat' | undefined) ?? 'none',
      mac: o.mac as string | undefined,
      display,
      accel,
      // Named after the whole file name: x.vhd and x.evhd in one folder are two VMs, with two saved states.
      savedState: `${path}.vsv`,
    };
  }
  if (o.allowHostPort !== undefined) config.allowHostPorts = o.allowHostPort as number[];
  if (o.nic !== undefined) config.nicModel = o.nic as 'e1000' | 'virtio';
  if (o.diskBus !== undefined) config.diskBus = o.diskBus as 'ide' | 'virtio';
  return config;
}

export function vmCommand(): Command {
  const vm = new Command('vm').description('run VMs on QEMU under a per-VM supervisor that outlives this command (KVM when usable, else TCG)');

  addKeyOptions(vm.command('start <vmc-or-disk>'))
    .description('start a VM from a Virtual PC .vmc (with ImageState.xml beside it, if any) or from a disk image (raw, .vhd, .evhd); it keeps running after this command exits, and a VM with a saved state (.vsv) resumes from it')
    .option('--name <name>', 'VM name (default: the file name without extension)')
    .option('--memory <mib>', 'guest RAM in MiB (default: the .vmc\'s, else 128)', positiveInt('--memory'))
    .option('--read-only', 'the console\'s test mode: guest writes go to a throw-away undo disk in Test/ beside the image')
    .option('--undo', 'Virtual PC undo disks: guest writes go to <image>.undo.vhd|evhd, kept until `medv disk undo merge|discard`')
    .addOption(new Option('--network <kind>', 'guest network (default: the .vmc\'s, else none)').choices(['none', 'nat']))
    .option('--map-drive <letter=folder...>', 'map a Windows drive letter of the .vmc\'s absolute paths to a host folder (C=/srv/vms); unmapped drives are refused')
    .option('--host-drive <letter=device...>', 'let the .vmc\'s CD/DVD bound to host drive LETTER (Virtual PC\'s "use physical drive") use this optical drive (D=/dev/sr0); without it, or with no disc in it, the guest gets an empty CD/DVD drive and a warning')
    .option('--mac <mac>', 'MAC address of the NIC (with --network nat)')
    .option('--allow-host-port <port...>', 'with --network nat: let the guest reach this TCP/UDP port of the host\'s loopback (127.0.0.1) at its gateway 10.0.2.2; by default it reaches none', hostPort)
    .addOption(new Option('--nic <model>', 'NIC model: e1000 (most guests have a driver) or virtio').choices(['e1000', 'virtio']))
    .addOption(new Option('--disk-bus <bus>', 'bus of the hard disks: ide (as Virtual PC) or virtio (faster, needs guest drivers)').choices(['ide', 'virtio']))
    .addOption(new Option('--display <kind>', 'where the screen goes: none, vnc (a VNC server on a unix socket in the run folder, shown by `vm status`), window (a GTK window on $DISPLAY; needs qemu-system-gui)').choices(['none', 'vnc', 'window']).default('none'))
    .addOption(new Option('--accel <accel>', 'accelerator to try first (default: kvm when usable)').choices(['kvm', 'tcg']))
    .option('--json', 'print the VM state as JSON')
    .addHelpText('after', '\nExamples:\n  medv vm start base.evhd --name test --read-only --json\n  medv vm start work.vhd --memory 512 --network nat\n  medv vm start xp.vmc --host-drive D=/dev/sr0\n  medv vm stop test')
    .action(async (disk: string, o: Opts) => {
      if (o.readOnly && o.undo) throw new MedvError('EINVAL_ARG', '--read-only and --undo exclude each other');
      if (o.display === 'window' && !process.env.DISPLAY) throw new MedvError('EINVAL_ARG', '--display window needs an X display: $DISPLAY is not set (use --display vnc on a headless host)');
      const config = await configFrom(disk, o, (m) => process.stderr.write(`medv: warning: ${m}\n`));
      if (config.allowHostPorts?.length && config.network !== 'nat') throw new MedvError('EINVAL_ARG', '--allow-host-port needs --network nat (or a .vmc with a network adapter)');
      const kek = optionalKek(o, config.disks.map((d) => d.path));
      if (!kek && config.disks.some((d) => d.mode !== 'test' && d.mode !== 'cdrom')) {
        process.stderr.write(`medv: warning: no passphrase or host key: \`medv vm suspend ${config.name}\` will be refused (a saved state is always encrypted); give one at start (MEDV_PASSPHRASE, --passphrase-file or --host-key) to be able to suspend\n`);
      }
      const state = await startVm(config, { kek });
      if (o.json) printJson(state);
      else process.stdout.write(`${state.resumed ? 'resumed' : 'started'} VM ${state.name} (${state.accel}, supervisor pid ${state.pid}); stop it with: medv vm stop ${state.name}\n`);
    });

  vm.command('stop <name>')
    .description('press the ACPI power button and wait for the guest to power off; force it off after --timeout')
    .option('--timeout <duration>', 'how long to wait before forcing: seconds, or with s, m, h (at most 1h)', (v: string) => parseDuration(v, '--timeout', { max: 3600_000 }), 30_000)
    .option('--force', 'do not ask the guest: quit at once')
    .option('--json', 'print the final VM state as JSON')
    .action(async (name: string, o: Opts) => {
      const state = await stopVm(name, { timeoutS: Number(o.timeout) / 1000, force: Boolean(o.force) });
      if (o.json) printJson(state);
      else process.stdout.write(`VM ${name} stopped (${state.exitReason ?? 'unknown'})\n`);
    });

  vm.command('suspend <name>')
    .description('save the running guest to an encrypted .vsv beside its disk (key in .vsv.enc) and stop it; the next start resumes it')
    .option('--json', 'print the final VM state as JSON')
    .action(async (name: string, o: Opts) => {
      const state = await suspendVm(name);
      if (o.json) printJson(state);
      else process.stdout.write(`VM ${name} suspended to ${state.savedState}\n`);
    });

  addKeyOptions(vm.command('discard-state <vmc-or-disk>'))
    .description('drop a suspended VM\'s saved state: remove its .vsv and .vsv.enc and clear the saved-state flag of its disks (or undo disks); the guest then starts as after a power cut. Also for a Virtual PC disk whose flag is set and whose .vsv is gone')
    .option('--undo', 'the VM ran with --undo: clear the flag of its undo disk')
    .option('--map-drive <letter=folder...>', 'as for vm start, for a .vmc with absolute paths')
    .option('--json', 'print what was removed and cleared as JSON')
    .addHelpText('after', '\nExamples:\n  medv vm discard-state work.vhd\n  medv vm discard-state xp.vmc --map-drive C=/srv/vms')
    .action(async (disk: string, o: Opts) => {
      const config = await configFrom(disk, o);
      const r = await discardVmState(config, { kek: optionalKek(o, config.disks.map((d) => d.undoPath ?? d.path)) });
      if (o.json) { printJson(r); return; }
      for (const f of r.removed) process.stdout.write(`removed ${f}\n`);
      for (const k of r.kept) process.stdout.write(`kept ${k.path}: ${k.reason}\n`);
      for (const f of r.cleared) process.stdout.write(`cleared the saved-state flag of ${f}\n`);
      if (!r.removed.length && !r.cleared.length && !r.kept.length) process.stdout.write('no saved state to discard\n');
    });

  for (const [verb, fn, text] of [['pause', pauseVm, 'pause the guest\'s CPUs (memory stays)'], ['resume', resumeVm, 'let a paused guest run again']] as const) {
    vm.command(`${verb} <name>`).description(text).option('--json', 'print the VM state as JSON')
      .action(async (name: string, o: Opts) => {
        const state = await fn(name);
        if (o.json) printJson(state); else process.stdout.write(`VM ${name} ${state.state}\n`);
      });
  }

  vm.command('status <name>')
    .description('state, pids, accelerator, disks and display of a VM (a dead supervisor reads as stopped)')
    .option('--json', 'print as JSON (schema: README, "medv vm")')
    .action((name: string, o: Opts) => {
      const s = vmStatus(name);
      if (o.json) printJson(s); else process.stdout.write(render(s));
    });

  vm.command('list')
    .description('every VM that has run here, with its state')
    .option('--json', 'print a JSON array of states')
    .action((o: Opts) => {
      const all = listVms();
      if (o.json) { printJson(all); return; }
      if (all.length === 0) { process.stdout.write('no VMs\n'); return; }
      for (const s of all) process.stdout.write(`${s.name.padEnd(20)} ${s.state.padEnd(9)} ${s.accel ?? '-'}  ${s.disks.map((d) => d.path).join(', ')}\n`);
    });

  vm.command('serial <name>')
    .description('what the guest wrote to its first serial port (kept after it stops, until the name starts again)')
    .option('--follow', 'keep printing new output until the VM stops')
    .action(async (name: string, o: Opts) => {
      const file = serialLogPath(name);
      let pos = 0;
      const drain = () => {
        const fd = fs.openSync(file, 'r');
        try {
          const buf = Buffer.alloc(64 * 1024);
          let n: number;
          while ((n = fs.readSync(fd, buf, 0, buf.length, pos)) > 0) { process.stdout.write(buf.subarray(0, n)); pos += n; }
        } finally { fs.closeSync(fd); }
      };
      drain();
      if (!o.follow) return;
      // The run folder, not the log: a VM can stop without printing anything more (state.json changes).
      await new Promise<void>((res) => {
        const watcher = fs.watch(dirname(file), () => {
          drain();
          if (isTerminal(vmStatus(name).state)) { watcher.close(); res(); }
        });
        if (isTerminal(vmStatus(name).state)) { watcher.close(); res(); }
      });
    });

  vm.command('screenshot <name> <file>')
    .description('save the guest\'s screen as a PNG (QMP screendump)')
    .action(async (name: string, file: string) => { await screenshotVm(name, resolve(file)); });

  return vm;
}
