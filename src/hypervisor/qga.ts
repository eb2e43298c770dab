/**
 * A QEMU guest agent (QGA) client: the agent inside the guest (qemu-ga) on the virtio-serial port
 * `org.qemu.guest_agent.0`, reached on the host through the unix socket of that port's chardev
 * (`LaunchSpec.guestAgent`, `<run folder>/qga.sock`).
 *
 * The protocol is QMP's JSON without a greeting or ids: a reply is matched by order. A stale reply
 * (to a request of an earlier connection the agent has not answered yet) is why every session
 * starts with `guest-sync-delimited {id}`: the agent answers with 0xFF, then `{"return": id}`;
 * everything before the 0xFF and any other reply is dropped. A 0xFF sent to the agent first makes
 * it drop whatever partial request it holds. Before the guest opened its port (the agent not
 * started yet), QEMU accepts the connection and holds what we send: `waitForAgent` repeats the
 * sync, each with its own id, until one answers or its deadline passes.
 *
 * Bounded: replies are lines of at most QGA_MAX_LINE bytes (guest-exec's output is capped by the
 * agent at 16 MiB, base64 in the reply); a longer line ends the connection (EPROTO). Every wait has
 * a deadline (ETIMEOUT); an `error` reply is an AgentError (EHYPERVISOR with the agent's class).
 */
import { connect, type Socket } from 'node:net';
import { MedvError } from '../core/errors.js';
import { JsonLineReader } from '../core/jsonlines.js';

/** Longest reply line: guest-exec-status with 16 MiB of output and as much of errors, base64 (4/3). */
export const QGA_MAX_LINE = 48 * 1024 * 1024;
/** Output kept per stream by `exec` (the agent itself keeps at most 16 MiB). */
export const QGA_MAX_OUTPUT = 16 * 1024 * 1024;
/** The port name the agent opens in the guest. */
export const QGA_PORT = 'org.qemu.guest_agent.0';

/** The guest's text as one printable line: its control characters (escape sequences, new lines) become spaces. */
// eslint-disable-next-line no-control-regex
const printable = (s: string) => s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, ' ');

/**
 * An `error` reply of the agent: `errorClass` is its class (GenericError, CommandNotFound, ...).
 * Both are the guest's words (its desc echoes what it was given): made printable before they
 * reach a message, a terminal or a log.
 */
export class AgentError extends MedvError {
  readonly errorClass: string;
  readonly desc: string;

  constructor(readonly command: string, errorClass: string, desc: string) {
    super('EHYPERVISOR', `guest agent ${command}: ${printable(errorClass)}: ${printable(desc)}`, { command, errorClass: printable(errorClass) });
    this.errorClass = printable(errorClass);
    this.desc = printable(desc);
    this.name = 'AgentError';
  }
}

export interface ExecResult {
  /** The guest process's exit code, when it exited normally. */
  exitCode?: number;
  /** The signal that ended it, when one did. */
  signal?: number;
  stdout: Buffer;
  stderr: Buffer;
  /** The agent cut the output at its own cap (16 MiB per stream). */
  truncated: boolean;
}

interface Waiter { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void }

const SYNC_BYTE = 0xff;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class AgentClient {
  private readonly reader: JsonLineReader;
  /** Replies are in request order: the head waits for the next one. */
  private readonly waiting: Waiter[] = [];
  /** Dropping bytes until the agent's 0xFF (after a guest-sync-delimited was sent). */
  private awaitingFF = false;
  /** While set, every reply but `{"return": syncId}` is dropped (a stale one). */
  private syncId: number | undefined;
  /** A reply timed out: the next one may be its late answer, so nothing but a sync is sent. */
  private outOfStep = false;
  private closedReason: string | undefined;

  private constructor(private readonly socket: Socket, readonly path: string) {
    this.reader = new JsonLineReader((v) => this.onReply(v), (e, kind) => {
      if (kind === 'not-json') return true;
      this.fail(e);
      socket.destroy();
      return false;
    }, 'the guest agent', QGA_MAX_LINE);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.fail(new MedvError('EHYPERVISOR', `guest agent connection failed: ${e.message}`, { file: path })));
    socket.on('close', () => this.fail(new MedvError('EHYPERVISOR', 'guest agent connection closed', { file: path })));
  }

  /** Connects to the agent's socket (QEMU's chardev: it exists while the VM runs). */
  static async connect(path: string): Promise<AgentClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => { s.removeListener('error', reject); resolve(s); });
      s.once('error', (e) => reject(new MedvError('EHYPERVISOR', `cannot connect to the guest agent socket: ${e.message}`, { file: path })));
    });
    return new AgentClient(socket, path);
  }

  /**
   * Syncs with the agent: repeats guest-sync-delimited (each try waits up to `tryMs` for its
   * answer) until the agent answers, `alive()` says the VM is gone, or `timeoutMs` passed.
   */
  async waitForAgent(timeoutMs: number, o: { tryMs?: number; alive?: () => boolean } = {}): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const tryMs = o.tryMs ?? 3000;
    let last: Error | undefined;
    while (Date.now() < deadline && (o.alive?.() ?? true)) {
      try {
        await this.sync(Math.min(tryMs, Math.max(1, deadline - Date.now())));
        return;
      } catch (e) {
        if (this.closedReason !== undefined) throw e;
        last = e as Error;
      }
    }
    throw new MedvError('ETIMEOUT', `the guest agent did not answer within ${timeoutMs} ms${o.alive && !o.alive() ? ' (the VM stopped)' : ''}: is qemu-guest-agent running in the guest?`, { file: this.path, cause: last?.message });
  }

  /** One guest-sync-delimited: resolves once the agent answered this id. */
  async sync(timeoutMs: number): Promise<void> {
    const id = Math.floor(Math.random() * 0x7fffffff);
    // Replies still owed to earlier requests will never be matched: fail them, then drop until our answer.
    for (const w of this.waiting.splice(0)) w.reject(new MedvError('EHYPERVISOR', `guest agent ${w.command}: no answer before a new sync`));
    this.awaitingFF = true;
    this.syncId = id;
    this.socket.write(Buffer.from([SYNC_BYTE]));
    const got = await this.request<number>('guest-sync-delimited', { id }, timeoutMs, true);
    if (got !== id) throw new MedvError('EPROTO', `the guest agent answered sync ${id} with ${JSON.stringify(got)}`);
  }

  /** Runs one command; resolves with its `return` value. */
  execute<T = unknown>(command: string, args: object | undefined, timeoutMs: number): Promise<T> {
    return this.request<T>(command, args, timeoutMs, false);
  }

  /**
   * Runs `argv` in the guest (guest-exec, no shell: argv[0] is looked up on the agent's PATH),
   * waits for it to end (guest-exec-status, every `pollMs`: the agent has no event for it), and
   * returns its exit status and output. ETIMEOUT after `timeoutMs` (the process keeps running).
   */
  async exec(argv: string[], o: { timeoutMs: number; pollMs?: number; input?: Buffer; env?: string[] }): Promise<ExecResult> {
    if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string' || a.includes('\0'))) {
      throw new MedvError('EINVAL_ARG', 'a guest command is a non-empty list of strings without NUL characters');
    }
    const deadline = Date.now() + o.timeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    const started = await this.execute<{ pid: number }>('guest-exec', {
      path: argv[0], arg: argv.slice(1), 'capture-output': true,
      ...(o.env ? { env: o.env } : {}), ...(o.input ? { 'input-data': o.input.toString('base64') } : {}),
    }, left());
    if (!started || !Number.isSafeInteger(started.pid)) throw new MedvError('EPROTO', `the guest agent answered guest-exec with ${JSON.stringify(started).slice(0, 200)}`);
    let pollMs = o.pollMs ?? 50;
    for (;;) {
      const st = await this.execute<Record<string, unknown>>('guest-exec-status', { pid: started.pid }, left());
      if (st?.exited === true) {
        const out = decodeOutput(st['out-data']);
        const err = decodeOutput(st['err-data']);
        return {
          ...(typeof st.exitcode === 'number' ? { exitCode: st.exitcode } : {}),
          ...(typeof st.signal === 'number' ? { signal: st.signal } : {}),
          stdout: out, stderr: err,
          truncated: st['out-truncated'] === true || st['err-truncated'] === true,
        };
      }
      if (Date.now() >= deadline) throw new MedvError('ETIMEOUT', `${argv[0]} (pid ${started.pid} in the guest) did not end within ${o.timeoutMs} ms`, { pid: started.pid });
      await sleep(Math.min(pollMs, left()));
      pollMs = Math.min(pollMs * 2, 1000);
    }
  }

  get closed(): boolean { return this.closedReason !== undefined; }

  close(): void {
    this.fail(new MedvError('EHYPERVISOR', 'guest agent client closed'));
    this.socket.destroy();
  }

  private request<T>(command: string, args: object | undefined, timeoutMs: number, isSync: boolean): Promise<T> {
    if (this.closedReason !== undefined) return Promise.reject(new MedvError('EHYPERVISOR', `guest agent ${command}: ${this.closedReason}`, { file: this.path }));
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiting.indexOf(w);
        if (i >= 0) this.waiting.splice(i, 1);
        // A late reply to this request would be taken for the next one's: resync before any other request.
        if (!isSync) this.outOfStep = true;
        reject(new MedvError('ETIMEOUT', `the guest agent did not answer ${command} within ${timeoutMs} ms`, { file: this.path }));
      }, timeoutMs);
      const w: Waiter = {
        command,
        resolve: (v) => { clearTimeout(timer); resolve(v as T); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      if (!isSync && (this.outOfStep || this.syncId !== undefined)) {
        clearTimeout(timer);
        reject(new MedvError('EPROTO', `guest agent ${command}: the connection is out of step (a reply timed out); sync first`, { file: this.path }));
        return;
      }
      this.waiting.push(w);
      this.socket.write(`${JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args })}\n`);
    });
  }

  private onData(chunk: Buffer): void {
    if (this.awaitingFF) {
      const at = chunk.indexOf(SYNC_BYTE);
      if (at < 0) return; // before the agent's 0xFF: stale output
      this.awaitingFF = false;
      chunk = chunk.subarray(at + 1);
    }
    // 0xFF is never in UTF-8 JSON: the agent's other sync markers (answers to earlier syncs that
    // QEMU held until the agent started) are dropped wherever they fall.
    let at: number;
    while ((at = chunk.indexOf(SYNC_BYTE)) >= 0) chunk = Buffer.concat([chunk.subarray(0, at), chunk.subarray(at + 1)]);
    this.reader.push(chunk);
  }

  private onReply(value: unknown): void {
    const msg = value as { return?: unknown; error?: { class?: unknown; desc?: unknown } } | null;
    if (msg === null || typeof msg !== 'object') return;
    if (this.syncId !== undefined) {
      // only the answer to the pending sync counts
      if (msg.return !== this.syncId) return;
      this.syncId = undefined;
      this.outOfStep = false;
    }
    const w = this.waiting.shift();
    if (!w) return; // an answer nobody waits for (its request timed out): the next sync skips such
    if (msg.error && typeof msg.error === 'object') {
      w.reject(new AgentError(w.command, String(msg.error.class ?? 'Error').slice(0, 100), String(msg.error.desc ?? '').slice(0, 1000)));
    } else {
      w.resolve(msg.return);
    }
  }

  private fail(e: MedvError): void {
    if (this.closedReason === undefined) this.closedReason = e.message;
    for (const w of this.waiting.splice(0)) w.reject(e);
  }
}

function decodeOutput(v: unknown): Buffer {
  if (typeof v !== 'string') return Buffer.alloc(0);
  const b = Buffer.from(v, 'base64');
  return b.length > QGA_MAX_OUTPUT ? b.subarray(0, QGA_MAX_OUTPUT) : b;
}
