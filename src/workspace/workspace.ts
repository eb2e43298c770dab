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
import { DevLog, ImageStore, ReportQueue, clientRootLayout, removeDesktopEntries, userProfile, writeDesktopEntries, type QueuedReport } from '../repo/index.js';
import { clientRootPath, desktopDir, seedCacheDir, type UserDirs } from '../core/paths.js';
import { confirmWiped, requestGrant, sendReports, type WorkspaceGrant } from '../client/api.js';
import { type ClientKeyPair } from '../api/keyrelease.js';
import { startVm, stopVm, suspendVm, vmStatus } from '../host/client.js';
import { isTerminal, type VmState } from '../host/rundir.js';
import type { VmConfig } from '../host/supervisor.js';
import type { Accelerator } from '../hypervisor/qemu.js';
import type { KekSource } from '../crypto/index.js';
import { clientKeyPair, configPath, openClient, readClientConfig, readCredentials, type ClientConfig, type ClientContext, type Credentials } from './client.js';
import { now as clock } from './clock.js';
import { deployVersion, wipeUnlinkedBase, type DeployResult } from './deploy.js';
import { forgetGrant, isLocked, isRefusal, isWipe, keepGrant, workspaceKeyDir } from './grant.js';
import { baseStore, checkWorkspaceName, instanceName, legacyStore, workspaceDataDir, workspaceStore, workspaceStores } from './identity.js';
import { lockWorkspace } from './lock.js';
import { devicesOf, recordDevices, recordedDevices, sameDevices, withDevices } from './resumedevices.js';
import { advanceClock, checkExpiry, checkOfflineAllowance, offlineEntries, offlineEntry, type OfflineEntry } from './offline.js';
import { usbDevicesFor, type WorkspaceSettings } from './settings.js';
import { testVmcPath, writeVersionVmFiles } from './vmfiles.js';

export interface WorkspaceOptions {
  /** Client root (default: $MEDV_CLIENT_ROOT, /var/lib/medv for root, else $XDG_DATA_HOME/medv). */
  clientRoot?: string;
  /** VM run folder root (default the VM host's). */
  runRoot?: string;
  /** The user's XDG folders (menu entries, profile copy, seed cache), instead of the environment's (src/core/paths.ts). */
  userDirs?: UserDirs;
  /** Each step of a start, once (the result itself is the caller's to print). */
  onInfo?: (line: string) => void;
  onWarning?: (line: string) => void;
  onProgress?: (label: string, done: number, total: number) => void;
}

export interface StartOptions extends WorkspaceOptions {
  /** true: update to the newest version first; false: never; undefined: as the policy says. */
  update?: boolean;
  display?: 'none' | 'window' | 'vnc';
  accel?: Accelerator;
  /** A read-only test run from the version's `Test/` copy: the guest's writes go to a throw-away undo disk in `Test/`. */
  readOnly?: boolean;
  /**
   * Asked when a newer version is published, the policy suggests updates (rather than forcing
   * them) and `update` is undefined: true deploys it now. Without it the update is only announced.
   */
  confirmUpdate?: (current: number, latest: number) => Promise<boolean>;
  /** Folders of host data to take blocks from at a deployment (`--seed DIR`), besides the client's `seedFolders` (src/transfer/hostseeds.ts). */
  seeds?: string[];
  /** Host folders to share with the guest, as the user names them (the policy must allow shared folders; writable only if it allows that too). */
  shares?: Array<{ tag: string; path: string }>;
  /** How the VM is started (default: src/host/client.ts startVm; the CLI and the host service start it through the service's warm pool). */
  startVm?: (config: VmConfig, opts: { kek?: KekSource; root?: string }) => Promise<VmState>;
}

export interface StartResult {
  workspace: string;
  image: string;
  /** The image's id (its content key id): which image this version folder holds. */
  imageId: string;
  version: number;
  online: boolean;
  /** The VM's name under the VM host (scoped to this client root and user). */
  vmName: string;
  /** The workspace's image folder (images/<workspace>.<hash>). */
  folder: string;
  /** Offline days left when started offline. */
  offlineDaysLeft?: number;
  /** A newer version the server has, when the policy left the update to the user. */
  updateAvailable?: number;
  deployed?: DeployResult;
  resumed: boolean;
  vm: VmState;
  desktopEntries: string[];
}

/** The server cannot be reached, or fails (5xx after the agent's retries): the start goes on offline. */
const isNetwork = (e: unknown) => e instanceof MedvError && (e.code === 'ENETWORK' || Number(e.data.status) >= 500);

/** A report batch the server refuses for its content (4xx but the login, a timeout or a rate limit): it will never take it. */
const isReportRefused = (e: unknown) => {
  const status = e instanceof MedvError ? Number(e.data.status) : NaN;
  return status >= 400 && status < 500 && status !== 401 && status !== 408 && status !== 429;
};

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

/**
 * Queue a report and send whatever is queued; offline it stays queued. A report the server
 * refuses as invalid is dropped (and logged), so it never blocks the ones after it.
 */
async function report(s: Session, r: Omit<QueuedReport, 'at'>, online: boolean): Promise<void> {
  await s.reports.add({ ...r, at: clock().toISOString() });
  const creds = s.creds;
  if (!online || !creds) return;
  try {
    await s.reports.drain((batch) => sendReports(s.cfg.server, creds.token, s.cfg.client, batch, s.cfg.ca).then(() => undefined), {
      refused: isReportRefused,
      onDropped: (d, e) => s.log.append('warn', 'status report dropped: the server refuses it', { workspace: d.workspace, state: d.state, at: d.at, error: (e as Error).message }),
    });
  } catch (e) {
    s.log.append('warn', 'status reports not sent', { error: (e as Error).message });
  }
}

/**
 * Ask the server, with the client's key pair (the caller disposes it; keepGrant opens the sealed
 * keys with it); undefined when the server cannot be reached. A refusal (403) ends the cached
 * grant first (./grant.ts), then is thrown.
 */
async function grantOnline(s: Session, workspace: string, pair: ClientKeyPair, warn: (m: string) => void, runRoot?: string): Promise<WorkspaceGrant | undefined> {
  const creds = s.creds;
  if (!creds) throw new MedvError('ENOLOGIN', `no saved login for ${s.cfg.user} at ${s.cfg.server}: run medv login --server ${s.cfg.server} --user ${s.cfg.user}`);
  try {
    return await requestGrant(s.cfg.server, creds.token, { workspace, client: s.cfg.client, clientKey: pair.publicKey }, s.cfg.ca);
  } catch (e) {
    if (isNetwork(e)) return undefined;
    if (isRefusal(e)) {
      const removed = await forgetGrant(s.ctx, s.cfg, workspace);
      if (removed.length) warn(`${s.cfg.server} refused workspace ${workspace}: its cached grant and released keys were removed (it will not start offline)`);
      throw e;
    }
    // locked: no start until the administrator unlocks it, offline neither; its disks stay
    if (isLocked(e)) {
      await forgetGrant(s.ctx, s.cfg, workspace);
      throw new MedvError('ELOCKED', `${e.message} (its data stays on this client; it starts again once unlocked)`, { reason: e.data.reason });
    }
    if (isWipe(e)) throw await wipeWorkspace(s, workspace, e, warn, runRoot);
    // 401: the token (missing, expired, revoked); 403: a valid login that is not entitled
    if (e instanceof MedvError && e.code === 'EDENIED' && e.data.status === 401) {
      throw new MedvError('ENOLOGIN', `the server refused the saved login (${e.message}): run medv login --server ${s.cfg.server} --user ${s.cfg.user}`);
    }
    throw e;
  }
}

/**
 * The administrator ordered this workspace wiped on this client: its released keys go first (the
 * user's key folder and cached grant), then every disk key file, then the disks and saved states
 * of every image folder of this user's workspace; then the server is told (best effort: the order
 * stands, the next start wipes again and tells again). Returns the error to throw (EWIPED).
 */
async function wipeWorkspace(s: Session, workspace: string, order: MedvError, warn: (m: string) => void, runRoot?: string): Promise<MedvError> {
  const keys = await forgetGrant(s.ctx, s.cfg, workspace);
  let keyFiles = 0;
  let files = 0;
  // under the workspace's lock (./lock.ts) when it was ever started here (no folder is made for a name
  // the server answered): no start deploys into or boots from what is deleted here; a VM of it that
  // another start got running meanwhile is stopped first (its disks go next)
  const unlock = fs.existsSync(workspaceDataDir(s.ctx.root, s.cfg.user, workspace)) ? lockWorkspace(s.ctx.root, s.cfg.user, workspace) : undefined;
  try {
    const vmName = instanceName(s.ctx.root, s.cfg.user, workspace);
    if (runningState(vmName, runRoot)) await stopVm(vmName, { root: runRoot, force: true });
    for (const store of workspaceStores(s.ctx.root, s.cfg.user, workspace)) {
      const r = store.wipe();
      // the image's shared base goes too once no other workspace of this user links it (./deploy.ts)
      const b = store.identity ? wipeUnlinkedBase(baseStore(s.ctx.root, s.cfg.user, store.identity)) : { keys: [], deleted: [], skipped: [] };
      keyFiles += r.keys.length + b.keys.length;
      files += r.deleted.length + b.deleted.length;
      for (const p of [...r.skipped, ...b.skipped]) warn(`wipe of workspace ${workspace}: left ${p} (not a file medv writes there)`);
    }
  } finally {
    unlock?.();
  }
  s.log.append('warn', 'workspace wiped by the administrator', { workspace, keys: keys.length, keyFiles, files });
  try {
    await confirmWiped(s.cfg.server, s.creds!.token, { client: s.cfg.client, workspace }, s.cfg.ca);
  } catch (e) {
    warn(`could not tell ${s.cfg.server} that workspace ${workspace} was wiped: ${(e as Error).message}`);
  }
  return new MedvError('EWIPED', `${order.message}: this client deleted the workspace's released keys, ${keyFiles} disk key file${keyFiles === 1 ? '' : 's'}, then ${files} disk and state file${files === 1 ? '' : 's'}`, { reason: order.data.reason });
}

/** The state of a workspace's VM while it runs (starting, running, …); undefined when it does not. */
export function runningState(vmName: string, runRoot?: string): VmState | undefined {
  try {
    const st = vmStatus(vmName, { root: runRoot });
    return isTerminal(st.state) ? undefined : st;
  } catch (e) {
    if (e instanceof MedvError && e.code === 'ENOENT') return undefined;
    throw e;
  }
}

/**
 * The VM of a workspace version: its `.vmc` and ImageState.xml as the folder holds them (the VM
 * host reads them, src/host/vmc.ts), or their `Test/` copies for a read-only test run; the NIC
 * model and disk bus, which a .vmc cannot say, from the policy.
 */
async function vmConfigFor(vmName: string, store: ImageStore, settings: WorkspaceSettings, version: number, o: StartOptions): Promise<VmConfig> {
  const { vmConfigFromVmc } = await import('../host/vmc.js');
  const config = o.readOnly
    ? vmConfigFromVmc(testVmcPath(store, version), { name: vmName, readOnly: true, confineTo: store.versionDir(version), display: o.display ?? 'none', accel: o.accel })
    : vmConfigFromVmc(store.vmcPath(version), { name: vmName, display: o.display ?? 'none', accel: o.accel });
  const shares = o.shares ?? [];
  if (shares.length && settings.devices?.sharedFolders !== true) throw new MedvError('EFORBIDDEN', `the policy of workspace ${settings.name} does not allow shared folders (devices.sharedFolders)`);
  const usb = usbDevicesFor(settings);
  return {
    ...config, nicModel: settings.hardware?.nic ?? 'e1000', diskBus: settings.hardware?.diskBus ?? 'ide',
    // published applications run through the guest agent (./apps.ts): only then has the VM its port
    ...(settings.applications?.length ? { guestAgent: true } : {}),
    // what the device policy does not allow is not in the VM at all
    ...(shares.length ? { sharedFolders: shares.map((sh) => ({ ...sh, ...(settings.devices?.sharedFoldersWritable === true ? { writable: true } : {}) })) } : {}),
    ...(usb.length ? { usbDevices: usb } : {}),
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

/** The store of a cached grant; ECORRUPT when a version folder in it holds another image than it says. */
function storeOf(s: Session, e: OfflineEntry): ImageStore {
  const store = workspaceStore(s.ctx.root, s.cfg.user, e.workspace, { image: e.image, imageId: e.imageId });
  const foreign = store.foreign();
  if (foreign.length) {
    const f = foreign[0];
    const holds = f.holds ? `image ${f.holds.image} (id ${f.holds.imageId}) version ${f.holds.version}` : 'a disk that does not record its image';
    throw new MedvError('ECORRUPT', `${f.dir} holds ${holds}, not ${e.image} (id ${e.imageId}) version ${f.version}: medv neither starts nor replaces it; move that folder away`, { file: f.dir });
  }
  return store;
}

export async function startWorkspace(name: string, o: StartOptions = {}): Promise<StartResult> {
  checkWorkspaceName(name);
  const s = await openSession(o);
  const info = (m: string) => { s.log.append('info', m, { workspace: name }); o.onInfo?.(m); };
  const warn = (m: string) => { s.log.append('warn', m, { workspace: name }); o.onWarning?.(m); };
  const vmName = instanceName(s.ctx.root, s.cfg.user, name);
  let version: number | undefined;
  let online = false;
  let unlock: (() => void) | undefined;
  try {
    const local = clock();
    if (runningState(vmName, o.runRoot)) throw new MedvError('EBUSY', `workspace ${name} is already running (medv workspace status ${name})`);
    let entry: OfflineEntry | undefined;
    let grant: WorkspaceGrant | undefined;
    const pair = await clientKeyPair(s.ctx, s.cfg.user);
    try {
      grant = await grantOnline(s, name, pair, warn, o.runRoot);
      if (grant && grant.workspace !== name) throw new MedvError('EBADREPLY', `asked for workspace ${name}, the server granted ${grant.workspace}`);
      if (grant) {
        online = true;
        entry = await keepGrant(s.ctx, s.cfg, grant, pair, local, warn);
        info(`${s.cfg.server} granted workspace ${name} (policy ${entry.policy.name} v${entry.policy.version}, image ${entry.image}, newest version ${entry.latestVersion ?? 'none'})`);
      }
    } finally {
      pair.dispose();
    }
    // the time the rules use: never earlier than any time this client has seen (offline.ts)
    const at = await advanceClock(s.ctx.root, local, grant?.serverTime);
    entry ??= await offlineEntry(s.ctx.root, s.cfg.server, s.cfg.user, name);
    if (!entry) throw new MedvError('EOFFLINE', `cannot reach ${s.cfg.server}, and workspace ${name} has no grant cached on this client (never started online, or refused since)`);
    // A workspace this user has: from here until its VM runs, no other start or stop of it (./lock.ts),
    // and the check that it is not running is made again under the lock.
    unlock = lockWorkspace(s.ctx.root, s.cfg.user, name);
    if (runningState(vmName, o.runRoot)) throw new MedvError('EBUSY', `workspace ${name} is already running (medv workspace status ${name})`);
    const settings = entry.settings;
    checkExpiry(settings, at);
    let offlineDaysLeft: number | undefined;
    if (!online) {
      offlineDaysLeft = checkOfflineAllowance(entry, at, local);
      warn(`cannot reach ${s.cfg.server}: starting workspace ${name} offline (${offlineDaysLeft} day${offlineDaysLeft === 1 ? '' : 's'} of offline use left)`);
    }
    try { userProfile(s.ctx.root, o.userDirs); } catch (e) { warn(`user profile not copied: ${(e as Error).message}`); }
    const store = storeOf(s, entry);
    for (const line of store.upgrade()) info(`upgraded ${entry.image}: ${line}`);
    const have = store.newest();
    const latest = entry.latestVersion ?? undefined;
    let deployed: DeployResult | undefined;
    let updateAvailable: number | undefined;
    // versions of this image id only (the store counts no other): a swapped image is a new deployment
    const newer = online && latest !== undefined && (have === undefined || latest > have);
    const asked = newer && have !== undefined && o.update === undefined && settings.suggestUpdate !== false && o.confirmUpdate
      ? await o.confirmUpdate(have, latest!) : false;
    if (newer && (have === undefined || o.update === true || asked || (o.update === undefined && settings.suggestUpdate === false))) {
      info(`deploying ${entry.image} version ${latest}${have !== undefined ? ` (over version ${have})` : ''}`);
      await report(s, { workspace: name, version: latest!, state: 'updating' }, true);
      const legacy = legacyStore(s.ctx.root, name);
      if (legacy) warn(`${legacy.dir} holds disks of workspace ${name} from an earlier medv that do not record their image or user: they serve only as download seeds and are never started; remove that folder when you no longer need it`);
      deployed = await deployVersion({
        root: s.ctx.root, store, base: baseStore(s.ctx.root, s.cfg.user, { image: entry.image, imageId: entry.imageId }), settings, version: latest!, imageId: entry.imageId,
        source: `${s.cfg.server}/images/${entry.image}_${latest}.ckm.index`,
        keyDir: workspaceKeyDir(s.ctx.root, s.cfg.user, name), kek: s.ctx.kek, vmName, ca: s.cfg.ca, cacheDir: seedCacheDir(o.userDirs),
        extraSeeds: legacy ? legacy.versions().map((n) => legacy.diskPath(n)) : [],
        hostSeeds: [...new Set([...(o.seeds ?? []).map((p) => resolve(p)), ...(s.cfg.seedFolders ?? [])])],
        onProgress: (d, t) => o.onProgress?.('fetch', d, t),
        onWarning: warn,
      });
      if (deployed.shared) info(`deployed ${entry.image} version ${latest}: already on this client for another workspace, nothing fetched (one read-only base; this workspace's writes go to its own undo disk)`);
      else info(`deployed ${entry.image} version ${latest}: fetched ${humanBytes(deployed.fetchedBytes)}${deployed.mirrorBytes ? ` (${humanBytes(deployed.mirrorBytes)} from mirrors)` : ''} of a ${humanBytes(deployed.imageBytes)} image (${deployed.blocksFromSeeds} blocks from local seeds, ${deployed.blocksFromNetwork} from the server)`);
      if (deployed.removed.length) info(`removed old version${deployed.removed.length > 1 ? 's' : ''} ${deployed.removed.join(', ')} (the policy keeps ${settings.versionsToKeep ?? 1})`);
    } else if (newer) {
      updateAvailable = latest;
      info(`version ${latest} of ${entry.image} is available (this client runs ${have}): ${o.update === false ? 'not updating (--no-update)' : `start with --update to switch to it`}`);
    }
    version = store.newest();
    if (version === undefined) throw new MedvError(online ? 'ENOENT' : 'EOFFLINE', online ? `no version of image ${entry.image} is published on ${s.cfg.server}` : `image ${entry.image} is not on this client and ${s.cfg.server} cannot be reached`);
    store.checkEngine();
    for (const p of writeVersionVmFiles(store, version, settings, vmName)) info(`wrote ${p}`);
    const resumed = !o.readOnly && fs.existsSync(store.savedStatePath(version));
    if (settings.mode === 'revertible' && !resumed && !o.readOnly && await discardUndo(store, version, s.ctx.kek)) info(`discarded the changes of the last run (revertible workspace)`);
    let config = await vmConfigFor(vmName, store, settings, version, o);
    if (resumed) {
      // a saved state resumes only on the hardware it was taken with (./resumedevices.ts)
      const had = await recordedDevices(s.ctx.root, store, version, vmName).catch(() => undefined);
      if (had && !sameDevices(had, devicesOf(config))) {
        warn(`the policy changed the devices of workspace ${name} while it was suspended: it resumes with the devices it had; the change applies from its next start after a shutdown (medv workspace stop ${name} --force shuts it down)`);
        config = withDevices(config, had);
      }
    }
    const vm = await (o.startVm ?? startVm)(config, { kek: s.ctx.kek, root: o.runRoot });
    if (!resumed && !o.readOnly) await recordDevices(s.ctx.root, store, version, vmName, config).catch((e) => warn(`could not record the devices of workspace ${name}'s VM (a resume after a policy change may then be refused): ${e instanceof Error ? e.message : String(e)}`));
    s.log.append('info', `workspace ${name} ${resumed ? 'resumed' : 'started'}: ${entry.image} version ${version}, ${settings.mode ?? 'persistent'}, ${vm.memoryMiB} MiB, ${vm.accel ?? 'accelerator unknown'}`, { workspace: name, vm: vmName });
    let desktopEntries: string[] = [];
    const instance = { id: vmName, workspace: name, clientRoot: s.ctx.root.root };
    try {
      const dir = desktopDir(o.userDirs);
      if (settings.applications?.length) desktopEntries = writeDesktopEntries(instance, settings.applications, { medv: medvCommand(), dir });
      else removeDesktopEntries(instance, { dir });
    } catch (e) {
      warn(`menu entries not written: ${(e as Error).message}`);
    }
    await report(s, { workspace: name, version, state: 'running' }, online);
    return {
      workspace: name, image: entry.image, imageId: entry.imageId, version, online, vmName, folder: store.dir,
      ...(offlineDaysLeft !== undefined ? { offlineDaysLeft } : {}), ...(updateAvailable ? { updateAvailable } : {}), ...(deployed ? { deployed } : {}), resumed, vm, desktopEntries,
    };
  } catch (e) {
    s.log.append('error', `workspace ${name} did not start: ${(e as Error).message}`, { workspace: name, code: (e as MedvError).code });
    await report(s, { workspace: name, version: version ?? null, state: 'failed', lastError: (e as Error).message.slice(0, 1000) }, online).catch(() => undefined);
    throw e;
  } finally {
    unlock?.();
    s.log.close();
  }
}

export interface StopResult { workspace: string; vmName: string; state: VmState['state']; suspended: boolean; discarded: boolean; version?: number }

/**
 * Stop (or suspend, as the policy says) a running workspace; a revertible one loses its changes.
 * A running VM of the workspace is stopped even when its grant is no longer cached.
 */
export async function stopWorkspace(name: string, o: WorkspaceOptions & { force?: boolean; timeoutS?: number } = {}): Promise<StopResult> {
  checkWorkspaceName(name);
  const s = await openSession(o);
  let unlock: (() => void) | undefined;
  try {
    const vmName = instanceName(s.ctx.root, s.cfg.user, name);
    const entry = await offlineEntry(s.ctx.root, s.cfg.server, s.cfg.user, name);
    unlock = entry ? lockWorkspace(s.ctx.root, s.cfg.user, name) : undefined;
    const running = runningState(vmName, o.runRoot);
    if (!entry && !running) throw new MedvError('ENOENT', `no workspace ${name} on this client (medv workspace list)`);
    let store: ImageStore | undefined;
    try {
      store = entry ? storeOf(s, entry) : undefined;
    } catch (e) {
      // a folder holding another image: never written into, but the VM is still stopped
      if (!(e instanceof MedvError && e.code === 'ECORRUPT') || !running) throw e;
    }
    const version = store ? (running ? versionOfVm(store, running) : store.newest()) : undefined;
    let state: VmState['state'] = 'stopped';
    let suspended = false;
    if (running) {
      if (entry?.settings.onStop === 'suspend' && !o.force) {
        state = (await suspendVm(vmName, { root: o.runRoot })).state;
        suspended = true;
      } else {
        state = (await stopVm(vmName, { root: o.runRoot, force: o.force, timeoutS: o.timeoutS })).state;
      }
    }
    let discarded = false;
    if (store && entry?.settings.mode === 'revertible' && !suspended && version !== undefined) discarded = await discardUndo(store, version, s.ctx.kek);
    s.log.append('info', `workspace ${name} ${suspended ? 'suspended' : running ? 'stopped' : 'was not running'}${discarded ? '; its changes were discarded' : ''}`, { workspace: name });
    await report(s, { workspace: name, version: version ?? null, state: suspended ? 'suspended' : 'stopped' }, true).catch(() => undefined);
    return { workspace: name, vmName, state, suspended, discarded, ...(version !== undefined ? { version } : {}) };
  } finally {
    unlock?.();
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
  imageId: string;
  policy: { name: string; version: number };
  mode: 'persistent' | 'revertible';
  onStop: 'shutdown' | 'suspend';
  state: VmState['state'] | 'not started';
  vmName: string;
  folder: string;
  runningVersion?: number;
  versions: number[];
  latestKnownVersion: number | null;
  suspended: boolean;
  lastOnline: string;
  offlineDays: number;
  expires?: string;
  vm?: VmState;
}

function statusOf(ctx: ClientContext, cfg: ClientConfig, e: OfflineEntry, runRoot?: string): WorkspaceStatus {
  const store = workspaceStore(ctx.root, cfg.user, e.workspace, { image: e.image, imageId: e.imageId });
  const vmName = instanceName(ctx.root, cfg.user, e.workspace);
  let vm: VmState | undefined;
  try { vm = vmStatus(vmName, { root: runRoot }); } catch { vm = undefined; }
  const versions = store.versions();
  const running = vm && !isTerminal(vm.state) ? versionOfVm(store, vm) : undefined;
  return {
    workspace: e.workspace, image: e.image, imageId: e.imageId, policy: e.policy,
    mode: e.settings.mode ?? 'persistent', onStop: e.settings.onStop ?? 'shutdown',
    state: vm?.state ?? 'not started', vmName, folder: store.dir, ...(running !== undefined ? { runningVersion: running } : {}),
    versions, latestKnownVersion: e.latestVersion,
    suspended: versions.some((n) => fs.existsSync(store.savedStatePath(n))),
    lastOnline: e.lastOnline, offlineDays: e.settings.offlineDays ?? 0,
    ...(e.settings.expires ? { expires: e.settings.expires } : {}),
    ...(vm ? { vm } : {}),
  };
}

export async function workspaceStatus(name: string, o: WorkspaceOptions = {}): Promise<WorkspaceStatus> {
  checkWorkspaceName(name);
  const ctx = await openClient(o.clientRoot);
  const cfg = readClientConfig(ctx.root);
  const e = await offlineEntry(ctx.root, cfg.server, cfg.user, name);
  if (!e) throw new MedvError('ENOENT', `no workspace ${name} on this client (medv workspace list; a workspace appears after its first start)`);
  return statusOf(ctx, cfg, e, o.runRoot);
}

/**
 * The workspaces this client has a cached grant for (local state only: no server is asked). A
 * client root that does not exist or never logged in has none: [] (nothing is created).
 */
export async function listWorkspaces(o: WorkspaceOptions = {}): Promise<WorkspaceStatus[]> {
  const layout = clientRootLayout(clientRootPath(o.clientRoot));
  if (!fs.existsSync(configPath(layout))) return [];
  const ctx = await openClient(o.clientRoot);
  const cfg = readClientConfig(ctx.root);
  return (await offlineEntries(ctx.root, cfg.server, cfg.user)).map((e) => statusOf(ctx, cfg, e, o.runRoot))
    .sort((a, b) => a.workspace.localeCompare(b.workspace));
}
