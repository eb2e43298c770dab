/**
 * The supervisor's control server: `control.sock` in the VM's run folder, newline-delimited JSON
 * (./protocol.ts; lines bounded by src/core/jsonlines.ts). Each request line is parsed once, handed to the supervisor's `execute`, and
 * answered on the same connection; a line that is not JSON or is too long ends that connection.
 * Stopping: `close()` stops accepting (the socket file goes); `drain()` then answers the requests
 * still in progress (at most 5 s) and ends every connection.
 */
import * as fs from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { MedvError } from '../core/errors.js';
import { LineReader } from '../core/jsonlines.js';
import type { ControlRequest, ControlResponse } from './protocol.js';

export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

export class ControlServer {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private pending = 0;
  private idle: (() => void) | undefined;

  constructor(readonly path: string, private readonly execute: ControlHandler) {}

  /** Listen on the socket (created 0600 by the umask of a 0700 run folder; a stale file is removed first). */
  async listen(): Promise<void> {
    fs.rmSync(this.path, { force: true });
    const server = createServer((s) => this.onConnection(s));
    this.server = server;
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(this.path, () => { server.off('error', rej); res(); });
    });
  }

  /** Stop accepting connections; those open get their answers in drain(). */
  close(): void {
    this.server?.close();
    fs.rmSync(this.path, { force: true });
  }

  /** Answer the requests in progress (at most 5 s), then end every connection (at most 1 s each). */
  async drain(): Promise<void> {
    if (this.pending > 0) {
      await Promise.race([new Promise<void>((r) => { this.idle = r; }), new Promise((r) => setTimeout(r, 5000).unref())]);
    }
    await Promise.all([...this.sockets].map((s) => new Promise<void>((r) => {
      s.end(() => r());
      setTimeout(() => { s.destroy(); r(); }, 1000).unref();
    })));
  }

  private onConnection(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    const reader = new LineReader((line) => void this.handle(socket, line), () => socket.destroy());
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
  }

  private async handle(socket: Socket, line: string): Promise<void> {
    let req: ControlRequest;
    try { req = JSON.parse(line) as ControlRequest; } catch { socket.destroy(); return; }
    const reply = (r: ControlResponse) => { if (!socket.destroyed) socket.write(`${JSON.stringify(r)}\n`); };
    const id = Number.isSafeInteger(req?.id) ? req.id : 0;
    this.pending++;
    try {
      reply({ id, ok: true, result: await this.execute(req) });
    } catch (e) {
      const err = e instanceof MedvError ? { code: e.code, message: e.message } : { code: 'EINTERNAL' as const, message: String((e as Error)?.message ?? e) };
      reply({ id, ok: false, error: err });
    } finally {
      if (--this.pending === 0) this.idle?.();
    }
  }
}
