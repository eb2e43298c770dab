/**
 * `medv demo`: the whole product on one machine, headless, in a temp folder.
 *
 *   console  packs the Linux test guest as image demo-linux v1 (signed, encrypted, indexed)
 *   server   `medv serve` on 127.0.0.1 (in this process): the upload, a user, a policy, the image keys
 *   client   logs in, `workspace start` deploys v1 and boots it (revertible), the guest's serial output
 *            is shown, `workspace stop`
 *   console  changes files of the guest's root as an update would, packs and uploads v2
 *   client   `workspace start --update` fetches only what changed (TrimTransfer) and boots v2; stop;
 *            start again: the guest's writes of the last run are gone (revertible); `workspace run`
 *            runs the published application in the guest through its guest agent; stop; a second
 *            workspace of the same image (persistent) starts with nothing downloaded: it shares the
 *            one read-only base and writes to its own disk
 *   checks   no file under the work folder holds the guest's marker or a key in the clear
 */
import * as fs from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MedvError } from '../core/errors.js';
import { uploadStateDir } from '../core/paths.js';
import type { Accelerator } from '../hypervisor/qemu.js';
import { humanBytes } from '../core/units.js';
import { filesUnder, scanTrees } from './scan.js';

export interface WorkspaceDemoOptions {
  keep?: boolean;
  accel?: Accelerator;
  log?: (line: string) => void;
  onProgress?: (label: string, done: number, total: number) => void;
  /** Called when a progress bar's work ends (the CLI closes its bar). */
  onProgressEnd?: () => void;
}

export interface DemoBoot { version: string; boot: number; readyMs: number }

export interface WorkspaceDemoResult {
  passed: boolean;
  workDir: string;
  accel: string;
  image: { name: string; bytes: number };
  v1: { packBytes: number; fetchedBytes: number };
  v2: { packBytes: number; fetchedBytes: number; fullDownloadBytes: number; blocksFromSeeds: number; blocksFromNetwork: number };
  boots: DemoBoot[];
  reverted: boolean;
  /** The published application run in the guest through its guest agent (`medv workspace run`). */
  application: { name: string; argv: string[]; exitCode?: number; output: string };
  /** The second workspace of the image: nothing fetched, the base shared (hard links to one file). */
  second: { workspace: string; fetchedBytes: number; shared: boolean; baseLinks: number; storeGrowthBytes: number; baseBytes: number; boot: number; version: string };
  plaintextHits: { file: string; what: string[] }[];
  clients: unknown[];
  steps: { step: number; title: string; ms: number }[];
  seconds: number;
}

const IMAGE = 'demo-linux';
const WORKSPACE = 'demo-desktop';
const SECOND = 'demo-persistent';
const USER = 'alice';
const READY_MS = 180_000;

/** Wait until `file` holds a match of `re` after byte `from`; polls (the serial log is written by QEMU). */
async function waitForText(file: string, re: RegExp, from: number, timeoutMs: number): Promise<{ match: RegExpMatchArray; text: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = '';
    try { text = fs.readFileSync(file).subarray(from).toString('utf8'); } catch { /* not yet */ }
    const m = text.match(re);
    if (m) return { match: m, text };
    const err = text.match(/medv-linux: error=(\S+)/);
    if (err) throw new MedvError('EHYPERVISOR', `the guest reported an error: ${err[0]}`);
    if (Date.now() > deadline) throw new MedvError('ETIMEOUT', `the guest did not print ${re.source} within ${timeoutMs / 1000} s (serial log ${file})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function runWorkspaceDemo(o: WorkspaceDemoOptions = {}): Promise<WorkspaceDemoResult> {
  const log = o.log ?? ((s: string) => process.stdout.write(`${s}\n`));
  const t0 = performance.now();
  const { linuxGuest, writeRootFile } = await import('../hypervisor/linuxguest.js');
  const guest = linuxGuest();
  if (!fs.existsSync(guest.image)) throw new MedvError('ENOENT', `${guest.image} is missing: run bash scripts/setup.sh (npm run demo does) to build the Linux test guest`, { file: guest.image });
  const { createHostKey, readKeyFile } = await import('../crypto/index.js');
  const { openDisk } = await import('../layers/open.js');
  const { openImageKeys, packImage } = await import('../pack/index.js');
  const { serveRepository } = await import('../server/serve.js');
  const { uploadFiles } = await import('../client/upload.js');
  const { apiRequest, login, publishImageKeys, listClients } = await import('../client/api.js');
  const { openClient, saveClientLogin } = await import('../workspace/client.js');
  const { runApplication, startWorkspace, stopWorkspace } = await import('../workspace/index.js');

  const work = mkdtempSync(join(tmpdir(), 'medv-demo-'));
  const dirs = { console: join(work, 'console'), keys: join(work, 'console', 'keys'), packed: join(work, 'console', 'PackedImages'), server: join(work, 'server'), client: join(work, 'client'), run: join(work, 'run'), xdg: join(work, 'xdg') };
  for (const d of Object.values(dirs)) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  // The user's folders of this run, passed in: the environment of the process is never changed.
  const userDirs = { data: join(dirs.xdg, 'data'), cache: join(dirs.xdg, 'cache'), state: join(dirs.xdg, 'state'), config: join(dirs.xdg, 'config') };

  const steps: WorkspaceDemoResult['steps'] = [];
  let stepT = performance.now();
  const step = (title: string) => {
    const now = performance.now();
    if (steps.length) steps[steps.length - 1].ms = Math.round(now - stepT);
    stepT = now;
    steps.push({ step: steps.length + 1, title, ms: 0 });
    log(`\n[${steps.length}] ${title}`);
  };
  const progress = (label: string) => (d: number, t: number) => o.onProgress?.(label, d, t);

  let server: Awaited<ReturnType<typeof serveRepository>> | undefined;
  let running: string | undefined;
  const wsOpts = { clientRoot: dirs.client, runRoot: dirs.run, userDirs, onInfo: (m: string) => { o.onProgressEnd?.(); log(`  ${m}`); }, onWarning: (m: string) => { o.onProgressEnd?.(); log(`  warning: ${m}`); } };
  const boots: DemoBoot[] = [];
  try {
    step(`console: pack the Linux test guest as image ${IMAGE} version 1`);
    const consoleKeyFile = join(dirs.console, 'console.key');
    await createHostKey(consoleKeyFile);
    const consoleKek = () => ({ kind: 'hostkey' as const, keyFile: consoleKeyFile });
    const raw1 = join(dirs.console, `${IMAGE}-v1.img`);
    fs.copyFileSync(guest.image, raw1);
    const pack = async (raw: string, version: number) => {
      const keys = await openImageKeys(dirs.keys, IMAGE, consoleKek, { create: true, sign: true });
      const disk = await openDisk(raw, { readOnly: true });
      try {
        return await packImage(disk.device, { name: IMAGE, version, outDir: dirs.packed, keys, onProgress: progress('pack') });
      } finally {
        o.onProgressEnd?.();
        await disk.device.close();
        keys.dispose();
      }
    };
    const p1 = await pack(raw1, 1);
    log(`  ${p1.packPath.slice(work.length + 1)}: ${humanBytes(p1.packBytes)} for a ${humanBytes(p1.virtualSize)} disk (${p1.stats.zeroBlocks} zero blocks skipped), index ${humanBytes(p1.indexBytes)}`);

    step('server: medv serve on 127.0.0.1; upload v1, add user alice, publish a policy and the image keys');
    server = await serveRepository({ root: dirs.server, host: '127.0.0.1', port: 0 });
    const adminToken = fs.readFileSync(server.adminTokenFile, 'utf8').trim();
    log(`  ${server.url} (root ${dirs.server.slice(work.length + 1)}, database ${server.database.startsWith(work) ? server.database.slice(work.length + 1) : server.database})`);
    const upload = async (files: string[]) => {
      try {
        return await uploadFiles(files, { server: server!.url, token: adminToken, stateDir: uploadStateDir(userDirs), onProgress: progress('upload') });
      } finally {
        o.onProgressEnd?.();
      }
    };
    await upload([p1.packPath, p1.indexPath]);
    log(`  uploaded ${IMAGE}_1.ckm and its index (tus, resumable)`);
    const password = `demo-${Math.random().toString(36).slice(2)}-pw`;
    await apiRequest(server.url, 'POST', '/api/admin/users', { token: adminToken, body: { user: USER, password, groups: ['demo'] } });
    const policy = {
      name: 'demo',
      description: 'medv demo: a revertible Linux desktop',
      groups: ['demo'],
      workspaces: [{
        name: WORKSPACE, image: IMAGE, mode: 'revertible', onStop: 'shutdown', memory: 256, network: 'none',
        versionsToKeep: 1, suggestUpdate: true, useTrimTransfer: true, offlineDays: 7,
        hardware: { diskBus: 'virtio', nic: 'virtio' },
        applications: [{ name: 'version', title: 'Demo guest version', argv: ['cat', '/etc/medv/version'] }],
      }, {
        name: SECOND, image: IMAGE, mode: 'persistent', onStop: 'shutdown', memory: 256, network: 'none',
        versionsToKeep: 1, suggestUpdate: true, useTrimTransfer: true, offlineDays: 7,
        hardware: { diskBus: 'virtio', nic: 'virtio' },
      }],
    };
    const pub = await apiRequest<{ name: string; version: number }>(server.url, 'POST', '/api/admin/policies', { token: adminToken, body: policy });
    log(`  user ${USER} (group demo); policy ${pub.name} v${pub.version}: workspace ${WORKSPACE} (revertible) and ${SECOND} (persistent) of one image, 256 MiB, 7 days offline`);
    const signers = [Buffer.from(fs.readFileSync(join(dirs.keys, 'console.sign.pub'), 'utf8').trim(), 'hex')];
    const content = await readKeyFile(join(dirs.keys, 'images', `${IMAGE}.key.enc`), consoleKek());
    const repository = await readKeyFile(join(dirs.keys, 'repository.key.enc'), consoleKek());
    const secretNeedles: Record<string, Buffer> = {
      'image content key': Buffer.from(content.key.subarray(0, 32)),
      'image content key (hex)': Buffer.from(Buffer.from(content.key.subarray(0, 32)).toString('hex')),
      'repository key': Buffer.from(repository.key.subarray(0, 32)),
    };
    try {
      await publishImageKeys(server.url, adminToken, { image: IMAGE, content, repository, signers });
    } finally {
      content.dispose();
      repository.dispose();
    }
    log(`  image keys of ${IMAGE} stored on the server (wrapped with its server key); released only to entitled users, sealed to their client`);

    step(`client: log in as ${USER} and start workspace ${WORKSPACE} (deploys v1)`);
    const ctx = await openClient(dirs.client);
    const creds = await login(server.url, USER, password);
    await saveClientLogin(ctx, creds);
    const bootAndShow = async (update: boolean | undefined, ws = WORKSPACE) => {
      const r = await startWorkspace(ws, { ...wsOpts, update, accel: o.accel, onProgress: (l, d, t) => o.onProgress?.(l, d, t) });
      o.onProgressEnd?.();
      running = ws;
      const started = performance.now();
      const ready = await waitForText(join(dirs.run, r.vmName, 'serial.log'), guest.serial.ready, 0, READY_MS);
      const version = ready.text.match(guest.serial.init)?.[1] ?? '?';
      const boot = Number(ready.text.match(guest.serial.boot)?.[1] ?? 0);
      for (const line of ready.text.split(/\r?\n/).filter((l) => l.startsWith('medv-linux:'))) log(`  guest | ${line}`);
      boots.push({ version, boot, readyMs: Math.round(performance.now() - started) });
      return r;
    };
    const stop = async (ws = WORKSPACE) => {
      const s = await stopWorkspace(ws, wsOpts);
      running = undefined;
      log(`  workspace ${ws} stopped${s.discarded ? '; the guest\'s writes were discarded (revertible)' : ''}`);
    };
    const r1 = await bootAndShow(undefined);
    log(`  fetched ${humanBytes(r1.deployed?.fetchedBytes ?? 0)} for v1 (first deployment: every non-zero block); accelerator ${r1.vm.accel}`);
    if (r1.desktopEntries.length) log(`  menu entry: ${r1.desktopEntries.map((p) => p.slice(work.length + 1)).join(', ')}`);
    await stop();

    step(`console: update the guest's files and publish version 2`);
    const raw2 = join(dirs.console, `${IMAGE}-v2.img`);
    fs.copyFileSync(raw1, raw2);
    writeRootFile(raw2, guest.versionPath, '2\n');
    writeRootFile(raw2, '/etc/medv/release-notes', `demo-linux version 2\n${'changed files of an update\n'.repeat(200)}`);
    fs.rmSync(raw1);
    const p2 = await pack(raw2, 2);
    fs.rmSync(raw2);
    log(`  ${guest.versionPath} = 2 and a new /etc/medv/release-notes; pack v2 stores ${p2.stats.storedBlocks} blocks (${humanBytes(p2.packBytes)}), reuses ${p2.stats.reusedBlocks} of v1`);
    await upload([p2.packPath, p2.indexPath]);
    log(`  uploaded ${IMAGE}_2.ckm and its index`);

    step(`client: start ${WORKSPACE} with --update: TrimTransfer fetches only what changed`);
    const r2 = await bootAndShow(true);
    const d2 = r2.deployed;
    if (!d2) throw new MedvError('EINTERNAL', 'the update did not deploy version 2');
    const full = p1.packBytes + p2.packBytes + p2.indexBytes;
    log(`  v2: fetched ${humanBytes(d2.fetchedBytes)} = ${(100 * d2.fetchedBytes / d2.imageBytes).toFixed(2)}% of the ${humanBytes(d2.imageBytes)} image, ${(100 * d2.fetchedBytes / full).toFixed(1)}% of a full download (${humanBytes(full)}); ${d2.blocksFromSeeds} blocks from v1 on this client, ${d2.blocksFromNetwork} from the server`);
    await stop();

    step(`client: start again: a revertible workspace starts from the published image; a published application runs in it`);
    await bootAndShow(false);
    const reverted = boots.at(-1)!.boot === 1 && boots.at(-1)!.version === '2';
    log(`  boot counter ${boots.at(-1)!.boot}: ${reverted ? 'the last run\'s writes are gone' : 'NOT reverted'}`);
    const ran = await runApplication(WORKSPACE, 'version', { ...wsOpts, display: 'none', accel: o.accel, agentTimeoutMs: READY_MS, timeoutMs: 60_000 });
    const application = { name: 'version', argv: ran.argv, ...(ran.exitCode !== undefined ? { exitCode: ran.exitCode } : {}), output: ran.stdout.toString('utf8') };
    log(`  medv workspace run ${WORKSPACE} version (its menu entry's command): the guest agent ran ${ran.argv.join(' ')} in the guest: exit ${ran.exitCode ?? `signal ${ran.signal}`}, output ${JSON.stringify(application.output.trim())}`);
    await stop();

    step(`client: start a second workspace of the same image, ${SECOND} (persistent): nothing is downloaded`);
    const imagesDir = join(dirs.client, 'images');
    const storeBefore = storeBytes(imagesDir);
    const r3 = await bootAndShow(false, SECOND);
    const d3 = r3.deployed;
    if (!d3) throw new MedvError('EINTERNAL', `workspace ${SECOND} was not deployed`);
    const baseStat = fs.statSync(d3.disk);
    const baseLinks = baseStat.nlink;
    const baseBytes = baseStat.blocks * 512;
    await stop(SECOND);
    const storeGrowth = storeBytes(imagesDir) - storeBefore;
    const second = { workspace: SECOND, fetchedBytes: d3.fetchedBytes, shared: d3.shared, baseLinks, storeGrowthBytes: storeGrowth, baseBytes, boot: boots.at(-1)!.boot, version: boots.at(-1)!.version };
    log(`  ${SECOND}: fetched ${humanBytes(d3.fetchedBytes)}; its v${d3.version} disk is the same file as ${WORKSPACE}'s (${baseLinks} links to one read-only base); the client's image folder grew by ${humanBytes(Math.max(0, storeGrowth))} (its own writes and files), not by another copy of the ${humanBytes(baseBytes)} base; its own boot counter: ${second.boot}`);

    step('checks: no plaintext at rest, the server sees the client');
    const clients = await listClients(server.url, adminToken);
    for (const c of clients) log(`  server: client ${c.client} user ${c.user} ${c.workspace} v${c.version ?? '-'} ${c.state}`);
    const diskKeys = await clientDiskKeys(dirs.client, ctx.kek);
    // the client's host key is kept only wrapped (bound to this machine and user): never in the clear
    const { loadHostKey, secureFree } = await import('../crypto/index.js');
    const hk = await loadHostKey(ctx.kek);
    const needles = { 'guest marker': guest.marker, ...secretNeedles, ...diskKeys, 'client host key': Buffer.from(hk) };
    secureFree(hk);
    const hits = scanTrees([work], needles);
    log(hits.length ? `  FOUND in the clear: ${hits.map((h) => `${h.file} (${h.what.join(', ')})`).join('; ')}` : `  no file under the work folder (client, server, console, run folders) holds the guest's marker, the image keys or the disks' data keys`);
    steps[steps.length - 1].ms = Math.round(performance.now() - stepT);
    const appOk = application.exitCode === 0 && application.output === '2\n';
    const secondOk = second.shared && second.fetchedBytes === 0 && second.baseLinks >= 3 && second.storeGrowthBytes < baseBytes / 2 && second.boot === 1 && second.version === '2';
    const passed = hits.length === 0 && reverted && appOk && secondOk && boots.length === 4 && boots[0].version === '1' && boots[1].version === '2';
    const seconds = (performance.now() - t0) / 1000;
    log(`\ndemo ${passed ? 'passed' : 'FAILED'} in ${seconds.toFixed(1)} s: v1 ${humanBytes(p1.virtualSize)} image deployed, v2 update fetched ${humanBytes(d2.fetchedBytes)} (${(100 * d2.fetchedBytes / full).toFixed(1)}% of a full download), ${boots.length} boots (${boots.map((b) => `${(b.readyMs / 1000).toFixed(1)} s`).join(', ')} to ready, ${r1.vm.accel}), revert ${reverted ? 'ok' : 'FAILED'}, application ${appOk ? 'ok' : 'FAILED'}, second workspace ${secondOk ? 'shared the base, 0 B fetched' : 'FAILED'}, ${hits.length} plaintext hits`);
    return {
      passed, workDir: work, accel: r1.vm.accel ?? 'unknown',
      image: { name: IMAGE, bytes: p1.virtualSize },
      v1: { packBytes: p1.packBytes, fetchedBytes: r1.deployed?.fetchedBytes ?? 0 },
      v2: { packBytes: p2.packBytes, fetchedBytes: d2.fetchedBytes, fullDownloadBytes: full, blocksFromSeeds: d2.blocksFromSeeds, blocksFromNetwork: d2.blocksFromNetwork },
      boots, reverted, application, second, plaintextHits: hits, clients, steps, seconds,
    };
  } finally {
    if (running) await stopWorkspace(running, { ...wsOpts, force: true }).catch(() => undefined);
    await server?.close().catch(() => undefined);
    if (!o.keep) rmSync(work, { recursive: true, force: true });
    else log(`work folder kept: ${work}`);
  }
}

/** The data keys of the client's disks (unwrapped with the host key): they must never be in the clear. */
async function clientDiskKeys(clientRoot: string, kek: import('../crypto/index.js').KekSource): Promise<Record<string, Buffer>> {
  const { readKeyFile } = await import('../crypto/index.js');
  const out: Record<string, Buffer> = {};
  for (const f of filesUnder(join(clientRoot, 'images')).filter((p) => p.endsWith('.enc'))) {
    const k = await readKeyFile(f, kek);
    try { out[`data key of ${f.slice(clientRoot.length + 1)}`] = Buffer.from(k.key.subarray(0, 32)); } finally { k.dispose(); }
  }
  return out;
}

/** Bytes the files under `dir` take on disk, each inode counted once (hard links share their blocks). */
function storeBytes(dir: string): number {
  const seen = new Set<string>();
  let total = 0;
  for (const f of filesUnder(dir)) {
    const st = fs.lstatSync(f, { bigint: true });
    const id = `${st.dev}:${st.ino}`;
    if (seen.has(id)) continue;
    seen.add(id);
    total += Number(st.blocks) * 512;
  }
  return total;
}
