/**
 * Test harness for real QEMU guests: the constants of the tiny test guest (vm/guest.asm, layout in
 * vm/layout.json), accelerator selection, and `bootGuest`, which starts qemu-system-x86_64 on a
 * disk (a file or an NBD URI), captures COM1, talks QMP, detects a KVM `internal-error` stop and
 * always cleans up.
 *
 *   const run = await bootGuest({ drive: freshGuestImage(dir), accel });
 *   try {
 *     await run.waitForSerial(GUEST.serial.ready, 30_000);
 *     await run.powerdown();
 *     assert.equal(await run.waitExit(10_000), 0);
 *   } finally { await run.kill(); }
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { QmpClient, type QmpEvent } from './qmp.js';

export type Accel = 'kvm' | 'tcg';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'vm', 'layout.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('test/helpers/qemu: cannot find the repository root (vm/layout.json)');
    dir = up;
  }
}

const ROOT = findRoot();
const layout = JSON.parse(readFileSync(join(ROOT, 'vm', 'layout.json'), 'utf8')) as {
  imageBytes: number; sectorBytes: number; counterLba: number; counterMagic: string;
  markerLba: number; markerSectors: number; marker: string;
};

/** The test guest: where it is, what it writes where, and what it prints (COM1, CRLF lines). */
export const GUEST = {
  /** Absolute path of the fresh raw image built by `npm run build`; copy it before booting. */
  image: join(ROOT, 'vm', 'build', 'guest.img'),
  source: join(ROOT, 'vm', 'guest.asm'),
  imageBytes: layout.imageBytes,
  sectorBytes: layout.sectorBytes,
  /** The 32-byte ASCII pattern; it is in no built file, only where the guest wrote it. */
  marker: Buffer.from(layout.marker, 'ascii'),
  markerLba: layout.markerLba,
  markerSectors: layout.markerSectors,
  markerOffset: layout.markerLba * layout.sectorBytes,
  markerBytes: layout.markerSectors * layout.sectorBytes,
  /** Counter sector: 8-byte magic, then the boot count as a little-endian uint32. */
  counterLba: layout.counterLba,
  counterOffset: layout.counterLba * layout.sectorBytes,
  counterMagic: Buffer.from(layout.counterMagic, 'ascii'),
  serial: {
    start: /MEDV-GUEST start\r?\n/,
    boot: /MEDV-GUEST boot=(\d+)\r?\n/,
    markerWritten: /MEDV-GUEST marker-written\r?\n/,
    /** Only on IDE: the drive acknowledged ATA FLUSH CACHE. */
    flushed: /MEDV-GUEST flushed\r?\n/,
    /** The power button is armed: send it now. */
    ready: /MEDV-GUEST ready\r?\n/,
    powerdown: /MEDV-GUEST powerdown\r?\n/,
    /** A failed int 13h call (e.g. counter-write on a read-only disk), with the BIOS status. */
    error: /MEDV-GUEST error=(\S+?)(?: ah=([0-9a-f]{2}))?\r?\n/,
  },
} as const;

/**
 * A guest KVM cannot run (vm/internal-error.asm): under KVM, QEMU stops it in run state
 * `internal-error` after `start`; under TCG it prints `ok`. For tests of that detection.
 */
export const INTERNAL_ERROR_GUEST = {
  image: join(ROOT, 'vm', 'build', 'internal-error.img'),
  serial: { start: /MEDV-GUEST start\r?\n/, ok: /MEDV-GUEST x87-mmio-ok\r?\n/ },
} as const;

/** The block the guest writes at `GUEST.markerOffset`: the marker repeated over markerBytes. */
export function markerBlock(): Buffer {
  const b = Buffer.alloc(GUEST.markerBytes);
  for (let i = 0; i < b.length; i += GUEST.marker.length) GUEST.marker.copy(b, i);
  return b;
}

/** Copies the fresh guest image into `dir` and returns the copy's path. */
export function freshGuestImage(dir: string, name = 'guest.img'): string {
  if (!existsSync(GUEST.image)) throw new Error(`${GUEST.image} is missing: run \`npm run build\` (or bash scripts/setup.sh)`);
  const path = join(dir, name);
  copyFileSync(GUEST.image, path);
  return path;
}

/** The boot count stored in a disk's bytes (the guest's LBA space, starting at `base`); 0 without the magic. */
export function bootCounter(disk: Buffer, base = 0): number {
  const at = base + GUEST.counterOffset;
  if (disk.length < at + 12 || !disk.subarray(at, at + 8).equals(GUEST.counterMagic)) return 0;
  return disk.readUInt32LE(at + 8);
}

/** True when the file contains the marker anywhere (streamed; for "no plaintext at rest" checks). */
export async function fileContainsMarker(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const chunk = Buffer.alloc(1 << 20);
    const keep = GUEST.marker.length - 1;
    let carry = Buffer.alloc(0);
    let pos = 0;
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
      if (bytesRead === 0) return false;
      pos += bytesRead;
      const window = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
      if (window.includes(GUEST.marker)) return true;
      carry = Buffer.from(window.subarray(Math.max(0, window.length - keep)));
    }
  } finally {
    await fh.close();
  }
}

/** True when this process can open /dev/kvm read-write. */
export function kvmUsable(): boolean {
  try {
    closeSync(openSync('/dev/kvm', 'r+'));
    return true;
  } catch {
    return false;
  }
}

/**
 * The accelerators tests should run under: ['kvm', 'tcg'] when /dev/kvm is usable, else ['tcg'].
 * MEDV_TEST_ACCEL=tcg (or =kvm) restricts the list to that one.
 */
export function accelerators(): Accel[] {
  const all: Accel[] = kvmUsable() ? ['kvm', 'tcg'] : ['tcg'];
  const forced = process.env.MEDV_TEST_ACCEL;
  if (forced === 'tcg') return ['tcg'];
  if (forced === 'kvm') {
    if (!all.includes('kvm')) throw new Error('MEDV_TEST_ACCEL=kvm but /dev/kvm cannot be opened read-write');
    return ['kvm'];
  }
  if (forced) throw new Error(`MEDV_TEST_ACCEL must be kvm or tcg, not ${JSON.stringify(forced)}`);
  return all;
}

export type GuestFailureKind = 'internal-error' | 'exited' | 'timeout' | 'start';

/** Why a wait on a guest failed. `kind` 'internal-error': KVM stopped the VM (see FACTS.md); retry under TCG. */
export class GuestError extends Error {
  constructor(readonly kind: GuestFailureKind, message: string) {
    super(message);
    this.name = 'GuestError';
  }
}

export interface GuestRun {
  /** Everything the guest printed on COM1 so far. */
  serial(): string;
  /** Resolves with the match once the serial output matches `re`; rejects (GuestError) on timeout, QEMU exit or KVM internal error. */
  waitForSerial(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Runs a QMP command and resolves with its `return`. */
  qmp(cmd: string, args?: object): Promise<any>;
  /** Presses the ACPI power button (QMP system_powerdown). */
  powerdown(): Promise<void>;
  /** Resolves with QEMU's exit code (null when it ended by a signal); rejects (GuestError 'timeout') if it still runs after timeoutMs. */
  waitExit(timeoutMs: number): Promise<number | null>;
  /** Stops QEMU (SIGTERM, then SIGKILL after 3 s) and removes its run directory. Idempotent; safe in `finally`/`afterEach`. */
  kill(): Promise<void>;

  readonly accel: Accel;
  readonly pid: number;
  /** The full argv (argv[0] is the qemu binary). */
  readonly argv: readonly string[];
  /** QEMU's stderr so far. */
  stderr(): string;
  /** Each complete serial line with the milliseconds since QEMU was spawned. */
  serialLines(): ReadonlyArray<{ ms: number; text: string }>;
  /** QMP events received so far. */
  events(): readonly QmpEvent[];
  /** QMP query-status `status` (e.g. 'running', 'internal-error', 'shutdown'). */
  runState(): Promise<string>;
}

export interface BootOptions {
  /** A file path, or an NBD URI: nbd+unix:///[export]?socket=PATH or nbd://host[:port]/[export]. */
  drive: string;
  format?: 'raw' | 'vpc';
  /** Default: the first of accelerators(). */
  accel?: Accel;
  /** Opens the drive read-only. QEMU's ide-hd refuses read-only drives, so this implies iface 'virtio'. */
  readOnly?: boolean;
  /** Default 'ide' ('virtio' when readOnly). SeaBIOS boots and serves int 13h from both. */
  iface?: 'ide' | 'virtio';
  /** Guest RAM in MiB (default 32). */
  memoryMiB?: number;
  /** Appended to QEMU's command line. */
  extraArgs?: string[];
  /** Milliseconds to wait for QMP (default 15000). */
  startTimeoutMs?: number;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

function blockdev(opts: BootOptions): object {
  const readOnly = opts.readOnly ?? false;
  let file: object;
  if (/^nbd(\+unix|\+tcp)?:/.test(opts.drive)) {
    const url = new URL(opts.drive);
    const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
    let server: object;
    if (url.protocol === 'nbd+unix:') {
      const socket = url.searchParams.get('socket');
      if (!socket) throw new Error(`NBD URI without ?socket=: ${opts.drive}`);
      server = { type: 'unix', path: socket };
    } else {
      server = { type: 'inet', host: url.hostname, port: url.port || '10809' };
    }
    file = { driver: 'nbd', server, ...(exportName ? { export: exportName } : {}), 'read-only': readOnly };
  } else {
    file = { driver: 'file', filename: resolve(opts.drive), 'read-only': readOnly };
  }
  return { driver: opts.format ?? 'raw', 'node-name': 'disk0', 'read-only': readOnly, file };
}

/** Starts QEMU on the drive and connects QMP. The guest runs; use waitForSerial to follow it. */
export async function bootGuest(opts: BootOptions): Promise<GuestRun> {
  const accel = opts.accel ?? accelerators()[0];
  const iface = opts.iface ?? (opts.readOnly ? 'virtio' : 'ide');
  if (iface === 'ide' && opts.readOnly) throw new Error("bootGuest: QEMU's ide-hd cannot use a read-only drive; use iface 'virtio'");
  const runDir = mkdtempSync(join(tmpdir(), 'medv-qemu-'));
  const qmpPath = join(runDir, 'qmp.sock');
  const device = iface === 'ide' ? 'ide-hd,drive=disk0,bus=ide.0,unit=0,bootindex=1' : 'virtio-blk-pci,drive=disk0,bootindex=1';
  const qemuArgs = [
    '-M', 'pc', '-accel', accel, '-m', String(opts.memoryMiB ?? 32),
    '-nodefaults', '-display', 'none', '-no-reboot', '-name', 'medv-test-guest',
    '-chardev', 'stdio,id=com1,signal=off', '-serial', 'chardev:com1',
    '-qmp', `unix:${qmpPath},server=on,wait=off`,
    '-blockdev', JSON.stringify(blockdev(opts)),
    '-device', device,
    ...(opts.extraArgs ?? []),
  ];
  // setpriv --pdeathsig: QEMU gets SIGKILL if the test process dies without cleaning up.
  const wrapper = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--'] : [];
  const argv = ['qemu-system-x86_64', ...qemuArgs];
  const spawned = [...wrapper, ...argv];
  const run = new QemuGuest(accel, argv, spawn(spawned[0], spawned.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }), runDir);
  try {
    await run.start(qmpPath, opts.startTimeoutMs ?? 15_000);
  } catch (e) {
    await run.kill();
    const stderr = run.stderr().trim();
    throw new GuestError('start', `QEMU did not start (${(e as Error).message})${stderr ? `:\n${stderr}` : ''}\nargv: ${argv.join(' ')}`);
  }
  return run;
}

interface Waiter { check: () => boolean; fail: (e: GuestError) => void }

class QemuGuest implements GuestRun {
  readonly pid: number;
  private serialText = '';
  private stderrText = '';
  private partialLine = '';
  private readonly lines: Array<{ ms: number; text: string }> = [];
  private readonly t0 = performance.now();
  private client: QmpClient | undefined;
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private failure: GuestError | undefined;
  private readonly waiters = new Set<Waiter>();
  private readonly exited: Promise<void>;
  private killed = false;

  constructor(readonly accel: Accel, readonly argv: readonly string[], private readonly child: ChildProcess, private readonly runDir: string) {
    this.pid = child.pid ?? -1;
    live.add(child);
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (chunk: string) => this.onSerial(chunk));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      this.stderrText += chunk;
      if (/KVM internal error/.test(this.stderrText)) this.setInternalError();
    });
    this.exited = new Promise((resolve) => {
      child.once('error', (e) => { this.stderrText += `spawn: ${e.message}\n`; this.onExit(null, null); resolve(); });
      // 'close', not 'exit': it comes after the last serial bytes have been read.
      child.once('close', (code, signal) => { this.onExit(code, signal); resolve(); });
    });
  }

  async start(qmpPath: string, timeoutMs: number): Promise<void> {
    this.client = await QmpClient.connect(qmpPath, timeoutMs, () => this.exit === undefined);
    this.client.on('event', (e: QmpEvent) => {
      if (e.event === 'STOP') {
        void this.runState().then((state) => { if (state === 'internal-error') this.setInternalError(); }, () => {});
      }
    });
  }

  serial(): string { return this.serialText; }
  stderr(): string { return this.stderrText; }
  serialLines(): ReadonlyArray<{ ms: number; text: string }> { return this.lines; }
  events(): readonly QmpEvent[] { return this.client?.events ?? []; }

  async runState(): Promise<string> {
    const status = await this.qmp('query-status');
    return String(status.status);
  }

  qmp(cmd: string, args?: object): Promise<any> {
    if (!this.client) return Promise.reject(new Error(`QMP ${cmd}: not connected`));
    return this.client.execute(cmd, args);
  }

  async powerdown(): Promise<void> {
    await this.qmp('system_powerdown');
  }

  waitForSerial(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        check: () => {
          const m = this.serialText.match(re);
          if (!m) return false;
          done();
          resolve(m);
          return true;
        },
        fail: (e) => { done(); reject(e); },
      };
      const done = () => { clearTimeout(timer); this.waiters.delete(waiter); };
      if (waiter.check()) return;
      const early = this.failure ?? this.exitFailure(`waiting for ${re}`);
      if (early) { reject(early); return; }
      this.waiters.add(waiter);
      timer = setTimeout(() => {
        void this.describe().then((state) => waiter.fail(new GuestError('timeout',
          `no serial output matching ${re} within ${timeoutMs} ms (accel ${this.accel}, run state ${state})${this.context()}`)));
      }, timeoutMs);
    });
  }

  async waitExit(timeoutMs: number): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), timeoutMs); });
    const outcome = await Promise.race([this.exited.then(() => 'exited' as const), timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      const state = await this.describe();
      throw new GuestError(this.failure ? 'internal-error' : 'timeout',
        `QEMU still running after ${timeoutMs} ms (accel ${this.accel}, run state ${state})${this.context()}`);
    }
    return this.exit!.code;
  }

  async kill(): Promise<void> {
    if (!this.killed) {
      this.killed = true;
      if (this.exit === undefined) {
        this.child.kill('SIGTERM');
        const hard = setTimeout(() => this.child.kill('SIGKILL'), 3000);
        await this.exited;
        clearTimeout(hard);
      }
      this.client?.close();
      rmSync(this.runDir, { recursive: true, force: true });
    }
    await this.exited;
  }

  private async describe(): Promise<string> {
    if (this.exit) return `exited (code ${this.exit.code}, signal ${this.exit.signal})`;
    try {
      return await Promise.race([this.runState(), new Promise<string>((r) => setTimeout(() => r('unknown (QMP did not answer)'), 2000))]);
    } catch (e) {
      return `unknown (${(e as Error).message})`;
    }
  }

  private context(): string {
    const stderr = this.stderrText.trim();
    return `\nserial:\n${this.serialText || '(nothing)'}${stderr ? `\nstderr:\n${stderr}` : ''}`;
  }

  private onSerial(chunk: string): void {
    this.serialText += chunk;
    const ms = performance.now() - this.t0;
    this.partialLine += chunk;
    let nl: number;
    while ((nl = this.partialLine.indexOf('\n')) >= 0) {
      this.lines.push({ ms, text: this.partialLine.slice(0, nl).replace(/\r$/, '') });
      this.partialLine = this.partialLine.slice(nl + 1);
    }
    for (const w of [...this.waiters]) w.check();
  }

  private setInternalError(): void {
    if (this.failure) return;
    this.failure = new GuestError('internal-error',
      `QEMU stopped the guest in run state internal-error under accel ${this.accel}: KVM could not emulate an instruction ` +
      `(seen on nested virtual machines, see FACTS.md). Retry under TCG (accel 'tcg', or MEDV_TEST_ACCEL=tcg).${this.context()}`);
    for (const w of [...this.waiters]) w.fail(this.failure);
  }

  private exitFailure(what: string): GuestError | undefined {
    if (!this.exit) return undefined;
    return new GuestError('exited', `QEMU exited (code ${this.exit.code}, signal ${this.exit.signal}) while ${what}${this.context()}`);
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.exit = { code, signal };
    live.delete(this.child);
    for (const w of [...this.waiters]) {
      if (!w.check()) w.fail(this.failure ?? this.exitFailure('waiting for serial output')!);
    }
  }
}
