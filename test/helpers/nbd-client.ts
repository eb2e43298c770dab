/**
 * A minimal NBD client for tests (fixed newstyle, OPT_GO, simple replies, many requests in flight).
 * It lets a test know exactly which writes and flushes the server acknowledged.
 */
import { connect, type Socket } from 'node:net';

const NBDMAGIC = Buffer.from('NBDMAGIC');
const IHAVEOPT = 0x49484156454f5054n;
const REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, WRITE_ZEROES: 6 } as const;
export const NBD_CMD_FLAG_FUA = 1;

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
      if (this.buffered.length < 16) return;
      const magic = this.buffered.readUInt32BE(0);
      if (magic !== SIMPLE_REPLY_MAGIC) { this.sock.destroy(new Error(`bad reply magic ${magic.toString(16)}`)); return; }
      const errno = this.buffered.readUInt32BE(4);
      const handle = this.buffered.readBigUInt64BE(8);
      const p = this.pending.get(handle);
      if (!p) { this.sock.destroy(new Error(`reply for unknown handle ${handle}`)); return; }
      const need = errno === 0 ? p.readLength : 0;
      if (this.buffered.length < 16 + need) return;
      const data = Buffer.from(this.buffered.subarray(16, 16 + need));
      this.buffered = this.buffered.subarray(16 + need);
      this.pending.delete(handle);
      if (errno) p.reject(new NbdError(errno, `NBD error ${errno}`)); else p.resolve(data);
    }
  }

  private async handshake(exportName: string): Promise<void> {
    const hello = await this.take(18);
    if (!hello.subarray(0, 8).equals(NBDMAGIC) || hello.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not an NBD newstyle server');
    const serverFlags = hello.readUInt16BE(16);
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(serverFlags & 0b11); // FIXED_NEWSTYLE | NO_ZEROES
    this.sock.write(clientFlags);
    const name = Buffer.from(exportName);
    const data = Buffer.alloc(4 + name.length + 2);
    data.writeUInt32BE(name.length, 0);
    name.copy(data, 4);
    data.writeUInt16BE(0, 4 + name.length);
    const opt = Buffer.alloc(16);
    opt.writeBigUInt64BE(IHAVEOPT, 0);
    opt.writeUInt32BE(7, 8); // OPT_GO
    opt.writeUInt32BE(data.length, 12);
    this.sock.write(Buffer.concat([opt, data]));
    for (;;) {
      const h = await this.take(20);
      if (h.readBigUInt64BE(0) !== REPLY_MAGIC) throw new Error('bad option reply magic');
      const type = h.readUInt32BE(12);
      const len = h.readUInt32BE(16);
      const body = len ? await this.take(len) : Buffer.alloc(0);
      if (type === 1) break; // ACK
      if (type === 3 && body.readUInt16BE(0) === 0) { // INFO_EXPORT
        this.size = body.readBigUInt64BE(2);
        this.transmissionFlags = body.readUInt16BE(10);
      } else if (type & 0x80000000) {
        throw new Error(`OPT_GO refused: ${type.toString(16)} ${body.toString()}`);
      }
    }
    this.transmission = true;
    this.pump();
  }

  request(cmd: number, offset: number, length: number, data?: Buffer, flags = 0): Promise<Buffer> {
    if (this.closedError) return Promise.reject(this.closedError);
    const handle = this.nextHandle++;
    const hdr = Buffer.alloc(28);
    hdr.writeUInt32BE(REQUEST_MAGIC, 0);
    hdr.writeUInt16BE(flags, 4);
    hdr.writeUInt16BE(cmd, 6);
    hdr.writeBigUInt64BE(handle, 8);
    hdr.writeBigUInt64BE(BigInt(offset), 16);
    hdr.writeUInt32BE(length, 24);
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
      const hdr = Buffer.alloc(28);
      hdr.writeUInt32BE(REQUEST_MAGIC, 0);
      hdr.writeUInt16BE(NBD_CMD.DISC, 6);
      this.sock.end(hdr);
    }
    this.sock.destroy();
  }
}
