/**
 * A minimal QMP client for tests: greeting, `qmp_capabilities`, `execute` (matched by id) and
 * events. Newline-delimited JSON over a unix socket. Generic on purpose (nothing test-guest
 * specific), so it can move into src/hypervisor later.
 */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** A QMP `error` reply: `class` is QEMU's error class (GenericError, CommandNotFound, ...). */
export class QmpError extends Error {
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

interface Pending { command: string; resolve: (value: unknown) => void; reject: (e: Error) => void }

export class QmpClient extends EventEmitter {
  /** Every event received, in order. */
  readonly events: QmpEvent[] = [];
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closedError: Error | undefined;

  private constructor(private readonly socket: Socket, readonly path: string) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (e) => this.onClose(e));
    socket.on('close', () => this.onClose(new Error(`QMP connection to ${path} closed`)));
  }

  /**
   * Connects (retrying while the socket does not exist yet, up to `timeoutMs`), reads the greeting
   * and negotiates capabilities. `alive()` returning false stops the retries early (QEMU exited).
   */
  static async connect(path: string, timeoutMs: number, alive: () => boolean = () => true): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    let lastError: Error = new Error('timed out');
    while (Date.now() < deadline && alive()) {
      let socket: Socket;
      try {
        socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => { s.removeListener('error', reject); resolve(s); });
          s.once('error', reject);
        });
      } catch (e) {
        lastError = e as Error;
        await new Promise((r) => setTimeout(r, 25));
        continue;
      }
      const client = new QmpClient(socket, path);
      await client.greeting(Math.max(1, deadline - Date.now()));
      await client.execute('qmp_capabilities');
      return client;
    }
    throw new Error(`cannot connect to QMP at ${path}: ${alive() ? lastError.message : 'QEMU exited'}`);
  }

  /** Runs a command; resolves with its `return` value, rejects with a QmpError. */
  execute<T = any>(command: string, args?: object): Promise<T> {
    if (this.closedError) return Promise.reject(new Error(`QMP ${command}: ${this.closedError.message}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id })}\n`);
    });
  }

  /** Resolves with the next event named `name` (or one already received when `past` is true). */
  waitEvent(name: string, timeoutMs: number, past = false): Promise<QmpEvent> {
    const seen = past ? this.events.find((e) => e.event === name) : undefined;
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => { if (e.event === name) { done(); resolve(e); } };
      const timer = setTimeout(() => { done(); reject(new Error(`no QMP event ${name} within ${timeoutMs} ms`)); }, timeoutMs);
      const done = () => { clearTimeout(timer); this.removeListener('event', onEvent); };
      this.on('event', onEvent);
    });
  }

  close(): void {
    this.onClose(new Error('QMP client closed'));
    this.socket.destroy();
  }

  private greeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no QMP greeting')), timeoutMs);
      this.once('greeting', () => { clearTimeout(timer); resolve(); });
      this.once('closed', (e: Error) => { clearTimeout(timer); reject(e); });
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      let msg: any;
      try { msg = JSON.parse(line); } catch { continue; }
      if (msg.QMP) this.emit('greeting', msg.QMP);
      else if (typeof msg.event === 'string') {
        this.events.push(msg as QmpEvent);
        this.emit('event', msg as QmpEvent);
      } else if (typeof msg.id === 'number' && this.pending.has(msg.id)) {
        const p = this.pending.get(msg.id)!;
        this.pending.delete(msg.id);
        if (msg.error) p.reject(new QmpError(p.command, String(msg.error.class), String(msg.error.desc)));
        else p.resolve(msg.return);
      }
    }
  }

  private onClose(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    for (const p of this.pending.values()) p.reject(new Error(`QMP ${p.command}: ${e.message}`));
    this.pending.clear();
    this.emit('closed', e);
  }
}
