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
import { AgentClient } from '../hypervisor/qga.js';
import { vmRunDir } from '../host/rundir.js';
import { AGENT_SOCKET } from '../host/shape.js';
import { openClient, readClientConfig } from './client.js';
import { checkWorkspaceName, instanceName } from './identity.js';
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
  if (!runningState(vmName, o.runRoot)) {
    try {
      start = await startWorkspace(name, { ...o, display: o.display ?? 'window' });
    } catch (e) {
      // another start of it (another menu click) won the race: use the VM it started
      if (!(e instanceof MedvError && e.code === 'EBUSY' && runningState(vmName, o.runRoot))) throw e;
    }
  }
  const apps = await published();
  const entry = find(apps);
  if (!entry) {
    throw new MedvError('ENOENT', `workspace ${name} publishes no application ${app}${apps.length ? ` (it publishes ${apps.map((a) => a.name).join(', ')})` : ''}`);
  }
  const socket = join(vmRunDir(vmName, o.runRoot), AGENT_SOCKET);
  let st: fs.Stats | undefined;
  try { st = fs.lstatSync(socket); } catch { st = undefined; }
  if (!st?.isSocket()) {
    throw new MedvError('EUNSUPPORTED', `the VM of workspace ${name} runs without the guest agent's port (started before its policy published applications): stop it (medv workspace stop ${name}) and run ${app} again`);
  }
  const agent = await AgentClient.connect(socket);
  try {
    o.onInfo?.(`waiting for the guest agent of workspace ${name}`);
    await agent.waitForAgent(o.agentTimeoutMs ?? DEFAULT_AGENT_TIMEOUT_MS, { alive: () => runningState(vmName, o.runRoot) !== undefined });
    o.onInfo?.(`running ${app} in workspace ${name}`);
    const r = await agent.exec(entry.argv, { timeoutMs: o.timeoutMs ? Math.min(o.timeoutMs, NO_LIMIT_MS) : NO_LIMIT_MS });
    return { workspace: name, application: app, argv: entry.argv, vmName, started: start !== undefined, ...(start ? { start } : {}), ...r };
  } finally {
    agent.close();
  }
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
