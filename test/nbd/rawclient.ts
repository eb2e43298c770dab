/**
 * A deliberately low-level NBD client for server tests: it sends exactly the bytes a test asks for
 * and reads replies in order of arrival, so tests can send malformed input and check every field.
 */
import { connect, type Socket } from 'node:net';
import * as P from '../helpers/nbd-codec.js';

export class RawClient {
  private buf = Buffer.alloc(0);
  private waiter?: () => void;
  closed = false;
  private readonly closedEvent: Promise<void>;

  private constructor(readonly sock: Socket) {
    let onClosed!: () => void;
    this.closedEvent = new Promise((r) => { onClosed = r; });
    sock.on('data', (c: Buffer) => { this.buf = Buffer.concat([this.buf, c]); this.wake(); });
    sock.on('error', () => undefined);
    sock.on('close', () => { this.closed = true; this.wake(); onClosed(); });
  }

  static async open(path: string): Promise<RawClient> {
    const sock = connect(path);
    await new Promise<void>((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    return new RawClient(sock);
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Read exactly n bytes; rejects if the server closes first. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`connection closed with ${this.buf.length}/${n} bytes`);
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${n} bytes (have ${this.buf.length})`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 50);
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  /** Resolves true when the server closes the connection within the timeout. */
  async waitClosed(timeoutMs = 3000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); });
    await Promise.race([this.closedEvent, timeout]);
    clearTimeout(timer);
    return this.closed;
  }

  write(b: Buffer): void { this.sock.write(b); }

  destroy(): void { this.sock.destroy(); }

  /** Greeting + client flags. */
  async hello(clientFlags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES): Promise<P.Greeting> {
    const g = P.decodeGreeting(await this.read(P.GREETING_SIZE));
    const f = Buffer.alloc(4);
    f.writeUInt32BE(clientFlags);
    this.write(f);
    return g;
  }

  async optionReply(): Promise<P.OptionReplyHeader & { data: Buffer }> {
    const h = P.decodeOptionReplyHeader(await this.read(P.OPTION_REPLY_HEADER_SIZE));
    return { ...h, data: h.length ? await this.read(h.length) : Buffer.alloc(0) };
  }

  /** Send an option and collect replies up to and including the final one (ACK or an error). */
  async option(option: number, data?: Buffer): Promise<Array<P.OptionReplyHeader & { data: Buffer }>> {
    this.write(P.encodeOption(option, data));
    const replies = [];
    for (;;) {
      const r = await this.optionReply();
      replies.push(r);
      if (r.type === P.NBD_REP_ACK || P.isOptionError(r.type)) return replies;
    }
  }

  /** STRUCTURED_REPLY then SET_META_CONTEXT base:allocation (as QEMU 7.2 does); returns the context id. */
  async negotiateStructured(queries: string[] = [P.BASE_ALLOCATION]): Promise<number> {
    const [sr] = await this.option(P.NBD_OPT_STRUCTURED_REPLY);
    if (sr.type !== P.NBD_REP_ACK) throw new Error(`STRUCTURED_REPLY refused: 0x${sr.type.toString(16)}`);
    const replies = await this.option(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest({ name: '', queries }));
    const ctx = replies.find((r) => r.type === P.NBD_REP_META_CONTEXT);
    return ctx ? P.decodeRepMetaContext(ctx.data).id : 0;
  }

  /** Read one structured reply chunk (header and payload). */
  async chunk(): Promise<P.StructuredReplyHeader & { payload: Buffer }> {
    const h = P.decodeStructuredReplyHeader(await this.read(P.STRUCTURED_REPLY_HEADER_SIZE));
    return { ...h, payload: h.length ? await this.read(h.length) : Buffer.alloc(0) };
  }

  /** Full handshake with OPT_GO; returns the decoded infos. */
  async go(name = '', requests: number[] = [P.NBD_INFO_BLOCK_SIZE], hello = true): Promise<P.Info[]> {
    if (hello) await this.hello();
    const replies = await this.option(P.NBD_OPT_GO, P.encodeInfoRequest({ name, requests }));
    const last = replies[replies.length - 1];
    if (last.type !== P.NBD_REP_ACK) throw new Error(`GO failed: 0x${last.type.toString(16)} ${last.data.toString()}`);
    return replies.filter((r) => r.type === P.NBD_REP_INFO).map((r) => P.decodeInfo(r.data));
  }

  request(type: number, handle: bigint, offset: number, length: number, data?: Buffer, flags = 0): void {
    const h = P.encodeRequest({ type, handle, offset, length, flags });
    this.write(data ? Buffer.concat([h, data]) : h);
  }

  /** Read one simple reply; `readLength(handle)` tells how much data follows a successful reply. */
  async reply(readLength: (handle: bigint) => number = () => 0): Promise<{ error: number; handle: bigint; data: Buffer }> {
    const r = P.decodeSimpleReply(await this.read(P.SIMPLE_REPLY_SIZE));
    const n = r.error === 0 ? readLength(r.handle) : 0;
    return { ...r, data: n ? await this.read(n) : Buffer.alloc(0) };
  }
}
