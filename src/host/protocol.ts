/**
 * The supervisor's control protocol: newline-delimited JSON on control.sock.
 *   request:  {"id": 1, "cmd": "status" | "stop" | "pause" | "resume" | "screenshot" | "suspend" | "devices", "args": {...}}
 *   response: {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error": {"code", "message"}}
 * Lines are bounded (src/core/jsonlines.ts: a peer cannot grow our buffer past 64 KiB); a longer
 * line ends the connection.
 */
import { connect, type Socket } from 'node:net';
import { MedvError, type ErrorCode } from '../core/errors.js';
import { JsonLineReader } from '../core/jsonlines.js';

export type ControlCommand = 'status' | 'stop' | 'pause' | 'resume' | 'screenshot' | 'suspend' | 'devices';

export interface ControlRequest { id: number; cmd: ControlCommand; args?: Record<string, unknown> }
export type ControlResponse =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: { code: ErrorCode; message: string } };

/** Send one request to a control socket and wait for its response (typed error when refused). */
export async function controlRequest(socketPath: string, cmd: ControlCommand, args: Record<string, unknown> = {}, timeoutMs = 120_000): Promise<unknown> {
  const socket: Socket = await new Promise((resolve, reject) => {
    const s = connect(socketPath);
    s.once('connect', () => { s.removeListener('error', reject); resolve(s); });
    s.once('error', (e) => reject(new MedvError('EHYPERVISOR', `cannot reach the VM's supervisor (${(e as NodeJS.ErrnoException).code ?? e.message})`, { file: socketPath })));
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { socket.destroy(); reject(new MedvError('ETIMEOUT', `the VM's supervisor did not answer ${cmd} within ${timeoutMs} ms`, { file: socketPath })); }, timeoutMs);
    const finish = (f: () => void) => { clearTimeout(timer); socket.destroy(); f(); };
    const reader = new JsonLineReader((value) => {
      const msg = value as ControlResponse;
      if (msg?.id !== 1) return;
      if (msg.ok) finish(() => resolve(msg.result));
      else finish(() => reject(new MedvError(msg.error?.code ?? 'EINTERNAL', msg.error?.message ?? 'unknown error')));
    }, (e) => finish(() => reject(new MedvError('EPROTO', e.message, { file: socketPath }))), 'the supervisor');
    socket.on('data', (c: Buffer) => reader.push(c));
    socket.on('error', (e) => finish(() => reject(new MedvError('EHYPERVISOR', `control connection failed: ${e.message}`, { file: socketPath }))));
    socket.on('close', () => finish(() => reject(new MedvError('EHYPERVISOR', `the supervisor closed the connection before answering ${cmd}`, { file: socketPath }))));
    socket.write(`${JSON.stringify({ id: 1, cmd, args } satisfies ControlRequest)}\n`);
  });
}
