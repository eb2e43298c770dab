/**
 * A QMP client: greeting, `qmp_capabilities`, `execute` (replies matched by id) and events.
 * Newline-delimited JSON over a unix socket, lines bounded (QMP_MAX_LINE). Every failure is a MedvError 'EHYPERVISOR'; a QMP
 * `error` reply is a QmpError, which also carries QEMU's error class.
 */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { MedvError } from '../core/errors.js';
import { JsonLineReader } from '../core/jsonlines.js';

/** Longest QMP line accepted: QEMU's replies and events that medv asks for are a few KiB. */
export const QMP_MAX_LINE = 1024 * 1024;
/** Events kept for `events` and `waitEvent(…, past)`. */
export const QMP_MAX_EVENTS = 1024;

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** A QMP `error` reply: `errorClass` is QEMU's class (GenericError, CommandNotFound, ...). */
export class QmpError extends MedvError {
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string, file?: string) {
    super('EHYPERVISOR', `QMP ${command}: ${errorClass}: ${desc}`, { file, command, errorClass });
    this.name = 'QmpError';
  }
}

interface Pending { command: string; resolve: (value: unknown) => void; reject: (e: Error) => void }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class QmpClient extends EventEmitter {
  /** The events received, in order: the latest QMP_MAX_EVENTS (a QEMU that sends endless events cannot grow this). */
  readonly events: QmpEvent[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closedReason: string | undefined;

  private constructor(private readonly socket: Socket, readonly path: string) {
    super();
    // Bounded lines (src/core/jsonlines.ts): a hostile or broken QEMU cannot grow our memory; a
    // line that is not JSON is skipped, an over-long one ends the connection.
    const reader = new JsonLineReader((v) => this.onMessage(v), (e, kind) => {
      if (kind === 'not-json') return true;
      this.onClose(e.message);
      socket.destroy();
      return false;
    }, 'QEMU', QMP_MAX_LINE);
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('error', (e) => this.onClose(`connection failed: ${e.message}`));
    socket.on('close', () => this.onClose('connection closed'));
  }

  /**
   * Connects (retrying while QEMU has not created the socket yet, up to `timeoutMs`), reads the
   * greeting and negotiates capabilities. `alive()` returning false stops the retries (QEMU exited).
   */
  static async connect(path: string, timeoutMs = 15_000, alive: () => boolean = () => true): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    let lastError = 'timed out';
    while (Date.now() < deadline && alive()) {
      let socket: Socket;
      try {
        socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => { s.removeListener('error', reject); resolve(s); });
          s.once('error', reject);
        });
      } catch (e) {
        lastError = (e as Error).message;
        await sleep(25);
        continue;
      }
      const client = new QmpClient(socket, path);
      try {
        await client.greeting(Math.max(1, deadline - Date.now()));
        await client.execute('qmp_capabilities');
      } catch (e) {
        client.close();
        throw e;
      }
      return client;
    }
    throw new MedvError('EHYPERVISOR', `cannot connect to QMP: ${alive() ? lastError : 'QEMU exited'}`, { file: path });
  }

  /** Runs a command; resolves with its `return` value, rejects with a QmpError (or EHYPERVISOR when closed). */
  execute<T = any>(command: string, args?: object): Promise<T> {
    if (this.closedReason) return Promise.reject(this.error(`QMP ${command}: ${this.closedReason}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id })}\n`);
    });
  }

  /** Resolves with the next event named `name` (or the first already received when `past` is true). */
  waitEvent(name: string, timeoutMs: number, past = false): Promise<QmpEvent> {
    const seen = past ? this.events.find((e) => e.event === name) : undefined;
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => { if (e.event === name) { done(); resolve(e); } };
      const onClosed = (e: Error) => { done(); reject(e); };
      const timer = setTimeout(() => { done(); reject(new MedvError('ETIMEOUT', `no QMP event ${name} within ${timeoutMs} ms`, { file: this.path })); }, timeoutMs);
      const done = () => { clearTimeout(timer); this.removeListener('event', onEvent); this.removeListener('closed', onClosed); };
      this.on('event', onEvent);
      this.on('closed', onClosed);
    });
  }

  get closed(): boolean { return this.closedReason !== undefined; }

  close(): void {
    this.onClose('client closed');
    this.socket.destroy();
  }

  private error(message: string): MedvError {
    return new MedvError('EHYPERVISOR', message, { file: this.path });
  }

  private greeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(this.error('no QMP greeting')), timeoutMs);
      this.once('greeting', () => { clearTimeout(timer); resolve(); });
      this.once('closed', (e: Error) => { clearTimeout(timer); reject(e); });
    });
  }

  private onMessage(value: unknown): void {
    const msg = value as any;
    if (msg === null || typeof msg !== 'object') return;
    if (msg.QMP) this.emit('greeting', msg.QMP);
    else if (typeof msg.event === 'string') {
      this.events.push(msg as QmpEvent);
      if (this.events.length > QMP_MAX_EVENTS) this.events.splice(0, this.events.length - QMP_MAX_EVENTS);
      this.emit('event', msg as QmpEvent);
    } else if (typeof msg.id === 'number' && this.pending.has(msg.id)) {
      const p = this.pending.get(msg.id)!;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new QmpError(p.command, String(msg.error.class), String(msg.error.desc), this.path));
      else p.resolve(msg.return);
    }
  }

  private onClose(reason: string): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    for (const p of this.pending.values()) p.reject(this.error(`QMP ${p.command}: ${reason}`));
    this.pending.clear();
    this.emit('closed', this.error(`QMP ${reason}`));
  }
}
