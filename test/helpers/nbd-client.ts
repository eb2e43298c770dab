/**
 * A minimal NBD client for tests (fixed newstyle, OPT_GO, simple replies, many requests in flight).
 * It lets a test know exactly which writes and flushes the server acknowledged.
 */
import { connect, type Socket } from 'node:net';
import * as P from './nbd-codec.js';

export const NBD_CMD = { READ: P.NBD_CMD_READ, WRITE: P.NBD_CMD_WRITE, DISC: P.NBD_CMD_DISC, FLUSH: P.NBD_CMD_FLUSH, TRIM: P.NBD_CMD_TRIM, WRITE_ZEROES: P.NBD_CMD_WRITE_ZEROES } as const;
export const NBD_CMD_FLAG_FUA = P.NBD_CMD_FLAG_FUA;

export class NbdError extends Error {
  constructor(readonly errno: number, message: string) { super(message); }
}

interface Pending { resolve: (data: Buffer) => void; reject: (e: Error) => void; readLength: number }

export class NbdClient {
  size = 0n;
  transmissionFlags = 0;
  private buffered = Buffer.alloc(0);
  private waiter?: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void };
  private pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  private transmission = false;
  private closedError?: Error;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (chunk) => { this.buffered = Buffer.concat([this.buffered, chunk]); this.pump(); });
    const fail = (e: Error) => {
      this.closedError = e;
      if (this.waiter) { this.waiter.reject(e); this.waiter = undefined; }
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('connection closed')));
  }

  static async connect(socketPath: string, exportName = ''): Promise<NbdClient> {
    const sock = connect(socketPath);
    await new Promise<void>((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    const c = new NbdClient(sock);
    await c.handshake(exportName);
    return c;
  }

  private take(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.closedError) return reject(this.closedError);
      this.waiter = { n, resolve, reject };
      this.pump();
    });
  }

  private pump(): void {
    if (!this.transmission) {
      if (this.waiter && this.buffered.length >= this.waiter.n) {
        const w = this.waiter;
        this.waiter = undefined;
        const out = this.buffered.subarray(0, w.n);
        this.buffered = this.buffered.subarray(w.n);
        w.resolve(Buffer.from(out));
      }
      return;
    }
    for (;;) {
      if (this.buffered.length < P.SIMPLE_REPLY_SIZE) return;
      let reply: P.SimpleReply;
      try { reply = P.decodeSimpleReply(this.buffered); } catch (e) { this.sock.destroy(e as Error); return; }
      const p = this.pending.get(reply.handle);
      if (!p) { this.sock.destroy(new Error(`reply for unknown handle ${reply.handle}`)); return; }
      const need = reply.error === 0 ? p.readLength : 0;
      if (this.buffered.length < P.SIMPLE_REPLY_SIZE + need) return;
      const data = Buffer.from(this.buffered.subarray(P.SIMPLE_REPLY_SIZE, P.SIMPLE_REPLY_SIZE + need));
      this.buffered = this.buffered.subarray(P.SIMPLE_REPLY_SIZE + need);
      this.pending.delete(reply.handle);
      if (reply.error) p.reject(new NbdError(reply.error, `NBD error ${reply.error}`)); else p.resolve(data);
    }
  }

  private async handshake(exportName: string): Promise<void> {
    const { handshakeFlags } = P.decodeGreeting(await this.take(P.GREETING_SIZE));
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(handshakeFlags & (P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES));
    this.sock.write(clientFlags);
    this.sock.write(P.encodeOption(P.NBD_OPT_GO, P.encodeInfoRequest({ name: exportName, requests: [] })));
    for (;;) {
      const h = P.decodeOptionReplyHeader(await this.take(P.OPTION_REPLY_HEADER_SIZE));
      const body = h.length ? await this.take(h.length) : Buffer.alloc(0);
      if (h.type === P.NBD_REP_ACK) break;
      if (P.isOptionError(h.type)) throw new Error(`OPT_GO refused: ${h.type.toString(16)} ${body.toString()}`);
      if (h.type === P.NBD_REP_INFO) {
        const info = P.decodeInfo(body);
        if (info.type === P.NBD_INFO_EXPORT && 'size' in info) {
          this.size = BigInt(info.size);
          this.transmissionFlags = info.flags;
        }
      }
    }
    this.transmission = true;
    this.pump();
  }

  request(cmd: number, offset: number, length: number, data?: Buffer, flags = 0): Promise<Buffer> {
    if (this.closedError) return Promise.reject(this.closedError);
    const handle = this.nextHandle++;
    const hdr = P.encodeRequest({ flags, type: cmd, handle, offset, length });
    const promise = new Promise<Buffer>((resolve, reject) => {
      this.pending.set(handle, { resolve, reject, readLength: cmd === NBD_CMD.READ ? length : 0 });
    });
    this.sock.write(data ? Buffer.concat([hdr, data]) : hdr);
    return promise;
  }

  read(offset: number, length: number): Promise<Buffer> { return this.request(NBD_CMD.READ, offset, length); }
  async write(offset: number, data: Buffer, fua = false): Promise<void> { await this.request(NBD_CMD.WRITE, offset, data.length, data, fua ? NBD_CMD_FLAG_FUA : 0); }
  async flush(): Promise<void> { await this.request(NBD_CMD.FLUSH, 0, 0); }

  async disconnect(): Promise<void> {
    if (!this.closedError) {
      this.sock.end(P.encodeRequest({ type: P.NBD_CMD_DISC, handle: 0n, offset: 0, length: 0 }));
    }
    this.sock.destroy();
  }
}
