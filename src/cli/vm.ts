/**
 * `medv vm …`: a thin client of the host service's API (src/host/api.ts, docs/host-api.yaml): start,
 * stop, pause, resume, suspend, inspect, wait for and follow VMs. It loads only the API client: the
 * service (started on demand) reads .vmc files, opens disks and keys, and runs the supervisors.
 */
import { Command, Option } from 'commander';
import * as fs from 'node:fs';
import { basename, extname, resolve } from 'node:path';
import { MedvError, isMedvError } from '../core/errors.js';
import { parseDuration } from '../core/units.js';
import type { HostApi } from '../host/api.js';
import type { VmRunState, VmState } from '../host/rundir.js';
import { addKeyOptions, printJson, printResult } from './common.js';
import { api, driveMap, hostPort, keyFor, positiveInt, vmList, vmPath, vmStart, vmStop, vmSuspend, type Opts } from './vm-actions.js';

const STATES: readonly VmRunState[] = ['starting', 'running', 'paused', 'suspending', 'stopping', 'stopped', 'suspended', 'failed'];
const isTerminal = (s: string) => s === 'stopped' || s === 'suspended' || s === 'failed';

/** The most serial output `vm serial --json` puts in one JSON value. */
const SERIAL_JSON_MAX = 16 << 20;

function render(s: VmState): string {
  const d = s.display;
  const display = d.kind === 'vnc-tcp' ? `vnc-tcp ${d.vncAddress ?? '?'}${d.vncPassword ? `, password ${d.vncPassword}` : ''}` : `${d.kind}${d.vncSocket ? ` ${d.vncSocket}` : ''}`;
  const lines = [
    `name:      ${s.name}`,
    `state:     ${s.state}${s.exitReason && isTerminal(s.state) ? ` (${s.exitReason})` : ''}${s.savedState && s.state === 'suspended' ? `, saved in ${s.savedState}` : ''}`,
    `pid:       supervisor ${s.pid}${s.qemuPid ? `, qemu ${s.qemuPid}` : ''}`,
    `accel:     ${s.accel ?? '-'}`,
    `memory:    ${s.memoryMiB} MiB`,
    `network:   ${s.network}`,
    `display:   ${display}`,
    `key:       ${s.key ?? '-'}`,
    `started:   ${s.startedAt}${s.stoppedAt ? `, stopped ${s.stoppedAt}` : ''}`,
  ];
  for (const disk of s.disks) lines.push(`disk:      ${disk.path}${disk.undo ? ` (writes to ${disk.undo}, ${disk.undoPolicy === 'discard' ? 'discarded at stop' : 'kept'})` : ''}`);
  return `${lines.join('\n')}\n`;
}

/** Follow GET /v1/events (optionally for one VM) and hand each event to `on` until it returns true. */
async function followEvents(host: HostApi, q: { since?: number; vm?: string }, on: (e: Record<string, any>) => boolean | void, ready?: () => void): Promise<void> {
  const params = new URLSearchParams();
  if (q.since !== undefined) params.set('since', String(q.since));
  if (q.vm !== undefined) params.set('vm', q.vm);
  const res = await host.stream(`/v1/events${params.size ? `?${params}` : ''}`);
  ready?.();
  await new Promise<void>((resolveDone, reject) => {
    let partial = '';
    res.on('data', (c: Buffer) => {
      partial += c.toString('utf8');
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        if (!line.trim()) continue;
        try {
          if (on(JSON.parse(line)) === true) { res.destroy(); resolveDone(); return; }
        } catch (e) { res.destroy(); reject(e); return; }
      }
    });
    res.once('end', () => resolveDone());
    res.once('error', reject);
    res.once('close', () => resolveDone());
  });
}

function defaultName(disk: string, o: Opts): string {
  return String(o.name ?? basename(resolve(disk), extname(disk)));
}

export function vmCommand(): Command {
  const vm = new Command('vm').description('run VMs on QEMU, each under a supervisor that outlives the command, through the host service (medv host; started when none runs)');

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
    .addOption(new Option('--display <kind>', 'where the screen goes: none; vnc (a VNC server on a unix socket in the run folder, for tools: vm status shows it); vnc-tcp (VNC on 127.0.0.1 with a generated password, for people: vm status shows address and password); window (a GTK window on $DISPLAY; needs qemu-system-gui)').choices(['none', 'vnc', 'vnc-tcp', 'window']).default('none'))
    .addOption(new Option('--accel <accel>', 'accelerator to try first (default: MEDV_ACCEL, else kvm when usable)').choices(['kvm', 'tcg']))
    .option('--json', 'print the VM state as JSON')
    .addHelpText('after', `\nExamples:\n  medv vm start base.evhd --name test --read-only --json\n  medv vm start work.vhd --memory 512 --network nat\n  medv vm start xp.vmc --display vnc-tcp && medv vm status xp\n  medv vm start xp.vmc --host-drive D=/dev/sr0\n  medv vm stop test`)
    .action((disk: string, o: Opts) => vmStart(disk, o));

  vm.command('stop <name>')
    .description('press the ACPI power button and wait for the guest to power off; force it off after --timeout')
    .option('--timeout <duration>', 'how long to wait before forcing: seconds, or with s, m, h (at most 1h)', (v: string) => parseDuration(v, '--timeout', { max: 3600_000 }), 30_000)
    .option('--force', 'do not ask the guest: quit at once')
    .option('--json', 'print the final VM state as JSON')
    .action((name: string, o: Opts) => vmStop(name, o));

  vm.command('suspend <name>')
    .description('save the running guest to an encrypted .vsv beside its disk (key in .vsv.enc) and stop it; the next start resumes it')
    .option('--json', 'print the final VM state as JSON')
    .action((name: string, o: Opts) => vmSuspend(name, o));

  addKeyOptions(vm.command('discard-state <vmc-or-disk>'))
    .description('drop a suspended VM\'s saved state: remove its .vsv and .vsv.enc and clear the saved-state flag of its disks (or undo disks); the guest then starts as after a power cut. Also for a Virtual PC disk whose flag is set and whose .vsv is gone')
    .option('--name <name>', 'the VM\'s name (default: the file name without extension)')
    .option('--undo', 'the VM ran with --undo: clear the flag of its undo disk')
    .option('--map-drive <letter=folder...>', 'as for vm start, for a .vmc with absolute paths')
    .option('--json', 'print what was removed and cleared as JSON')
    .addHelpText('after', `\nExamples:\n  medv vm discard-state work.vhd\n  medv vm discard-state xp.vmc --map-drive C=/srv/vms`)
    .action(async (disk: string, o: Opts) => {
      const source = resolve(disk);
      if (!fs.existsSync(source)) throw new MedvError('ENOENT', `no such ${extname(disk).toLowerCase() === '.vmc' ? 'file' : 'disk'}: ${disk}`, { file: disk });
      const host = await api();
      const key = await keyFor(host, o);
      const r = await host.call<{ removed: string[]; kept: Array<{ path: string; reason: string }>; cleared: string[] }>('POST', vmPath(defaultName(disk, o), '/discard-state'), {
        source, ...(o.undo ? { undo: true } : {}), ...(o.mapDrive ? { driveMap: driveMap(o.mapDrive as string[]) } : {}), ...(key ? { key } : {}),
      });
      if (o.json) { printJson(r); return; }
      for (const f of r.removed) process.stdout.write(`removed ${f}\n`);
      for (const k of r.kept) process.stdout.write(`kept ${k.path}: ${k.reason}\n`);
      for (const f of r.cleared) process.stdout.write(`cleared the saved-state flag of ${f}\n`);
      if (!r.removed.length && !r.cleared.length && !r.kept.length) process.stdout.write('no saved state to discard\n');
    });

  for (const [verb, text] of [['pause', 'pause the guest\'s CPUs (memory stays)'], ['resume', 'let a paused guest run again (a suspended VM resumes with vm start)']] as const) {
    vm.command(`${verb} <name>`).description(text).option('--json', 'print the VM state as JSON')
      .action(async (name: string, o: Opts) => {
        const state = await (await api()).call<VmState>('POST', vmPath(name, `/${verb}`));
        if (o.json) printJson(state); else process.stdout.write(`VM ${name} ${state.state}\n`);
      });
  }

  vm.command('status <name>')
    .description('state, pids, accelerator, disks and display of a VM (a dead supervisor reads as stopped); with --display vnc-tcp, where VNC listens and its password')
    .option('--json', 'print as JSON (schema: README, "medv vm"; docs/host-api.yaml VmState)')
    .action(async (name: string, o: Opts) => {
      const s = await (await api()).call<VmState>('GET', vmPath(name));
      if (o.json) printJson(s); else process.stdout.write(render(s));
    });

  vm.command('list')
    .description('every VM that has run here, with its state')
    .option('--json', 'print a JSON array of states (VNC passwords left out: vm status shows them)')
    .action((o: Opts) => vmList(o));

  vm.command('wait <name>')
    .description('wait until a VM is in one of the states given (at once when it is already)')
    .requiredOption('--state <states>', `comma-separated: ${STATES.join(', ')}`)
    .option('--timeout <duration>', 'give up after this long (exit 17): seconds, or with s, m, h (default: wait as long as it takes)', (v: string) => parseDuration(v, '--timeout', { max: 366 * 86400_000 }))
    .option('--json', 'print the VM state reached as JSON')
    .addHelpText('after', `\nExamples:\n  medv vm wait build --state stopped,failed --timeout 10m`)
    .action(async (name: string, o: Opts) => {
      const want = String(o.state).split(',').map((s) => s.trim()).filter(Boolean);
      for (const s of want) if (!STATES.includes(s as VmRunState)) throw new MedvError('EINVAL_ARG', `--state ${JSON.stringify(s)}: one of ${STATES.join(', ')}`);
      const host = await api();
      let timer: NodeJS.Timeout | undefined;
      let reached: string | undefined;
      const status = () => host.call<VmState>('GET', vmPath(name));
      const waiting = followEvents(host, { vm: name }, (e) => {
        if (e.type === 'state' && e.vm === name && want.includes(e.state)) { reached = e.state; return true; }
        if (e.type === 'service' && e.what === 'stopping') throw new MedvError('EHYPERVISOR', 'the host service stopped while waiting');
      }, () => undefined);
      // Subscribed first, then asked: a change in between is seen either way.
      const now = await status().catch((e: unknown) => { if (isMedvError(e, 'ENOENT')) return undefined; throw e; });
      if (now && want.includes(now.state)) reached = now.state;
      else {
        const timeout = o.timeout === undefined ? undefined : new Promise<never>((_r, reject) => { timer = setTimeout(() => reject(new MedvError('ETIMEOUT', `VM ${name} did not reach ${want.join(' or ')} within ${Number(o.timeout) / 1000} s`)), Number(o.timeout)); });
        await Promise.race([waiting, ...(timeout ? [timeout] : [])]);
      }
      clearTimeout(timer);
      if (!reached) throw new MedvError('EHYPERVISOR', 'the event stream ended before the VM got there');
      const state = await status();
      if (o.json) printJson(state); else process.stdout.write(`VM ${name} ${reached}\n`);
      process.exit(0); // the event stream would keep the process alive
    });

  vm.command('events')
    .description('follow the host service\'s events: VM state changes, guest serial lines, errors; each with a cursor that only grows (resume with --since)')
    .option('--since <cursor>', 'replay the events after this cursor first (those the service still holds; a "lost" event says what is gone)')
    .option('--vm <name>', 'only this VM\'s events')
    .option('--json', 'one JSON object per line, as the API sends them')
    .addHelpText('after', `\nExamples:\n  medv vm events --vm build --json\n  medv vm events --since 4294967312`)
    .action(async (o: Opts) => {
      const since = o.since === undefined ? undefined : Number(o.since);
      if (since !== undefined && (!Number.isSafeInteger(since) || since < 0)) throw new MedvError('EINVAL_ARG', `--since must be an event cursor, not ${JSON.stringify(o.since)}`);
      await followEvents(await api(), { since, vm: o.vm as string | undefined }, (e) => {
        if (o.json) { process.stdout.write(`${JSON.stringify(e)}\n`); return; }
        const what = e.type === 'serial' ? (e.line ?? `(${e.skipped} bytes skipped)`) : e.type === 'state' ? `${e.state}${e.exitReason ? ` (${e.exitReason})` : ''}`
          : e.type === 'error' ? `${e.code}: ${e.message}` : e.type === 'lost' ? `events ${e.after + 1}..${e.until} are gone: ${e.why}` : e.message ?? e.what ?? '';
        process.stdout.write(`${e.cursor} ${e.time} ${(e.vm ?? e.workspace ?? '-').padEnd(16)} ${e.type.padEnd(7)} ${what}\n`);
      });
    });

  vm.command('serial <name>')
    .description('what the guest wrote to its first serial port (kept after it stops, until the name starts again)')
    .option('--follow', 'keep printing new lines until the VM stops')
    .option('--json', 'print {"name","serial"} (the output as text) instead of the raw bytes; not with --follow')
    .action(async (name: string, o: Opts) => {
      if (o.json && o.follow) throw new MedvError('EINVAL_ARG', '--follow prints the output as it comes: it does not go with --json');
      const host = await api();
      const sofar = (b: Buffer) => {
        if (!o.json) { process.stdout.write(b); return; }
        // The log grows with whatever the guest writes: as one JSON value, at most SERIAL_JSON_MAX.
        if (b.length > SERIAL_JSON_MAX) throw new MedvError('ETOOLARGE', `the serial output of VM ${name} is over ${SERIAL_JSON_MAX >> 20} MiB (read it without --json)`);
        printJson({ name, serial: b.toString('utf8') });
      };
      if (!o.follow) { sofar(await host.bytes('GET', vmPath(name, '/serial'))); return; }
      // Subscribed first, then the log so far; lines that came as events before it arrived are in it.
      let caughtUp = false;
      await followEvents(host, { vm: name }, (e) => {
        if (e.type === 'serial' && e.line !== undefined && caughtUp) process.stdout.write(`${e.line}\n`);
        if (e.type === 'state' && isTerminal(e.state)) return true;
      }, () => {
        void host.bytes('GET', vmPath(name, '/serial')).then((b) => { sofar(b); caughtUp = true; }, () => { caughtUp = true; });
      });
      process.exit(0);
    });

  vm.command('screenshot <name> <file>')
    .description('save the guest\'s screen as a PNG (QMP screendump)')
    .option('--json', 'print {"name","file"}')
    .action(async (name: string, file: string, o: Opts) => {
      const png = await (await api()).bytes('GET', vmPath(name, '/screenshot'));
      const out = resolve(file);
      const { writeFileAtomic } = await import('../core/fsio.js');
      await writeFileAtomic(out, png, { mode: 0o644 });
      printResult(o.json, { name, file: out }, `saved the screen of VM ${name} to ${out}`);
    });

  vm.command('delete <name>')
    .description('forget a VM that does not run: remove its run folder (state, serial and supervisor logs); its disks and saved state are not touched')
    .option('--json', 'print {"removed":NAME} as JSON')
    .action(async (name: string, o: Opts) => {
      const r = await (await api()).call('DELETE', vmPath(name));
      if (o.json) printJson(r); else process.stdout.write(`VM ${name} forgotten\n`);
    });

  return vm;
}
