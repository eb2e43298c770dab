/**
 * What `medv vm start|stop|suspend|list` do, without commander: the same code runs from
 * src/cli/vm.ts (commander parsed the command line) and from src/cli/vm-thin.ts (the short path
 * of bin/medv for the plain forms of these verbs, which loads neither commander nor the other
 * nouns: a VM start's or resume's time includes this command's start-up).
 */
import * as fs from 'node:fs';
import { extname, resolve } from 'node:path';
import { MedvError, isMedvError } from '../core/errors.js';
import type { HostApi } from '../host/api.js';
import type { VmState } from '../host/rundir.js';
import { printJson } from './report.js';

/** Options of the verbs here, as commander (or vm-thin.ts) hands them over. */
export type Opts = { passphraseFile?: string; hostKey?: string } & Record<string, unknown>;

/** The host service of this run root (started when none runs). */
export const api = async (): Promise<HostApi> => (await import('../host/api.js')).hostApi({ start: true });
export const vmPath = (name: string, rest = '') => `/v1/vms/${encodeURIComponent(name)}${rest}`;

export function positiveInt(what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n <= 0) throw new MedvError('EINVAL_ARG', `${what} must be a positive integer, not ${JSON.stringify(v)}`);
    return n;
  };
}

export function hostPort(v: string, previous: number[] | undefined): number[] {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1 || n > 65535) throw new MedvError('EINVAL_ARG', `--allow-host-port must be a port number 1-65535, not ${JSON.stringify(v)}`);
  return [...(previous ?? []), n];
}

/** `--map-drive C=/folder` or `--host-drive D=/dev/sr0` values, by upper-case letter. */
export function driveMap(specs: string[] | undefined, option = '--map-drive', example = '/absolute/folder'): Record<string, string> | undefined {
  if (!specs?.length) return undefined;
  const out: Record<string, string> = {};
  for (const s of specs) {
    const m = /^([A-Za-z])=(\/.*)$/.exec(s);
    if (!m) throw new MedvError('EINVAL_ARG', `${option} ${JSON.stringify(s)}: use LETTER=${example}`);
    out[m[1].toUpperCase()] = m[2];
  }
  return out;
}

/**
 * The key a request brings: a host key file (its path), or a passphrase (MEDV_PASSPHRASE,
 * --passphrase-file) sent once to the service for a one-time handle; none: the service's
 * unlocked key, if any (medv host unlock).
 */
export async function keyFor(host: HostApi, o: Opts): Promise<{ hostKey?: string; handle?: string } | undefined> {
  let kek;
  try {
    // Loaded here: stop, suspend and list need no key code (nor src/core/fsio.ts under it).
    const { kekFromEnvironment } = await import('../crypto/kekenv.js');
    kek = kekFromEnvironment({ passphraseFile: o.passphraseFile, hostKeyFile: o.hostKey });
  } catch (e) {
    if (isMedvError(e, 'ENOKEY')) return undefined;
    throw e;
  }
  if (kek.kind === 'hostkey') return { hostKey: resolve(kek.keyFile) };
  const bytes = Buffer.from(kek.passphrase as string, 'utf8');
  try {
    return { handle: (await host.call<{ handle: string }>('POST', '/v1/keys', undefined, { bytes, type: 'application/octet-stream' })).handle };
  } finally {
    bytes.fill(0);
  }
}

/** The start request for `vm start` (the host API's POST /v1/vms body). */
function startRequest(disk: string, o: Opts): Record<string, unknown> {
  const source = resolve(disk);
  if (!fs.existsSync(source)) throw new MedvError('ENOENT', `no such ${extname(disk).toLowerCase() === '.vmc' ? 'file' : 'disk'}: ${disk}`, { file: disk });
  const accel = o.accel ?? (process.env.MEDV_ACCEL || undefined);
  return {
    source,
    ...(o.name !== undefined ? { name: o.name } : {}),
    ...(o.memory !== undefined ? { memoryMiB: o.memory } : {}),
    ...(o.readOnly ? { readOnly: true } : {}),
    ...(o.undo ? { undo: true } : {}),
    ...(o.network !== undefined ? { network: o.network } : {}),
    ...(o.mac !== undefined ? { mac: o.mac } : {}),
    ...(o.allowHostPort !== undefined ? { allowHostPorts: o.allowHostPort } : {}),
    ...(o.nic !== undefined ? { nicModel: o.nic } : {}),
    ...(o.diskBus !== undefined ? { diskBus: o.diskBus } : {}),
    display: o.display ?? 'none',
    ...(o.display === 'window' ? { x11: { display: process.env.DISPLAY, ...(process.env.XAUTHORITY ? { xauthority: resolve(process.env.XAUTHORITY) } : {}) } } : {}),
    ...(accel ? { accel } : {}),
    ...(o.mapDrive ? { driveMap: driveMap(o.mapDrive as string[]) } : {}),
    ...(o.hostDrive ? { hostDrives: driveMap(o.hostDrive as string[], '--host-drive', '/dev/sr0') } : {}),
  };
}

/** `vm start`: POST /v1/vms, then what the service said. */
export async function vmStart(disk: string, o: Opts): Promise<void> {
  if (o.readOnly && o.undo) throw new MedvError('EINVAL_ARG', '--read-only and --undo exclude each other');
  if (o.display === 'window' && !process.env.DISPLAY) throw new MedvError('EINVAL_ARG', '--display window needs an X display: $DISPLAY is not set (use --display vnc-tcp on a headless host)');
  const body = startRequest(disk, o);
  const host = await api();
  const key = await keyFor(host, o);
  const state = await host.call<VmState & { warnings?: string[] }>('POST', '/v1/vms', { ...body, ...(key ? { key } : {}) });
  // What the service started otherwise than the .vmc says (a host CD/DVD drive left empty), told once.
  for (const w of state.warnings ?? []) process.stderr.write(`medv: warning: ${w}\n`);
  if (state.key === 'none' && state.disks.some((d) => d.undoPolicy !== 'discard')) {
    process.stderr.write(`medv: warning: no passphrase or host key: \`medv vm suspend ${state.name}\` will be refused (a saved state is always encrypted); give one at start (MEDV_PASSPHRASE, --passphrase-file, --host-key, or medv host unlock) to be able to suspend\n`);
  }
  if (o.json) { printJson(state); return; }
  const vnc = state.display.kind === 'vnc-tcp' ? `; VNC on ${state.display.vncAddress} (password: medv vm status ${state.name})` : '';
  process.stdout.write(`${state.resumed ? 'resumed' : 'started'} VM ${state.name} (${state.accel}, supervisor pid ${state.pid})${vnc}; stop it with: medv vm stop ${state.name}\n`);
}

export async function vmStop(name: string, o: Opts): Promise<void> {
  const state = await (await api()).call<VmState>('POST', vmPath(name, '/stop'), { timeoutS: Number(o.timeout) / 1000, force: Boolean(o.force) });
  if (o.json) printJson(state);
  else process.stdout.write(`VM ${name} stopped (${state.exitReason ?? 'unknown'})\n`);
}

export async function vmSuspend(name: string, o: Opts): Promise<void> {
  const state = await (await api()).call<VmState>('POST', vmPath(name, '/suspend'));
  if (o.json) printJson(state);
  else process.stdout.write(`VM ${name} suspended to ${state.savedState}\n`);
}

export async function vmList(o: Opts): Promise<void> {
  const all = await (await api()).call<VmState[]>('GET', '/v1/vms');
  if (o.json) { printJson(all); return; }
  if (all.length === 0) { process.stdout.write('no VMs\n'); return; }
  for (const s of all) process.stdout.write(`${s.name.padEnd(20)} ${s.state.padEnd(9)} ${s.accel ?? '-'}  ${s.disks.map((d) => d.path).join(', ')}\n`);
}
