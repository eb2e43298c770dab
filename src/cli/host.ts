/** `medv host …`: the resident host service (src/host/service): run it, ask it how it is, stop it, unlock and lock its key cache. */
import { Command, Option } from 'commander';
import { MedvError } from '../core/errors.js';
import { parseDuration } from '../core/units.js';
import { addKeyOptions, printJson, raises, type KeyOptions } from './common.js';

type Opts = KeyOptions & Record<string, unknown>;

const api = async (start: boolean) => (await import('../host/api.js')).hostApi({ start });

const EXIT = `
Exit status: 0 done; 2 bad option; 3 no host service runs (status, stop, lock); 4 no passphrase
given (unlock); 9 another host service holds this run root.`;

function count(what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new MedvError('EINVAL_ARG', `${what} must be a whole number, not ${JSON.stringify(v)}`);
    return n;
  };
}

/** 0 or 1 (--spare). */
function spare(what: string) {
  return (v: string): number => {
    const n = count(what)(v);
    if (n > 1) throw new MedvError('EINVAL_ARG', `${what} is 0 or 1, not ${n}`);
    return n;
  };
}

/** The service's settings: the option, else MEDV_HOST_POOL / MEDV_HOST_SPARE / MEDV_HOST_POOL_MEMORY / MEDV_HOST_IDLE, else the defaults. */
function setting<T>(option: T | undefined, env: string, parse: (v: string) => T): T | undefined {
  if (option !== undefined) return option;
  const v = process.env[env];
  return v === undefined || v === '' ? undefined : parse(v);
}

/** The passphrase's bytes: --passphrase-file, MEDV_PASSPHRASE, else asked on the terminal (not echoed). */
async function passphraseBytes(o: KeyOptions): Promise<Buffer> {
  if (o.passphraseFile !== undefined || process.env.MEDV_PASSPHRASE) {
    const { kekFromEnvironment } = await import('../crypto/kekenv.js');
    const k = kekFromEnvironment({ passphraseFile: o.passphraseFile });
    if (k.kind !== 'passphrase') throw new MedvError('ENOKEY', 'a passphrase is needed');
    return Buffer.from(k.passphrase as string, 'utf8');
  }
  if (!process.stdin.isTTY) throw new MedvError('ENOKEY', 'no passphrase: set MEDV_PASSPHRASE, use --passphrase-file, or run on a terminal');
  process.stderr.write('Passphrase: ');
  const bytes: number[] = [];
  process.stdin.setRawMode(true);
  try {
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        for (const b of d) {
          if (b === 0x0d || b === 0x0a) { process.stdin.off('data', onData); resolve(); return; }
          if (b === 0x03) { process.stdin.off('data', onData); reject(new MedvError('ENOKEY', 'interrupted')); return; }
          if (b === 0x7f) bytes.pop(); else bytes.push(b);
        }
        d.fill(0);
      };
      process.stdin.on('data', onData);
    });
  } finally {
    process.stdin.setRawMode(false);
    process.stdin.pause();
    process.stderr.write('\n');
  }
  const out = Buffer.from(bytes);
  bytes.fill(0);
  return out;
}

export function hostCommand(): Command {
  const host = new Command('host')
    .description('the host service: one per user (and one for root) on <run root>/host.sock; any medv vm command starts it when none runs; it keeps a warm pool of QEMUs, serves the API in docs/host-api.yaml and exits when idle')
    .option('--pool <n>', 'QEMUs kept started ahead for the machine shapes in use (default 1, MEDV_HOST_POOL; 0: none)', count('--pool'))
    .option('--spare <n>', 'supervisors kept started ahead without a QEMU, for a start no pooled QEMU fits (with --pool 0: every start); 1 (default, MEDV_HOST_SPARE) or 0: none', spare('--spare'))
    .option('--pool-memory <mib>', 'memory the pool and the spare may hold, MiB (default a quarter of the RAM, at most 2048; MEDV_HOST_POOL_MEMORY)', count('--pool-memory'))
    .option('--idle <duration>', 'exit after this long with no VM running and no request (default 5m; MEDV_HOST_IDLE)', (v: string) => parseDuration(v, '--idle', { min: 1000 }))
    .addOption(new Option('--ready-fd <fd>', 'say "ready" on this descriptor once listening (for the command that starts it)').argParser(count('--ready-fd')).hideHelp())
    .addHelpText('after', `
Runs the service in the foreground (systemd: contrib/medv-host.socket and .service). VMs run under
their own supervisors and outlive it: a service that stops or dies loses no VM, the next one finds
them in the run folders. A start takes a pooled QEMU of its machine shape when there is one, else
the spare supervisor (its Node start-up and modules done, no QEMU), else starts a supervisor;
each is replaced after the start. --pool 0 --spare 0: every start spawns its supervisor.
${EXIT}

Examples:
  medv host --pool 2 --idle 30m
  medv host status --json
  medv host unlock --for 10m
  medv host stop`)
    .action(async (o: Opts) => {
      const [{ runService }, ws] = await Promise.all([import('../host/service/service.js'), import('../workspace/index.js')]);
      const service = await runService({
        pool: setting(o.pool as number | undefined, 'MEDV_HOST_POOL', count('MEDV_HOST_POOL')),
        spare: setting(o.spare as number | undefined, 'MEDV_HOST_SPARE', spare('MEDV_HOST_SPARE')),
        poolMemoryMiB: setting(o.poolMemory as number | undefined, 'MEDV_HOST_POOL_MEMORY', count('MEDV_HOST_POOL_MEMORY')),
        idleMs: setting(o.idle as number | undefined, 'MEDV_HOST_IDLE', (v) => parseDuration(v, 'MEDV_HOST_IDLE', { min: 1000 })),
        readyFd: o.readyFd as number | undefined,
        workspaces: {
          start: (name, b, ctx) => ws.startWorkspace(name, { ...b, runRoot: ctx.root, startVm: ctx.startVm, onInfo: ctx.info, onWarning: (m) => ctx.info(`warning: ${m}`) }),
          stop: (name, b, ctx) => ws.stopWorkspace(name, { ...b, runRoot: ctx.root }),
          status: (name, b, ctx) => ws.workspaceStatus(name, { ...b, runRoot: ctx.root }),
          list: (b, ctx) => ws.listWorkspaces({ ...b, runRoot: ctx.root }),
        },
      });
      if (!service) {
        // Another service holds the run root (two commands started one at once): it serves.
        if (o.readyFd === undefined) throw new MedvError('EBUSY', 'a host service already runs for this run root (medv host status)');
        return;
      }
      process.on('SIGTERM', () => service.stop('SIGTERM'));
      process.on('SIGINT', () => service.stop('SIGINT'));
      process.on('SIGHUP', () => undefined);
      await service.done;
      process.exit(0);
    });

  raises(host.command('status'), ['ENOENT'], { ENOENT: 'no host service runs here' })
    .description('is a host service running here, and what it holds: pid, pool members, key cache, VMs, connections')
    .option('--json', 'print the status as JSON')
    .action(async (o: Opts) => {
      const s = await (await api(false)).call<Record<string, any>>('GET', '/v1/host');
      if (o.json) { printJson(s); return; }
      const members = (s.pool.members as Array<{ shape: { memoryMiB: number; incoming: boolean }; residentMiB: number }>)
        .map((m) => `${m.shape.memoryMiB} MiB${m.shape.incoming ? ' (resume)' : ''}, holding ${m.residentMiB} MiB`).join('; ');
      process.stdout.write(`${[
        `host service pid ${s.pid} on ${s.socket}${s.socketActivated ? ' (socket-activated)' : ''}, since ${s.startedAt}`,
        `VMs:   ${s.vms.running} running of ${s.vms.total}`,
        `pool:  ${s.pool.members.length} of ${s.pool.size}${members ? `: ${members}` : ''}`,
        `spare: ${s.pool.spare.supervisorPid ? `supervisor pid ${s.pool.spare.supervisorPid}${s.pool.spare.ready ? '' : ' (loading)'}, holding ${s.pool.spare.residentMiB} MiB` : s.pool.spare.size ? 'none now' : 'off'}`,
        `keys:  ${s.keys.unlocked ? `unlocked until ${s.keys.expiresAt}` : 'locked'}`,
        `idle exit after ${s.idleSeconds} s without a VM; ${s.connections} connection(s), ${s.eventStreams} event stream(s)`,
      ].join('\n')}\n`);
    });

  raises(host.command('stop'), ['ENOENT'], { ENOENT: 'no host service runs here' })
    .description('stop the host service (VMs keep running under their supervisors; the next medv vm command starts a new service)')
    .option('--json', 'print {"stopping":true} as JSON')
    .action(async (o: Opts) => {
      const r = await (await api(false)).call('POST', '/v1/host/stop');
      if (o.json) printJson(r); else process.stdout.write('host service stopping (VMs keep running)\n');
    });

  raises(addKeyOptions(host.command('unlock')), ['ENOKEY', 'EINVAL_ARG'], { ENOKEY: 'no passphrase given' })
    .description('keep the passphrase in the service (secure memory, never written) for a while, so starts and resumes of encrypted VMs need no passphrase and pay Argon2id once')
    .option('--for <duration>', 'how long (default 10m, at most 24h)', '10m')
    .option('--json', 'print {"unlocked":true,"expiresAt":…} as JSON')
    .addHelpText('after', `
The passphrase comes from --passphrase-file, MEDV_PASSPHRASE, or the terminal (not echoed).`)
    .action(async (o: Opts) => {
      const ms = parseDuration(String(o.for), '--for', { max: 24 * 3600_000 });
      const bytes = await passphraseBytes(o);
      try {
        const r = await (await api(true)).call<{ unlocked: boolean; expiresAt: string }>('POST', `/v1/keys/unlock?for=${Math.round(ms / 1000)}`, undefined, { bytes, type: 'application/octet-stream' });
        if (o.json) printJson(r); else process.stdout.write(`host service unlocked until ${r.expiresAt}\n`);
      } finally {
        bytes.fill(0);
      }
    });

  raises(host.command('lock'), ['ENOENT'], { ENOENT: 'no host service runs here' })
    .description('drop the cached passphrase and every key derived from it (VMs already running keep theirs)')
    .option('--json', 'print {"unlocked":false} as JSON')
    .action(async (o: Opts) => {
      const r = await (await api(false)).call('POST', '/v1/keys/lock');
      if (o.json) printJson(r); else process.stdout.write('host service locked\n');
    });
  return host;
}
