/**
 * The console's image test (MED-V's "test read-only"): boot a published version on the server,
 * watch it, keep a screenshot and its serial log with the version, stop it.
 *
 * One run, in DIR/tests/<image>_<version>/ (0700, never served but through the console's gate):
 *   1. the image's published keys (keyservice.ts, unwrapped in secure memory) are written as a key
 *      folder wrapped under a fresh random host key of this run (src/pack/keyfolder.ts), and the
 *      version is fetched from DIR/images into an encrypted `disk.evhd` (src/transfer fetchImage):
 *      the disk is never on the server's disk in clear;
 *   2. a VM boots it read-only (src/host/client.ts startVm, disk mode `test`: writes go to a
 *      throw-away undo disk, discarded at stop), with the memory and hardware of the first policy
 *      workspace of this image, no network (a test VM must not reach the server's own services),
 *      its screen on a VNC unix socket in the run folder (the console's live view proxies it over a
 *      WebSocket; the socket never leaves the server), KVM when usable, else TCG;
 *   3. when its serial output matches the ready pattern, or after the timeout, `screen.png` is
 *      taken (QMP screendump); the VM then stays up for `holdMs` (the administrator looks at it
 *      and uses it in the live view, or stops it earlier), then it is stopped and its serial log
 *      kept (`serial.log`, last 1 MiB);
 *   4. the disk, its key file, the key folder and the host key are deleted; `result.json` says
 *      what happened. Every run is audited (image.test).
 * With `medv serve --image-test-on-upload`, a version an upload completes is tested by `(upload)`.
 * At most one test runs at a time (TCG is heavy); another start, even one at the same moment, is EBUSY (503); a test a killed server left behind is cleaned up at the next start (recover).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { ensurePrivateDir, readBoundedSync, writeFileAtomic } from '../core/fsio.js';
import { IMAGE_NAME_RE, checkImageName } from '../api/names.js';
import { createHostKey, type KekSource } from '../crypto/kek.js';
import { screenshotVm, startVm, stopVm, vmStatus } from '../host/client.js';
import { lockRunDir } from '../host/vmlock.js';
import { removeKeyFolder, writeKeyFolder } from '../pack/keyfolder.js';
import { fetchImage } from '../transfer/fetch.js';
import { IMAGES_DIR } from './images.js';
import type { KeyService } from './keyservice.js';
import type { Store } from './store/index.js';
import type { Audit } from './audit.js';

export const TESTS_DIR = 'tests';
/** Who started a test that `medv serve --image-test-on-upload` ran (not a user name: it cannot be one). */
export const UPLOAD_TESTER = '(upload)';
const SERIAL_KEEP = 1 << 20;

export interface ImageTestOptions {
  root: string;
  store: Store;
  audit: Audit;
  keys: KeyService;
  /** How long to wait for the ready pattern before the screenshot is taken anyway. */
  timeoutMs: number;
  /** Serial output that means the guest is up (default: a line with the word "ready" or a login prompt). */
  readyPattern: RegExp;
  /** How long the VM stays up after the screenshot, for the live view (0: stop at once). */
  holdMs: number;
  /** Run folders of the test VMs (default DIR/tests/.run). */
  runRoot?: string;
  accel?: 'kvm' | 'tcg';
}

export const IMAGE_TEST_DEFAULTS = { timeoutMs: 120_000, holdMs: 300_000, readyPattern: /\bready\b|login: *$/m };

/** running: waiting for the ready pattern; shown: screenshot taken, the VM stays up for the live view. */
export type TestPhase = 'fetching' | 'booting' | 'running' | 'shown' | 'stopping' | 'done' | 'failed';

export interface TestRecord {
  image: string;
  version: number;
  phase: TestPhase;
  by: string;
  startedAt: string;
  readyAt?: string;
  endedAt?: string;
  /** ready: the pattern was seen; timeout: it was not, the screenshot was taken anyway. */
  outcome?: 'ready' | 'timeout';
  error?: string;
  accel?: string;
  memoryMiB?: number;
  screenshot: boolean;
}

interface Running { record: TestRecord; vm: string; cancel: () => void; done: Promise<void> }

/** A run's stop button: `cancelled` says whether it was pressed, `onCancel` is called when it is. */
interface Stop { cancelled(): boolean; onCancel(f: () => void): () => void }
const LIVE: TestPhase[] = ['running', 'shown'];

/** The last `max` bytes of a regular file (not through a link), or undefined when it cannot be read. */
function tail(file: string, max: number): Buffer | undefined {
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) return undefined;
      const b = Buffer.alloc(Math.min(st.size, max));
      const n = fs.readSync(fd, b, 0, b.length, st.size - b.length);
      return b.subarray(0, n);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined;
  }
}


/** The memory and hardware of the first (by policy name) published workspace that uses `image`. */
async function settingsFor(store: Store, image: string): Promise<{ memoryMiB: number; diskBus?: 'ide' | 'virtio'; nic?: 'e1000' | 'virtio' }> {
  for (const p of await store.lists.newestPolicies()) {
    for (const w of (p.document as { workspaces?: Record<string, unknown>[] }).workspaces ?? []) {
      if (w.image !== image) continue;
      const hw = (w.hardware ?? {}) as { diskBus?: 'ide' | 'virtio'; nic?: 'e1000' | 'virtio' };
      const m = w.memory;
      const table = typeof m === 'object' && m !== null ? (m as { byHostRam?: { guestMiB: number }[] }).byHostRam ?? [] : [];
      const memoryMiB = typeof m === 'number' ? m : table.length ? Math.min(...table.map((r) => r.guestMiB)) : 256;
      return { memoryMiB, diskBus: hw.diskBus, nic: hw.nic };
    }
  }
  return { memoryMiB: 256 };
}

export class ImageTests {
  readonly o: ImageTestOptions;
  private readonly dir: string;
  private readonly run: string;
  private current: Running | undefined;
  /** A start is between its checks and its run: a second start waits its turn (one test at a time). */
  private starting = false;

  constructor(o: Partial<ImageTestOptions> & Pick<ImageTestOptions, 'root' | 'store' | 'audit' | 'keys'>) {
    this.o = { ...IMAGE_TEST_DEFAULTS, ...o };
    this.dir = join(o.root, TESTS_DIR);
    this.run = o.runRoot ?? join(this.dir, '.run');
  }

  /** The folder of one version's test (created private on first use). */
  private folder(image: string, version: number): string {
    checkImageName(image);
    ensurePrivateDir(this.dir);
    return ensurePrivateDir(join(this.dir, `${image}_${version}`));
  }

  /** The VM name of a test: the version and a short hash (an image name may use up the name's 64 characters). */
  static vmName(image: string, version: number): string {
    return `imagetest-${version}-${createHash('sha256').update(`${image}\0${version}`).digest('hex').slice(0, 12)}`;
  }

  /** Start a test of `image` version `version`; resolves once it is under way (phase fetching). */
  async start(image: string, version: number, by: string): Promise<TestRecord> {
    checkImageName(image);
    if (this.starting || (this.current && !['done', 'failed'].includes(this.current.record.phase))) {
      const c = this.current?.record;
      throw new MedvError('EBUSY', `${c && !this.starting ? `a test of ${c.image} version ${c.version} is running` : 'a test is starting'}; one test at a time`);
    }
    // held from the check above (no await before it) until the run is recorded: two starts at once cannot both pass
    this.starting = true;
    try {
      return await this.begin(image, version, by);
    } finally {
      this.starting = false;
    }
  }

  private async begin(image: string, version: number, by: string): Promise<TestRecord> {
    const index = join(this.o.root, IMAGES_DIR, `${image}_${version}.ckm.index`);
    try {
      if (!(await fs.promises.lstat(index)).isFile()) throw new Error('not a file');
    } catch {
      throw new MedvError('ENOENT', `no version ${version} of image ${image} is published`);
    }
    if ((await this.o.keys.signersOf(image)) === undefined) throw new MedvError('ENOKEY', `no keys published for image ${image} (medv admin image-keys publish)`);
    const dir = this.folder(image, version);
    for (const f of ['result.json', 'screen.png', 'serial.log']) fs.rmSync(join(dir, f), { force: true });
    const record: TestRecord = { image, version, phase: 'fetching', by, startedAt: new Date().toISOString(), screenshot: false };
    let cancelled = false;
    const waiters = new Set<() => void>();
    const stop: Stop = {
      cancelled: () => cancelled,
      onCancel(f) { if (cancelled) f(); else waiters.add(f); return () => waiters.delete(f); },
    };
    const vm = ImageTests.vmName(image, version);
    const running: Running = { record, vm, cancel: () => { cancelled = true; for (const w of [...waiters]) w(); }, done: Promise.resolve() };
    running.done = this.execute(running, dir, index, stop);
    this.current = running;
    await this.o.audit.record({ actor: by, action: 'image.test', target: image, detail: { version } });
    return { ...record };
  }

  private async execute(r: Running, dir: string, index: string, stop: Stop): Promise<void> {
    const cancelled = stop.cancelled;
    const rec = r.record;
    const hostKey = join(dir, 'host.key');
    const disk = join(dir, 'disk.evhd');
    const keyDir = join(dir, 'keys');
    let started = false;
    try {
      this.scrub(dir);
      await createHostKey(hostKey);
      const kek: KekSource = { kind: 'hostkey', keyFile: hostKey };
      await this.o.keys.withImageKeys(rec.image, (keys) => writeKeyFolder(keyDir, keys, kek));
      await fetchImage({ source: index, out: disk, keyDir, kek: () => kek, trim: false, cacheDir: join(dir, '.seeds') });
      if (cancelled()) throw new MedvError('EINVAL_ARG', 'stopped by the administrator');
      rec.phase = 'booting';
      const s = await settingsFor(this.o.store, rec.image);
      rec.memoryMiB = s.memoryMiB;
      ensurePrivateDir(this.run, true);
      const state = await startVm({
        name: r.vm, memoryMiB: s.memoryMiB, disks: [{ path: disk, mode: 'test' }], network: 'none', display: 'vnc',
        savedState: join(dir, 'state.vsv'), accel: this.o.accel, ...(s.diskBus ? { diskBus: s.diskBus } : {}), ...(s.nic ? { nicModel: s.nic } : {}),
      }, { root: this.run, kek });
      started = true;
      rec.accel = state.accel;
      rec.phase = 'running';
      rec.outcome = await this.waitReady(r.vm, stop);
      if (rec.outcome === 'ready') rec.readyAt = new Date().toISOString();
      await screenshotVm(r.vm, join(dir, 'screen.png'), { root: this.run });
      fs.chmodSync(join(dir, 'screen.png'), 0o600);
      rec.screenshot = true;
      if (!cancelled() && this.o.holdMs > 0) {
        rec.phase = 'shown';
        await this.hold(stop);
      }
      rec.phase = 'stopping';
    } catch (e) {
      rec.error = e instanceof MedvError ? `${e.message} [${e.code}]` : String((e as Error)?.message ?? e);
    } finally {
      if (started) {
        await stopVm(r.vm, { root: this.run, force: true }).catch(() => undefined);
        this.keepSerial(r.vm, dir);
      }
      this.scrub(dir);
      rec.phase = rec.error ? 'failed' : 'done';
      rec.endedAt = new Date().toISOString();
      await writeFileAtomic(join(dir, 'result.json'), `${JSON.stringify(rec)}\n`, { mode: 0o600 }).catch(() => undefined);
    }
  }

  /** Resolves 'ready' when the serial log matches, 'timeout' when the time is up or the test was cancelled. */
  private waitReady(vm: string, stop: Stop): Promise<'ready' | 'timeout'> {
    return new Promise((resolve) => {
      let watcher: fs.FSWatcher | undefined;
      let settled = false;
      const finish = (v: 'ready' | 'timeout') => {
        if (settled) return;
        settled = true;
        clearTimeout(timer); clearInterval(poll); watcher?.close(); off(); resolve(v);
      };
      const off = stop.onCancel(() => finish('timeout'));
      const check = () => {
        const text = tail(join(this.run, vm, 'serial.log'), 64 * 1024)?.toString('latin1') ?? '';
        if (this.o.readyPattern.test(text)) finish('ready');
      };
      const timer = setTimeout(() => finish('timeout'), this.o.timeoutMs);
      // the log's folder is watched (an event); the slow poll covers a file system that drops events
      try { watcher = fs.watch(join(this.run, vm), check); } catch { /* folder not there yet: the poll covers it */ }
      const poll = setInterval(check, 2000);
      check();
    });
  }

  /** Wait `holdMs`, or until the test is stopped. */
  private hold(stop: Stop): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.o.holdMs);
      const off = stop.onCancel(done);
      function done() { clearTimeout(timer); off(); resolve(); }
    });
  }

  private keepSerial(vm: string, dir: string): void {
    const b = tail(join(this.run, vm, 'serial.log'), SERIAL_KEEP);
    if (b) fs.writeFileSync(join(dir, 'serial.log'), b, { mode: 0o600 });
  }

  /** Delete what a run made that must not outlive it: the disk, its key file and sidecars, the key folder, the host key. */
  private scrub(dir: string): void {
    for (const f of ['disk.evhd', 'disk.enc', 'disk.evhd.index', 'host.key', 'state.vsv', 'state.vsv.enc']) fs.rmSync(join(dir, f), { force: true });
    removeKeyFolder(join(dir, 'keys'));
    for (const d of ['Test', '.seeds', '.disk.evhd.medv-fetch']) fs.rmSync(join(dir, d), { recursive: true, force: true });
  }

  /** The running or last test of a version. */
  status(image: string, version: number): TestRecord | undefined {
    checkImageName(image);
    if (this.current && this.current.record.image === image && this.current.record.version === version) return { ...this.current.record };
    const buf = readBoundedSync(join(this.dir, `${image}_${version}`, 'result.json'), 64 * 1024, 'test result');
    if (!buf) return undefined;
    try { return JSON.parse(buf.toString('utf8')) as TestRecord; } catch { return undefined; }
  }

  /** The last `max` bytes of the serial output: live while the VM runs, else the kept copy. */
  serial(image: string, version: number, max = 64 * 1024): string {
    checkImageName(image);
    const c = this.current;
    const live = c && c.record.image === image && c.record.version === version && LIVE.includes(c.record.phase);
    return tail(live ? join(this.run, c.vm, 'serial.log') : join(this.dir, `${image}_${version}`, 'serial.log'), max)?.toString('utf8') ?? '';
  }

  /** The kept screenshot (PNG bytes) of a version's last test, if any. */
  screenshot(image: string, version: number): Buffer | undefined {
    checkImageName(image);
    return readBoundedSync(join(this.dir, `${image}_${version}`, 'screen.png'), 16 << 20, 'screenshot');
  }

  /** The VNC unix socket of a version's test while its VM runs (for the console's live view). */
  vncSocket(image: string, version: number): string | undefined {
    const c = this.current;
    if (!c || c.record.image !== image || c.record.version !== version || !LIVE.includes(c.record.phase)) return undefined;
    try {
      return vmStatus(c.vm, { root: this.run }).display.vncSocket;
    } catch {
      return undefined;
    }
  }

  /** Stop a running test early (the screenshot is taken now); false when no test of that version runs. */
  cancel(image: string, version: number): boolean {
    const c = this.current;
    if (!c || c.record.image !== image || c.record.version !== version || ['done', 'failed'].includes(c.record.phase)) return false;
    c.cancel();
    return true;
  }

  /**
   * After a restart of the server: a test the last run left behind (the server stopped or died
   * mid-test) has its VM stopped and its disk, keys and host key deleted; its result, if any, stays.
   */
  async recover(): Promise<string[]> {
    let names: string[];
    try { names = fs.readdirSync(this.dir); } catch { return []; }
    const done: string[] = [];
    for (const n of names) {
      // a test's folder is <image>_<version> (start): anything else in tests/ is not ours to touch
      const m = /^(.+)_([1-9][0-9]{0,9})$/.exec(n);
      if (!m || !IMAGE_NAME_RE.test(m[1])) continue;
      try { if (!fs.lstatSync(join(this.dir, n)).isDirectory()) continue; } catch { continue; } // a link is not followed
      const vm = ImageTests.vmName(m[1], Number(m[2]));
      try {
        const st = vmStatus(vm, { root: this.run });
        if (!['stopped', 'suspended', 'failed'].includes(st.state)) { await stopVm(vm, { root: this.run, force: true }); done.push(`stopped ${vm}`); }
      } catch { /* no such VM, or it cannot answer yet: its lock says whether a supervisor lives */ }
      try {
        if (await this.endSupervisor(vm)) done.push(`stopped the starting ${vm}`);
      } catch (e) {
        done.push(`left ${n} alone: ${(e as Error).message}`); // its files stay while its VM may run
        continue;
      }
      this.scrub(join(this.dir, n));
    }
    return done;
  }

  /**
   * A supervisor the killed server had just spawned may not have written its state yet (vmStatus:
   * no such VM), and would go on to run the guest after its files are gone. It holds the lock of its
   * run folder for its whole life (../host/vmlock.ts): while the lock is held, ask the holder (a
   * supervisor of this run root, checked by its command line) to stop (SIGTERM: ACPI, then forced),
   * until the lock is free. True when there was one to stop.
   */
  private async endSupervisor(vm: string): Promise<boolean> {
    const dir = join(this.run, vm);
    if (!fs.existsSync(dir)) return false;
    for (let waited = 0, signalled = false; ; waited += 100) {
      let fd: number;
      try {
        fd = lockRunDir(dir, vm);
      } catch (e) {
        if (!(e instanceof MedvError && e.code === 'EBUSY')) throw e;
        if (waited > 60_000) throw new MedvError('EBUSY', `the test VM ${vm} a killed server left would not stop`, e.data);
        if (!signalled) for (const { pid } of (e.data.holders as Array<{ pid: number }> | undefined) ?? []) if (this.isOurSupervisor(pid)) { try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ } }
        signalled = true;
        await new Promise((r) => setTimeout(r, 100)); // the kernel tells no one when a flock is released
        continue;
      }
      fs.closeSync(fd);
      return signalled;
    }
  }

  /**
   * Whether `pid` (a holder of a run folder's lock, as block/flock.ts finds it: /proc/locks, or the
   * descriptors' fdinfo when the lock was taken by flock(1) for the process) is a supervisor of this
   * run root: nothing else is ever signalled.
   */
  private isOurSupervisor(pid: number): boolean {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      return cmd.some((a) => a.endsWith('supervisor-main.js')) && cmd.some((a) => a.startsWith(`${this.run}/`));
    } catch { return false; }
  }

  /** Wait for the running test (tests, shutdown). */
  async settled(): Promise<void> {
    await this.current?.done;
  }

  async close(): Promise<void> {
    this.current?.cancel();
    await this.current?.done;
  }
}
