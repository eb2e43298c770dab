/**
 * A workspace's settings: one `workspaces[]` entry of a published policy (docs/policy.md), checked
 * again on the client (the server or the offline cache may be hostile) with the same schema the
 * server publishes with, then turned into what the VM host runs.
 */
import { totalmem } from 'node:os';
import { MedvError } from '../core/errors.js';
import { checkPolicy } from '../api/policy.js';
import type { ImageState } from '../formats/imagestate/index.js';
import type { PublishedApp } from '../repo/desktop.js';

export type { PublishedApp };

export interface WorkspaceSettings {
  name: string;
  image: string;
  mode?: 'persistent' | 'revertible';
  onStop?: 'shutdown' | 'suspend';
  memory?: number | { byHostRam: { hostMiB: number; guestMiB: number }[] };
  network?: 'nat' | 'none';
  devices?: { usb?: boolean; usbDevices?: string[]; cdrom?: boolean; clipboard?: boolean; sharedFolders?: boolean; sharedFoldersWritable?: boolean };
  versionsToKeep?: number;
  suggestUpdate?: boolean;
  useTrimTransfer?: boolean;
  /** Base URLs of static copies of the packs, tried before the server (src/transfer/mirrors.ts). */
  mirrors?: string[];
  offlineDays?: number;
  expires?: string;
  applications?: PublishedApp[];
  hardware?: { diskBus?: 'ide' | 'virtio'; nic?: 'e1000' | 'virtio' };
  minEngine?: string;
}

/** Guest RAM when the policy names none. */
export const DEFAULT_MEMORY_MIB = 256;

/**
 * `settings` as the policy schema allows it for workspace `name`, else EPOLICY naming the field.
 * A published application in the form of an earlier medv (`{name, command}`: a command-line string,
 * which this medv never splits or hands to a shell) is left out with one warning rather than making
 * the whole workspace unstartable: policies stored on a server, and grants cached on a client,
 * before applications took `argv` keep working; the administrator republishes with `argv`.
 */
export function checkSettings(settings: unknown, name: string, policyName = 'policy', onWarning?: (m: string) => void): WorkspaceSettings {
  settings = withoutLegacyApps(settings, name, onWarning);
  try {
    checkPolicy({ name: policyName, workspaces: [settings] });
  } catch (e) {
    if (e instanceof MedvError) throw new MedvError('EPOLICY', `the settings of workspace ${name} are not a valid policy entry: ${e.message}`, e.data);
    throw e;
  }
  const s = settings as WorkspaceSettings;
  if (s.name !== name) throw new MedvError('EPOLICY', `asked for workspace ${name}, the server answered with ${s.name}`);
  return s;
}

/** `settings` without the applications of the earlier `{name, command}` form (a copy; the input is not changed). */
function withoutLegacyApps(settings: unknown, name: string, onWarning?: (m: string) => void): unknown {
  if (typeof settings !== 'object' || settings === null || !Array.isArray((settings as { applications?: unknown }).applications)) return settings;
  const apps = (settings as { applications: unknown[] }).applications;
  const legacy = (a: unknown) => typeof a === 'object' && a !== null && !Array.isArray(a) && typeof (a as { command?: unknown }).command === 'string' && !('argv' in a);
  const old = apps.filter(legacy);
  if (old.length === 0) return settings;
  const names = old.map((a) => String((a as { name?: unknown }).name ?? '?').slice(0, 64).replace(/[^\x21-\x7e]/g, '?'));
  onWarning?.(`workspace ${name}: application${names.length > 1 ? 's' : ''} ${names.join(', ')} left out: ${names.length > 1 ? 'they use' : 'it uses'} the earlier \`command\` string, and this medv runs only an \`argv\` list (ask the administrator to republish the policy with argv)`);
  return { ...settings, applications: apps.filter((a) => !legacy(a)) };
}

/** The policy's guest RAM for this host: a number, or the byHostRam row with the largest hostMiB not above the host's RAM. */
export function memoryFor(s: WorkspaceSettings, hostMiB = Math.floor(totalmem() / 1048576)): number {
  const m = s.memory;
  if (m === undefined) return DEFAULT_MEMORY_MIB;
  if (typeof m === 'number') return m;
  const rows = m.byHostRam.filter((r) => r.hostMiB <= hostMiB).sort((a, b) => b.hostMiB - a.hostMiB);
  if (rows.length === 0) return Math.min(...m.byHostRam.map((r) => r.guestMiB));
  return rows[0].guestMiB;
}

/** The USB devices the policy lets the guest have (none unless `devices.usb`). */
export function usbDevicesFor(s: WorkspaceSettings): Array<{ vendorId: number; productId: number }> {
  if (s.devices?.usb !== true) return [];
  return (s.devices.usbDevices ?? []).map((d) => {
    const [v, p] = d.split(':');
    return { vendorId: parseInt(v, 16), productId: parseInt(p, 16) };
  });
}

/** ImageState.xml of a deployed version, from the policy. */
export function imageStateFor(s: WorkspaceSettings): ImageState {
  const d = s.devices ?? {};
  return {
    memoryMB: memoryFor(s),
    devices: { usb: d.usb === true, cdDvd: d.cdrom === true, clipboard: d.clipboard === true, sharedFolders: d.sharedFolders === true },
    network: s.network ?? 'nat',
    firstTimeSetup: 'done',
  };
}
