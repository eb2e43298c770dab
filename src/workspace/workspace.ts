/**
 * Workspaces as a library: what `medv workspace start|stop|status|list` call.
 *
 * start: authenticate with the saved login and ask the server for the workspace (policy entry,
 * newest version, the image keys sealed to this client); offline, fall back to the sealed cache
 * within the policy's allowance. Then deploy the newest version if the policy and the caller say
 * so, check the engine, and start the VM under the VM host (src/host) with the host key as KEK:
 * persistent workspaces write into their .evhd, revertible ones into an undo disk discarded at
 * every stop. Status reports go to the server, queued while it cannot be reached.
 */
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import { MedvError } from '../core/errors.js';
import { humanBytes } from '../core/units.js';
import { DevLog, ImageStore, ReportQueue, removeDesktopEntries, userProfile, writeDesktopEntries, type QueuedReport } from '../repo/index.js';
import { requestGrant, sendReports, type WorkspaceGrant } from '../client/api.js';
import { openReleasedKeys, type ClientKeyPair } from '../api/keyrelease.js';
import { writeKeyFolder } from '../client/keyfolder.js';
import { checkWorkspaceName } from '../api/names.js';
import { desktopDir, seedCacheDir, type UserDirs } from '../core/paths.js';
import { startVm, stopVm, suspendVm, vmStatus } from '../host/client.js';
import { isTerminal, type VmState } from '../host/rundir.js';
import type { VmConfig } from '../host/supervisor.js';
import type { Accelerator } from '../hypervisor/qemu.js';
import { clientKeyPair, openClient, readClientConfig, readCredentials, userKeyDir, type ClientConfig, type ClientContext, type Credentials } from './client.js';
import { now as clock } from './clock.js';
import { deployVersion, type DeployResult } from './deploy.js';
import { checkExpiry, checkOfflineAllowance, offlineEntries, offlineEntry, saveOfflineEntry, type OfflineEntry } from './offline.js';
import { checkSettings, memoryFor, type WorkspaceSettings } from './settings.js';

export interface WorkspaceOptions {
  /** Client root (default: $MEDV_CLIENT_ROOT, /var/lib/medv for root, else $XDG_DATA_HOME/medv). */
  clientRoot?: string;
  /** VM run folder root (default the VM host's). */
  runRoot?: string;
  /** The user's XDG folders (menu entries, profile copy, seed cache), instead of the environment's (src/core/paths.ts). */
  userDirs?: UserDirs;
  onInfo?: (line: string) => void;
  onWarning?: (line: string) => void;
  onProgress?: (label: string, done: number, total: number) => void;
}

export interface StartOptions extends WorkspaceOptions {
  /** true: update to the newest version first; false: never; undefined: as the policy says. */
  update?: boolean;
  display?: 'none' | 'window' | 'vnc';
  accel?: Accelerator;
  /**
   * Asked when a newer version is published, the policy suggests updates (rather than forcing
   * them) and `update` is undefined: true deploys it now. Without it the update is only announced.
   */
  confirmUpdate?: (current: number, latest: number) => Promise<boolean>;
}

export interface StartResult {
  workspace: string;
  image: string;
  version: number;
  online: boolean;
  /** Offline days left when started offline. */
  offlineDaysLeft?: number;
  /** A newer version the server has, when the policy left the update to the user. */
  updateAvailable?: number;
  deployed?: DeployResult;
  resumed: boolean;
  vm: VmState;
  desktopEntries: string[];
}

/** The VM name of a workspace: the workspace name itself (src/api/names.ts: one rule for both). */
export function vmNameOf(workspace: string): string {
  return checkWorkspaceName(workspace);
}

/**
 * A workspace's image repository: `images/<workspace>/` (VM-name form), not `images/<image>/`: two
 * workspaces of one image each get their own disks, so a persistent one never changes the base a
 * revertible one starts from. The disks keep the workspace's name (`v<N>/<workspace>.evhd`).
 */
function storeOf(root: ClientContext['root'], e: OfflineEntry): ImageStore {
  return new ImageStore(root, vmNameOf(e.workspace));
}

const isNetwork = (e: unknown) => e instanceof MedvError && (e.code === 'ENETWORK' || (e.code === 'EHTTP' && Number(e.data.status) >= 500));

/** The medv command a menu entry runs. */
function medvCommand(): string {
  const bin = resolve(dirname(fileURLToPath(import.meta.url)), '../../../bin/medv');
  return fs.existsSync(bin) ? bin : 'medv';
}

interface Session { ctx: ClientContext; cfg: ClientConfig; log: DevLog; reports: ReportQueue; creds?: Credentials }

async function openSession(o: WorkspaceOptions): Promise<Session> {
  const ctx = await openClient(o.clientRoot);
  const cfg = readClientConfig(ctx.root);
  const log = await DevLog.open(ctx.root, ctx.kek);
  return { ctx, cfg, log, reports: new ReportQueue(ctx.root, cfg.user), creds: await readCredentials(ctx, cfg) };
}

/** Queue a report and send whatever is queued; offline it stays queued. */
async function report(s: Session, r: Omit<QueuedReport, 'at'>, online: boolean): Promise<void> {
  await s.reports.add({ ...r, at: clock().toISOString() });
  const creds = s.creds;
  if (!online || !creds) return;
  try {
    await s.reports.drain((batch) => sendReports(s.cfg.server, creds.token, s.cfg.client, batch, s.cfg.ca).then(() => undefined));
  } catch (e) {
    s.log.append('warn', 'status reports not sent', { error: (e as Error).message });
  }
}

/**
 * Ask the server, with the client's key pair (the caller disposes it; keepGrant opens the sealed
 * keys with it); undefined when the server cannot be reached.
 */
async function grantOnline(s: Session, workspace: string, pair: ClientKeyPair): Promise<WorkspaceGrant | undefined> {
  const creds = s.creds;
  if (!creds) throw new MedvError('ENOLOGIN', `no saved login for ${s.cfg.user} at ${s.cfg.server}: run medv login --server ${s.cfg.server} --user ${s.cfg.user}`);
  try {
    return await requestGrant(s.cfg.server, creds.token, { workspace, client: s.cfg.client, clientKey: pair.publicKey }, s.cfg.ca);
  } catch (e) {
    if (isNetwork(e)) return undefined;
    // 401: the token (missing, expired, revoked); 403: a valid login that is not entitled
    if (e instanceof MedvError && e.code === 'EDENIED' && e.data.status === 401) {
      throw new MedvError('ENOLOGIN', `the server refused the saved login (${e.message}): run medv login --server ${s.cfg.server} --user ${s.cfg.user}`);
    }
    throw e;
  }
}

/** Keep what the grant released: the keys (host-key wrapped) and the offline entry. */
async function keepGrant(s: Session, g: WorkspaceGrant, pair: ClientKeyPair, at: Date): Promise<OfflineEntry> {
  const settings = checkSettings(g.settings, g.workspace, g.policy.name);
  if (settings.image !== g.image) throw new MedvError('EBADREPLY', `the server's grant names image ${g.image}, its policy entry ${settings.image}`);
  const keys = openReleasedKeys(g.sealed, pair);
  try {
    if (keys.image !== g.image) throw new MedvError('EBADREPLY', `the released keys are for image ${keys.image}, not ${g.image}`);
    await writeKeyFolder(userKeyDir(s.ctx.root, s.cfg.user), keys, s.ctx.kek);
  } finally {
    keys.dispose();
  }
  const entry: OfflineEntry = { user: s.cfg.user, workspace: g.workspace, image: g.image, policy: g.policy, settings, latestVersion: g.latestVersion, lastOnline: at.toISOString() };
  await saveOfflineEntry(s.ctx.root, entry);
  return entry;
}

function runningState(name: string, runRoot?: string): VmState | undefined {
  try {
    const st = vmStatus(vmNameOf(name), { root: runRoot });
    return isTerminal(st.state) ? undefined : st;
  } catch (e) {
    if (e instanceof MedvError && e.code === 'ENOENT') return undefined;
    throw e;
  }
}

function vmConfigFor(store: ImageStore, settings: WorkspaceSettings, version: number, display: VmConfig['display'], accel?: Accelerator): VmConfig {
  const revertible = settings.mode === 'revertible';
  return {
    name: vmNameOf(settings.name),
    memoryMiB: memoryFor(settings),
    disks: [{ path: store.diskPath(version), mode: revertible ? 'undo' : 'normal', ...(revertible ? { undoPath: store.undoPath(version) } : {}) }],
    network: settings.network ?? 'nat',
    nicModel: settings.hardware?.nic ?? 'e1000',
    diskBus: settings.hardware?.diskBus ?? 'ide',
    display,
    ...(accel ? { accel } : {}),
    savedState: store.savedStatePath(version),
  };
}

/** A revertible workspace's undo disk, dropped (not while a saved state needs it). */
async function discardUndo(store: ImageStore, version: number, kek: ClientContext['kek']): Promise<boolean> {
  const undo = store.undoPath(version);
  if (!fs.existsSync(undo) || fs.existsSync(store.savedStatePath(version))) return false;
  const { discardUndoDisk } = await import('../layers/undo/index.js');
  await discardUndoDisk(undo, { kek: () => kek });
  return true;
}

export async function startWorkspace(name: string, o: StartOptions = {}): Promise<StartResult> {
  const s = await openSession(o);
  const info = (m: string) => { s.log.append('info', m, { workspace: name }); o.onInfo?.(m); };
  const warn = (m: string) => { s.log.append('warn', m, { workspace: name }); o.onWarning?.(m); };
  let version: number | undefined;
  let online = false;
  try {
    const at = clock();
    if (runningState(name, o.runRoot)) throw new MedvError('EBUSY', `workspace ${name} is already running (medv workspace status ${name})`);
    let entry: OfflineEntry | undefined;
    const pair = await clientKeyPair(s.ctx, s.cfg.user);
    try {
      const grant = await grantOnline(s, name, pair);
      if (grant) {
        online = true;
        entry = await keepGrant(s, grant, pair, at);
        info(`${s.cfg.server} granted workspace ${name} (policy ${entry.policy.name} v${entry.policy.version}, image ${entry.image}, newest version ${entry.latestVersion ?? 'none'})`);
      }
    } finally {
      pair.dispose();
    }
    entry ??= await offlineEntry(s.ctx.root, s.cfg.user, name);
    if (!entry) throw new MedvError('EOFFLINE', `cannot reach ${s.cfg.server}, and workspace ${name} has never been started online on this client`);
    const settings = entry.settings;
    checkExpiry(settings, at);
    let offlineDaysLeft: number | undefined;
    if (!online) {
      offlineDaysLeft = checkOfflineAllowance(entry, at);
      warn(`cannot reach ${s.cfg.server}: starting workspace ${name} offline (${offlineDaysLeft} day${offlineDaysLeft === 1 ? '' : 's'} of offline use left)`);
    }
    try { userProfile(s.ctx.root, o.userDirs); } catch (e) { warn(`user profile not copied: ${(e as Error).message}`); }
    const store = storeOf(s.ctx.root, entry);
    for (const line of store.upgrade()) info(`upgraded ${entry.image}: ${line}`);
    const local = store.newest();
    const latest = entry.latestVersion ?? undefined;
    let deployed: DeployResult | undefined;
    let updateAvailable: number | undefined;
    const newer = online && latest !== undefined && (local === undefined || latest > local);
    const asked = newer && local !== undefined && o.update === undefined && settings.suggestUpdate !== false && o.confirmUpdate
      ? await o.confirmUpdate(local, latest!) : false;
    if (newer && (local === undefined || o.update === true || asked || (o.update === undefined && settings.suggestUpdate === false))) {
      info(`deploying ${entry.image} version ${latest}${local !== undefined ? ` (over version ${local})` : ''}`);
      await report(s, { workspace: name, version: latest!, state: 'updating' }, true);
      deployed = await deployVersion({
        root: s.ctx.root, store, settings, version: latest!,
        source: `${s.cfg.server}/images/${entry.image}_${latest}.ckm.index`,
        keyDir: userKeyDir(s.ctx.root, s.cfg.user), kek: s.ctx.kek, ca: s.cfg.ca, cacheDir: seedCacheDir(o.userDirs),
        onProgress: (d, t) => o.onProgress?.('fetch', d, t),
        onWarning: warn,
      });
      info(`deployed ${entry.image} version ${latest}: fetched ${humanBytes(deployed.fetchedBytes)} of a ${humanBytes(deployed.imageBytes)} image (${deployed.blocksFromSeeds} blocks from local seeds, ${deployed.blocksFromNetwork} from the server)`);
      if (deployed.removed.length) info(`removed old version${deployed.removed.length > 1 ? 's' : ''} ${deployed.removed.join(', ')} (the policy keeps ${settings.versionsToKeep ?? 1})`);
    } else if (newer) {
      updateAvailable = latest;
      info(`version ${latest} of ${entry.image} is available (this client runs ${local}): ${o.update === false ? 'not updating (--no-update)' : `start with --update to switch to it`}`);
    }
    version = store.newest();
    if (version === undefined) throw new MedvError(online ? 'ENOENT' : 'EOFFLINE', online ? `no version of image ${entry.image} is published on ${s.cfg.server}` : `image ${entry.image} is not on this client and ${s.cfg.server} cannot be reached`);
    store.checkEngine();
    const resumed = fs.existsSync(store.savedStatePath(version));
    if (settings.mode === 'revertible' && !resumed && await discardUndo(store, version, s.ctx.kek)) info(`discarded the changes of the last run (revertible workspace)`);
    const vm = await startVm(vmConfigFor(store, settings, version, o.display ?? 'none', o.accel), { kek: s.ctx.kek, root: o.runRoot });
    info(`workspace ${name} ${resumed ? 'resumed' : 'started'}: ${entry.image} version ${version}, ${settings.mode ?? 'persistent'}, ${vm.memoryMiB} MiB, ${vm.accel ?? 'accelerator unknown'}`);
    let desktopEntries: string[] = [];
    try {
      const dir = desktopDir(o.userDirs);
      if (settings.applications?.length) desktopEntries = writeDesktopEntries(name, settings.applications, { medv: medvCommand(), dir });
      else removeDesktopEntries(name, { dir });
    } catch (e) {
      warn(`menu entries not written: ${(e as Error).message}`);
    }
    await report(s, { workspace: name, version, state: 'running' }, online);
    return { workspace: name, image: entry.image, version, online, ...(offlineDaysLeft !== undefined ? { offlineDaysLeft } : {}), ...(updateAvailable ? { updateAvailable } : {}), ...(deployed ? { deployed } : {}), resumed, vm, desktopEntries };
  } catch (e) {
    s.log.append('error', `workspace ${name} did not start: ${(e as Error).message}`, { workspace: name, code: (e as MedvError).code });
    await report(s, { workspace: name, version: version ?? null, state: 'failed', lastError: (e as Error).message.slice(0, 1000) }, online).catch(() => undefined);
    throw e;
  } finally {
    s.log.close();
  }
}

export interface StopResult { workspace: string; state: VmState['state']; suspended: boolean; discarded: boolean; version?: number }

/** Stop (or suspend, as the policy says) a running workspace; a revertible one loses its changes. */
export async function stopWorkspace(name: string, o: WorkspaceOptions & { force?: boolean; timeoutS?: number } = {}): Promise<StopResult> {
  const s = await openSession(o);
  try {
    const entry = await offlineEntry(s.ctx.root, s.cfg.user, name);
    if (!entry) throw new MedvError('ENOENT', `no workspace ${name} on this client (medv workspace list)`);
    const store = storeOf(s.ctx.root, entry);
    const running = runningState(name, o.runRoot);
    const version = running ? versionOfVm(store, running) : store.newest();
    let state: VmState['state'] = 'stopped';
    let suspended = false;
    if (running) {
      if (entry.settings.onStop === 'suspend' && !o.force) {
        state = (await suspendVm(vmNameOf(name), { root: o.runRoot })).state;
        suspended = true;
      } else {
        state = (await stopVm(vmNameOf(name), { root: o.runRoot, force: o.force, timeoutS: o.timeoutS })).state;
      }
    }
    let discarded = false;
    if (entry.settings.mode === 'revertible' && !suspended && version !== undefined) discarded = await discardUndo(store, version, s.ctx.kek);
    s.log.append('info', `workspace ${name} ${suspended ? 'suspended' : running ? 'stopped' : 'was not running'}${discarded ? '; its changes were discarded' : ''}`, { workspace: name });
    await report(s, { workspace: name, version: version ?? null, state: suspended ? 'suspended' : 'stopped' }, true).catch(() => undefined);
    return { workspace: name, state, suspended, discarded, ...(version !== undefined ? { version } : {}) };
  } finally {
    s.log.close();
  }
}

function versionOfVm(store: ImageStore, vm: VmState): number | undefined {
  const disk = vm.disks[0]?.path;
  return store.versions().find((n) => disk !== undefined && resolve(store.diskPath(n)) === resolve(disk));
}

export interface WorkspaceStatus {
  workspace: string;
  image: string;
  policy: { name: string; version: number };
  mode: 'persistent' | 'revertible';
  onStop: 'shutdown' | 'suspend';
  state: VmState['state'] | 'not started';
  runningVersion?: number;
  versions: number[];
  latestKnownVersion: number | null;
  suspended: boolean;
  lastOnline: string;
  offlineDays: number;
  expires?: string;
  vm?: VmState;
}

function statusOf(store: ImageStore, e: OfflineEntry, runRoot?: string): WorkspaceStatus {
  let vm: VmState | undefined;
  try { vm = vmStatus(vmNameOf(e.workspace), { root: runRoot }); } catch { vm = undefined; }
  const versions = store.versions();
  const running = vm && !isTerminal(vm.state) ? versionOfVm(store, vm) : undefined;
  return {
    workspace: e.workspace, image: e.image, policy: e.policy,
    mode: e.settings.mode ?? 'persistent', onStop: e.settings.onStop ?? 'shutdown',
    state: vm?.state ?? 'not started', ...(running !== undefined ? { runningVersion: running } : {}),
    versions, latestKnownVersion: e.latestVersion,
    suspended: versions.some((n) => fs.existsSync(store.savedStatePath(n))),
    lastOnline: e.lastOnline, offlineDays: e.settings.offlineDays ?? 0,
    ...(e.settings.expires ? { expires: e.settings.expires } : {}),
    ...(vm ? { vm } : {}),
  };
}

export async function workspaceStatus(name: string, o: WorkspaceOptions = {}): Promise<WorkspaceStatus> {
  const ctx = await openClient(o.clientRoot);
  const cfg = readClientConfig(ctx.root);
  const e = await offlineEntry(ctx.root, cfg.user, name);
  if (!e) throw new MedvError('ENOENT', `no workspace ${name} on this client (medv workspace list; a workspace appears after its first start)`);
  return statusOf(storeOf(ctx.root, e), e, o.runRoot);
}

export async function listWorkspaces(o: WorkspaceOptions = {}): Promise<WorkspaceStatus[]> {
  const ctx = await openClient(o.clientRoot);
  const cfg = readClientConfig(ctx.root);
  return (await offlineEntries(ctx.root, cfg.user)).map((e) => statusOf(storeOf(ctx.root, e), e, o.runRoot))
    .sort((a, b) => a.workspace.localeCompare(b.workspace));
}

