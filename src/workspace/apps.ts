/**
 * Published applications (`medv workspace run WORKSPACE APP`, what their menu entries run): start
 * the workspace if it is not running (with a window unless told otherwise), wait for the QEMU
 * guest agent in the guest, run the application's `argv` there with guest-exec (no shell), and
 * return its exit status and output.
 *
 * The application comes from the workspace's policy as the last grant cached it (after a start,
 * the policy of that start): `applications[]` with a `name` (the name rules) and an `argv`. The VM
 * has the agent's port only when its policy publishes applications (./workspace.ts vmConfigFor);
 * a VM started before they were published has none and is told to restart.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { checkAppName } from '../api/names.js';
import { waitUntilFree } from '../block/flock.js';
import { AgentClient } from '../hypervisor/qga.js';
import { vmRunDir } from '../host/rundir.js';
import { AGENT_SOCKET } from '../host/shape.js';
import { openClient, readClientConfig } from './client.js';
import { checkWorkspaceName, instanceName } from './identity.js';
import { lockWorkspace } from './lock.js';
import { offlineEntry } from './offline.js';
import { runningState, startWorkspace, type StartOptions, type StartResult } from './workspace.js';

/** How long the guest agent may take to answer after the VM started (a cold boot under TCG included). */
export const DEFAULT_AGENT_TIMEOUT_MS = 300_000;
/** setTimeout's largest delay (about 24.8 days): "no limit". */
const NO_LIMIT_MS = 2_147_483_647;

export interface RunOptions extends StartOptions {
  /** How long to wait for the guest agent (default DEFAULT_AGENT_TIMEOUT_MS). */
  agentTimeoutMs?: number;
  /** How long the application may run (default: no limit). */
  timeoutMs?: number;
}

export interface RunResult {
  workspace: string;
  application: string;
  argv: string[];
  vmName: string;
  /** The workspace was started for this run (else it was running). */
  started: boolean;
  start?: StartResult;
  /** The application's exit code (it exited normally). */
  exitCode?: number;
  /** The signal that ended it. */
  signal?: number;
  stdout: Buffer;
  stderr: Buffer;
  truncated: boolean;
}

/** Runs application `app` of workspace `name` in its guest; see the file comment. */
export async function runApplication(name: string, app: string, o: RunOptions = {}): Promise<RunResult> {
  checkWorkspaceName(name);
  checkAppName(app);
  const ctx = await openClient(o.clientRoot);
  const cfg = readClientConfig(ctx.root);
  const vmName = instanceName(ctx.root, cfg.user, name);
  const published = async () => (await offlineEntry(ctx.root, cfg.server, cfg.user, name))?.settings.applications ?? [];
  const find = (apps: Awaited<ReturnType<typeof published>>) => apps.find((a) => a.name === app);
  let start: StartResult | undefined;
  const agentMs = o.agentTimeoutMs ?? DEFAULT_AGENT_TIMEOUT_MS;
  const startIt = async () => { start = await startWorkspace(name, { ...o, display: o.display ?? 'window' }); };
  if (!runningState(vmName, o.runRoot)) {
    try {
      await startIt();
    } catch (e) {
      if (!(e instanceof MedvError && e.code === 'EBUSY')) throw e;
      // another start of it (a second menu click) holds the workspace: wait for it, then use the VM
      // it started (or start it, when that start failed)
      if (!runningState(vmName, o.runRoot)) {
        o.onInfo?.(`workspace ${name} is being started by another medv command: waiting for it`);
        // its start or stop by another process is over once the workspace's lock is free (then let go at once)
        if (!(await waitUntilFree(() => lockWorkspace(ctx.root, cfg.user, name), { everyMs: 200, forMs: agentMs }))) throw e;
        if (!runningState(vmName, o.runRoot)) await startIt();
      }
    }
  }
  const apps = await published();
  const entry = find(apps);
  if (!entry) {
    throw new MedvError('ENOENT', `workspace ${name} publishes no application ${app}${apps.length ? ` (it publishes ${apps.map((a) => a.name).join(', ')})` : ''}`);
  }
  // another start (a second menu click) may still be bringing the VM up: its agent port comes with QEMU
  await untilNotStarting(vmName, o.runRoot, agentMs);
  const socket = join(vmRunDir(vmName, o.runRoot), AGENT_SOCKET);
  let st: fs.Stats | undefined;
  try { st = fs.lstatSync(socket); } catch { st = undefined; }
  if (!st?.isSocket()) {
    throw new MedvError('EUNSUPPORTED', `the VM of workspace ${name} runs without the guest agent's port (started before its policy published applications): stop it (medv workspace stop ${name}) and run ${app} again`);
  }
  const agent = await AgentClient.connect(socket);
  try {
    o.onInfo?.(`waiting for the guest agent of workspace ${name}`);
    await agent.waitForAgent(agentMs, { alive: () => runningState(vmName, o.runRoot) !== undefined });
    o.onInfo?.(`running ${app} in workspace ${name}`);
    const r = await agent.exec(entry.argv, { timeoutMs: o.timeoutMs ? Math.min(o.timeoutMs, NO_LIMIT_MS) : NO_LIMIT_MS });
    return { workspace: name, application: app, argv: entry.argv, vmName, started: start !== undefined, ...(start ? { start } : {}), ...r };
  } finally {
    agent.close();
  }
}

/** Resolves once VM `vmName` is past `starting` (or gone), woken by its run folder's changes; ETIMEOUT after `ms`. */
async function untilNotStarting(vmName: string, runRoot: string | undefined, ms: number): Promise<void> {
  if (runningState(vmName, runRoot)?.state !== 'starting') return;
  await new Promise<void>((resolve, reject) => {
    let watcher: fs.FSWatcher | undefined;
    const done = (e?: Error) => { clearTimeout(timer); watcher?.close(); if (e) reject(e); else resolve(); };
    const check = () => {
      try {
        if (runningState(vmName, runRoot)?.state !== 'starting') done();
      } catch (e) { done(e as Error); }
    };
    const timer = setTimeout(() => done(new MedvError('ETIMEOUT', `the VM ${vmName} was still starting after ${Math.round(ms / 1000)} s`)), Math.min(ms, NO_LIMIT_MS));
    try {
      watcher = fs.watch(vmRunDir(vmName, runRoot), check);
      watcher.on('error', () => check());
    } catch { /* the folder is gone: the VM is no longer starting */ }
    check();
  });
}

/**
 * The exit status `medv workspace run` ends with: the application's exit code, or 128 + the
 * signal that ended it (as a shell reports it).
 */
export function exitStatusOf(r: Pick<RunResult, 'exitCode' | 'signal'>): number {
  if (r.exitCode !== undefined) return r.exitCode & 0xff;
  if (r.signal !== undefined) return (128 + r.signal) & 0xff;
  return 1;
}
