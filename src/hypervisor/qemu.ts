/**
 * The QEMU driver: a launch spec becomes an argv (nothing else knows QEMU's command line), a process
 * with QMP, serial output captured to a file, and waits that notice when the VM stops in an error
 * state (KVM internal errors happen on nested/virtual hosts: see FACTS.md).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../errors.js';
import { QmpClient } from './qmp.js';

export type Accelerator = 'kvm' | 'tcg';

export interface DriveSpec {
  /** A host file path, or an NBD URI such as nbd+unix:///?socket=/run/x.sock */
  source: string;
  format: 'raw' | 'vpc';
  readOnly?: boolean;
}

export interface LaunchSpec {
  name: string;
  accel: Accelerator;
  memoryMiB?: number;
  drives: DriveSpec[];
  /** Folder for the QMP socket and the serial log. */
  runDir: string;
  qemuBinary?: string;
}

export const QEMU_BINARY = 'qemu-system-x86_64';

/** True when /dev/kvm can be opened read-write by this process. */
export function kvmUsable(): boolean {
  if (!existsSync('/dev/kvm')) return false;
  try { closeSync(openSync('/dev/kvm', 'r+')); return true; } catch { return false; }
}

export function defaultAccelerator(): Accelerator {
  return kvmUsable() ? 'kvm' : 'tcg';
}

export function qemuArgv(spec: LaunchSpec): string[] {
  const argv = [
    '-name', spec.name,
    '-M', 'pc',
    '-accel', spec.accel,
    '-m', String(spec.memoryMiB ?? 32),
    '-nodefaults', '-display', 'none', '-no-user-config',
    '-serial', `file:${join(spec.runDir, 'serial.log')}`,
    '-qmp', `unix:${join(spec.runDir, 'qmp.sock')},server=on,wait=off`,
    '-no-reboot',
  ];
  spec.drives.forEach((d, i) => {
    const isNbd = d.source.startsWith('nbd');
    const file = d.source.replace(/,/g, ',,');
    argv.push('-drive', `file=${file},format=${d.format},if=ide,index=${i},media=disk,cache=${isNbd ? 'none' : 'writeback'}${d.readOnly ? ',readonly=on' : ''}`);
  });
  return argv;
}

export class QemuProcess {
  private exitCode: number | null | undefined;
  private readonly exited: Promise<number | null>;
  private stderrText = '';

  private constructor(readonly spec: LaunchSpec, readonly child: ChildProcess, readonly qmp: QmpClient) {
    this.exited = new Promise((res) => {
      if (child.exitCode !== null) res(child.exitCode);
      child.once('exit', (code) => { this.exitCode = code; res(code); });
    });
    child.stderr?.on('data', (d) => { this.stderrText += d; });
  }

  static async launch(spec: LaunchSpec): Promise<QemuProcess> {
    const argv = qemuArgv(spec);
    const child = spawn(spec.qemuBinary ?? QEMU_BINARY, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => { stderr += d; });
    const early = new Promise<never>((_, rej) => {
      child.once('error', (e) => rej(new MedvError('EHYPERVISOR', `cannot start ${QEMU_BINARY}: ${e.message}`)));
      child.once('exit', (code) => rej(new MedvError('EHYPERVISOR', `QEMU exited at start (${code}): ${stderr.trim().split('\n').pop()}`)));
    });
    early.catch(() => undefined);
    try {
      const qmp = await Promise.race([QmpClient.connect(join(spec.runDir, 'qmp.sock')), early]);
      return new QemuProcess(spec, child, qmp);
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
  }

  get pid(): number | undefined { return this.child.pid; }
  get stderr(): string { return this.stderrText; }

  serial(): string {
    const p = join(this.spec.runDir, 'serial.log');
    return existsSync(p) ? readFileSync(p, 'latin1') : '';
  }

  async runState(): Promise<string> {
    const s = await this.qmp.execute<{ status: string }>('query-status');
    return s.status;
  }

  /** Wait for serial output matching `re`; fails early if QEMU exits or the VM enters an error state. */
  async waitForSerial(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; ; i++) {
      const m = this.serial().match(re);
      if (m) return m;
      if (this.exitCode !== undefined) throw new MedvError('EHYPERVISOR', `QEMU exited (${this.exitCode}) before the guest printed ${re}`);
      if (i % 10 === 9) await this.assertHealthy();
      if (Date.now() > deadline) throw new MedvError('ETIMEOUT', `guest did not print ${re} within ${timeoutMs} ms (serial so far: ${JSON.stringify(this.serial().slice(-200))})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Throws EHYPERVISOR when the VM sits in internal-error / guest-panicked (QEMU does not exit by itself then). */
  async assertHealthy(): Promise<void> {
    if (this.exitCode !== undefined) return;
    const state = await this.runState().catch(() => 'unknown');
    if (state === 'internal-error' || state === 'guest-panicked' || state === 'io-error') {
      throw new MedvError('EHYPERVISOR', `the VM stopped in state '${state}' under ${this.spec.accel.toUpperCase()}` +
        (this.spec.accel === 'kvm' ? ' (KVM could not emulate the guest; retry with TCG)' : ''), { state, accel: this.spec.accel });
    }
  }

  /** ACPI power button (the guest decides to power off). */
  async powerdown(): Promise<void> { await this.qmp.execute('system_powerdown'); }

  async waitExit(timeoutMs: number): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new MedvError('ETIMEOUT', `QEMU did not exit within ${timeoutMs} ms`)), timeoutMs); });
    try { return await Promise.race([this.exited, timeout]); } finally { clearTimeout(timer); }
  }

  /** Forced stop: quit over QMP, then SIGKILL. */
  async kill(): Promise<void> {
    if (this.exitCode !== undefined) { this.qmp.close(); return; }
    await this.qmp.execute('quit').catch(() => undefined);
    await this.waitExit(3000).catch(() => this.child.kill('SIGKILL'));
    await this.exited;
    this.qmp.close();
  }
}
