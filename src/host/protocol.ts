/**
 * The supervisor's control protocol: newline-delimited JSON on control.sock.
 *   request:  {"id": 1, "cmd": "status" | "stop" | "pause" | "resume" | "screenshot", "args": {...}}
 *   response: {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error": {"code", "message"}}
 * Lines are bounded (a peer cannot grow our buffer past MAX_LINE); a longer line ends the connection.
 */
import { connect, type Socket } from 'node:net';
import { MedvError, type ErrorCode } from '../core/errors.js';

export const MAX_LINE = 64 * 1024;

export type ControlCommand = 'status' | 'stop' | 'pause' | 'resume' | 'screenshot' | 'suspend';

export interface ControlRequest { id: number; cmd: ControlCommand; args?: Record<string, unknown> }
export type ControlResponse =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: { code: ErrorCode; message: string } };

/** Splits a byte stream into lines, refusing any line longer than `max` bytes. */
export class LineReader {
  private buf = '';
  constructor(private readonly onLine: (line: string) => void, private readonly onOverflow: () => void, private readonly max = MAX_LINE) {}

  push(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line.length > this.max) return this.overflow();
      if (line.trim()) this.onLine(line);
    }
    if (this.buf.length > this.max) this.overflow();
  }

  private overflow(): void {
    this.buf = '';
    this.onOverflow();
  }
}

/** Send one request to a control socket and wait for its response (typed error when refused). */
export async function controlRequest(socketPath: string, cmd: ControlCommand, args: Record<string, unknown> = {}, timeoutMs = 120_000): Promise<unknown> {
  const socket: Socket = await new Promise((resolve, reject) => {
    const s = connect(socketPath);
    s.once('connect', () => { s.removeListener('error', reject); resolve(s); });
    s.once('error', (e) => reject(new MedvError('EHYPERVISOR', `cannot reach the VM's supervisor (${(e as NodeJS.ErrnoException).code ?? e.message})`, { file: socketPath })));
  });
  socket.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { socket.destroy(); reject(new MedvError('ETIMEOUT', `the VM's supervisor did not answer ${cmd} within ${timeoutMs} ms`, { file: socketPath })); }, timeoutMs);
    const finish = (f: () => void) => { clearTimeout(timer); socket.destroy(); f(); };
    const reader = new LineReader((line) => {
      let msg: ControlResponse;
      try { msg = JSON.parse(line) as ControlResponse; } catch { return finish(() => reject(new MedvError('EPROTO', 'the supervisor sent a line that is not JSON', { file: socketPath }))); }
      if (msg.id !== 1) return;
      if (msg.ok) finish(() => resolve(msg.result));
      else finish(() => reject(new MedvError(msg.error?.code ?? 'EINTERNAL', msg.error?.message ?? 'unknown error')));
    }, () => finish(() => reject(new MedvError('EPROTO', 'the supervisor sent an over-long line', { file: socketPath }))));
    socket.on('data', (c: string) => reader.push(c));
    socket.on('error', (e) => finish(() => reject(new MedvError('EHYPERVISOR', `control connection failed: ${e.message}`, { file: socketPath }))));
    socket.on('close', () => finish(() => reject(new MedvError('EHYPERVISOR', `the supervisor closed the connection before answering ${cmd}`, { file: socketPath }))));
    socket.write(`${JSON.stringify({ id: 1, cmd, args } satisfies ControlRequest)}\n`);
  });
}
