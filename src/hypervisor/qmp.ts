/** A small QMP client: greeting, qmp_capabilities, execute, events (newline-delimited JSON on a unix socket). */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { MedvError } from '../errors.js';

export interface QmpEvent { event: string; data?: Record<string, unknown>; timestamp?: unknown }

export class QmpClient extends EventEmitter {
  private buffer = '';
  private queue: Array<{ resolve: (v: unknown) => void; reject: (e: Error) => void; command: string }> = [];
  private greeted?: (v: unknown) => void;
  private closed = false;

  private constructor(private readonly sock: Socket, private readonly path: string) {
    super();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('close', () => this.fail(new MedvError('EHYPERVISOR', 'QMP connection closed', { file: path })));
    sock.on('error', (e) => this.fail(new MedvError('EHYPERVISOR', `QMP: ${e.message}`, { file: path })));
  }

  /** Connect, retrying while QEMU creates the socket, and negotiate capabilities. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((res, rej) => {
          const s = connect(path);
          s.once('connect', () => res(s));
          s.once('error', rej);
        });
        const client = new QmpClient(sock, path);
        await new Promise((res) => { client.greeted = res; });
        await client.execute('qmp_capabilities');
        return client;
      } catch (e) {
        if (Date.now() > deadline) throw new MedvError('EHYPERVISOR', `cannot connect to QMP: ${(e as Error).message}`, { file: path });
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new MedvError('EHYPERVISOR', 'QMP connection closed', { file: this.path }));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ resolve: resolve as (v: unknown) => void, reject, command });
      this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  close(): void {
    this.closed = true;
    this.sock.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try { msg = JSON.parse(line); } catch { continue; }
      if ('QMP' in msg) { this.greeted?.(msg); this.greeted = undefined; }
      else if ('event' in msg) this.emit('event', msg as unknown as QmpEvent);
      else if ('return' in msg || 'error' in msg) {
        const waiter = this.queue.shift();
        if (!waiter) continue;
        if ('error' in msg) {
          const err = msg.error as { class?: string; desc?: string };
          waiter.reject(new MedvError('EHYPERVISOR', `QMP ${waiter.command}: ${err.desc ?? err.class}`));
        } else waiter.resolve(msg.return);
      }
    }
  }

  private fail(e: Error): void {
    if (this.closed && this.queue.length === 0) return;
    this.closed = true;
    for (const w of this.queue.splice(0)) w.reject(e);
    this.emit('close');
  }
}
